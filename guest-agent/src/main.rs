//! lulab guest agent: runs inside the host's initramfs and answers the
//! harness over the `lulab.agent` virtio-serial port, one JSON line per
//! request and per reply. It never exits on a bad request: errors go back to
//! the harness as `Err` replies and to the kernel log.

mod dma;
mod fs;
mod kexec;
mod ops;
mod port;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use lulab_proto::{Request, Response};

fn main() {
    let path = match port::find(Duration::from_secs(30)) {
        Ok(p) => p,
        Err(e) => {
            port::kmsg(&format!("lulab-agent: {e}"));
            std::process::exit(1);
        }
    };
    port::kmsg(&format!("lulab-agent {} serving on {}", env!("CARGO_PKG_VERSION"), path.display()));
    let mut agent = ops::Agent::default();
    loop {
        if let Err(e) = serve(&path, &mut agent) {
            port::kmsg(&format!("lulab-agent: {e}; reopening {}", path.display()));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Serves requests until the port reports an error.
fn serve(path: &std::path::Path, agent: &mut ops::Agent) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut writer = file.try_clone()?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            // EOF: no host end connected yet. Wait for it without spinning.
            port::wait_readable(reader.get_ref(), Duration::from_millis(200));
            continue;
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let (response, after) = match serde_json::from_str::<Request>(text) {
            Ok(req) => {
                let (result, after) = agent.handle(req.op);
                (Response { id: req.id, result }, after)
            }
            Err(e) => (Response { id: 0, result: Err(format!("malformed request: {e}")) }, ops::After::Continue),
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        writer.write_all(&out)?;
        writer.flush()?;
        if after == ops::After::Die {
            port::kmsg("lulab-agent: crashing on request (SIGKILL)");
            // SAFETY: kill(2) of this process; nothing runs after it.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        if after == ops::After::Kexec {
            port::kmsg("lulab-agent: kexec now");
            port::kmsg(&kexec::exec());
        }
    }
}
