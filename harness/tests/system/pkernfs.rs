//! System tier for pkernfs: our kernel with a `memmap=64M!1G pkernfs=64M@1G`
//! carve-out; files created, written, renamed and removed through the agent;
//! a kexec (same command line) and a remount find every file with its size and
//! contents, checked inside (agent) and outside (the harness parses the
//! carve-out in the RAM file). The carve-out is verified to be out of the
//! direct map. A kexec that forgets `memmap=…!…` must refuse the mount.

use std::time::Duration;

use crate::common::{our_kernel, Suite, TestRun, OURS};
use lulab::guest_memory::GuestMemory;
use lulab::host::{Deadlines, Host};
use lulab::lab::BootSet;
use lulab::pkernfs::format::{Image, Ino, ROOT_INO};
use lulab::update::KexecTarget;
use lulab_proto::pattern;
use lulab_proto::{FileDigest, Op, Reply};

const MNT: &str = "/mnt/pkernfs";
const BASE: u64 = 1 << 30;
const SIZE: u64 = 64 << 20;
const CARVE: [&str; 2] = ["memmap=64M!1G", "pkernfs=64M@1G"];
const T: Duration = Duration::from_secs(180);


fn boot(set: &BootSet, run: &TestRun) -> (Host, KexecTarget, u64) {
    let mut params = set.machine(run.dir()).unwrap();
    params.memory_mib = 2048;
    params.cmdline.extend(CARVE.iter().map(|s| s.to_string()));
    let host = Host::boot(&params, run.dir(), Deadlines::default()).expect("our kernel boots with the carve-out");
    let target = KexecTarget { kernel: set.kernel.bzimage.clone(), initrd: set.initramfs.path.clone(), cmdline: params.cmdline.clone() };
    (host, target, params.memory_mib << 20)
}

