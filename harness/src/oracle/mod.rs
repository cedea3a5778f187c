//! Oracles: judges that read the host from outside (the RAM file, QEMU's
//! trace log, the console log) and never ask the guest.
