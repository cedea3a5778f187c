//! Raw VFIO and iommufd uAPI: structs and ioctl numbers, hand-written from
//! the kernel's `include/uapi/linux/vfio.h` and `include/uapi/linux/iommufd.h`
//! (linux-source-7.3; bookworm's 6.1 headers lack iommufd). Only what the
//! engine uses. Every ioctl here is `_IO(';', nr)`: VFIO and iommufd encode
//! no size or direction in the number, the structs carry `argsz`/`size`.

/// `VFIO_TYPE` and `IOMMUFD_TYPE` are both `';'`.
const TYPE: u64 = b';' as u64;
/// `VFIO_BASE`.
const VFIO_BASE: u64 = 100;

/// `_IO(type, nr)` on every architecture that uses the generic encoding.
const fn io(nr: u64) -> u64 {
    (TYPE << 8) | nr
}

/// `VFIO_API_VERSION`.
pub const VFIO_API_VERSION: i32 = 0;
/// `VFIO_TYPE1v2_IOMMU`.
pub const VFIO_TYPE1V2_IOMMU: u64 = 3;

/// `VFIO_GET_API_VERSION`.
pub const VFIO_GET_API_VERSION: u64 = io(VFIO_BASE);
/// `VFIO_CHECK_EXTENSION`.
pub const VFIO_CHECK_EXTENSION: u64 = io(VFIO_BASE + 1);
/// `VFIO_SET_IOMMU`.
pub const VFIO_SET_IOMMU: u64 = io(VFIO_BASE + 2);
/// `VFIO_GROUP_GET_STATUS`.
pub const VFIO_GROUP_GET_STATUS: u64 = io(VFIO_BASE + 3);
/// `VFIO_GROUP_SET_CONTAINER`.
pub const VFIO_GROUP_SET_CONTAINER: u64 = io(VFIO_BASE + 4);
/// `VFIO_GROUP_GET_DEVICE_FD`.
pub const VFIO_GROUP_GET_DEVICE_FD: u64 = io(VFIO_BASE + 6);
/// `VFIO_DEVICE_GET_REGION_INFO`.
pub const VFIO_DEVICE_GET_REGION_INFO: u64 = io(VFIO_BASE + 8);
/// `VFIO_DEVICE_SET_IRQS`.
pub const VFIO_DEVICE_SET_IRQS: u64 = io(VFIO_BASE + 10);
/// `VFIO_IOMMU_MAP_DMA` (container fd).
pub const VFIO_IOMMU_MAP_DMA: u64 = io(VFIO_BASE + 13);
/// `VFIO_DEVICE_BIND_IOMMUFD` (device cdev fd).
pub const VFIO_DEVICE_BIND_IOMMUFD: u64 = io(VFIO_BASE + 18);
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` (device cdev fd).
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: u64 = io(VFIO_BASE + 19);

/// `IOMMU_IOAS_ALLOC` (`IOMMUFD_CMD_IOAS_ALLOC = 0x81`).
pub const IOMMU_IOAS_ALLOC: u64 = io(0x81);
/// `IOMMU_IOAS_MAP` (`IOMMUFD_CMD_IOAS_MAP = 0x85`).
pub const IOMMU_IOAS_MAP: u64 = io(0x85);
/// `IOMMU_IOAS_UNMAP` (`IOMMUFD_CMD_IOAS_UNMAP = 0x86`).
pub const IOMMU_IOAS_UNMAP: u64 = io(0x86);

/// `VFIO_GROUP_FLAGS_VIABLE`.
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;
/// `VFIO_DMA_MAP_FLAG_READ`.
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
/// `VFIO_DMA_MAP_FLAG_WRITE`.
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
/// `VFIO_REGION_INFO_FLAG_MMAP`.
pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
/// `IOMMU_IOAS_MAP_FIXED_IOVA`.
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
/// `IOMMU_IOAS_MAP_WRITEABLE`.
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
/// `IOMMU_IOAS_MAP_FILE` (`IOMMUFD_CMD_IOAS_MAP_FILE = 0x8f`): memfds
/// upstream, pkernfs files on our kernel.
pub const IOMMU_IOAS_MAP_FILE: u64 = io(0x8f);
/// `IOMMU_HWPT_ALLOC` (`IOMMUFD_CMD_HWPT_ALLOC = 0x89`).
pub const IOMMU_HWPT_ALLOC: u64 = io(0x89);
/// `IOMMU_OPTION` (`IOMMUFD_CMD_OPTION = 0x87`).
pub const IOMMU_OPTION: u64 = io(0x87);
/// `IOMMU_OPTION_PERSISTENT` (lulab kernel only): object = HWPT id (or a
/// device id: the HWPT it is attached to; GET on a device id reports it).
pub const IOMMU_OPTION_PERSISTENT: u32 = 2;
/// `IOMMU_OPTION_OP_SET`.
pub const IOMMU_OPTION_OP_SET: u16 = 0;
/// `IOMMU_OPTION_OP_GET`.
pub const IOMMU_OPTION_OP_GET: u16 = 1;
/// `IOMMU_IOAS_MAP_READABLE`.
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

/// `VFIO_PCI_BAR0_REGION_INDEX`.
pub const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
/// `VFIO_PCI_CONFIG_REGION_INDEX`.
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;

/// `VFIO_PCI_MSIX_IRQ_INDEX`.
pub const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;
/// `VFIO_IRQ_SET_DATA_EVENTFD`.
pub const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
/// `VFIO_IRQ_SET_ACTION_TRIGGER`.
pub const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

/// `struct vfio_irq_set` with one `__s32` of data (one eventfd).
#[repr(C)]
#[derive(Debug, Default)]
pub struct VfioIrqSet1 {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
    pub fd: i32,
}

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VfioGroupStatus {
    pub argsz: u32,
    pub flags: u32,
}

/// `struct vfio_region_info` (without capabilities).
#[repr(C)]
#[derive(Debug, Default)]
pub struct VfioRegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VfioDmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

/// `struct vfio_device_bind_iommufd` up to `out_devid`: the kernel's minimum
/// size (`offsetofend(out_devid)`), accepted by 6.x and 7.x alike. The later
/// `token_uuid_ptr` is only read with `VFIO_DEVICE_BIND_FLAG_TOKEN`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VfioDeviceBindIommufd {
    pub argsz: u32,
    pub flags: u32,
    pub iommufd: i32,
    pub out_devid: u32,
}

/// `struct vfio_device_attach_iommufd_pt` (with `pasid`, ignored without
/// `VFIO_DEVICE_ATTACH_PASID`; kernels before it read only up to `pt_id`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct VfioDeviceAttachIommufdPt {
    pub argsz: u32,
    pub flags: u32,
    pub pt_id: u32,
    pub pasid: u32,
}

/// `struct iommu_ioas_alloc`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuIoasAlloc {
    pub size: u32,
    pub flags: u32,
    pub out_ioas_id: u32,
}

/// `struct iommu_ioas_map`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuIoasMap {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub reserved: u32,
    pub user_va: u64,
    pub length: u64,
    pub iova: u64,
}

/// `struct iommu_ioas_unmap`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuIoasUnmap {
    pub size: u32,
    pub ioas_id: u32,
    pub iova: u64,
    pub length: u64,
}

/// `struct iommu_ioas_map_file`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuIoasMapFile {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub fd: i32,
    pub start: u64,
    pub length: u64,
    pub iova: u64,
}

/// `struct iommu_hwpt_alloc` (no driver data: `IOMMU_HWPT_DATA_NONE`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuHwptAlloc {
    pub size: u32,
    pub flags: u32,
    pub dev_id: u32,
    pub pt_id: u32,
    pub out_hwpt_id: u32,
    pub reserved: u32,
    pub data_type: u32,
    pub data_len: u32,
    pub data_uptr: u64,
    pub fault_id: u32,
    pub reserved2: u32,
}

/// `struct iommu_option`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct IommuOption {
    pub size: u32,
    pub option_id: u32,
    pub op: u16,
    pub reserved: u16,
    pub object_id: u32,
    pub val64: u64,
}

/// `size_of::<T>()` as the `u32` the uAPI's `argsz`/`size` fields want.
pub const fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_uapi() {
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_DEVICE_SET_IRQS, 0x3b6e);
        assert_eq!(VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
        assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
        assert_eq!(IOMMU_IOAS_ALLOC, 0x3b81);
        assert_eq!(IOMMU_IOAS_MAP, 0x3b85);
        assert_eq!(IOMMU_IOAS_MAP_FILE, 0x3b8f);
        assert_eq!(IOMMU_IOAS_UNMAP, 0x3b86);
        assert_eq!(std::mem::size_of::<IommuIoasUnmap>(), 24);
        assert_eq!(IOMMU_OPTION, 0x3b87);
        assert_eq!(IOMMU_HWPT_ALLOC, 0x3b89);
        assert_eq!(std::mem::size_of::<IommuHwptAlloc>(), 48);
        assert_eq!(std::mem::size_of::<IommuIoasMapFile>(), 40);
        assert_eq!(std::mem::size_of::<IommuOption>(), 24);
    }

    #[test]
    fn struct_sizes_match_the_uapi() {
        assert_eq!(argsz::<VfioRegionInfo>(), 32);
        assert_eq!(argsz::<VfioDmaMap>(), 32);
        assert_eq!(argsz::<VfioIrqSet1>(), 24);
        assert_eq!(argsz::<VfioDeviceBindIommufd>(), 16);
        assert_eq!(argsz::<VfioDeviceAttachIommufdPt>(), 16);
        assert_eq!(argsz::<IommuIoasAlloc>(), 12);
        assert_eq!(argsz::<IommuIoasMap>(), 40);
    }
}
