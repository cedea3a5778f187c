//! A deterministic cpio "newc" writer (what the kernel unpacks as initramfs):
//! fixed inode numbers, mtimes and owners, so equal inputs give equal bytes and
//! the image's content hash is stable.

use std::io::{self, Write};

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir {
        /// Path without leading slash.
        path: String,
    },
    /// A regular file.
    File {
        /// Path without leading slash.
        path: String,
        /// Permission bits (e.g. 0o755).
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Path without leading slash.
        path: String,
        /// Link target.
        target: String,
    },
    /// A character device node.
    CharDev {
        /// Path without leading slash.
        path: String,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

impl Entry {
    /// The member's path.
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path } | Entry::File { path, .. } | Entry::Symlink { path, .. } | Entry::CharDev { path, .. } => {
                path
            }
        }
    }
}

/// Writes `entries` (in order) and the trailer.
pub fn write_archive(out: &mut impl Write, entries: &[Entry]) -> io::Result<()> {
    let mut offset = 0usize;
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match e {
            Entry::Dir { .. } => (0o040755, &[], (0, 0)),
            Entry::File { mode, data, .. } => (0o100000 | mode, data, (0, 0)),
            Entry::Symlink { target, .. } => (0o120777, target.as_bytes(), (0, 0)),
            Entry::CharDev { major, minor, .. } => (0o020600, &[], (*major, *minor)),
        };
        let nlink = if matches!(e, Entry::Dir { .. }) { 2 } else { 1 };
        offset += member(out, offset, ino, mode, nlink, rdev, e.path(), data)?;
    }
    member(out, offset, 0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn member(
    out: &mut impl Write,
    offset: usize,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) -> io::Result<usize> {
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0, // uid
        0, // gid
        0, // mtime
        data.len(),
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() + 1,
        0, // check
    );
    let mut n = 0;
    let mut put = |out: &mut dyn Write, b: &[u8]| -> io::Result<()> {
        out.write_all(b)?;
        n += b.len();
        Ok(())
    };
    put(out, header.as_bytes())?;
    put(out, name.as_bytes())?;
    put(out, &[0])?;
    put(out, &vec![0; pad4(offset + 110 + name.len() + 1)])?;
    put(out, data)?;
    let after_data = offset + 110 + name.len() + 1 + pad4(offset + 110 + name.len() + 1) + data.len();
    put(out, &vec![0; pad4(after_data)])?;
    Ok(n)
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn cpio_tool_lists_and_extracts_what_we_wrote() {
        if !crate::cmd::on_path("cpio") {
            println!("SKIP: cpio not installed (run `lulab setup`)");
            return;
        }
        let entries = vec![
            Entry::Dir { path: "bin".into() },
            Entry::File { path: "bin/hello".into(), mode: 0o755, data: b"#!/bin/sh\necho hi\n".to_vec() },
            Entry::File { path: "odd".into(), mode: 0o644, data: vec![1, 2, 3] },
            Entry::Symlink { path: "bin/sh".into(), target: "busybox".into() },
        ];
        let mut buf = Vec::new();
        write_archive(&mut buf, &entries).unwrap();
        assert_eq!(buf.len() % 4, 0);
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, &buf).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && cpio -idm --no-absolute-filenames < a.cpio", dir.path().display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(dir.path().join("odd")).unwrap(), vec![1, 2, 3]);
        assert_eq!(std::fs::read_link(dir.path().join("bin/sh")).unwrap().to_str(), Some("busybox"));
        let mut again = Vec::new();
        write_archive(&mut again, &entries).unwrap();
        assert_eq!(buf, again, "archives must be deterministic");
    }
}
