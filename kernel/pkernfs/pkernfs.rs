// SPDX-License-Identifier: GPL-2.0

//! pkernfs: a persistent in-memory filesystem for live update (lulab).
//!
//! This is the seed: it registers at boot and announces its version and
//! on-memory format; the layout helpers it will use are tested in-kernel with
//! KUnit (`pkernfs_layout`), and on the host by the harness (same file).

use kernel::prelude::*;

// `pub` items: the same file is a public module of the harness (host side).
#[allow(unreachable_pub)]
mod layout;

module! {
    type: Pkernfs,
    name: "pkernfs",
    authors: ["lulab"],
    description: "Persistent kernel filesystem for live update",
    license: "GPL",
}

/// Version announced at boot; the harness looks for this line.
const VERSION: &str = "0.1";

struct Pkernfs;

impl kernel::Module for Pkernfs {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!(
            "lulab pkernfs v{} loaded (format {}, block {} KiB)\n",
            VERSION,
            layout::FORMAT_VERSION,
            layout::BLOCK_SIZE / 1024
        );
        Ok(Pkernfs)
    }
}

#[cfg(CONFIG_PKERNFS_KUNIT_TEST)]
#[kunit_tests(pkernfs_layout)]
mod tests {
    use super::layout::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn header_round_trips() {
        let h = Header { version: FORMAT_VERSION, size: 64 << 20 };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn corrupted_header_is_refused() {
        let mut b = Header { version: FORMAT_VERSION, size: 64 << 20 }.encode();
        b[20] ^= 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::BadChecksum));
        b[0] ^= 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::BadMagic));
        assert_eq!(Header::decode(&b[..8]), Err(HeaderError::Short));
    }

    #[test]
    fn alignment_and_block_counts() {
        assert_eq!(align_up(1, 4096), Some(4096));
        assert_eq!(align_up(4096, 4096), Some(4096));
        assert_eq!(align_up(5, 3), None);
        assert_eq!(align_up(u64::MAX, 2), None);
        assert_eq!(blocks_for(0), 0);
        assert_eq!(blocks_for(1), 1);
        assert_eq!(blocks_for(BLOCK_SIZE + 1), 2);
    }
}
