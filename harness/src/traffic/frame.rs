//! The test frame: an Ethernet frame the harness injects into the e1000e and
//! later finds (or not) in the agent's RX buffers.
//!
//! Layout (integers little-endian):
//! ```text
//!  0  dst MAC (the NIC's)        6  src MAC (lulab's)     12  ethertype 0x88B5
//! 14  magic "LUL1"              18  run id (u64)          26  sequence number (u64)
//! 34  send timestamp ns (u64)   42  payload length (u16)  44  payload
//! 44+n  xxh3-64 of bytes 0..44+n
//! ```
//! The payload is a deterministic function of (run id, seq), so any frame can
//! be regenerated for comparison without storing it.

use xxhash_rust::xxh3::xxh3_64;

/// The e1000e's MAC (QEMU's default, also `NicParams::default`).
pub const NIC_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Source MAC of injected frames (locally administered).
pub const LULAB_MAC: [u8; 6] = [0x02, 0x4c, 0x55, 0x4c, 0x41, 0x42];
/// IEEE 802 local experimental ethertype 1.
pub const ETHERTYPE: u16 = 0x88B5;
/// Marks a lulab frame right after the Ethernet header.
pub const MAGIC: [u8; 4] = *b"LUL1";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 44;
/// Bytes after the payload (the checksum).
pub const TRAILER_LEN: usize = 8;
/// Smallest frame we send (Ethernet minimum without FCS, so the NIC never pads).
pub const MIN_FRAME: usize = 60;
/// Largest frame we send (no jumbo frames: RCTL.LPE stays off).
pub const MAX_FRAME: usize = 1514;

/// Why a buffer is not an intact frame of this run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the fixed header and trailer.
    #[error("Frame too short: {len} bytes, need at least {}", HEADER_LEN + TRAILER_LEN)]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// Neither ethertype nor magic is ours: not a lulab frame at all.
    #[error("Not a lulab frame: ethertype {ethertype:#06x}, magic {magic:02x?}")]
    Foreign {
        /// Ethertype found.
        ethertype: u16,
        /// Bytes where the magic belongs.
        magic: [u8; 4],
    },
    /// One of ethertype/magic is ours and the other is not: a damaged lulab frame.
    #[error("Damaged lulab header: ethertype {ethertype:#06x}, magic {magic:02x?}")]
    BadMagic {
        /// Ethertype found.
        ethertype: u16,
        /// Bytes where the magic belongs.
        magic: [u8; 4],
    },
    /// The payload length field points past the end of the buffer.
    #[error("Payload length {payload_len} of seq {seq} overruns a {len}-byte frame")]
    BadLength {
        /// Sequence number as found (untrusted).
        seq: u64,
        /// Payload length field.
        payload_len: usize,
        /// Bytes available.
        len: usize,
    },
    /// Header decodes but the checksum does not match: corrupted in flight or in memory.
    #[error("Checksum mismatch in seq {seq}: stored {stored:#018x}, computed {computed:#018x}")]
    BadChecksum {
        /// Sequence number as found (untrusted).
        seq: u64,
        /// Checksum in the frame.
        stored: u64,
        /// Checksum of the bytes.
        computed: u64,
    },
    /// An intact frame of another run (stale data from an earlier run).
    #[error("Frame seq {seq} belongs to run {found:#x}, expected run {expected:#x}")]
    WrongRun {
        /// Sequence number.
        seq: u64,
        /// Run id in the frame.
        found: u64,
        /// Run id expected.
        expected: u64,
    },
}

/// A decoded, checksum-verified frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Run id.
    pub run_id: u64,
    /// Sequence number, 0-based per run.
    pub seq: u64,
    /// Send timestamp ([`crate::traffic::clock::now_ns`] when written).
    pub sent_ns: u64,
    /// Payload bytes.
    pub payload_len: usize,
    /// Total frame length (header + payload + checksum).
    pub frame_len: usize,
}

/// Payload length for a frame of `frame_size` bytes in total.
pub fn payload_len_for(frame_size: usize) -> usize {
    frame_size.saturating_sub(HEADER_LEN + TRAILER_LEN)
}

