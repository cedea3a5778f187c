//! `lulab bench`: measurements that compare, side by side in one run,
//! never timed assertions. Each bench writes `bench.json` and `bench.md`
//! into its output directory.

pub mod dma_latency;
pub mod soak;
pub mod watcher;
