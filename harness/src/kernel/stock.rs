//! Debian's stock kernel image, fetched with `apt-get download` and unpacked
//! into the cache (never installed on this machine).