/// Writes the deterministic payload of (run id, seq) into `out`.
pub fn fill_payload(run_id: u64, seq: u64, out: &mut [u8]) {
    let mut state = run_id ^ seq.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

/// Encodes frame `seq` of `run_id` with `payload_len` payload bytes into `out`
/// (cleared first). Returns the frame length.
pub fn encode_into(run_id: u64, seq: u64, sent_ns: u64, payload_len: u16, out: &mut Vec<u8>) -> usize {
    out.clear();
    out.extend_from_slice(&NIC_MAC);
    out.extend_from_slice(&LULAB_MAC);
    out.extend_from_slice(&ETHERTYPE.to_be_bytes());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&run_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&sent_ns.to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    let start = out.len();
    out.resize(start + payload_len as usize, 0);
    fill_payload(run_id, seq, &mut out[start..]);
    let sum = xxh3_64(out);
    out.extend_from_slice(&sum.to_le_bytes());
    out.len()
}

/// Encodes a frame (see [`encode_into`]).
pub fn encode(run_id: u64, seq: u64, sent_ns: u64, payload_len: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + TRAILER_LEN + payload_len as usize);
    encode_into(run_id, seq, sent_ns, payload_len, &mut v);
    v
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes and verifies a frame of run `expected_run`; `buf` may be longer
/// than the frame (a receive buffer), never shorter.
pub fn decode(buf: &[u8], expected_run: u64) -> Result<Frame, FrameError> {
    if buf.len() < HEADER_LEN + TRAILER_LEN {
        return Err(FrameError::TooShort { len: buf.len() });
    }
    let ethertype = u16::from_be_bytes([buf[12], buf[13]]);
    let magic: [u8; 4] = buf[14..18].try_into().expect("4 bytes");
    match (ethertype == ETHERTYPE, magic == MAGIC) {
        (true, true) => {}
        (false, false) => return Err(FrameError::Foreign { ethertype, magic }),
        _ => return Err(FrameError::BadMagic { ethertype, magic }),
    }
    let (run_id, seq, sent_ns) = (le_u64(buf, 18), le_u64(buf, 26), le_u64(buf, 34));
    let payload_len = u16::from_le_bytes([buf[42], buf[43]]) as usize;
    let body = HEADER_LEN + payload_len;
    if body + TRAILER_LEN > buf.len() {
        return Err(FrameError::BadLength { seq, payload_len, len: buf.len() });
    }
    let stored = le_u64(buf, body);
    let computed = xxh3_64(&buf[..body]);
    if stored != computed {
        return Err(FrameError::BadChecksum { seq, stored, computed });
    }
    if run_id != expected_run {
        return Err(FrameError::WrongRun { seq, found: run_id, expected: expected_run });
    }
    Ok(Frame { run_id, seq, sent_ns, payload_len, frame_len: body + TRAILER_LEN })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_as_documented() {
        let f = encode(0x1122, 7, 99, 16);
        assert_eq!(f.len(), HEADER_LEN + 16 + TRAILER_LEN);
        assert_eq!(&f[..6], &NIC_MAC);
        assert_eq!(&f[12..14], &[0x88, 0xB5]);
        assert_eq!(&f[14..18], b"LUL1");
        assert_eq!(le_u64(&f, 26), 7);
        let d = decode(&f, 0x1122).unwrap();
        assert_eq!((d.seq, d.sent_ns, d.payload_len, d.frame_len), (7, 99, 16, f.len()));
    }

    #[test]
    fn typed_errors() {
        let f = encode(1, 2, 3, 20);
        assert!(matches!(decode(&f[..30], 1), Err(FrameError::TooShort { len: 30 })));
        assert!(matches!(decode(&f, 5), Err(FrameError::WrongRun { seq: 2, found: 1, expected: 5 })));
        let mut g = f.clone();
        g[15] ^= 1;
        assert!(matches!(decode(&g, 1), Err(FrameError::BadMagic { .. })));
        let mut g = f.clone();
        g[50] ^= 0x80;
        assert!(matches!(decode(&g, 1), Err(FrameError::BadChecksum { seq: 2, .. })));
        let mut g = f.clone();
        g[43] = 0xff;
        assert!(matches!(decode(&g, 1), Err(FrameError::BadLength { .. })));
        assert!(matches!(decode(&[0u8; 64], 1), Err(FrameError::Foreign { .. })));
        // A receive buffer longer than the frame decodes.
        let mut long = f.clone();
        long.resize(2048, 0xaa);
        assert_eq!(decode(&long, 1).unwrap().frame_len, f.len());
    }

    proptest! {
        #[test]
        fn round_trip(run in any::<u64>(), seq in any::<u64>(), ts in any::<u64>(), len in 0u16..1470) {
            let f = encode(run, seq, ts, len);
            let d = decode(&f, run).unwrap();
            prop_assert_eq!(d, Frame { run_id: run, seq, sent_ns: ts, payload_len: len as usize, frame_len: f.len() });
        }

        #[test]
        fn any_single_byte_change_is_detected(
            run in any::<u64>(), seq in any::<u64>(), len in 0u16..200,
            pos in any::<prop::sample::Index>(), xor in 1u8..=255,
        ) {
            let mut f = encode(run, seq, 5, len);
            let i = pos.index(f.len());
            f[i] ^= xor;
            prop_assert!(decode(&f, run).is_err(), "flip at {} by {:#x} undetected", i, xor);
        }

        #[test]
        fn payloads_differ_between_frames(run in any::<u64>(), seq in 0u64..u64::MAX) {
            let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
            fill_payload(run, seq, &mut a);
            fill_payload(run, seq + 1, &mut b);
            prop_assert_ne!(a, b);
        }
    }
}
