//! NVMe submission/completion queue pairs in agent DMA memory, polled by
//! phase bit, and PRP construction.

use std::sync::atomic::{compiler_fence, Ordering};

use super::mem::PAGE;
use super::vfio::Bar;

/// Bytes per submission queue entry (CC.IOSQES = 6).
pub const SQE: u64 = 64;
/// Bytes per completion queue entry (CC.IOCQES = 4).
pub const CQE: u64 = 16;

/// A 64-byte NVMe command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Command {
    /// Opcode.
    pub opcode: u8,
    /// Namespace id.
    pub nsid: u32,
    /// PRP entry 1.
    pub prp1: u64,
    /// PRP entry 2 (second page or PRP list).
    pub prp2: u64,
    /// Command dwords 10..=15.
    pub cdw: [u32; 6],
}

impl Command {
    fn encode(&self, cid: u16) -> [u32; 16] {
        let mut d = [0u32; 16];
        d[0] = u32::from(self.opcode) | (u32::from(cid) << 16);
        d[1] = self.nsid;
        d[6] = self.prp1 as u32;
        d[7] = (self.prp1 >> 32) as u32;
        d[8] = self.prp2 as u32;
        d[9] = (self.prp2 >> 32) as u32;
        d[10..16].copy_from_slice(&self.cdw);
        d
    }
}

/// A completion: which command and its status field (0 = success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Command identifier.
    pub cid: u16,
    /// Status field (SCT/SC/…), phase bit removed.
    pub status: u16,
    /// Command-specific dword 0.
    pub result: u32,
}

/// One SQ/CQ pair. The memory behind `sq`/`cq` is owned by a `DmaMem` that
/// outlives the queue (both live in the same driver struct).
#[derive(Debug)]
pub struct QueuePair {
    sq: *mut u8,
    cq: *mut u8,
    size: u16,
    sq_db: usize,
    cq_db: usize,
    tail: u16,
    head: u16,
    phase: bool,
}

// SAFETY: the queue memory is agent DMA memory that lives as long as the
// driver; a queue pair is used by one thread at a time (behind a Mutex).
unsafe impl Send for QueuePair {}

impl QueuePair {
    /// A queue pair of `size` entries with queue id `qid`, doorbell stride
    /// `stride` bytes. `sq`/`cq` must point at `size * SQE` / `size * CQE`
    /// zeroed bytes of DMA memory that outlive the pair.
    pub fn new(sq: *mut u8, cq: *mut u8, size: u16, qid: u16, stride: usize) -> Self {
        let y = usize::from(qid);
        Self { sq, cq, size, sq_db: 0x1000 + 2 * y * stride, cq_db: 0x1000 + (2 * y + 1) * stride, tail: 0, head: 0, phase: true }
    }

    /// A queue pair taken over mid-stream (after a live update): SQ tail,
    /// CQ head and the phase expected there, as the previous agent left them.
    #[allow(clippy::too_many_arguments)]
    pub fn resume(sq: *mut u8, cq: *mut u8, size: u16, qid: u16, stride: usize, tail: u16, head: u16, phase: bool) -> Self {
        Self { tail, head, phase, ..Self::new(sq, cq, size, qid, stride) }
    }

    /// (SQ tail, CQ head, expected phase) for a hand-over.
    pub fn state(&self) -> (u16, u16, bool) {
        (self.tail, self.head, self.phase)
    }

    /// Copies `cmd` into the next SQ slot; call [`QueuePair::ring`] to submit.
    pub fn push(&mut self, cmd: &Command, cid: u16) {
        let slot = self.sq.wrapping_add(usize::from(self.tail) * SQE as usize).cast::<u32>();
        for (i, dw) in cmd.encode(cid).iter().enumerate() {
            // SAFETY: slot `tail < size` of the SQ memory (see `new`), dword-aligned.
            unsafe { slot.add(i).write_volatile(*dw) };
        }
        self.tail = (self.tail + 1) % self.size;
    }

    /// Tells the controller about every pushed command.
    pub fn ring(&self, bar: &Bar) {
        compiler_fence(Ordering::SeqCst);
        bar.write32(self.sq_db, u32::from(self.tail));
    }

    /// The next completion, if the controller posted one (does not ring the
    /// CQ head doorbell: call [`QueuePair::ack`] after a batch).
    pub fn pop(&mut self) -> Option<Completion> {
        let e = self.cq.wrapping_add(usize::from(self.head) * CQE as usize).cast::<u32>();
        // SAFETY: entry `head < size` of the CQ memory (see `new`); volatile
        // because the controller writes it.
        let dw3 = unsafe { e.add(3).read_volatile() };
        if (dw3 >> 16) & 1 != u32::from(self.phase) {
            return None;
        }
        compiler_fence(Ordering::SeqCst);
        // SAFETY: as above, dword 0 of the same entry.
        let result = unsafe { e.read_volatile() };
        self.head += 1;
        if self.head == self.size {
            self.head = 0;
            self.phase = !self.phase;
        }
        Some(Completion { cid: dw3 as u16, status: (dw3 >> 17) as u16, result })
    }

    /// Releases consumed completion entries to the controller.
    pub fn ack(&self, bar: &Bar) {
        bar.write32(self.cq_db, u32::from(self.head));
    }
}

/// PRP entries for `len` bytes at IOVA `start`: PRP1 and the list of the
/// following page addresses (empty: PRP2 = 0; one: PRP2 = that page; more:
/// PRP2 points at a PRP list holding them).
pub fn prps(start: u64, len: u64) -> (u64, Vec<u64>) {
    let end = start + len;
    let mut rest = Vec::new();
    let mut page = (start / PAGE + 1) * PAGE;
    while page < end {
        rest.push(page);
        page += PAGE;
    }
    (start, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prps_cover_every_page_once() {
        assert_eq!(prps(0x2000_0000, 512), (0x2000_0000, vec![]));
        assert_eq!(prps(0x2000_0e00, 512), (0x2000_0e00, vec![]));
        assert_eq!(prps(0x2000_0e00, 1024), (0x2000_0e00, vec![0x2000_1000]));
        assert_eq!(prps(0x2000_0000, 4096), (0x2000_0000, vec![]));
        assert_eq!(prps(0x2000_0000, 3 * 4096), (0x2000_0000, vec![0x2000_1000, 0x2000_2000]));
    }

    #[test]
    fn command_encoding() {
        let c = Command { opcode: 2, nsid: 1, prp1: 0x1_2345_6000, prp2: 0, cdw: [7, 0, 3, 0, 0, 0] };
        let d = c.encode(9);
        assert_eq!(d[0], 2 | (9 << 16));
        assert_eq!((d[1], d[6], d[7], d[10], d[12]), (1, 0x2345_6000, 1, 7, 3));
    }
}
