//! pkernfs seen from the host: copy the carve-out out of the host's RAM file
//! ([`GuestMemory`]), open and check it with the kernel's own format code,
//! and list every file with per-page hashes: a [`PkernfsSnapshot`] the
//! scenario runner diffs before and after kexec. The RAM file is only read,
//! except by [`corrupt_carveout`].

use lulab_proto::PhysRange;
use serde::{Deserialize, Serialize};

use super::corrupt::{self, Corruption};
use super::format::{FsError, Image, Ino, Kind, BLOCK_SIZE, ROOT_INO};
use crate::guest_memory::GuestMemory;

/// Errors of the host-side reader; each names the carve-out or the path.
#[derive(Debug, thiserror::Error)]
pub enum PkernfsError {
    /// The carve-out could not be read or written in the RAM file.
    #[error("pkernfs carve-out at {gpa:#x}+{len:#x}")]
    Memory {
        /// Carve-out start.
        gpa: u64,
        /// Carve-out length.
        len: u64,
        /// Underlying error.
        #[source]
        source: crate::guest_memory::GuestMemoryError,
    },
    /// The format code refused the image (or an operation on it).
    #[error("pkernfs at {gpa:#x}: {} ({err:?})", err.describe())]
    Format {
        /// Carve-out start.
        gpa: u64,
        /// The format error.
        err: FsError,
    },
}

/// Counts from the format's `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckCounts {
    /// Inodes in use.
    pub inodes: u32,
    /// Directories.
    pub dirs: u32,
    /// Non-directories.
    pub files: u32,
    /// Blocks in use (metadata included).
    pub used_blocks: u64,
    /// Free blocks.
    pub free_blocks: u64,
}

/// One file or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path from the root, `/`-separated, starting with `/`.
    pub path: String,
    /// Inode number.
    pub ino: Ino,
    /// `file`, `dir`, `iommu-root`, `iommu-domain` or `iommu-pasid`.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u16,
    /// Pinned (DMA-mapped).
    pub pinned: bool,
    /// xxh3 of each 4 KiB page of data (the last one up to the size).
    pub page_hashes: Vec<u64>,
}

/// Everything the harness knows about a pkernfs image at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkernfsSnapshot {
    /// Image size in bytes.
    pub image_bytes: u64,
    /// What `check` counted.
    pub check: CheckCounts,
    /// Every inode reachable from the root, parents before children, in
    /// directory order.
    pub files: Vec<FileEntry>,
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::IommuRoot => "iommu-root",
        Kind::IommuDomain => "iommu-domain",
        Kind::IommuPasid => "iommu-pasid",
    }
}

impl PkernfsSnapshot {
    /// Opens (read-only: `open` writes nothing), checks and lists an image.
    pub fn from_image(img: &Image<'_>) -> Result<Self, FsError> {
        let c = img.check()?;
        let check = CheckCounts {
            inodes: c.inodes,
            dirs: c.dirs,
            files: c.files,
            used_blocks: c.used_blocks,
            free_blocks: c.free_blocks,
        };
        let mut files = Vec::new();
        walk(img, |path, ino, kind| {
            files.push(entry(img, ino, path.to_string(), kind)?);
            Ok(())
        })?;
        Ok(Self { image_bytes: img.geometry().image_bytes, check, files })
    }

    /// Opens a copy of `bytes` and snapshots it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FsError> {
        let mut copy = bytes.to_vec();
        Self::from_image(&Image::open(&mut copy)?)
    }

    /// Reads the carve-out `range` out of the host's RAM and snapshots it.
    pub fn read(mem: &GuestMemory, range: PhysRange) -> Result<Self, PkernfsError> {
        let bytes = read_carveout(mem, range)?;
        Self::from_bytes(&bytes).map_err(|err| PkernfsError::Format { gpa: range.gpa, err })
    }

    /// The entry at `path`.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Human-readable differences from `before` (empty = identical files).
    pub fn diff(&self, before: &PkernfsSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        for b in &before.files {
            match self.file(&b.path) {
                None => out.push(format!("{}: missing", b.path)),
                Some(a) if a.kind != b.kind || a.size != b.size => {
                    out.push(format!("{}: was {} of {} bytes, now {} of {} bytes", b.path, b.kind, b.size, a.kind, a.size))
                }
                Some(a) => {
                    let changed: Vec<usize> =
                        (0..a.page_hashes.len()).filter(|i| a.page_hashes.get(*i) != b.page_hashes.get(*i)).collect();
                    if let Some(first) = changed.first() {
                        out.push(format!("{}: {} pages changed (first page {first})", b.path, changed.len()));
                    }
                }
            }
        }
        for a in self.files.iter().filter(|a| before.file(&a.path).is_none()) {
            out.push(format!("{}: new {} of {} bytes", a.path, a.kind, a.size));
        }
        out
    }
}

