//! Which regions of the log hold what, in write order: the one record the
//! writer ([`super::region`]) keeps up to date, recovery
//! ([`super::recovery`]) rebuilds after a restart and the checkpoint
//! ([`super::checkpoint`]) saves on a clean close. A leaf, so that those
//! three depend on it and not on each other.

use std::collections::VecDeque;

/// Which regions hold what, in write order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionTable {
    /// Sequence number of the region's current use; 0 when free.
    pub seq: Vec<u64>,
    /// Bytes written into each region (sealed regions).
    pub used: Vec<u32>,
    /// Sealed regions, oldest first.
    pub fifo: VecDeque<u32>,
    pub free: VecDeque<u32>,
    pub next_seq: u64,
}

impl RegionTable {
    pub fn empty(count: u32) -> Self {
        Self {
            seq: vec![0; count as usize],
            used: vec![0; count as usize],
            fifo: VecDeque::new(),
            free: (0..count).collect(),
            next_seq: 1,
        }
    }

    /// Rebuilds the table from `(region, seq, used)` of every region in use.
    pub fn from_sealed(count: u32, mut sealed: Vec<(u32, u64, u32)>, next_seq: u64) -> Self {
        sealed.sort_by_key(|&(_, seq, _)| seq);
        let mut t = Self::empty(count);
        t.free.clear();
        for &(region, seq, used) in &sealed {
            t.seq[region as usize] = seq;
            t.used[region as usize] = used;
            t.fifo.push_back(region);
        }
        t.free = (0..count).filter(|&r| t.seq[r as usize] == 0).collect();
        let max_seq = sealed.last().map_or(0, |s| s.1);
        t.next_seq = next_seq.max(max_seq + 1);
        t
    }

    pub fn count(&self) -> u32 {
        self.seq.len() as u32
    }
}
