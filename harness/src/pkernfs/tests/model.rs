//! Model-based property test: random operation sequences applied to an
//! `Image` on a `Vec<u8>` and to a plain in-memory tree must agree (results,
//! tree, sizes, contents), `check` must pass after every step, and the bytes
//! re-opened from a copy (the bytes are the serialisation) must agree too.
//! The image is small (12 MiB) so that running out of space happens too: a
//! refused write, truncate, create or rename must leave both unchanged.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::super::format::{FsError, Image, Ino, Kind, ROOT_INO};

const NAMES: [&[u8]; 5] = [b"a", b"b", b"c", b"dir", b"guest-ram"];
const MAX_SIZE: u64 = (2 << 20) + 300_000;

#[derive(Debug, Clone)]
enum Op {
    Create { dir: usize, name: usize, dir_kind: bool },
    Write { file: usize, off: u64, len: usize, byte: u8 },
    Truncate { file: usize, size: u64 },
    Unlink { dir: usize, name: usize },
    Rmdir { dir: usize, name: usize },
    Rename { odir: usize, oname: usize, ndir: usize, nname: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NAMES.len();
    let offset = prop_oneof![0..20_000u64, (2u64 << 20) - 5000..(2u64 << 20) + 5000];
    prop_oneof![
        (any::<usize>(), n.clone(), any::<bool>()).prop_map(|(dir, name, dir_kind)| Op::Create { dir, name, dir_kind }),
        (any::<usize>(), offset, 0..9000usize, any::<u8>()).prop_map(|(file, off, len, byte)| Op::Write { file, off, len, byte }),
        (any::<usize>(), prop_oneof![0..10_000u64, 0..MAX_SIZE]).prop_map(|(file, size)| Op::Truncate { file, size }),
        (any::<usize>(), n.clone()).prop_map(|(dir, name)| Op::Unlink { dir, name }),
        (any::<usize>(), n.clone()).prop_map(|(dir, name)| Op::Rmdir { dir, name }),
        (any::<usize>(), n.clone(), any::<usize>(), n).prop_map(|(odir, oname, ndir, nname)| Op::Rename { odir, oname, ndir, nname }),
    ]
}

/// A node of the model, keyed by the inode number the image gave it.
#[derive(Debug, Clone)]
enum Node {
    Dir { parent: Ino, children: BTreeMap<Vec<u8>, Ino> },
    File { data: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Model {
    nodes: BTreeMap<Ino, Node>,
}

impl Model {
    fn new(img: &Image<'_>) -> Self {
        let iommu = img.lookup(ROOT_INO, b"iommu").unwrap();
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT_INO, Node::Dir { parent: ROOT_INO, children: [(b"iommu".to_vec(), iommu)].into() });
        nodes.insert(iommu, Node::Dir { parent: ROOT_INO, children: BTreeMap::new() });
        Self { nodes }
    }

    fn pick(&self, i: usize, dirs: bool) -> Option<Ino> {
        let v: Vec<Ino> = self.nodes.iter().filter(|(_, n)| matches!(n, Node::Dir { .. }) == dirs).map(|(k, _)| *k).collect();
        if v.is_empty() { None } else { v.get(i % v.len()).copied() }
    }

    fn children(&self, dir: Ino) -> &BTreeMap<Vec<u8>, Ino> {
        match self.nodes.get(&dir) {
            Some(Node::Dir { children, .. }) => children,
            _ => unreachable!("not a dir"),
        }
    }

    fn children_mut(&mut self, dir: Ino) -> &mut BTreeMap<Vec<u8>, Ino> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { children, .. }) => children,
            _ => unreachable!("not a dir"),
        }
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.nodes.get(&ino), Some(Node::Dir { .. }))
    }

    /// Is `a` equal to `b` or below it?
    fn below(&self, mut a: Ino, b: Ino) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.nodes.get(&a) {
                Some(Node::Dir { parent, .. }) if *parent != a => a = *parent,
                _ => return false,
            }
        }
    }

    /// Expected outcome of a rename, applied to the model when `Ok`.
    fn rename(&mut self, od: Ino, on: &[u8], nd: Ino, nn: &[u8]) -> Result<(), FsError> {
        let src = *self.children(od).get(on).ok_or(FsError::NotFound)?;
        let target = self.children(nd).get(nn).copied();
        if target == Some(src) {
            return Ok(());
        }
        if self.is_dir(src) && self.below(nd, src) {
            return Err(FsError::Invalid);
        }
        if let Some(t) = target {
            match (self.is_dir(src), self.is_dir(t)) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if !self.children(t).is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
            self.nodes.remove(&t);
        }
        self.children_mut(od).remove(on);
        self.children_mut(nd).insert(nn.to_vec(), src);
        if let Some(Node::Dir { parent, .. }) = self.nodes.get_mut(&src) {
            *parent = nd;
        }
        Ok(())
    }
}

