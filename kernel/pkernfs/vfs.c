// SPDX-License-Identifier: GPL-2.0
/*
 * pkernfs VFS shim: the thin C layer 7.3 needs because it has no Rust
 * abstraction for writing a filesystem. It owns the VFS objects and keeps
 * them in sync with the image; every decision and every byte of metadata is
 * the Rust side's (ops.rs, under its global mutex). Inodes carry no private
 * state: i_ino is the format's inode number and the inode's fields are
 * refreshed from pkernfs_rs_stat() after each operation that changes them.
 *
 * File data is never in the page cache: read/write copy straight between
 * the user buffer and the carve-out, and mmap maps the carve-out's pages
 * at fault time (VM_PFNMAP, shared only; they have no struct page), 2 MiB
 * at a time where possible.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/mm.h>
#include <linux/namei.h>
#include <linux/pagemap.h>
#include <linux/pkernfs.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>
#include <linux/xarray.h>
#if IS_ENABLED(CONFIG_PKERNFS_KUNIT_TEST)
#include <kunit/test.h>
#include <kunit/test-bug.h>
#endif

#include "vfs.h"

#define PKERNFS_MAGIC 0x706b6673 /* "pkfs" */

static const struct inode_operations pk_dir_iops, pk_file_iops, pk_iommu_iops;
static const struct file_operations pk_dir_fops, pk_file_fops, pk_iommu_fops;

static u64 pk_now(void)
{
	return ktime_get_real_ns();
}

u64 pkernfs_now_ns(void)
{
	return pk_now();
}

/*
 * IOMMU files (iommu/root-pgtables, iommu/dom-<id>; include/linux/pkernfs.h)
 * are the IOMMU driver's: shown as read-only regular files (mode & 0444),
 * readable, never written, truncated or mapped through the VFS; unlink is
 * refused (EBUSY) because the format pins them.
 */
static bool pk_is_iommu(u8 kind)
{
	return kind == PKERNFS_IOMMU_ROOT || kind == PKERNFS_IOMMU_DOMAIN || kind == PKERNFS_IOMMU_PASID;
}

static void pk_apply(struct inode *inode, const struct pkernfs_stat *st)
{
	struct timespec64 ts = ns_to_timespec64(st->mtime_ns);
	umode_t type = st->kind == PKERNFS_DIR ? S_IFDIR : S_IFREG;

	inode->i_mode = type | (st->mode & (pk_is_iommu(st->kind) ? 0444 : 07777));
	set_nlink(inode, st->nlink);
	i_size_write(inode, st->size);
	inode->i_blocks = DIV_ROUND_UP(st->size, 512);
	inode_set_mtime_to_ts(inode, ts);
	inode_set_ctime_to_ts(inode, ts);
	inode_set_atime_to_ts(inode, ts);
}

/* Re-reads the inode from the image; an inode that is gone loses its links. */
static void pk_refresh(struct inode *inode)
{
	struct pkernfs_stat st;

	if (!inode)
		return;
	if (pkernfs_rs_stat(inode->i_ino, &st) == 0)
		pk_apply(inode, &st);
	else
		clear_nlink(inode);
}

static struct inode *pk_iget(struct super_block *sb, u32 ino)
{
	struct pkernfs_stat st;
	struct inode *inode;
	int err;

	inode = iget_locked(sb, ino);
	if (!inode)
		return ERR_PTR(-ENOMEM);
	if (!(inode_state_read_once(inode) & I_NEW))
		return inode;
	err = pkernfs_rs_stat(ino, &st);
	if (err) {
		iget_failed(inode);
		return ERR_PTR(err);
	}
	pk_apply(inode, &st);
	if (S_ISDIR(inode->i_mode)) {
		inode->i_op = &pk_dir_iops;
		inode->i_fop = &pk_dir_fops;
	} else if (pk_is_iommu(st.kind)) {
		inode->i_op = &pk_iommu_iops;
		inode->i_fop = &pk_iommu_fops;
	} else {
		inode->i_op = &pk_file_iops;
		inode->i_fop = &pk_file_fops;
	}
	unlock_new_inode(inode);
	return inode;
}

