//! Deterministic file contents and their hash, shared by the agent (which
//! writes and hashes files) and the harness (which computes what to expect).

/// Fills `buf`, the bytes at file offset `offset`, with the pattern of
/// `seed`: byte `o` is byte `o % 8` (little endian) of `splitmix64(seed ^ o / 8)`.
/// Whole 8-byte words are written at once (one `splitmix64` per word: the
/// agent fills hundreds of MiB under TCG).
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let head = ((8 - offset % 8) % 8).min(buf.len() as u64) as usize;
    let (first, rest) = buf.split_at_mut(head);
    fill_bytes(seed, offset, first);
    let start = offset.wrapping_add(head as u64);
    let whole = rest.len() / 8 * 8;
    let (words, tail) = rest.split_at_mut(whole);
    for (i, w) in words.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&splitmix64(seed ^ (start / 8 + i as u64)).to_le_bytes());
    }
    fill_bytes(seed, start.wrapping_add(whole as u64), tail);
}

/// [`fill`] one byte at a time (its definition).
fn fill_bytes(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let o = offset.wrapping_add(i as u64);
        *b = (splitmix64(seed ^ (o / 8)) >> (8 * (o % 8))) as u8;
    }
}

/// Name of file `i` of a tree written by `Op::FillTree` (zero-padded, so
/// that name order is index order).
pub fn tree_file_name(i: u64) -> String {
    format!("f{i:06}")
}

/// Pattern seed of file `i` of a tree written with `seed`.
pub fn tree_file_seed(seed: u64, i: u64) -> u64 {
    seed.wrapping_add(i)
}

/// [`super::FileDigest`] of a file of `size` bytes of [`fill`]`(seed)`.
pub fn digest(seed: u64, size: u64) -> super::FileDigest {
    let mut h = Fnv1a64::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        fill(seed, off, &mut buf[..n]);
        h.update(&buf[..n]);
        off += n as u64;
    }
    super::FileDigest { size, fnv1a64: h.finish() }
}

/// splitmix64: a fast, well-mixed function of a 64-bit input.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a over bytes.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a64 {
    /// The offset basis.
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    /// Hashes more bytes.
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::{fill, fill_bytes};

    #[test]
    fn word_fill_matches_the_bytewise_definition() {
        for offset in [0u64, 1, 5, 7, 8, 13, 4093] {
            for len in [0usize, 1, 3, 7, 8, 9, 16, 17, 100] {
                let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
                fill(42, offset, &mut a);
                fill_bytes(42, offset, &mut b);
                assert_eq!(a, b, "offset {offset}, len {len}");
            }
        }
    }
}
