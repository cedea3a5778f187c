//! Traffic the harness injects into the host's devices: the test frame
//! format ([`frame`]) and the paced injector on the e1000e's stream netdev
//! socket ([`inject`]).

pub mod capture;
pub mod frame;
pub mod inject;

/// One monotonic clock for everything that timestamps frames: the injector
/// (send time, carried in the frame) and the RX scanner (first sighting).
pub mod clock {
    use std::sync::OnceLock;
    use std::time::Instant;

    static EPOCH: OnceLock<Instant> = OnceLock::new();

    /// Nanoseconds since the first call in this process (monotonic).
    pub fn now_ns() -> u64 {
        let epoch = *EPOCH.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// CLOCK_REALTIME − [`now_ns`], in ns: QEMU stamps its trace lines with
    /// the wall clock; subtracting this puts them on the harness's clock.
    /// Both are read back to back, the pair with the shortest gap of a few
    /// tries kept.
    pub fn realtime_offset_ns() -> i64 {
        let real = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
        (0..5)
            .map(|_| {
                let a = now_ns() as i64;
                let r = real();
                let b = now_ns() as i64;
                (b - a, r - (a + (b - a) / 2))
            })
            .min_by_key(|(gap, _)| *gap)
            .map_or(0, |(_, off)| off)
    }
}