static struct dentry *pk_lookup(struct inode *dir, struct dentry *dentry, unsigned int flags)
{
	struct inode *inode = NULL;
	u32 ino;
	int err;

	err = pkernfs_rs_lookup(dir->i_ino, dentry->d_name.name, dentry->d_name.len, &ino);
	if (err && err != -ENOENT)
		return ERR_PTR(err);
	if (!err)
		inode = pk_iget(dir->i_sb, ino);
	return d_splice_alias(inode, dentry);
}

static int pk_new(struct inode *dir, struct dentry *dentry, u8 kind, umode_t mode)
{
	struct inode *inode;
	u32 ino;
	int err;

	err = pkernfs_rs_create(dir->i_ino, dentry->d_name.name, dentry->d_name.len, kind,
				mode & 07777, pk_now(), &ino);
	if (err)
		return err;
	inode = pk_iget(dir->i_sb, ino);
	if (IS_ERR(inode))
		return PTR_ERR(inode);
	d_instantiate(dentry, inode);
	pk_refresh(dir);
	return 0;
}

static int pk_create(struct mnt_idmap *idmap, struct inode *dir, struct dentry *dentry, umode_t mode)
{
	return pk_new(dir, dentry, PKERNFS_FILE, mode);
}

static struct dentry *pk_mkdir(struct mnt_idmap *idmap, struct inode *dir, struct dentry *dentry,
			       umode_t mode)
{
	return ERR_PTR(pk_new(dir, dentry, PKERNFS_DIR, mode));
}

/*
 * DMA pins (include/linux/pkernfs.h): inode number -> number of iommufd
 * mappings of the file's memory, under pk_dma_lock. The first pin also sets
 * the inode's persistent pin in the image (FLAG_PINNED) and the last unpin
 * clears it, so a file still mapped at kexec stays pinned in the next
 * kernel (a frozen IOMMU domain may map it) until an owner maps it again
 * and lets it go.
 */
static DEFINE_XARRAY(pk_dma_pins);
static DEFINE_MUTEX(pk_dma_lock);

static bool pk_dma_pinned(struct inode *inode)
{
	return xa_load(&pk_dma_pins, inode->i_ino) != NULL;
}

/* Its pages are mapped by a process or an IOMMU: freeing them would be a use-after-free. */
static bool pk_in_use(struct inode *inode)
{
	return mapping_mapped(inode->i_mapping) || pk_dma_pinned(inode);
}

bool pkernfs_file_is(struct file *file)
{
	return file && file->f_op == &pk_file_fops;
}

int pkernfs_file_dma_pin(struct file *file, u64 off, u64 len, phys_addr_t *phys)
{
	struct inode *inode = file_inode(file);
	u64 p, contig;
	void *old;
	int err;

	if (!pkernfs_file_is(file) || !len)
		return -EINVAL;
	err = pkernfs_rs_map(inode->i_ino, off, &p, &contig);
	if (err)
		return err;
	if (contig < len) {
		pr_warn("pkernfs: inode %llu: [%#llx, +%#llx) is not physically contiguous (%#llx bytes): cannot map it for DMA\n",
			(u64)inode->i_ino, off, len, contig);
		return -EINVAL;
	}
	mutex_lock(&pk_dma_lock);
	old = xa_load(&pk_dma_pins, inode->i_ino);
	if (!old)
		err = pkernfs_rs_set_pinned(inode->i_ino, true);
	if (!err)
		err = xa_err(xa_store(&pk_dma_pins, inode->i_ino,
				      xa_mk_value((old ? xa_to_value(old) : 0) + 1), GFP_KERNEL));
	if (err && !old)
		pkernfs_rs_set_pinned(inode->i_ino, false);
	mutex_unlock(&pk_dma_lock);
	if (err)
		return err;
	*phys = p;
	return 0;
}

