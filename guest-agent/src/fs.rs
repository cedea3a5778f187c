//! Filesystem operations for pkernfs scenarios: mount, deterministic file
//! contents, hashes, and a mapping kept busy like guest RAM. Every error is
//! returned as a message; nothing here may panic (the agent is PID 1's child).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use lulab_proto::pattern::{self, Fnv1a64};
use lulab_proto::{FileDigest, Reply, TreeStat};

const CHUNK: usize = 256 * 1024;

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?}: contains a NUL byte"))
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// `mount(2)`, creating the mount point first; the reply says how long the
/// syscall alone took (`Instant` is `CLOCK_MONOTONIC` on Linux).
pub fn mount(fstype: &str, source: &str, target: &str) -> Result<Reply, String> {
    std::fs::create_dir_all(target).map_err(|e| format!("{target}: {e}"))?;
    let (f, s, t) = (cstr(fstype)?, cstr(source)?, cstr(target)?);
    let start = Instant::now();
    // SAFETY: three valid NUL-terminated strings that outlive the call; no data.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    let elapsed = start.elapsed();
    if r != 0 {
        return Err(os_err(&format!("mount -t {fstype} {source} {target}")));
    }
    Ok(Reply::Mounted { elapsed_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX) })
}

/// `umount(2)`.
pub fn umount(target: &str) -> Result<Reply, String> {
    let t = cstr(target)?;
    // SAFETY: a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount(t.as_ptr()) } != 0 {
        return Err(os_err(&format!("umount {target}")));
    }
    Ok(Reply::Done)
}

/// Writes `size` bytes of the pattern of `seed` to `path` (truncating it).
pub fn fill_file(path: &str, size: u64, seed: u64) -> Result<Reply, String> {
    let mut hash = Fnv1a64::new();
    write_pattern(path, size, seed, &mut vec![0u8; CHUNK], |chunk| hash.update(chunk))?;
    Ok(Reply::Digest(FileDigest { size, fnv1a64: hash.finish() }))
}

/// Writes `size` bytes of the pattern of `seed` to `path` through `buf`,
/// showing each chunk written to `seen`; fsyncs.
fn write_pattern(path: &str, size: u64, seed: u64, buf: &mut [u8], mut seen: impl FnMut(&[u8])) -> Result<(), String> {
    let mut f = std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?;
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        let chunk = buf.get_mut(..n).ok_or("chunk out of range")?;
        pattern::fill(seed, off, chunk);
        f.write_all(chunk).map_err(|e| format!("{path}: write at {off}: {e}"))?;
        seen(chunk);
        off += n as u64;
    }
    f.sync_all().map_err(|e| format!("{path}: fsync: {e}"))
}

/// Replaces `dir` with `files` pattern files of `size` bytes (see
/// `Op::FillTree`); nothing is hashed here, the harness checks from outside.
pub fn fill_tree(dir: &str, files: u64, size: u64, seed: u64) -> Result<Reply, String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{dir}: removing the previous tree: {e}")),
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    let mut buf = vec![0u8; CHUNK];
    for i in 0..files {
        let path = format!("{}/{}", dir.trim_end_matches('/'), pattern::tree_file_name(i));
        write_pattern(&path, size, pattern::tree_file_seed(seed, i), &mut buf, |_| {})?;
    }
    Ok(Reply::Tree(TreeStat { files, bytes: files.saturating_mul(size) }))
}

/// Regular files directly in `dir` and their total size.
pub fn stat_tree(dir: &str) -> Result<Reply, String> {
    let mut t = TreeStat::default();
    for e in std::fs::read_dir(dir).map_err(|e| format!("{dir}: {e}"))? {
        let e = e.map_err(|e| format!("{dir}: {e}"))?;
        let meta = e.metadata().map_err(|err| format!("{}: stat: {err}", e.path().display()))?;
        if meta.is_file() {
            t.files += 1;
            t.bytes += meta.len();
        }
    }
    Ok(Reply::Tree(t))
}

/// Size and hash of `path`, read with plain `read(2)`.
pub fn hash_file(path: &str) -> Result<Reply, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("{path}: stat: {e}"))?;
    let mut buf = vec![0u8; CHUNK];
    let mut hash = Fnv1a64::new();
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("{path}: read at {total}: {e}"))?;
        if n == 0 {
            break;
        }
        hash.update(buf.get(..n).ok_or("short buffer")?);
        total += n as u64;
    }
    if total != meta.len() {
        return Err(format!("{path}: stat says {} bytes but read returned {total}", meta.len()));
    }
    Ok(Reply::Digest(FileDigest { size: total, fnv1a64: hash.finish() }))
}

/// A `MAP_SHARED` mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(f: &std::fs::File, len: usize, path: &str) -> Result<Self, String> {
        // SAFETY: a fresh mapping of an open file; the kernel chooses the address.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0)
        };
        if p == libc::MAP_FAILED {
            return Err(os_err(&format!("mmap {path} ({len} bytes, MAP_SHARED)")));
        }
        Ok(Self { ptr: p.cast(), len })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` writable bytes until drop; `&mut self`
        // makes this the only slice over them in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Keeps rewriting `path` through a shared mapping for `until_ms`; each pass
/// uses another seed and the last one writes the pattern of `seed`.
pub fn mmap_write(path: &str, size: u64, seed: u64, until_ms: u64) -> Result<Reply, String> {
    let len = usize::try_from(size).map_err(|_| format!("{path}: size {size} too large"))?;
    if len == 0 {
        return Err(format!("{path}: cannot map 0 bytes"));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    f.set_len(size).map_err(|e| format!("{path}: truncate to {size}: {e}"))?;
    let mut map = Mapping::new(&f, len, path)?;
    let deadline = Instant::now() + Duration::from_millis(until_ms);
    let mut passes = 0u64;
    loop {
        let last = Instant::now() >= deadline;
        let s = if last { seed } else { seed ^ (passes + 1).wrapping_mul(0x5851_F42D_4C95_7F2D) };
        for (i, chunk) in map.bytes().chunks_mut(CHUNK).enumerate() {
            pattern::fill(s, (i * CHUNK) as u64, chunk);
        }
        passes += 1;
        if last {
            break;
        }
    }
    let mut hash = Fnv1a64::new();
    hash.update(map.bytes());
    Ok(Reply::MmapWritten { digest: FileDigest { size, fnv1a64: hash.finish() }, passes })
}
