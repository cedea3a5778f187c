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
}
