//! pkernfs from the host: the shared on-memory format (the very code the
//! kernel runs, `kernel/pkernfs/format/`) and host-side tools on top of it.

pub use crate::kernel::build::pkernfs_layout::format;
