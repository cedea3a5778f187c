//! What QEMU took from the NIC's backend: a `filter-dump` on the netdev's
//! transmit queue writes every frame the stream backend read from the
//! harness's socket, before QEMU's net layer queues, delivers or frees it.
//! A frame of this run in the capture left the socket; one that is not
//! there is still in the socket (or was never written).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::frame::decode;

/// pcap's magic (microsecond timestamps), as QEMU writes it (host order).
const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
const FILE_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;

/// The frames of one run QEMU took from the socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// Sequence numbers of this run's frames, each once.
    pub seqs: BTreeSet<u64>,
    /// Records in the file (any frame).
    pub records: u64,
}

impl Capture {
    /// Parses a pcap file's bytes, keeping the frames of `run_id`.
    pub fn parse(bytes: &[u8], run_id: u64) -> Result<Self> {
        if bytes.len() < FILE_HEADER {
            bail!("{} bytes: shorter than a pcap header", bytes.len());
        }
        let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
        if magic != PCAP_MAGIC {
            bail!("magic {magic:#x}: not a little-endian pcap file");
        }
        let mut c = Self::default();
        let mut at = FILE_HEADER;
        while at + RECORD_HEADER <= bytes.len() {
            let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
            let start = at + RECORD_HEADER;
            // QEMU writes each record with one writev: a cut record is the
            // file's end (QEMU killed mid-write), not an error.
            let Some(frame) = bytes.get(start..start + caplen) else { break };
            c.records += 1;
            if let Ok(f) = decode(frame, run_id) {
                c.seqs.insert(f.seq);
            }
            at = start + caplen;
        }
        Ok(c)
    }

    /// Reads `path`.
    pub fn read(path: &Path, run_id: u64) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&bytes, run_id).with_context(|| format!("{}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::frame::encode;

    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&PCAP_MAGIC.to_le_bytes());
        v.extend_from_slice(&[2, 0, 4, 0]);
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        for f in frames {
            v.extend_from_slice(&[0; 8]);
            v.extend_from_slice(&(f.len() as u32).to_le_bytes());
            v.extend_from_slice(&(f.len() as u32).to_le_bytes());
            v.extend_from_slice(f);
        }
        v
    }

    #[test]
    fn frames_of_the_run_are_taken_by_seq_and_others_counted() {
        let run = 77;
        let frames = vec![encode(run, 3, 0, 256), encode(run, 5, 0, 256), encode(run + 1, 9, 0, 256), vec![0u8; 60]];
        let mut bytes = pcap(&frames);
        let c = Capture::parse(&bytes, run).unwrap();
        assert_eq!(c.seqs.iter().copied().collect::<Vec<_>>(), [3, 5]);
        assert_eq!(c.records, 4);
        // A record cut by a killed QEMU ends the file.
        bytes.truncate(bytes.len() - 30);
        assert_eq!(Capture::parse(&bytes, run).unwrap().records, 3);
        assert!(Capture::parse(&bytes[..10], run).unwrap_err().to_string().contains("shorter"));
        bytes[0] = 0;
        assert!(Capture::parse(&bytes, run).unwrap_err().to_string().contains("magic"));
    }
}
