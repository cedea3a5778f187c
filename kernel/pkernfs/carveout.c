// SPDX-License-Identifier: GPL-2.0
/*
 * pkernfs carve-out: the RAM given to pkernfs on the command line.
 *
 *   memmap=64M!1G pkernfs=64M@1G
 *
 * `memmap=SIZE!BASE` turns the range into "Persistent Memory (legacy)"
 * (e820 type 12): not System RAM, never in memblock, so never in the
 * kernel's direct map and never handed to the page allocator.
 * `pkernfs=SIZE@BASE` (the RFC's `SIZE!BASE` is accepted too) donates that
 * range to pkernfs, which claims it in /proc/iomem as "pkernfs" (so the
 * legacy pmem driver cannot also expose it as /dev/pmem0) and memremaps it
 * write-back.
 *
 * pkernfs refuses a range that is System RAM or in the direct map: that is
 * what the next kernel sees when a kexec forgets `memmap=…!…` (with
 * `kexec -s` the e820 entry is not carried over), and the kernel may have
 * used those pages already.
 *
 * C because early command-line parsing (`__setup`) and the resource tree
 * have no Rust abstraction in 7.3.
 */
#include <linux/init.h>
#include <linux/io.h>
#include <linux/ioport.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/pfn.h>
#include <linux/pkernfs.h>
#include <linux/printk.h>

#include "vfs.h"

static u64 pk_base, pk_size;
/* The carve-out's mapping once pkernfs_carveout_map() succeeded. */
static void *pk_va;

static int __init pkernfs_setup(char *arg)
{
	char *end;
	u64 size = memparse(arg, &end);

	if (*end != '@' && *end != '!') {
		pr_err("pkernfs: pkernfs=%s: expected SIZE@BASE (e.g. 64M@1G)\n", arg);
		return 0;
	}
	pk_base = memparse(end + 1, &end);
	pk_size = size;
	return 1;
}
__setup("pkernfs=", pkernfs_setup);

void *pkernfs_carveout_map(u64 *base, u64 *size)
{
	u64 b = pk_base, s = pk_size;
	void *va;

	if (!s) {
		pr_info("pkernfs: no carve-out (pkernfs=SIZE@BASE not given); mounts will fail\n");
		return NULL;
	}
	if (!PAGE_ALIGNED(b) || !PAGE_ALIGNED(s)) {
		pr_err("pkernfs: carve-out [mem %#llx-%#llx] is not page aligned\n", b, b + s - 1);
		return NULL;
	}
	if (region_intersects(b, s, IORESOURCE_SYSTEM_RAM, IORES_DESC_NONE) != REGION_DISJOINT ||
	    pfn_range_is_mapped(PHYS_PFN(b), PHYS_PFN(b + s))) {
		pr_err("pkernfs: carve-out [mem %#llx-%#llx] is System RAM (memmap=%lluM!%#llx missing from the command line?): refusing to use it\n",
		       b, b + s - 1, s >> 20, b);
		return NULL;
	}
	if (!request_mem_region(b, s, "pkernfs"))
		pr_warn("pkernfs: carve-out [mem %#llx-%#llx] already claimed by another driver\n",
			b, b + s - 1);
	va = memremap(b, s, MEMREMAP_WB);
	if (!va) {
		pr_err("pkernfs: cannot memremap [mem %#llx-%#llx]\n", b, b + s - 1);
		return NULL;
	}
	pr_info("pkernfs: carve-out [mem %#llx-%#llx] %llu MiB: not System RAM, not in the direct map, memremapped WB\n",
		b, b + s - 1, s >> 20);
	pk_va = va;
	*base = b;
	*size = s;
	return va;
}

/*
 * The IOMMU driver asks these before pkernfs is initialised (adopting the
 * previous kernel's root table in init_dmars) and after (walking frozen
 * page tables): the range comes from the command line, the mapping from
 * pkernfs_carveout_map().
 */
bool pkernfs_carveout_contains(phys_addr_t phys, size_t len)
{
	return pk_size && len && phys >= pk_base && phys - pk_base < pk_size &&
	       len <= pk_size - (phys - pk_base);
}

void *pkernfs_carveout_virt(phys_addr_t phys, size_t len)
{
	if (!pk_va || !pkernfs_carveout_contains(phys, len))
		return NULL;
	return pk_va + (phys - pk_base);
}
