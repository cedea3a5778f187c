/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pkernfs: the boundary between the thin C VFS shim (vfs.c, carveout.c) and
 * the Rust filesystem (ops.rs). 7.3 has no Rust abstraction for writing a
 * filesystem, so the shim owns the VFS objects (super_block, inode, dentry,
 * file) and forwards every operation to one of the pkernfs_rs_* functions
 * below, which run under pkernfs' global mutex on the carve-out image.
 *
 * Every pkernfs_rs_* function returns 0 (or a length) on success and a
 * negative errno on failure. Inode numbers are the on-memory format's.
 */
#ifndef _FS_PKERNFS_VFS_H
#define _FS_PKERNFS_VFS_H

#include <linux/types.h>

/* The format's root directory inode number (format ROOT_INO). */
#define PKERNFS_ROOT_INO 1

/* Format `Kind` as seen by C. */
enum pkernfs_kind {
	PKERNFS_FILE = 0,
	PKERNFS_DIR = 1,
	PKERNFS_IOMMU_ROOT = 2,
	PKERNFS_IOMMU_DOMAIN = 3,
	PKERNFS_IOMMU_PASID = 4,
};

/* Format `Stat` as seen by C; filled by pkernfs_rs_stat(). */
struct pkernfs_stat {
	u64 size;
	u64 mtime_ns;
	u64 blocks;
	u32 ino;
	u32 nlink;
	u16 mode;
	u8 kind;
	u8 pad[5];
};

/* Rust (ops.rs). */
int pkernfs_rs_mount(u64 now_ns);
int pkernfs_rs_stat(u32 ino, struct pkernfs_stat *st);
int pkernfs_rs_lookup(u32 dir, const u8 *name, size_t len, u32 *ino);
int pkernfs_rs_create(u32 dir, const u8 *name, size_t len, u8 kind, u16 mode,
		      u64 now_ns, u32 *ino);
int pkernfs_rs_unlink(u32 dir, const u8 *name, size_t len);
int pkernfs_rs_rmdir(u32 dir, const u8 *name, size_t len);
int pkernfs_rs_rename(u32 odir, const u8 *oname, size_t olen, u32 ndir,
		      const u8 *nname, size_t nlen);
/* 1: one entry (ino, kind, name, name_len) and pos advanced; 0: end. */
int pkernfs_rs_readdir(u32 dir, u64 *pos, u32 *ino, u8 *kind, u8 *name,
		       size_t *name_len);
ssize_t pkernfs_rs_read(u32 ino, u64 off, void __user *buf, size_t len);
ssize_t pkernfs_rs_write(u32 ino, u64 off, const void __user *buf, size_t len,
			 u64 now_ns);
int pkernfs_rs_set_size(u32 ino, u64 size, u64 now_ns);
/* Physical address and contiguous length of the file's bytes at off. */
int pkernfs_rs_map(u32 ino, u64 off, u64 *phys, u64 *len);
/* The file's persistent pin (format FLAG_PINNED), kept across kexec. */
int pkernfs_rs_set_pinned(u32 ino, bool pinned);

/* C (vfs.c), called from Rust (iommu.rs): wall-clock ns; KUnit skip. */
u64 pkernfs_now_ns(void);
void pkernfs_kunit_skip(const char *why);

/* C (carveout.c, vfs.c), called from Rust's module init. */
void *pkernfs_carveout_map(u64 *base, u64 *size);
int pkernfs_vfs_register(void);

#endif /* _FS_PKERNFS_VFS_H */
