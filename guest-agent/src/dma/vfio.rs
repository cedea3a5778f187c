//! Safe wrappers over [`super::sys`]: binding a PCI function to vfio-pci,
//! the two DMA-mapping interfaces (type1 container, iommufd) and the device
//! fd (region info, config space, BAR mmap).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lulab_proto::IommuApi;

use super::sys;

/// `ioctl(fd, req, arg)`, mapping -1 to the errno as a message naming `what`.
///
/// # Safety
/// `arg` must be what the kernel expects for `req`: a pointer to a live,
/// correctly laid out struct (or a plain integer for integer-argument ioctls).
unsafe fn ioctl(fd: RawFd, req: u64, arg: libc::c_ulong, what: &str) -> Result<i32, String> {
    // SAFETY: forwarded from the caller's contract.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(r)
}

/// `ioctl` with a pointer to `arg`.
fn ioctl_ptr<T>(fd: &File, req: u64, arg: &mut T, what: &str) -> Result<i32, String> {
    // SAFETY: `arg` is a live, exclusively borrowed `#[repr(C)]` uAPI struct
    // matching `req` (the callers pair them as in the kernel headers); the
    // kernel reads/writes at most `argsz` bytes of it during the call.
    unsafe { ioctl(fd.as_raw_fd(), req, arg as *mut T as libc::c_ulong, what) }
}

/// `ioctl` with an integer argument (or none).
fn ioctl_val(fd: &File, req: u64, val: u64, what: &str) -> Result<i32, String> {
    // SAFETY: `req` takes an integer argument; the kernel dereferences nothing.
    unsafe { ioctl(fd.as_raw_fd(), req, val as libc::c_ulong, what) }
}

fn open_rw(path: &Path) -> Result<File, String> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn sysfs(pci: &str) -> PathBuf {
    Path::new("/sys/bus/pci/devices").join(pci)
}

