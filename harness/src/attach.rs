//! A person's terminal attached to a host's serial console (`lulab boot`,
//! `console` in `lulab replay`): the console to stdout, stdin to the console,
//! until the detach key.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::termios::{self, SetArg, Termios};

use crate::console::Console;

/// The detach key: Ctrl-] (as telnet).
pub const DETACH: u8 = 0x1d;

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
/// end of input). The harness's own connection is handed over first and
/// taken back afterwards, so `console.expect` works again (what the host
/// printed meanwhile is in `console.log`, not in what `expect` reads).
pub fn attach(console: &mut Console, what: &str) -> Result<()> {
    let stream = console.hand_over(Duration::from_secs(5))?;
    println!("attached to the host console ({what}); Ctrl-] detaches\r");
    let mut from_guest = stream.try_clone().context("cloning the console connection")?;
    let copier = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = from_guest.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    });
    let copied = {
        let _raw = RawMode::enter();
        copy_until_detach(&stream)
    };
    // Ends the copier (its read returns 0) before the harness reconnects.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = copier.join();
    println!("\r\ndetached from the host console\r");
    console.reconnect(Duration::from_secs(5))?;
    copied
}

fn copy_until_detach(mut to_guest: &std::os::unix::net::UnixStream) -> Result<()> {
    to_guest.write_all(b"\n").context("writing to the console")?;
    let mut byte = [0u8; 1];
    let mut stdin = std::io::stdin();
    while stdin.read(&mut byte).context("reading the terminal")? == 1 && byte[0] != DETACH {
        to_guest.write_all(&byte).context("writing to the console")?;
    }
    Ok(())
}
