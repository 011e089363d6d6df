//! [`Progress`]: how far the replay of one dead-letter partition got, and how it is kept in
//! Kafka.
//!
//! The sequential replay's position is the redrive group's committed offset. Records replayed
//! out of order (chosen one by one, or by a filter) are at or after that position; which ones
//! is kept in the offset commit's *metadata* string of the same partition, so the position and
//! the set are written by one OffsetCommit: both or neither, never a position without its set.
//! A replay that crashes between publishing and committing re-publishes on its next run
//! (at-least-once), it never skips.
//!
//! The set is written as ranges after a version tag, `kafkit-redrive/1 12-15,40`. Kafka keeps
//! at most `offset.metadata.max.bytes` of it ([`METADATA_LIMIT`], 4096 by default) and refuses
//! a longer commit, which would come after the records were published. So an out-of-order
//! replay checks [`METADATA_BUDGET`] (3/4 of the limit) before it publishes anything, and
//! every replay publishes in rounds that would fit the limit even if every record of the round
//! failed: a record that fails for now splits a range of the set (one more range, at most
//! [`Progress::growth`]), so the rest of the limit is room for failures. The sequential
//! replay frees the budget: as its position passes offsets of the set, they leave it.
//!
//! Metadata without the tag was written by another tool (an offset reset, for instance): its
//! position stands alone, and no record is taken as replayed ahead of it.

use std::collections::BTreeMap;

/// The tag that opens kafkit's replay metadata.
pub const METADATA_TAG: &str = "kafkit-redrive/1";
/// Most bytes of metadata a replay plans to commit: 3/4 of Kafka's default
/// `offset.metadata.max.bytes` (4096), the rest for ranges split by records whose
/// re-publication failed.
pub(crate) const METADATA_BUDGET: usize = 3072;
/// Most bytes of metadata Kafka keeps with an offset commit: the default of the broker's
/// `offset.metadata.max.bytes`. A longer commit is refused (OFFSET_METADATA_TOO_LARGE).
pub(crate) const METADATA_LIMIT: usize = 4096;

/// The replay of one partition: the next offset of the sequential replay, and the offsets
/// at or after it that were already replayed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    next: i64,
    /// Disjoint, non-adjacent inclusive ranges (start → end), all at or after `next + 1`.
    ahead: BTreeMap<i64, i64>,
}

impl Progress {
    /// The progress committed as offset `next` with `metadata`; `Err` with why when kafkit's
    /// tag opens metadata that does not parse (never guessed: a lost set would re-publish).
    pub fn from_commit(next: i64, metadata: &str) -> Result<Progress, String> {
        let mut progress = Progress {
            next,
            ahead: BTreeMap::new(),
        };
        let Some(ranges) = metadata.strip_prefix(METADATA_TAG) else {
            return Ok(progress);
        };
        for range in ranges.trim().split(',').filter(|r| !r.is_empty()) {
            let parse = |n: &str| {
                n.parse::<i64>()
                    .map_err(|_| format!("metadata {metadata:?}: {range:?} is not an offset range"))
            };
            let (start, end) = match range.split_once('-') {
                Some((start, end)) => (parse(start)?, parse(end)?),
                None => (parse(range)?, parse(range)?),
            };
            if start > end {
                return Err(format!("metadata {metadata:?}: {range:?} is empty"));
            }
            progress.insert_range(start, end);
        }
        Ok(progress)
    }

    /// The metadata to commit with [`Progress::next`]: empty when nothing is ahead.
    pub fn metadata(&self) -> String {
        if self.ahead.is_empty() {
            return String::new();
        }
        let ranges: Vec<String> = self
            .ahead
            .iter()
            .map(|(start, end)| match start == end {
                true => start.to_string(),
                false => format!("{start}-{end}"),
            })
            .collect();
        format!("{METADATA_TAG} {}", ranges.join(","))
    }

    /// Most bytes `ranges` more ranges can add to `metadata` (of [`Progress::metadata`]) when
    /// no offset is above `highest`: the tag, if `metadata` is empty, and `,start-end` each.
    pub fn growth(metadata: &str, ranges: usize, highest: i64) -> usize {
        if ranges == 0 {
            return 0;
        }
        let tag = if metadata.is_empty() {
            METADATA_TAG.len() + 1
        } else {
            0
        };
        let digits = highest.max(1).to_string().len();
        tag + ranges * (2 * digits + 2)
    }

    /// The next offset the sequential replay takes.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// The highest offset this progress names: the position, or the end of the last range.
    pub fn last(&self) -> i64 {
        self.ahead
            .last_key_value()
            .map_or(self.next, |(_, end)| *end)
    }

