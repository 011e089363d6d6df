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
    /// Runs of consecutive offsets in `done`: what the commit metadata of out-of-order
    /// completions costs (see `offset_map`).
    done_runs: usize,
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
                // `next` was the lowest done offset: its run ends with it unless it goes on.
                if !self.done.contains(&(next + 1)) {
                    self.done_runs -= 1;
                }
                self.pending.pop_front();
                watermark = next;
            }
            if self.pending.is_empty() {
                // Completions beyond every started offset cannot exist; nothing to keep.
                self.done.clear();
                self.done_runs = 0;
            }
            self.watermark = Some(watermark);
            return Some(watermark);
        }
        // Out of order: remember it until the records before it are done.
        if self.pending.binary_search(&offset).is_ok() && self.done.insert(offset) {
            // A new run, unless it joins the run before it, or after it, or both.
            self.done_runs += 1;
            self.done_runs -= usize::from(self.done.contains(&(offset - 1)));
            self.done_runs -= usize::from(self.done.contains(&(offset + 1)));
        }
        None
    }

    /// The highest offset safe to store, if any.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Records started and not yet done.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The offset to commit: the lowest started record not done, or the one after the
    /// watermark when every started record is done.
    pub(crate) fn next_to_commit(&self) -> Option<i64> {
        self.pending
            .front()
            .copied()
            .or_else(|| self.watermark.map(|w| w + 1))
    }

    /// The lowest started record not done.
    pub(crate) fn lowest_pending(&self) -> Option<i64> {
        self.pending.front().copied()
    }

    /// Offsets done beyond the lowest not done, increasing.
    pub(crate) fn done_beyond(&self) -> impl Iterator<Item = i64> + '_ {
        self.done.iter().copied()
    }

    /// Runs of consecutive offsets among [`OffsetTracker::done_beyond`].
    pub(crate) fn done_runs(&self) -> usize {
        self.done_runs
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
    fn done_runs_count_the_runs_beyond_the_lowest_pending() {
        let mut tracker = OffsetTracker::new();
        for offset in 0..10 {
            tracker.start(offset);
        }
        let runs = |t: &OffsetTracker| {
            let done: Vec<i64> = t.done_beyond().collect();
            done.windows(2).filter(|w| w[1] != w[0] + 1).count() + usize::from(!done.is_empty())
        };
        // Each step checks the incremental count against a count from scratch.
        for offset in [3, 5, 4, 8, 7, 1, 0, 2, 9, 6] {
            tracker.complete(offset);
            assert_eq!(tracker.done_runs(), runs(&tracker), "after {offset}");
        }
        assert_eq!(tracker.next_to_commit(), Some(10));
        assert_eq!(tracker.done_runs(), 0);
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
