//! `lulab bench`: measurements that compare, side by side in one run,
//! never timed assertions. Each bench writes `bench.json` and `bench.md`
//! into its output directory.

pub mod dma_latency;
pub mod downtime;
pub mod soak;
pub mod watcher;

use std::path::Path;

/// Writes a bench's `bench.json` and its Markdown summary `bench.md` into `out`.
pub fn write(out: &Path, bench: &impl serde::Serialize, markdown: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write(out.join("bench.json"), serde_json::to_string_pretty(bench)? + "\n").with_context(|| format!("writing {}/bench.json", out.display()))?;
    std::fs::write(out.join("bench.md"), markdown).with_context(|| format!("writing {}/bench.md", out.display()))?;
    Ok(())
}