    /// Whether `offset` was replayed: before the position, or ahead of it in the set.
    pub fn replayed(&self, offset: i64) -> bool {
        offset < self.next
            || self
                .ahead
                .range(..=offset)
                .next_back()
                .is_some_and(|(_, end)| offset <= *end)
    }

    /// How many offsets at or after the position are in the set.
    pub fn ahead(&self) -> i64 {
        self.ahead.iter().map(|(start, end)| end - start + 1).sum()
    }

    /// Records `offset` as replayed; a record at the position moves the position instead.
    pub fn insert(&mut self, offset: i64) {
        self.insert_range(offset, offset);
    }

    /// Records `start..=end` as replayed (nothing when `start > end`).
    pub(super) fn insert_range(&mut self, start: i64, end: i64) {
        let (mut start, mut end) = (start.max(self.next), end);
        if start > end {
            return;
        }
        // Absorb every range that overlaps or touches [start, end].
        let touching: Vec<(i64, i64)> = self
            .ahead
            .range(..=end.saturating_add(1))
            .filter(|(_, e)| **e >= start - 1)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.ahead.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ahead.insert(start, end);
        self.settle();
    }

    /// The sequential replay read up to `next` (exclusive): the position moves there, and the
    /// offsets it passed leave the set.
    pub fn move_to(&mut self, next: i64) {
        self.next = self.next.max(next);
        let passed: Vec<(i64, i64)> = self
            .ahead
            .range(..self.next)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (start, end) in passed {
            self.ahead.remove(&start);
            if end >= self.next {
                self.ahead.insert(self.next, end);
            }
        }
        self.settle();
    }

    /// A range starting at the position is replayed: the position moves past it.
    fn settle(&mut self) {
        while let Some(end) = self.ahead.remove(&self.next) {
            self.next = end + 1;
        }
    }
}

/// The replay of one partition as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The partition.
    pub partition: i32,
    /// Its position and the records replayed ahead of it.
    pub progress: Progress,
    /// Its high watermark when asked.
    pub high_watermark: i64,
}

impl PartitionProgress {
    /// Offsets not yet replayed (as consumer lag counts them, transaction markers included).
    pub fn pending(&self) -> i64 {
        (self.high_watermark - self.progress.next() - self.progress.ahead()).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(next: i64, offsets: &[i64]) -> Progress {
        let mut progress = Progress::from_commit(next, "").unwrap();
        for offset in offsets {
            progress.insert(*offset);
        }
        progress
    }

    #[test]
    fn offsets_ahead_are_kept_as_ranges_and_round_trip() {
        let p = progress(10, &[12, 13, 15, 14, 40, 5]);
        assert_eq!(p.metadata(), "kafkit-redrive/1 12-15,40");
        assert_eq!(p.next(), 10);
        assert_eq!(p.ahead(), 5);
        assert!(p.replayed(5) && p.replayed(13) && p.replayed(40));
        assert!(!p.replayed(10) && !p.replayed(11) && !p.replayed(16));
        assert_eq!(Progress::from_commit(10, &p.metadata()).unwrap(), p);
        // Nothing ahead: no metadata at all.
        assert_eq!(progress(3, &[]).metadata(), "");
    }

    #[test]
    fn records_at_the_position_move_it_and_the_sequential_replay_drops_what_it_passed() {
        let mut p = progress(10, &[12, 13, 20]);
        p.insert(11);
        assert_eq!(
            (p.next(), p.metadata().as_str()),
            (10, "kafkit-redrive/1 11-13,20")
        );
        p.insert(10);
        assert_eq!(
            (p.next(), p.metadata().as_str()),
            (14, "kafkit-redrive/1 20")
        );
        let mut q = progress(0, &[5, 6, 7, 9]);
        q.move_to(6);
        assert_eq!((q.next(), q.metadata().as_str()), (8, "kafkit-redrive/1 9"));
        q.move_to(100);
        assert_eq!((q.next(), q.metadata().as_str()), (100, ""));
        // A commit whose set starts at its position is settled on reading.
        let r = Progress::from_commit(4, "kafkit-redrive/1 4-6,8").unwrap();
        assert_eq!((r.next(), r.metadata().as_str()), (7, "kafkit-redrive/1 8"));
    }

    #[test]
    fn foreign_metadata_is_no_set_and_broken_metadata_of_ours_is_an_error() {
        assert_eq!(
            Progress::from_commit(3, "set by another tool").unwrap(),
            progress(3, &[])
        );
        let error = Progress::from_commit(3, "kafkit-redrive/1 5-x").unwrap_err();
        assert!(error.contains("5-x"), "{error}");
        assert!(Progress::from_commit(3, "kafkit-redrive/1 9-5").is_err());
    }
}