fn write_sysfs(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

/// Binds `pci` to vfio-pci (unbinding any current driver) and waits until
/// the binding shows in sysfs.
pub fn bind_vfio_pci(pci: &str) -> Result<(), String> {
    let dev = sysfs(pci);
    if !dev.exists() {
        return Err(format!("{pci}: no such PCI device ({})", dev.display()));
    }
    let driver = || std::fs::read_link(dev.join("driver")).ok().and_then(|p| p.file_name().map(|n| n.to_owned()));
    let current = driver();
    if current.as_deref() == Some(std::ffi::OsStr::new("vfio-pci")) {
        return Ok(());
    }
    write_sysfs(&dev.join("driver_override"), "vfio-pci")?;
    if current.is_some() {
        write_sysfs(&dev.join("driver/unbind"), pci)?;
    }
    write_sysfs(Path::new("/sys/bus/pci/drivers_probe"), pci)?;
    wait_for(&format!("{pci} bound to vfio-pci"), || driver().as_deref() == Some(std::ffi::OsStr::new("vfio-pci")))
}

/// Polls `ok` for up to 5 s (device nodes appear asynchronously).
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        if Instant::now() > deadline {
            return Err(format!("waited 5 s for {what}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Opens a device node, waiting for devtmpfs to create it.
fn open_node(path: &Path) -> Result<File, String> {
    wait_for(&path.display().to_string(), || path.exists())?;
    open_rw(path)
}

/// `/dev/vfio/<group>` of `pci`.
fn group_path(pci: &str) -> Result<PathBuf, String> {
    let link = sysfs(pci).join("iommu_group");
    let target = std::fs::read_link(&link).map_err(|e| format!("{}: {e} (is the IOMMU on?)", link.display()))?;
    let group = target.file_name().ok_or_else(|| format!("{}: bad link {}", link.display(), target.display()))?;
    Ok(Path::new("/dev/vfio").join(group))
}

/// `/dev/vfio/devices/vfioN` of `pci` (the device cdev, iommufd kernels only).
fn cdev_path(pci: &str) -> Result<PathBuf, String> {
    let dir = sysfs(pci).join("vfio-dev");
    let entry = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e} (kernel without VFIO_DEVICE_CDEV?)", dir.display()))?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("vfio"))
        .ok_or_else(|| format!("{}: no vfioN entry", dir.display()))?;
    Ok(Path::new("/dev/vfio/devices").join(entry.file_name()))
}

/// The interface `Auto` resolves to on this kernel.
pub fn resolve(api: IommuApi) -> IommuApi {
    match api {
        IommuApi::Auto if Path::new("/dev/iommu").exists() => IommuApi::Iommufd,
        IommuApi::Auto => IommuApi::Type1,
        other => other,
    }
}

/// The DMA-mapping side of an opened device. The fds stay open as long as
/// this lives: closing them would unmap everything and let VFIO reset the device.
#[derive(Debug)]
pub enum Iommu {
    /// `/dev/vfio/vfio` with the device's group attached.
    Type1 {
        /// The container.
        container: File,
        /// The group (kept open: closing it detaches the group).
        #[allow(dead_code)]
        group: File,
    },
    /// `/dev/iommu` with one IOAS the device is attached to.
    Iommufd {
        /// The iommufd.
        iommufd: File,
        /// The IOAS id.
        ioas: u32,
        /// The device's id in the iommufd (from `VFIO_DEVICE_BIND_IOMMUFD`).
        devid: u32,
        /// The paging HWPT the device is attached to (0 until attached).
        hwpt: u32,
    },
}

impl Iommu {
    /// Maps `len` bytes of this process at `vaddr` to `iova`, readable and
    /// writable by the device. Pins the pages.
    pub fn map(&self, vaddr: u64, iova: u64, len: u64) -> Result<(), String> {
        let what = format!("map {len:#x} bytes at IOVA {iova:#x}");
        match self {
            Iommu::Type1 { container, .. } => {
                let mut m = sys::VfioDmaMap {
                    argsz: sys::argsz::<sys::VfioDmaMap>(),
                    flags: sys::VFIO_DMA_MAP_FLAG_READ | sys::VFIO_DMA_MAP_FLAG_WRITE,
                    vaddr,
                    iova,
                    size: len,
                };
                ioctl_ptr(container, sys::VFIO_IOMMU_MAP_DMA, &mut m, &format!("VFIO_IOMMU_MAP_DMA {what}"))?;
            }
            Iommu::Iommufd { iommufd, ioas, .. } => {
                let mut m = sys::IommuIoasMap {
                    size: sys::argsz::<sys::IommuIoasMap>(),
                    flags: sys::IOMMU_IOAS_MAP_FIXED_IOVA | sys::IOMMU_IOAS_MAP_READABLE | sys::IOMMU_IOAS_MAP_WRITEABLE,
                    ioas_id: *ioas,
                    reserved: 0,
                    user_va: vaddr,
                    length: len,
                    iova,
                };
                ioctl_ptr(iommufd, sys::IOMMU_IOAS_MAP, &mut m, &format!("IOMMU_IOAS_MAP {what}"))?;
            }
        }
        Ok(())
    }

    /// Maps `len` bytes of `file` from offset `start` to `iova`, readable and
    /// writable (`IOMMU_IOAS_MAP_FILE`; iommufd only). On our kernel a pkernfs
    /// file is mapped by physical address and pinned (EBUSY on unlink/truncate).
    pub fn map_file(&self, file: &File, start: u64, len: u64, iova: u64) -> Result<(), String> {
        self.map_file_as(file, (start, len), iova, true)
    }

    /// [`Iommu::map_file`], writable by the device or not (`writable`
    /// false: fault injection, a rebuild whose permissions differ).
    pub fn map_file_as(&self, file: &File, (start, len): (u64, u64), iova: u64, writable: bool) -> Result<(), String> {
        let Iommu::Iommufd { iommufd, ioas, .. } = self else {
            return Err("mapping a file for DMA needs iommufd (IOMMU_IOAS_MAP_FILE)".into());
        };
        let write = if writable { sys::IOMMU_IOAS_MAP_WRITEABLE } else { 0 };
        let mut m = sys::IommuIoasMapFile {
            size: sys::argsz::<sys::IommuIoasMapFile>(),
            flags: sys::IOMMU_IOAS_MAP_FIXED_IOVA | sys::IOMMU_IOAS_MAP_READABLE | write,
            ioas_id: *ioas,
            fd: file.as_raw_fd(),
            start,
            length: len,
            iova,
        };
        let what = format!("IOMMU_IOAS_MAP_FILE {len:#x} bytes at file offset {start:#x} to IOVA {iova:#x}");
        ioctl_ptr(iommufd, sys::IOMMU_IOAS_MAP_FILE, &mut m, &what).map(|_| ())
    }

    /// Unmaps `len` bytes at `iova` (`IOMMU_IOAS_UNMAP`; iommufd only): the
    /// range must be exactly what one or more earlier maps covered.
    pub fn unmap(&self, iova: u64, len: u64) -> Result<(), String> {
        let Iommu::Iommufd { iommufd, ioas, .. } = self else {
            return Err("unmapping by IOVA is implemented for iommufd only".into());
        };
        let mut u = sys::IommuIoasUnmap { size: sys::argsz::<sys::IommuIoasUnmap>(), ioas_id: *ioas, iova, length: len };
        ioctl_ptr(iommufd, sys::IOMMU_IOAS_UNMAP, &mut u, &format!("IOMMU_IOAS_UNMAP {len:#x} bytes at IOVA {iova:#x}"))?;
        if u.length != len {
            return Err(format!("IOMMU_IOAS_UNMAP at IOVA {iova:#x}: unmapped {:#x} of {len:#x} bytes", u.length));
        }
        Ok(())
    }

    /// Marks the HWPT the device is attached to persistent across kexec
    /// (`IOMMU_OPTION_PERSISTENT` on the HWPT id, our kernel only): its page
    /// tables are sealed into pkernfs and walked there, kept through kexec,
    /// and adopted by the next kernel. Returns the device's persistence read
    /// back (`IOMMU_OPTION_OP_GET` on the device id).
    pub fn set_persistent(&self, on: bool) -> Result<bool, String> {
        let Iommu::Iommufd { iommufd, devid, hwpt, .. } = self else {
            return Err("persistence across kexec needs iommufd".into());
        };
        let mut o = sys::IommuOption {
            size: sys::argsz::<sys::IommuOption>(),
            option_id: sys::IOMMU_OPTION_PERSISTENT,
            op: sys::IOMMU_OPTION_OP_SET,
            reserved: 0,
            object_id: *hwpt,
            val64: u64::from(on),
        };
        let what = format!("IOMMU_OPTION PERSISTENT={} on HWPT {hwpt}", u8::from(on));
        ioctl_ptr(iommufd, sys::IOMMU_OPTION, &mut o, &what).map_err(|e| match scalable_mode() {
            Some(why) => format!("{e}: VT-d runs in scalable mode ({why}); lulab persistence keeps second-stage domains of devices without PASIDs beyond PASID table 0 (the kernel log says which was refused)"),
            None => format!("{e} (kernel without lulab persistence?)"),
        })?;
        o.op = sys::IOMMU_OPTION_OP_GET;
        o.object_id = *devid;
        ioctl_ptr(iommufd, sys::IOMMU_OPTION, &mut o, &format!("IOMMU_OPTION GET PERSISTENT on device {devid}"))?;
        Ok(o.val64 == 1)
    }
}

/// Why this kernel runs VT-d in scalable mode, if it does: a unit offers it
/// (ecap SMTS, bit 43) and the command line does not turn it off (our
/// kernel's config turns it on by default).
fn scalable_mode() -> Option<String> {
    const SMTS: u64 = 1 << 43;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w.starts_with("intel_iommu=") && w.split([',', '=']).any(|o| o == "sm_off")) {
        return None;
    }
    let units = std::fs::read_dir("/sys/class/iommu").ok()?;
    units.flatten().find_map(|u| {
        let ecap = std::fs::read_to_string(u.path().join("intel-iommu/ecap")).ok()?;
        let ecap = u64::from_str_radix(ecap.trim().trim_start_matches("0x"), 16).ok()?;
        (ecap & SMTS != 0).then(|| format!("{} ecap {ecap:#x} has SMTS", u.file_name().to_string_lossy()))
    })
}

/// An opened VFIO device and the IOMMU context it is attached to.
#[derive(Debug)]
pub struct Device {
    /// PCI address.
    pub pci: String,
    /// The device fd.
    pub fd: File,
    /// Where its DMA mappings live.
    pub iommu: Iommu,
    /// Which interface that is.
    pub api: IommuApi,
    config_offset: u64,
}

impl Device {
    /// Binds `pci` to vfio-pci and opens it through `api` (`Auto` resolved here).
    pub fn open(pci: &str, api: IommuApi) -> Result<Self, String> {
        Self::open_with(pci, api, &|_| Ok(()))
    }

    /// [`Device::open`], calling `premap` on the IOMMU context before the
    /// device is attached to it (iommufd: the IOAS already holds those
    /// mappings when its domain is created and attached, which is what an
    /// adopted persistent device needs to switch from its frozen domain).
    pub fn open_with(pci: &str, api: IommuApi, premap: &dyn Fn(&Iommu) -> Result<(), String>) -> Result<Self, String> {
        bind_vfio_pci(pci)?;
        let api = resolve(api);
        let (fd, iommu) = match api {
            IommuApi::Iommufd => open_iommufd(pci, premap)?,
            _ => {
                let (fd, iommu) = open_type1(pci)?;
                premap(&iommu)?;
                (fd, iommu)
            }
        };
        let mut dev = Self { pci: pci.to_string(), fd, iommu, api, config_offset: 0 };
        dev.config_offset = dev.region_info(sys::VFIO_PCI_CONFIG_REGION_INDEX)?.offset;
        Ok(dev)
    }

    /// A device whose fds an fd keeper held (see `keeper`), taken back:
    /// bound to `iommufd` and attached to `hwpt` in `ioas` as it was.
    pub fn from_kept(pci: &str, fd: File, iommufd: File, (ioas, devid, hwpt): (u32, u32, u32)) -> Result<Self, String> {
        let iommu = Iommu::Iommufd { iommufd, ioas, devid, hwpt };
        let mut dev = Self { pci: pci.to_string(), fd, iommu, api: IommuApi::Iommufd, config_offset: 0 };
        dev.config_offset = dev.region_info(sys::VFIO_PCI_CONFIG_REGION_INDEX)?.offset;
        Ok(dev)
    }

    /// The iommufd and the (IOAS, device, HWPT) ids, for an fd keeper
    /// (`None` through the type1 container).
    pub fn iommufd_parts(&self) -> Option<(&File, (u32, u32, u32))> {
        match &self.iommu {
            Iommu::Iommufd { iommufd, ioas, devid, hwpt } => Some((iommufd, (*ioas, *devid, *hwpt))),
            Iommu::Type1 { .. } => None,
        }
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for region `index`.
    pub fn region_info(&self, index: u32) -> Result<sys::VfioRegionInfo, String> {
        let mut info =
            sys::VfioRegionInfo { argsz: sys::argsz::<sys::VfioRegionInfo>(), index, ..Default::default() };
        let what = format!("{}: VFIO_DEVICE_GET_REGION_INFO {index}", self.pci);
        ioctl_ptr(&self.fd, sys::VFIO_DEVICE_GET_REGION_INFO, &mut info, &what)?;
        Ok(info)
    }

    /// Reads a 16-bit config-space register.
    pub fn config_read16(&self, reg: u64) -> Result<u16, String> {
        let mut b = [0u8; 2];
        self.fd
            .read_exact_at(&mut b, self.config_offset + reg)
            .map_err(|e| format!("{}: config read at {reg:#x}: {e}", self.pci))?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes a 16-bit config-space register.
    pub fn config_write16(&self, reg: u64, val: u16) -> Result<(), String> {
        self.fd
            .write_all_at(&val.to_le_bytes(), self.config_offset + reg)
            .map_err(|e| format!("{}: config write {val:#x} at {reg:#x}: {e}", self.pci))
    }

    /// Routes MSI-X vector `vector` to `eventfd` (`VFIO_DEVICE_SET_IRQS`,
    /// trigger action): vfio-pci enables MSI-X on the device if needed and
    /// signals the eventfd from the host interrupt. `None` tears the
    /// trigger down (and MSI-X with it once no vector has one).
    pub fn set_msix_trigger(&self, vector: u32, eventfd: Option<RawFd>) -> Result<(), String> {
        let mut set = sys::VfioIrqSet1 {
            argsz: sys::argsz::<sys::VfioIrqSet1>(),
            flags: sys::VFIO_IRQ_SET_ACTION_TRIGGER | sys::VFIO_IRQ_SET_DATA_EVENTFD,
            index: sys::VFIO_PCI_MSIX_IRQ_INDEX,
            start: vector,
            count: 1,
            fd: eventfd.unwrap_or(-1),
        };
        let what = format!("{}: VFIO_DEVICE_SET_IRQS MSI-X vector {vector} {}", self.pci, if eventfd.is_some() { "-> eventfd" } else { "off" });
        ioctl_ptr(&self.fd, sys::VFIO_DEVICE_SET_IRQS, &mut set, &what).map(|_| ())
    }

    /// Sets or clears bus master (and sets memory space) in PCI COMMAND.
    pub fn set_bus_master(&self, on: bool) -> Result<(), String> {
        const COMMAND: u64 = 0x4;
        const MEMORY: u16 = 1 << 1;
        const MASTER: u16 = 1 << 2;
        let cmd = self.config_read16(COMMAND)? | MEMORY;
        self.config_write16(COMMAND, if on { cmd | MASTER } else { cmd & !MASTER })
    }
}

fn open_type1(pci: &str) -> Result<(File, Iommu), String> {
    let container = open_rw(Path::new("/dev/vfio/vfio"))?;
    let v = ioctl_val(&container, sys::VFIO_GET_API_VERSION, 0, "/dev/vfio/vfio: VFIO_GET_API_VERSION")?;
    if v != sys::VFIO_API_VERSION {
        return Err(format!("/dev/vfio/vfio: API version {v}, expected {}", sys::VFIO_API_VERSION));
    }
    let ext = sys::VFIO_TYPE1V2_IOMMU;
    if ioctl_val(&container, sys::VFIO_CHECK_EXTENSION, ext, "/dev/vfio/vfio: VFIO_CHECK_EXTENSION")? != 1 {
        return Err("/dev/vfio/vfio: no VFIO_TYPE1v2_IOMMU support".into());
    }
    let gpath = group_path(pci)?;
    let g = gpath.display();
    let group = open_node(&gpath)?;
    let mut status = sys::VfioGroupStatus { argsz: sys::argsz::<sys::VfioGroupStatus>(), flags: 0 };
    ioctl_ptr(&group, sys::VFIO_GROUP_GET_STATUS, &mut status, &format!("{g}: VFIO_GROUP_GET_STATUS"))?;
    if status.flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
        return Err(format!("{g}: group not viable (another device in it is bound to a host driver)"));
    }
    let mut cfd: i32 = container.as_raw_fd();
    ioctl_ptr(&group, sys::VFIO_GROUP_SET_CONTAINER, &mut cfd, &format!("{g}: VFIO_GROUP_SET_CONTAINER"))?;
    ioctl_val(&container, sys::VFIO_SET_IOMMU, ext, "/dev/vfio/vfio: VFIO_SET_IOMMU type1v2")?;
    let name = std::ffi::CString::new(pci).map_err(|e| format!("{pci}: {e}"))?;
    // SAFETY: VFIO_GROUP_GET_DEVICE_FD takes a NUL-terminated device name that
    // the kernel only reads; `name` outlives the call.
    let fd = unsafe {
        ioctl(group.as_raw_fd(), sys::VFIO_GROUP_GET_DEVICE_FD, name.as_ptr() as libc::c_ulong, &format!("{g}: VFIO_GROUP_GET_DEVICE_FD {pci}"))?
    };
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    let dev = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    Ok((dev, Iommu::Type1 { container, group }))
}

fn open_iommufd(pci: &str, premap: &dyn Fn(&Iommu) -> Result<(), String>) -> Result<(File, Iommu), String> {
    let iommufd = open_rw(Path::new("/dev/iommu"))?;
    let mut cdev = Err(String::new());
    let _ = wait_for(&format!("{pci}: vfio-dev/vfioN in sysfs"), || {
        cdev = cdev_path(pci);
        cdev.is_ok()
    });
    let cdev = cdev?;
    let c = cdev.display();
    let dev = open_node(&cdev)?;
    let mut bind = sys::VfioDeviceBindIommufd {
        argsz: sys::argsz::<sys::VfioDeviceBindIommufd>(),
        flags: 0,
        iommufd: iommufd.as_raw_fd(),
        out_devid: 0,
    };
    ioctl_ptr(&dev, sys::VFIO_DEVICE_BIND_IOMMUFD, &mut bind, &format!("{c}: VFIO_DEVICE_BIND_IOMMUFD"))?;
    let mut alloc = sys::IommuIoasAlloc { size: sys::argsz::<sys::IommuIoasAlloc>(), ..Default::default() };
    ioctl_ptr(&iommufd, sys::IOMMU_IOAS_ALLOC, &mut alloc, "/dev/iommu: IOMMU_IOAS_ALLOC")?;
    let ioas = alloc.out_ioas_id;
    let mut iommu = Iommu::Iommufd { iommufd, ioas, devid: bind.out_devid, hwpt: 0 };
    premap(&iommu)?;
    // An explicit HWPT, not the IOAS: iommufd fills it with the IOAS's
    // mappings before the device is attached to it (an automatic domain is
    // attached empty first), so an adopted persistent device switches from
    // its frozen domain straight to identical mappings.
    let Iommu::Iommufd { iommufd, .. } = &iommu else { unreachable!("built above") };
    let mut hwpt = sys::IommuHwptAlloc {
        size: sys::argsz::<sys::IommuHwptAlloc>(),
        dev_id: bind.out_devid,
        pt_id: ioas,
        ..Default::default()
    };
    ioctl_ptr(iommufd, sys::IOMMU_HWPT_ALLOC, &mut hwpt, &format!("/dev/iommu: IOMMU_HWPT_ALLOC on ioas {ioas}"))?;
    let pt = hwpt.out_hwpt_id;
    let mut attach = sys::VfioDeviceAttachIommufdPt {
        argsz: sys::argsz::<sys::VfioDeviceAttachIommufdPt>(),
        flags: 0,
        pt_id: pt,
        pasid: 0,
    };
    let what = format!("{c}: VFIO_DEVICE_ATTACH_IOMMUFD_PT hwpt {pt} (ioas {ioas})");
    ioctl_ptr(&dev, sys::VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut attach, &what)?;
    if let Iommu::Iommufd { hwpt, .. } = &mut iommu {
        *hwpt = pt;
    }
    Ok((dev, iommu))
}

/// A BAR mapped into this process; 32-bit volatile register access.
#[derive(Debug)]
pub struct Bar {
    ptr: *mut u8,
    len: usize,
    name: String,
}

// SAFETY: the mapping is MMIO owned by this struct; all access is through
// volatile 32-bit reads/writes, which the device serialises itself.
unsafe impl Send for Bar {}
// SAFETY: as above; `&Bar` only allows volatile register access.
unsafe impl Sync for Bar {}

impl Bar {
    /// mmaps region `index` of `dev` (must support mmap).
    pub fn map(dev: &Device, index: u32) -> Result<Self, String> {
        let info = dev.region_info(index)?;
        let name = format!("{} BAR{index}", dev.pci);
        if info.flags & sys::VFIO_REGION_INFO_FLAG_MMAP == 0 || info.size == 0 {
            return Err(format!("{name}: not mmap-able (flags {:#x}, size {:#x})", info.flags, info.size));
        }
        let len = info.size as usize;
        // SAFETY: a fresh shared mapping of the device fd at the region's
        // offset; the kernel validates offset and length.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                dev.fd.as_raw_fd(),
                info.offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("{name}: mmap {len:#x} bytes: {}", std::io::Error::last_os_error()));
        }
        Ok(Self { ptr: ptr.cast(), len, name })
    }

    fn check(&self, off: usize) {
        assert!(off & 3 == 0 && off + 4 <= self.len, "{}: register {off:#x} outside {:#x}", self.name, self.len);
    }

    /// Reads the 32-bit register at `off`.
    pub fn read32(&self, off: usize) -> u32 {
        self.check(off);
        // SAFETY: `off` is aligned and inside the live mapping (checked above).
        unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u32>()) }
    }

    /// Writes the 32-bit register at `off`.
    pub fn write32(&self, off: usize, val: u32) {
        self.check(off);
        // SAFETY: `off` is aligned and inside the live mapping (checked above).
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), val) }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping created in `map`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
