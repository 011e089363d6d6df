//! [`OffsetTracker`]: which offset of a partition may be stored. Records may complete out of
//! order; only the contiguous done prefix is ever committed, so nothing is marked done before
//! its work is done.

use std::collections::{BTreeSet, VecDeque};

/// Tracks started and completed offsets of one partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// Started, not yet completed, in increasing order (a partition's offsets only grow).
    pending: VecDeque<i64>,
    /// Completed out of order, above the watermark.
    done: BTreeSet<i64>,
    /// Highest offset such that every tracked offset up to it is complete.
    watermark: Option<i64>,
}

impl OffsetTracker {
    /// A tracker with nothing started.
    pub fn new() -> Self {
        OffsetTracker::default()
    }

    /// Notes that work on `offset` started. Offsets must be started in increasing order.
    pub fn start(&mut self, offset: i64) {
        debug_assert!(self.pending.back().is_none_or(|last| *last < offset));
        self.pending.push_back(offset);
    }

    /// Notes that `offset` is done. Returns the new watermark when it advanced: the highest
    /// offset whose record and every earlier started record are done.
    pub fn complete(&mut self, offset: i64) -> Option<i64> {
        if self.pending.front() == Some(&offset) {
            // In order, the common case: no set is touched.
            self.pending.pop_front();
            let mut watermark = offset;
            // Earlier out-of-order completions may now join the prefix.
            while let Some(&next) = self.pending.front() {
                if !self.done.remove(&next) {
                    break;
                }
                self.pending.pop_front();
                watermark = next;
            }
            if self.pending.is_empty() {
                // Completions beyond every started offset cannot exist; nothing to keep.
                self.done.clear();
            }
            self.watermark = Some(watermark);
            return Some(watermark);
        }
        // Out of order: remember it until the records before it are done.
        if self.pending.binary_search(&offset).is_ok() && self.done.insert(offset) {
            return None;
        }
        None
    }

    /// The highest offset safe to store, if any.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Records started and not yet done.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_advances_one_by_one() {
        let mut tracker = OffsetTracker::new();
        for offset in 10..13 {
            tracker.start(offset);
        }
        assert_eq!(tracker.complete(10), Some(10));
        assert_eq!(tracker.complete(11), Some(11));
        assert_eq!(tracker.complete(12), Some(12));
        assert_eq!(tracker.in_flight(), 0);
    }

    #[test]
    fn out_of_order_completion_commits_only_the_contiguous_prefix() {
        let mut tracker = OffsetTracker::new();
        for offset in [5, 6, 7, 8, 9] {
            tracker.start(offset);
        }
        // 7 and 9 finish first: nothing is safe yet, 5 is still running.
        assert_eq!(tracker.complete(7), None);
        assert_eq!(tracker.complete(9), None);
        // 5 finishes: 5 is safe, 6 still blocks 7.
        assert_eq!(tracker.complete(5), Some(5));
        // 6 finishes: 6 and 7 are done, 8 blocks 9.
        assert_eq!(tracker.complete(6), Some(7));
        assert_eq!(tracker.complete(8), Some(9));
        assert_eq!(tracker.watermark(), Some(9));
        // Completing an unknown or repeated offset changes nothing.
        assert_eq!(tracker.complete(8), None);
        assert_eq!(tracker.complete(100), None);
    }

    #[test]
    fn gaps_in_offsets_do_not_block() {
        // Compacted topics and transaction markers leave holes: only started offsets count.
        let mut tracker = OffsetTracker::new();
        tracker.start(1);
        tracker.start(4);
        assert_eq!(tracker.complete(4), None);
        assert_eq!(tracker.complete(1), Some(4));
    }
}