void pkernfs_file_dma_unpin(struct file *file)
{
	struct inode *inode = file_inode(file);
	unsigned long n;
	void *old;

	mutex_lock(&pk_dma_lock);
	old = xa_load(&pk_dma_pins, inode->i_ino);
	n = old ? xa_to_value(old) : 0;
	if (n > 1) {
		xa_store(&pk_dma_pins, inode->i_ino, xa_mk_value(n - 1), GFP_KERNEL);
	} else {
		xa_erase(&pk_dma_pins, inode->i_ino);
		pkernfs_rs_set_pinned(inode->i_ino, false);
	}
	mutex_unlock(&pk_dma_lock);
}

static int pk_unlink(struct inode *dir, struct dentry *dentry)
{
	struct inode *inode = d_inode(dentry);
	int err;

	if (inode->i_nlink <= 1 && pk_in_use(inode))
		return -EBUSY;
	err = pkernfs_rs_unlink(dir->i_ino, dentry->d_name.name, dentry->d_name.len);
	if (err)
		return err;
	pk_refresh(inode);
	pk_refresh(dir);
	return 0;
}

static int pk_rmdir(struct inode *dir, struct dentry *dentry)
{
	int err = pkernfs_rs_rmdir(dir->i_ino, dentry->d_name.name, dentry->d_name.len);

	if (err)
		return err;
	clear_nlink(d_inode(dentry));
	pk_refresh(dir);
	return 0;
}

static int pk_rename(struct mnt_idmap *idmap, struct inode *odir, struct dentry *odentry,
		     struct inode *ndir, struct dentry *ndentry, unsigned int flags)
{
	struct inode *victim = d_inode(ndentry);
	int err;

	if (flags & ~RENAME_NOREPLACE)
		return -EINVAL;
	if (victim && !S_ISDIR(victim->i_mode) && victim->i_nlink <= 1 && pk_in_use(victim))
		return -EBUSY;
	err = pkernfs_rs_rename(odir->i_ino, odentry->d_name.name, odentry->d_name.len, ndir->i_ino,
				ndentry->d_name.name, ndentry->d_name.len);
	if (err)
		return err;
	pk_refresh(victim);
	pk_refresh(odir);
	pk_refresh(ndir);
	pk_refresh(d_inode(odentry));
	return 0;
}

static int pk_setattr(struct mnt_idmap *idmap, struct dentry *dentry, struct iattr *attr)
{
	struct inode *inode = d_inode(dentry);
	int err = setattr_prepare(idmap, dentry, attr);

	if (err)
		return err;
	if (attr->ia_valid & ATTR_SIZE) {
		if (attr->ia_size < i_size_read(inode) && pk_in_use(inode))
			return -EBUSY;
		err = pkernfs_rs_set_size(inode->i_ino, attr->ia_size, pk_now());
		if (err)
			return err;
		pk_refresh(inode);
		attr->ia_valid &= ~ATTR_SIZE;
	}
	/* Owner and in-memory times; the format persists mode bits at create. */
	setattr_copy(idmap, inode, attr);
	return 0;
}

static int pk_iterate(struct file *file, struct dir_context *ctx)
{
	struct inode *dir = file_inode(file);
	u8 name[NAME_MAX + 1];
	size_t len;
	u64 pos;
	u32 ino;
	u8 kind;
	int ret;

	if (!dir_emit_dots(file, ctx))
		return 0;
	for (;;) {
		pos = ctx->pos - 2;
		ret = pkernfs_rs_readdir(dir->i_ino, &pos, &ino, &kind, name, &len);
		if (ret <= 0)
			return ret;
		if (!dir_emit(ctx, name, len, ino, kind == PKERNFS_DIR ? DT_DIR : DT_REG))
			return 0;
		ctx->pos = pos + 2;
	}
}

static ssize_t pk_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	ssize_t n;

	if (*ppos < 0)
		return -EINVAL;
	n = pkernfs_rs_read(file_inode(file)->i_ino, *ppos, buf, len);
	if (n > 0)
		*ppos += n;
	return n;
}

