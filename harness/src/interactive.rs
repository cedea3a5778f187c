//! `lulab boot`: the user's terminal attached to the host's serial console.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context, Result};
use lulab::host::Host;
use nix::sys::termios::{self, SetArg, Termios};

/// The detach key: Ctrl-] (as telnet).
const DETACH: u8 = 0x1d;

/// Restores the terminal mode on drop.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return Self(None); // not a terminal: pass bytes through as they come
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        Self(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// Copies the console to stdout and stdin to the console until Ctrl-] (or
/// end of input), then shuts the host down cleanly.
pub fn attach(mut host: Host) -> Result<()> {
    let stream = host.console.hand_over(Duration::from_secs(5))?;
    println!("attached to the host console ({}); Ctrl-] detaches and shuts the host down\r", host.paths.console_sock().display());
    let mut from_guest = stream.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = from_guest.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    });
    {
        let _raw = RawMode::enter();
        let mut to_guest = stream;
        to_guest.write_all(b"\n").context("writing to the console")?;
        let mut byte = [0u8; 1];
        let mut stdin = std::io::stdin();
        while stdin.read(&mut byte).context("reading the terminal")? == 1 && byte[0] != DETACH {
            to_guest.write_all(&byte).context("writing to the console")?;
        }
    }
    println!("\ndetached; shutting the host down (logs in {})", host.paths.dir.display());
    host.shutdown()?;
    Ok(())
}