fn entry(img: &Image<'_>, ino: Ino, path: String, kind: Kind) -> Result<FileEntry, FsError> {
    let st = img.stat(ino)?;
    let mut page_hashes = Vec::new();
    if kind.has_data() {
        let mut page = vec![0u8; BLOCK_SIZE as usize];
        let mut off = 0;
        while off < st.size {
            let n = img.read(ino, off, &mut page)?;
            page_hashes.push(xxhash_rust::xxh3::xxh3_64(page.get(..n).unwrap_or(&[])));
            off += BLOCK_SIZE;
        }
    }
    Ok(FileEntry { path, ino, kind: kind_name(kind).into(), size: st.size, mode: st.mode, pinned: st.pinned, page_hashes })
}

/// Copies the carve-out out of the RAM file (GPA = file offset below 4 GiB).
pub fn read_carveout(mem: &GuestMemory, range: PhysRange) -> Result<Vec<u8>, PkernfsError> {
    let err = |source| PkernfsError::Memory { gpa: range.gpa, len: range.len, source };
    mem.read_range(range).map_err(err)
}

/// Which structure [`corrupt_carveout`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptTarget {
    /// A superblock checksum error.
    Superblock,
    /// An inode checksum error.
    Inode(Ino),
    /// An allocator checksum error.
    Allocator,
}

/// Breaks `target` in the carve-out in the RAM file, writing only the
/// changed bytes; returns where and which error a mount must report.
pub fn corrupt_carveout(mem: &mut GuestMemory, range: PhysRange, target: CorruptTarget) -> anyhow::Result<Corruption> {
    let before = read_carveout(mem, range)?;
    let mut after = before.clone();
    let c = match target {
        CorruptTarget::Superblock => corrupt::corrupt_superblock(&mut after)?,
        CorruptTarget::Inode(ino) => corrupt::corrupt_inode(&mut after, ino)?,
        CorruptTarget::Allocator => corrupt::corrupt_allocator(&mut after)?,
    };
    for (i, (a, b)) in after.iter().zip(&before).enumerate().filter(|(_, (a, b))| a != b) {
        let _ = b;
        mem.write(range.gpa + i as u64, std::slice::from_ref(a))?;
    }
    mem.flush()?;
    Ok(c)
}

/// Guest-physical ranges of `[off, off + len)` of the file at `path` in a
/// pkernfs image whose carve-out starts at `base`.
pub fn file_ranges(img: &Image<'_>, base: u64, path: &str, off: u64, len: u64) -> anyhow::Result<Vec<PhysRange>> {
    let ino = lookup(img, path)?;
    let mut out: Vec<PhysRange> = Vec::new();
    let mut at = off;
    while at < off + len {
        let (img_off, run) = img
            .map(ino, at)
            .map_err(|e| anyhow::anyhow!("pkernfs {path}: {}", e.describe()))?
            .ok_or_else(|| anyhow::anyhow!("pkernfs {path}: offset {at:#x} is not allocated"))?;
        let take = run.min(off + len - at);
        let gpa = base + img_off;
        match out.last_mut() {
            Some(r) if r.gpa + r.len == gpa => r.len += take,
            _ => out.push(PhysRange { gpa, len: take }),
        }
        at += take;
    }
    Ok(out)
}

/// One of the IOMMU driver's files in an image (kind `iommu-root` or
/// `iommu-domain`): `iommu/dmar-<unit>/root-pgtables` or `…/dom-<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommuFile {
    /// Path from the image's root, e.g. `/iommu/dmar-fed90000/root-pgtables`.
    pub path: String,
    /// `iommu-root`, `iommu-domain` or `iommu-pasid`.
    pub kind: String,
    /// Guest-physical address of its first byte.
    pub gpa: u64,
    /// Its size in bytes.
    pub len: u64,
}

/// Every IOMMU file of the image whose first byte is at guest-physical
/// `base`, in directory order.
pub fn iommu_files(img: &Image<'_>, base: u64) -> Result<Vec<IommuFile>, FsError> {
    let mut out = Vec::new();
    walk(img, |path, ino, kind| {
        if matches!(kind, Kind::IommuRoot | Kind::IommuDomain | Kind::IommuPasid) {
            let len = img.stat(ino)?.size;
            if let Some((at, _)) = img.map(ino, 0)? {
                out.push(IommuFile { path: path.to_string(), kind: kind_name(kind).into(), gpa: base + at, len });
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with the path, inode and kind of every inode reachable from
/// the root, parents before children, in directory order.
fn walk(img: &Image<'_>, mut f: impl FnMut(&str, Ino, Kind) -> Result<(), FsError>) -> Result<(), FsError> {
    let mut todo = vec![(ROOT_INO, String::new())];
    while let Some((dir, prefix)) = todo.pop() {
        let mut pos = 0;
        while let Some((next, ino, name, kind)) = img.readdir(dir, pos)? {
            let path = format!("{prefix}/{}", String::from_utf8_lossy(name));
            f(&path, ino, kind)?;
            if kind == Kind::Dir {
                todo.push((ino, path));
            }
            pos = next;
        }
    }
    Ok(())
}

/// The inode at `path` (from the image's root).
pub fn lookup(img: &Image<'_>, path: &str) -> anyhow::Result<Ino> {
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = img.lookup(ino, part.as_bytes()).map_err(|e| anyhow::anyhow!("pkernfs {path}: {}", e.describe()))?;
    }
    Ok(ino)
}