static ssize_t pk_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	struct inode *inode = file_inode(file);
	loff_t pos = (file->f_flags & O_APPEND) ? i_size_read(inode) : *ppos;
	ssize_t n;

	if (pos < 0)
		return -EINVAL;
	inode_lock(inode);
	n = pkernfs_rs_write(inode->i_ino, pos, buf, len, pk_now());
	if (n > 0)
		*ppos = pos + n;
	pk_refresh(inode);
	inode_unlock(inode);
	return n;
}

/*
 * Shared mmap: the carve-out's pages (no struct page) are inserted at fault
 * time, 2 MiB at a time (one PMD) where the 2 MiB-aligned virtual range falls
 * on a 2 MiB-aligned file offset backed by one contiguous, 2 MiB-aligned
 * physical extent (the format allocates file data in such chunks, and the
 * carve-out base must be 2 MiB aligned too), else 4 KiB at a time.
 * get_unmapped_area aligns mappings of >= 2 MiB so that this can happen.
 *
 * Counters (debugfs, /sys/kernel/debug/pkernfs/): pmd_faults and pte_faults,
 * the mappings installed of each size, so tests can see which was used
 * (smaps cannot: page walks skip VM_PFNMAP areas).
 *
 * Mapped files cannot lose their pages under the mapping: unlink of the last
 * link, rename over it and shrinking are refused with EBUSY while
 * mapping_mapped() (every VMA of the file is on its i_mmap tree).
 */
static atomic_t pk_pmd_faults, pk_pte_faults;

/* Physical address of the file bytes at off, if `size` of them are contiguous there and aligned to `size`. */
static bool pk_fault_phys(struct inode *inode, u64 off, unsigned long size, u64 *phys)
{
	u64 len;

	return !pkernfs_rs_map(inode->i_ino, off, phys, &len) && len >= size && IS_ALIGNED(*phys, size);
}

/* File offset of user address addr in vma. */
static u64 pk_fault_off(struct vm_area_struct *vma, unsigned long addr)
{
	return ((u64)vma->vm_pgoff << PAGE_SHIFT) + (addr - vma->vm_start);
}

static vm_fault_t pk_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	unsigned long addr = vmf->address & PAGE_MASK;
	vm_fault_t ret;
	u64 phys;

	if (!pk_fault_phys(file_inode(vma->vm_file), pk_fault_off(vma, addr), PAGE_SIZE, &phys))
		return VM_FAULT_SIGBUS;
	ret = vmf_insert_pfn(vma, addr, PHYS_PFN(phys));
	if (ret == VM_FAULT_NOPAGE)
		atomic_inc(&pk_pte_faults);
	return ret;
}

static vm_fault_t pk_huge_fault(struct vm_fault *vmf, unsigned int order)
{
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	struct vm_area_struct *vma = vmf->vma;
	unsigned long addr = vmf->address & PMD_MASK;
	vm_fault_t ret;
	u64 off, phys;

	if (order != PMD_ORDER || addr < vma->vm_start || addr + PMD_SIZE > vma->vm_end)
		return VM_FAULT_FALLBACK;
	off = pk_fault_off(vma, addr);
	if (!IS_ALIGNED(off, PMD_SIZE))
		return VM_FAULT_FALLBACK;
	if (!pk_fault_phys(file_inode(vma->vm_file), off, PMD_SIZE, &phys))
		return VM_FAULT_FALLBACK;
	ret = vmf_insert_pfn_pmd(vmf, PHYS_PFN(phys), vmf->flags & FAULT_FLAG_WRITE);
	if (ret == VM_FAULT_NOPAGE)
		atomic_inc(&pk_pmd_faults);
	return ret;
#else
	return VM_FAULT_FALLBACK;
#endif
}

static const struct vm_operations_struct pk_vm_ops = {
	.fault = pk_fault,
	.huge_fault = pk_huge_fault,
};

static int pk_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct inode *inode = file_inode(file);
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;

	/* Private mappings would need copy-on-write of pages without struct page. */
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (off + (vma->vm_end - vma->vm_start) > round_up(i_size_read(inode), PAGE_SIZE))
		return -ENXIO;
	vm_flags_set(vma, VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP | VM_HUGEPAGE);
	vma->vm_ops = &pk_vm_ops;
	return 0;
}