/// Applies `op` to both; panics (fails the case) if they disagree.
fn apply(img: &mut Image<'_>, m: &mut Model, op: &Op) {
    match *op {
        Op::Create { dir, name, dir_kind } => {
            let Some(d) = m.pick(dir, true) else { return };
            let kind = if dir_kind { Kind::Dir } else { Kind::File };
            let got = img.create(d, NAMES[name], kind, 0o644, 7);
            let exists = m.children(d).contains_key(NAMES[name]);
            match got {
                Ok(ino) if !exists => {
                    m.children_mut(d).insert(NAMES[name].to_vec(), ino);
                    let node = if dir_kind { Node::Dir { parent: d, children: BTreeMap::new() } } else { Node::File { data: vec![] } };
                    m.nodes.insert(ino, node);
                }
                Err(FsError::Exists) if exists => {}
                Err(FsError::NoSpace) if !exists => {}
                other => panic!("create: image {other:?}, model exists={exists}"),
            }
        }
        Op::Write { file, off, len, byte } => {
            let Some(f) = m.pick(file, false) else { return };
            match img.write(f, off, &vec![byte; len], 8) {
                Ok(n) => assert_eq!(n, len),
                Err(FsError::NoSpace) => return,
                Err(e) => panic!("write: {e:?}"),
            }
            let Some(Node::File { data }) = m.nodes.get_mut(&f) else { unreachable!() };
            let end = off as usize + len;
            if data.len() < end {
                data.resize(end, 0);
            }
            data[off as usize..end].fill(byte);
        }
        Op::Truncate { file, size } => {
            let Some(f) = m.pick(file, false) else { return };
            match img.set_size(f, size, 9) {
                Ok(()) => {}
                Err(FsError::NoSpace) => return,
                Err(e) => panic!("truncate: {e:?}"),
            }
            let Some(Node::File { data }) = m.nodes.get_mut(&f) else { unreachable!() };
            data.resize(size as usize, 0);
        }
        Op::Unlink { dir, name } => {
            let Some(d) = m.pick(dir, true) else { return };
            let want = match m.children(d).get(NAMES[name]).copied() {
                None => Err(FsError::NotFound),
                Some(t) if m.is_dir(t) => Err(FsError::IsDir),
                Some(t) => {
                    m.children_mut(d).remove(NAMES[name]);
                    m.nodes.remove(&t);
                    Ok(())
                }
            };
            assert_eq!(img.unlink(d, NAMES[name]), want);
        }
        Op::Rmdir { dir, name } => {
            let Some(d) = m.pick(dir, true) else { return };
            let want = match m.children(d).get(NAMES[name]).copied() {
                None => Err(FsError::NotFound),
                Some(t) if !m.is_dir(t) => Err(FsError::NotDir),
                Some(t) if !m.children(t).is_empty() => Err(FsError::NotEmpty),
                Some(t) => {
                    m.children_mut(d).remove(NAMES[name]);
                    m.nodes.remove(&t);
                    Ok(())
                }
            };
            assert_eq!(img.rmdir(d, NAMES[name]), want);
        }
        Op::Rename { odir, oname, ndir, nname } => {
            let (Some(od), Some(nd)) = (m.pick(odir, true), m.pick(ndir, true)) else { return };
            let saved = m.clone();
            let want = m.rename(od, NAMES[oname], nd, NAMES[nname]);
            match img.rename(od, NAMES[oname], nd, NAMES[nname]) {
                // Only growing the target directory allocates.
                Err(FsError::NoSpace) if want.is_ok() => *m = saved,
                got => assert_eq!(got, want),
            }
        }
    }
}

/// The image's tree and contents equal the model's.
fn compare(img: &Image<'_>, m: &Model) {
    let r = img.check().expect("check");
    assert_eq!(r.inodes as usize, m.nodes.len());
    for (&ino, node) in &m.nodes {
        let st = img.stat(ino).unwrap();
        match node {
            Node::Dir { children, .. } => {
                assert_eq!(st.kind, Kind::Dir);
                let subdirs = children.values().filter(|c| m.is_dir(**c)).count() as u32;
                assert_eq!(st.nlink, 2 + subdirs);
                let mut listed = BTreeMap::new();
                let mut pos = 0;
                while let Some((next, c, name, _)) = img.readdir(ino, pos).unwrap() {
                    listed.insert(name.to_vec(), c);
                    pos = next;
                }
                assert_eq!(&listed, children);
            }
            Node::File { data } => {
                assert_eq!(st.size, data.len() as u64);
                let mut buf = vec![0xAAu8; data.len() + 10];
                assert_eq!(img.read(ino, 0, &mut buf).unwrap(), data.len());
                assert!(buf[..data.len()] == data[..], "content of inode {ino}");
            }
        }
    }
}

fn run(ops: &[Op]) {
    let mut v = vec![0u8; 12 << 20];
    let mut img = Image::format(&mut v, 1).unwrap();
    let mut m = Model::new(&img);
    for op in ops {
        apply(&mut img, &mut m, op);
        img.check().unwrap_or_else(|e| panic!("check after {op:?}: {e:?}"));
    }
    compare(&img, &m);
    let mut copy = v.clone();
    let reopened = Image::open(&mut copy).expect("re-open the serialised image");
    compare(&reopened, &m);
    assert!(copy == v, "open wrote to the image");
}

/// `PROPTEST_CASES` or a count that keeps the fast tier in seconds.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(32)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn operations_agree_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}