fn call(host: &mut Host, op: Op) -> Reply {
    let what = format!("{op:?}");
    host.agent.call(op, T).unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

fn sh(host: &mut Host, script: &str) -> String {
    let r = host.agent.exec(&["sh", "-c", script], Duration::from_secs(60)).unwrap();
    assert_eq!(r.status, Some(0), "sh -c {script:?}: {r:?}");
    r.stdout
}

fn mount(host: &mut Host) -> Result<Reply, lulab::agent::AgentError> {
    host.agent.call(Op::Mount { fstype: "pkernfs".into(), source: "none".into(), target: MNT.into() }, T)
}

fn digest(host: &mut Host, name: &str) -> FileDigest {
    match call(host, Op::HashFile { path: format!("{MNT}/{name}") }) {
        Reply::Digest(d) => d,
        other => panic!("hash_file {name}: {other:?}"),
    }
}

fn fill(host: &mut Host, name: &str, size: u64, seed: u64) {
    let r = call(host, Op::FillFile { path: format!("{MNT}/{name}"), size, seed });
    assert_eq!(r, Reply::Digest(pattern::digest(seed, size)), "fill_file {name}");
}

/// The carve-out is not System RAM (so not in the direct map: x86 maps only
/// memblock memory) and is claimed by pkernfs, as the kernel itself checked.
fn assert_out_of_direct_map(host: &mut Host) {
    let iomem = sh(host, "cat /proc/iomem");
    let lines: Vec<&str> = iomem.lines().filter(|l| l.trim_start().starts_with("40000000-43ffffff")).collect();
    assert!(lines.iter().any(|l| l.contains("pkernfs")), "/proc/iomem: {iomem}");
    assert!(lines.iter().any(|l| l.contains("Persistent Memory (legacy)")), "/proc/iomem: {iomem}");
    assert!(!lines.iter().any(|l| l.contains("System RAM")), "/proc/iomem: {iomem}");
    let dmesg = sh(host, "dmesg");
    assert!(dmesg.contains("pkernfs: carve-out [mem 0x40000000-0x43ffffff] 64 MiB: not System RAM, not in the direct map"), "{dmesg}");
}

/// Size and hash of `name` parsed from the RAM file with the kernel's own format code.
fn outside(ram: &GuestMemory, name: &str) -> FileDigest {
    let mut bytes = vec![0u8; SIZE as usize];
    ram.read(BASE, &mut bytes).unwrap();
    let img = Image::open(&mut bytes).unwrap_or_else(|e| panic!("outside: image refused: {}", e.describe()));
    let mut ino: Ino = ROOT_INO;
    for part in name.split('/') {
        ino = img.lookup(ino, part.as_bytes()).unwrap_or_else(|e| panic!("outside: {name}: {}", e.describe()));
    }
    let size = img.stat(ino).unwrap().size;
    let mut data = vec![0u8; size as usize];
    assert_eq!(img.read(ino, 0, &mut data).unwrap(), size as usize);
    let mut h = pattern::Fnv1a64::new();
    h.update(&data);
    FileDigest { size, fnv1a64: h.finish() }
}

fn pkernfs_files_survive_kexec_with_sizes_and_contents() {
    let set = our_kernel();
    let run = TestRun::new("pkernfs-kexec");
    let (mut host, target, ram_size) = boot(&set, &run);
    assert_out_of_direct_map(&mut host);
    mount(&mut host).expect("first mount formats the blank carve-out");

    // create / mkdir / write / read / rename / unlink / rmdir / truncate.
    sh(&mut host, &format!("mkdir {MNT}/d {MNT}/gone && rmdir {MNT}/gone && echo hello > {MNT}/d/small"));
    fill(&mut host, "big", (9 << 20) + 123, 1);
    fill(&mut host, "tmp", 5000, 2);
    sh(&mut host, &format!("mv {MNT}/tmp {MNT}/d/renamed && rm {MNT}/d/small && touch {MNT}/empty"));
    fill(&mut host, "cut", 3 << 20, 4);
    sh(&mut host, &format!("truncate -s 1000000 {MNT}/cut"));
    match call(&mut host, Op::MmapWrite { path: format!("{MNT}/ram"), size: 4 << 20, seed: 3, until_ms: 500 }) {
        Reply::MmapWritten { digest, passes } => {
            assert_eq!(digest, pattern::digest(3, 4 << 20));
            assert!(passes >= 1);
        }
        other => panic!("mmap_write: {other:?}"),
    }
    let mut cut = vec![0u8; 1_000_000];
    pattern::fill(4, 0, &mut cut);
    let mut h = pattern::Fnv1a64::new();
    h.update(&cut);
    let want = [
        ("big", pattern::digest(1, (9 << 20) + 123)),
        ("d/renamed", pattern::digest(2, 5000)),
        ("ram", pattern::digest(3, 4 << 20)),
        ("cut", FileDigest { size: 1_000_000, fnv1a64: h.finish() }),
        ("empty", pattern::digest(0, 0)),
    ];
    for (name, d) in &want {
        assert_eq!(digest(&mut host, name), *d, "{name} before kexec");
    }
    let listing = sh(&mut host, &format!("cd {MNT} && ls -R"));

    let ram = GuestMemory::open(&host.paths.ram(), ram_size).unwrap();
    for (name, d) in &want {
        assert_eq!(outside(&ram, name), *d, "{name} outside, before kexec");
    }

    host.stage_update(&target).unwrap();
    host.jump(Deadlines::default()).expect("kexec into the same kernel and command line");
    assert_out_of_direct_map(&mut host);
    mount(&mut host).expect("remount after kexec");
    let dmesg = sh(&mut host, "dmesg");
    assert!(dmesg.contains("pkernfs: mounted the existing image"), "{dmesg}");
    for (name, d) in &want {
        assert_eq!(digest(&mut host, name), *d, "{name} after kexec");
        assert_eq!(outside(&ram, name), *d, "{name} outside, after kexec");
    }
    assert_eq!(sh(&mut host, &format!("cd {MNT} && ls -R")), listing, "the tree after kexec");
    let st = sh(&mut host, &format!("stat -c '%s %F' {MNT}/big {MNT}/d/renamed"));
    assert_eq!(st, format!("{} regular file\n5000 regular file\n", (9 << 20) + 123));
    host.shutdown().unwrap();
}

fn kexec_that_forgets_memmap_refuses_the_mount() {
    let set = our_kernel();
    let run = TestRun::new("pkernfs-forget-memmap");
    let (mut host, mut target, _) = boot(&set, &run);
    mount(&mut host).unwrap();
    fill(&mut host, "f", 1 << 20, 9);

    // `kexec -s` does not carry the e820 entry: without `memmap=` the next
    // kernel sees the carve-out as System RAM and may already have used it.
    target.cmdline.retain(|w| !w.starts_with("memmap="));
    host.stage_update(&target).unwrap();
    host.jump(Deadlines::default()).expect("the forgetful kernel still boots");
    let iomem = sh(&mut host, "cat /proc/iomem");
    assert!(!iomem.contains("pkernfs") && !iomem.contains("Persistent Memory"), "{iomem}");
    let err = mount(&mut host).expect_err("pkernfs must not use RAM the kernel owns");
    let dmesg = sh(&mut host, "dmesg");
    assert!(dmesg.contains("is System RAM (memmap=64M!0x40000000 missing from the command line?): refusing to use it"), "{dmesg}");
    println!("mount without memmap=: {err:#}");
    host.shutdown().unwrap();
}


fn corrupted_superblock_is_refused_and_left_untouched() {
    let set = our_kernel();
    let run = TestRun::new("pkernfs-corrupt-sb");
    let (mut host, target, ram_size) = boot(&set, &run);
    mount(&mut host).unwrap();
    fill(&mut host, "f", 1 << 20, 5);
    host.stage_update(&target).unwrap();

    // Flip one checksummed superblock byte from outside, then kexec.
    let mut ram = GuestMemory::open(&host.paths.ram(), ram_size).unwrap();
    let mut b = [0u8; 1];
    ram.read(BASE + 16, &mut b).unwrap();
    ram.write(BASE + 16, &[b[0] ^ 0x40]).unwrap();
    host.jump(Deadlines::default()).unwrap();
    let mut before = vec![0u8; SIZE as usize];
    ram.read(BASE, &mut before).unwrap();

    let err = mount(&mut host).expect_err("a corrupted image must be refused");
    assert!(format!("{err:#}").contains("Structure needs cleaning"), "{err:#}");
    let dmesg = sh(&mut host, "dmesg");
    assert!(dmesg.contains("pkernfs: refusing the image at 0x40000000: superblock"), "{dmesg}");
    let mut after = vec![0u8; SIZE as usize];
    ram.read(BASE, &mut after).unwrap();
    assert!(before == after, "the refused carve-out was written to");
    host.shutdown().unwrap();
}

/// pkernfs' mapping counters (`/sys/kernel/debug/pkernfs/`): (2 MiB, 4 KiB)
/// mappings installed since boot. smaps cannot tell: page walks skip
/// VM_PFNMAP areas.
fn mapping_counters(host: &mut Host) -> (u64, u64) {
    let out = sh(
        host,
        "grep -q ' /sys/kernel/debug debugfs' /proc/mounts || mount -t debugfs none /sys/kernel/debug; \
         cat /sys/kernel/debug/pkernfs/pmd_faults /sys/kernel/debug/pkernfs/pte_faults",
    );
    let v: Vec<u64> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(v.len(), 2, "{out:?}");
    (v[0], v[1])
}

fn mmap_write(host: &mut Host, name: &str, size: u64, seed: u64) {
    match call(host, Op::MmapWrite { path: format!("{MNT}/{name}"), size, seed, until_ms: 300 }) {
        Reply::MmapWritten { digest, passes } => {
            assert_eq!(digest, pattern::digest(seed, size), "{name} read back through the mapping");
            assert!(passes >= 1);
        }
        other => panic!("mmap_write {name}: {other:?}"),
    }
}

fn shared_mmap_uses_2mib_mappings_and_its_writes_survive_kexec() {
    let set = our_kernel();
    let run = TestRun::new("pkernfs-mmap-pmd");
    let (mut host, target, ram_size) = boot(&set, &run);
    mount(&mut host).unwrap();

    // 8 MiB: four 2 MiB chunks, mapped 2 MiB aligned: four PMDs, no PTE.
    let (pmd0, pte0) = mapping_counters(&mut host);
    mmap_write(&mut host, "ram", 8 << 20, 21);
    let (pmd1, pte1) = mapping_counters(&mut host);
    println!("8 MiB: {} PMD and {} PTE mappings", pmd1 - pmd0, pte1 - pte0);
    assert_eq!((pmd1 - pmd0, pte1 - pte0), (4, 0), "8 MiB file: 2 MiB mappings only");

    // 2 MiB + 8 KiB: one PMD for the aligned 2 MiB, 4 KiB pages for the tail.
    mmap_write(&mut host, "odd", (2 << 20) + 8192, 22);
    let (pmd2, pte2) = mapping_counters(&mut host);
    println!("2 MiB + 8 KiB: {} PMD and {} PTE mappings", pmd2 - pmd1, pte2 - pte1);
    assert_eq!((pmd2 - pmd1, pte2 - pte1), (1, 2), "2 MiB + 8 KiB file: one PMD, two PTEs");

    // What was written through the mappings reads back through read(2) and
    // from outside, and survives kexec.
    let want = [("ram", pattern::digest(21, 8 << 20)), ("odd", pattern::digest(22, (2 << 20) + 8192))];
    let ram = GuestMemory::open(&host.paths.ram(), ram_size).unwrap();
    for (name, d) in &want {
        assert_eq!(digest(&mut host, name), *d, "{name} through read()");
        assert_eq!(outside(&ram, name), *d, "{name} outside");
    }
    host.stage_update(&target).unwrap();
    host.jump(Deadlines::default()).expect("kexec into the same kernel and command line");
    mount(&mut host).expect("remount after kexec");
    for (name, d) in &want {
        assert_eq!(digest(&mut host, name), *d, "{name} after kexec");
        assert_eq!(outside(&ram, name), *d, "{name} outside, after kexec");
    }
    // Mapped again after kexec: still 2 MiB mappings.
    let (pmd3, _) = mapping_counters(&mut host);
    mmap_write(&mut host, "ram", 8 << 20, 23);
    let (pmd4, _) = mapping_counters(&mut host);
    assert_eq!(pmd4 - pmd3, 4, "8 MiB file after kexec: 2 MiB mappings");
    assert_eq!(digest(&mut host, "ram"), pattern::digest(23, 8 << 20));
    host.shutdown().unwrap();
}

/// This module's tests, with what each needs.
pub fn trials(s: &mut Suite) {
    s.add("system::pkernfs::pkernfs_files_survive_kexec_with_sizes_and_contents", OURS, pkernfs_files_survive_kexec_with_sizes_and_contents);
    s.add("system::pkernfs::kexec_that_forgets_memmap_refuses_the_mount", OURS, kexec_that_forgets_memmap_refuses_the_mount);
    s.add("system::pkernfs::corrupted_superblock_is_refused_and_left_untouched", OURS, corrupted_superblock_is_refused_and_left_untouched);
    s.add("system::pkernfs::shared_mmap_uses_2mib_mappings_and_its_writes_survive_kexec", OURS, shared_mmap_uses_2mib_mappings_and_its_writes_survive_kexec);
}
