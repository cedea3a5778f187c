//! pkernfs from the host: the shared on-memory format (the very code the
//! kernel runs, `kernel/pkernfs/format/`, reached here as [`format`]) and
//! host-side tools on top of it: [`host`] reads and checks a carve-out in the
//! host's RAM file, [`corrupt`] breaks one named structure for negative tests.

pub use crate::kernel::build::pkernfs_layout::format;

pub mod corrupt;
pub mod host;

#[cfg(test)]
mod tests;
