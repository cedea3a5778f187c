//! Who owns each page of the carve-out, read from pkernfs's own metadata in
//! the host's RAM file (the kernel's format code, host side).

use serde::{Deserialize, Serialize};

use lulab_proto::PhysRange;

use crate::guest_memory::GuestMemory;
use crate::pkernfs::format::{Image, BLOCK_SIZE, ROOT_INO};
use crate::pkernfs::host::{read_carveout, PkernfsSnapshot};

/// What a page of the carve-out holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Owner {
    /// Superblock, allocation bitmap, inode table, block maps.
    Metadata,
    /// Data of a file or directory (`file_kind`: `file`, `dir`,
    /// `iommu-root`, `iommu-domain`).
    File {
        /// Its path.
        path: String,
        /// Its kind.
        file_kind: String,
    },
    /// In the data area, but no file's when the run ended (free, or a file
    /// deleted meanwhile).
    Unowned,
    /// pkernfs could not be read at the end of the run.
    Unknown,
}

impl Owner {
    /// One word for tables: the path, or what the page is.
    pub fn label(&self) -> String {
        match self {
            Owner::Metadata => "pkernfs metadata".into(),
            Owner::File { path, .. } => path.clone(),
            Owner::Unowned => "no file".into(),
            Owner::Unknown => "unknown".into(),
        }
    }

    /// The kernel's own VT-d tables (`iommu/dmar-<unit>/root-pgtables`, `…/dom-N`).
    pub fn is_iommu(&self) -> bool {
        matches!(self, Owner::File { file_kind, .. } if file_kind.starts_with("iommu-"))
    }

    /// pkernfs's own structure: metadata or a directory's entries.
    pub fn is_structure(&self) -> bool {
        matches!(self, Owner::Metadata) || matches!(self, Owner::File { file_kind, .. } if file_kind == "dir")
    }

    /// A regular file (what an agent maps and writes).
    pub fn is_regular_file(&self) -> bool {
        matches!(self, Owner::File { file_kind, .. } if file_kind == "file")
    }
}

/// Page owners of one carve-out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageOwners {
    base: u64,
    /// End of the metadata area (guest-physical).
    meta_end: u64,
    /// Data extents: (start, end, owner), sorted.
    extents: Vec<(u64, u64, Owner)>,
    /// Why pkernfs could not be read (then every page is [`Owner::Unknown`]).
    pub unreadable: Option<String>,
}

impl PageOwners {
    /// No map: every page is [`Owner::Unknown`], for `why`.
    pub fn unknown(why: impl Into<String>) -> Self {
        Self { unreadable: Some(why.into()), ..Default::default() }
    }

    /// Reads the carve-out `range` from the host's RAM and maps its pages.
    pub fn read(mem: &GuestMemory, range: PhysRange) -> Self {
        let fail = Self::unknown;
        let mut bytes = match read_carveout(mem, range) {
            Ok(b) => b,
            Err(e) => return fail(e.to_string()),
        };
        let img = match Image::open(&mut bytes) {
            Ok(i) => i,
            Err(e) => return fail(format!("pkernfs at {:#x}: {}", range.gpa, e.describe())),
        };
        match Self::of_image(&img, range.gpa) {
            Ok(o) => o,
            Err(e) => fail(e),
        }
    }

    /// The owners of the pages of `img`, a carve-out at `base`.
    pub fn of_image(img: &Image<'_>, base: u64) -> Result<Self, String> {
        let snap = PkernfsSnapshot::from_image(img).map_err(|e| e.describe().to_string())?;
        let g = img.geometry();
        let mut extents = Vec::new();
        let root = (ROOT_INO, "/".to_string(), "dir".to_string());
        for (ino, path, kind) in std::iter::once(root).chain(snap.files.iter().map(|f| (f.ino, f.path.clone(), f.kind.clone()))) {
            let owner = Owner::File { path: path.clone(), file_kind: kind };
            let describe = |e: crate::pkernfs::format::FsError| format!("{path}: {}", e.describe());
            let inode = img.inode(ino).map_err(describe)?;
            img.for_each_ext(ino, &inode, |_, e| {
                extents.push((base + e.start * BLOCK_SIZE, base + e.end() * BLOCK_SIZE, owner.clone()));
                Ok(true)
            })
            .map_err(describe)?;
            // A file's block map past its inline extents is pkernfs's own.
            img.for_each_ext_block(ino, &inode, |blk| {
                extents.push((base + blk * BLOCK_SIZE, base + (blk + 1) * BLOCK_SIZE, Owner::Metadata))
            })
            .map_err(describe)?;
        }
        extents.sort_by_key(|e| e.0);
        Ok(Self { base, meta_end: base + g.data_start * BLOCK_SIZE, extents, unreadable: None })
    }

    /// The owner of the page holding `paddr`.
    pub fn owner(&self, paddr: u64) -> Owner {
        if self.unreadable.is_some() {
            return Owner::Unknown;
        }
        if paddr >= self.base && paddr < self.meta_end {
            return Owner::Metadata;
        }
        let i = self.extents.partition_point(|e| e.1 <= paddr);
        match self.extents.get(i) {
            Some((s, _, o)) if *s <= paddr => o.clone(),
            _ => Owner::Unowned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkernfs::format::Kind;

    #[test]
    fn pages_belong_to_metadata_files_or_nobody() {
        let mut bytes = vec![0u8; 4 << 20];
        let mut img = Image::format(&mut bytes, 1).unwrap();
        let f = img.create(ROOT_INO, b"guest-ram", Kind::File, 0o600, 1).unwrap();
        img.write(f, 0, &[7u8; 8192], 1).unwrap();
        // `format` makes the iommu/ directory.
        let d = img.lookup(ROOT_INO, b"iommu").unwrap();
        let r = img.create(d, b"dom-0", Kind::IommuDomain, 0o600, 1).unwrap();
        img.write(r, 0, &[1u8; 4096], 1).unwrap();
        let base = 0x4000_0000;
        let owners = PageOwners::of_image(&img, base).unwrap();
        assert_eq!(owners.owner(base), Owner::Metadata);
        let (off, _) = img.map(f, 4096).unwrap().unwrap();
        let o = owners.owner(base + off + 12);
        assert_eq!(o.label(), "/guest-ram");
        assert!(o.is_regular_file() && !o.is_iommu());
        let (off, _) = img.map(r, 0).unwrap().unwrap();
        let o = owners.owner(base + off);
        assert!(o.is_iommu(), "{o:?}");
        assert_eq!(owners.owner(base + (4 << 20) - 4096), Owner::Unowned);
        // The root directory's entries are pkernfs's structure.
        let root = img.inode(ROOT_INO).unwrap();
        let mut first = None;
        img.for_each_ext(ROOT_INO, &root, |_, e| {
            first.get_or_insert(e.start);
            Ok(false)
        })
        .unwrap();
        let o = owners.owner(base + first.unwrap() * BLOCK_SIZE);
        assert!(o.is_structure() && !o.is_regular_file(), "{o:?}");
    }
}