static unsigned long pk_get_unmapped_area(struct file *file, unsigned long addr, unsigned long len,
					  unsigned long pgoff, unsigned long flags)
{
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	return thp_get_unmapped_area(file, addr, len, pgoff, flags);
#else
	return mm_get_unmapped_area(file, addr, len, pgoff, flags);
#endif
}
static const struct inode_operations pk_dir_iops = {
	.lookup = pk_lookup,
	.create = pk_create,
	.mkdir = pk_mkdir,
	.unlink = pk_unlink,
	.rmdir = pk_rmdir,
	.rename = pk_rename,
	.setattr = pk_setattr,
};

static const struct inode_operations pk_file_iops = {
	.setattr = pk_setattr,
};

static int pk_iommu_setattr(struct mnt_idmap *idmap, struct dentry *dentry, struct iattr *attr)
{
	if (attr->ia_valid & (ATTR_SIZE | ATTR_MODE))
		return -EPERM;
	return pk_setattr(idmap, dentry, attr);
}

static const struct inode_operations pk_iommu_iops = {
	.setattr = pk_iommu_setattr,
};

static const struct file_operations pk_iommu_fops = {
	.llseek = generic_file_llseek,
	.read = pk_read,
	.fsync = noop_fsync,
};

static const struct file_operations pk_dir_fops = {
	.llseek = generic_file_llseek,
	.read = generic_read_dir,
	.iterate_shared = pk_iterate,
	.fsync = noop_fsync,
};

static const struct file_operations pk_file_fops = {
	.llseek = generic_file_llseek,
	.read = pk_read,
	.write = pk_write,
	.mmap = pk_mmap,
	.get_unmapped_area = pk_get_unmapped_area,
	.fsync = noop_fsync,
};

static const struct super_operations pk_sops = {
	.statfs = simple_statfs,
};

static int pk_fill_super(struct super_block *sb, struct fs_context *fc)
{
	struct inode *root;
	int err;

	err = pkernfs_rs_mount(pk_now());
	if (err)
		return err;
	sb->s_maxbytes = MAX_LFS_FILESIZE;
	sb->s_blocksize = PAGE_SIZE;
	sb->s_blocksize_bits = PAGE_SHIFT;
	sb->s_magic = PKERNFS_MAGIC;
	sb->s_op = &pk_sops;
	sb->s_time_gran = 1;
	root = pk_iget(sb, PKERNFS_ROOT_INO);
	if (IS_ERR(root))
		return PTR_ERR(root);
	sb->s_root = d_make_root(root);
	return sb->s_root ? 0 : -ENOMEM;
}

static int pk_get_tree(struct fs_context *fc)
{
	/* One carve-out, one image: every mount shares one super_block. */
	return get_tree_single(fc, pk_fill_super);
}

static const struct fs_context_operations pk_context_ops = {
	.get_tree = pk_get_tree,
};

static int pk_init_fs_context(struct fs_context *fc)
{
	fc->ops = &pk_context_ops;
	return 0;
}

static struct file_system_type pk_fs_type = {
	.owner = THIS_MODULE,
	.name = "pkernfs",
	.init_fs_context = pk_init_fs_context,
	.kill_sb = kill_anon_super,
};

#if IS_ENABLED(CONFIG_PKERNFS_KUNIT_TEST)
/* For Rust KUnit tests: 7.3's kernel::kunit has no way to skip a test. */
void pkernfs_kunit_skip(const char *why)
{
	struct kunit *test = kunit_get_current_test();

	if (test)
		kunit_mark_skipped(test, "%s", why);
}
#endif

int pkernfs_vfs_register(void)
{
	struct dentry *d = debugfs_create_dir("pkernfs", NULL);

	debugfs_create_atomic_t("pmd_faults", 0444, d, &pk_pmd_faults);
	debugfs_create_atomic_t("pte_faults", 0444, d, &pk_pte_faults);
	return register_filesystem(&pk_fs_type);
}
