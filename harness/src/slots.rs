//! Host slots: at most N QEMU hosts run at once on this machine, across
//! threads, test binaries and separate `lulab` processes.
//!
//! The pool is N lock files under the cache directory
//! (`<cache>/host-slots/<i>.lock`); a host holds an exclusive `flock` on one
//! of them from before QEMU starts until it is gone. The kernel drops a
//! `flock` when its holder dies, so a killed run never leaks a slot.
//!
//! Why a limit at all: under TCG a host's vCPU thread wants a whole core,
//! and the harness's RAM-file scanner and frame injector want time beside it.
//! Two hosts on a 2-core machine stretched a stock kexec to 10 s and lost the
//! agent's reply (see README, "Host slots"). N defaults to one host per two
//! cores ([`default_hosts`]); `LULAB_HOSTS` overrides it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// The environment variable that sets the pool size.
pub const ENV: &str = "LULAB_HOSTS";

/// How often a waiting process retries the pool.
const RETRY: Duration = Duration::from_millis(200);
/// How often a long wait says it is still waiting.
const REMIND: Duration = Duration::from_secs(60);

/// The default number of hosts at once for a machine with `cpus` cores: one
/// per two cores, at least one (measured on 2 cores: README, "Host slots").
pub fn default_hosts(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

/// The pool size: `LULAB_HOSTS` when set, else [`default_hosts`] of this
/// machine's cores.
pub fn hosts() -> Result<usize> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    parse_hosts(std::env::var(ENV).ok().as_deref(), cpus)
}

/// `LULAB_HOSTS`'s value (`None`: unset or empty) or the default for `cpus`.
pub fn parse_hosts(value: Option<&str>, cpus: usize) -> Result<usize> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default_hosts(cpus)),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("{ENV}={v:?}: must be a whole number of hosts, at least 1"),
        },
    }
}

/// One held slot; dropping it lets the next host start.
#[derive(Debug)]
pub struct HostSlot {
    index: usize,
    of: usize,
    _lock: Flock<std::fs::File>,
}

impl HostSlot {
    /// Waits for a free slot of the machine's pool (size [`hosts`]),
    /// saying on stderr when it has to wait and for how long it waited.
    pub fn acquire() -> Result<Self> {
        let n = hosts()?;
        Self::acquire_in(&crate::cache::root().join("host-slots"), n, &mut |msg| eprintln!("lulab: {msg}"))
    }

    /// [`HostSlot::acquire`] on the pool of `n` slots in `dir`, reporting
    /// waits through `progress`.
    pub fn acquire_in(dir: &Path, n: usize, progress: &mut dyn FnMut(&str)) -> Result<Self> {
        if n == 0 {
            bail!("a pool of 0 host slots can never start a host ({ENV})");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let start = Instant::now();
        let mut reminded = None;
        loop {
            for index in 0..n {
                if let Some(lock) = try_lock(&slot_path(dir, index))? {
                    if reminded.is_some() {
                        progress(&format!("host slot {}/{n} free after {:.1} s", index + 1, start.elapsed().as_secs_f64()));
                    }
                    return Ok(Self { index, of: n, _lock: lock });
                }
            }
            if reminded.is_none_or(|t: Instant| t.elapsed() >= REMIND) {
                progress(&format!(
                    "waiting for a host slot: all {n} in use ({:.0} s so far; {ENV} sets how many hosts run at once)",
                    start.elapsed().as_secs_f64()
                ));
                reminded = Some(Instant::now());
            }
            std::thread::sleep(RETRY);
        }
    }

    /// Which slot (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The pool size it was taken from.
    pub fn of(&self) -> usize {
        self.of
    }
}

fn slot_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("{index}.lock"))
}

/// An exclusive `flock` on `path` if nobody holds one, else `None`.
fn try_lock(path: &Path) -> Result<Option<Flock<std::fs::File>>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening host slot {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("locking host slot {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn default_is_one_host_per_two_cores_and_at_least_one() {
        assert_eq!([1, 2, 3, 4, 16].map(default_hosts), [1, 1, 1, 2, 8]);
        assert_eq!(parse_hosts(None, 8).unwrap(), 4);
        assert_eq!(parse_hosts(Some(""), 2).unwrap(), 1);
        assert_eq!(parse_hosts(Some(" 3 "), 2).unwrap(), 3);
    }

    #[test]
    fn a_bad_pool_size_names_the_variable() {
        for v in ["0", "-1", "two", "1.5"] {
            let e = parse_hosts(Some(v), 2).unwrap_err().to_string();
            assert!(e.contains("LULAB_HOSTS") && e.contains(v), "{e}");
        }
    }

    #[test]
    fn at_most_n_slots_are_held_and_a_waiter_says_so_then_gets_the_freed_one() {
        let dir = tempfile::tempdir().unwrap();
        let quiet = &mut |_: &str| {};
        let a = HostSlot::acquire_in(dir.path(), 2, quiet).unwrap();
        let b = HostSlot::acquire_in(dir.path(), 2, quiet).unwrap();
        assert_ne!(a.index(), b.index());
        let (tx, rx) = mpsc::channel();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let mut said = Vec::new();
            let slot = HostSlot::acquire_in(&path, 2, &mut |m| {
                said.push(m.to_string());
                let _ = tx.send(m.to_string());
            })
            .unwrap();
            (slot.index(), said)
        });
        let first = rx.recv_timeout(Duration::from_secs(10)).expect("the waiter says it waits");
        assert!(first.contains("waiting for a host slot: all 2 in use"), "{first}");
        let freed = b.index();
        drop(b);
        let (got, said) = waiter.join().unwrap();
        assert_eq!(got, freed);
        assert!(said.last().unwrap().contains("free after"), "{said:?}");
        drop(a);
    }

    #[test]
    fn a_slot_is_freed_when_its_holder_process_dies() {
        let dir = tempfile::tempdir().unwrap();
        let path = slot_path(dir.path(), 0);
        std::fs::write(&path, b"").unwrap();
        // A child holds the lock (flock(1) semantics, by hand) and is killed.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec 9>{} && flock -x 9 && echo held && exec sleep 30", path.display()))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "held");
        assert!(try_lock(&path).unwrap().is_none(), "held by the child");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(try_lock(&path).unwrap().is_some(), "freed when the holder died");
    }
}
