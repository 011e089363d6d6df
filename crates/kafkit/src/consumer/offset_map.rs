//! The done-offset map committed with a key- or unordered-order partition's offset.
//!
//! Out of order, records above the lowest one not yet done may be done already. The commit
//! stores that lowest offset (so nothing not done is ever passed over), and in its metadata the
//! offsets beyond it that are done, so that whoever takes the partition over (after a
//! rebalance or a restart) skips them instead of handling them again.
//!
//! Encoding: `kafkit-done/1:` then URL-safe base64 (no padding) of unsigned LEB128 varints, in
//! pairs `(gap, run)`: starting just after the committed offset, skip `gap` offsets (not
//! done), then `run` offsets are done; the next pair starts after that run. Offsets that hold
//! no record (transaction markers, compacted records) cost nothing but split a run. A map is
//! bounded in bytes (the broker refuses a commit whose metadata is over
//! `offset.metadata.max.bytes`, 4,096 by default); a map that would not fit keeps its first runs
//! only: the records of the dropped runs are handled again by a new owner (at-least-once), never
//! skipped wrongly.

use std::collections::VecDeque;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What every map starts with: the format and its version.
pub const PREFIX: &str = "kafkit-done/1:";
/// Bytes of metadata at most: the broker's default `offset.metadata.max.bytes` (4,096), less
/// room for what librdkafka adds nothing to, kept as a margin.
pub const MAX_METADATA_BYTES: usize = 4_000;
/// Encoded bytes one run costs at most while every gap and run is under 2^21 offsets (three
/// varint bytes each, base64's 4/3): below `runs * RUN_BYTES` the map surely fits.
pub(crate) const RUN_BYTES: usize = 8;

/// The metadata for a commit at `base` (the lowest offset not done) with `done` (increasing
/// offsets above `base`), in at most `budget` bytes. Empty when nothing beyond is done.
pub(crate) fn encode(base: i64, done: impl IntoIterator<Item = i64>, budget: usize) -> String {
    let max_bytes = payload_bytes(budget);
    let mut bytes = Vec::new();
    for (gap, run) in pairs(base, done) {
        let mut pair = Vec::with_capacity(6);
        varint(&mut pair, gap);
        varint(&mut pair, run);
        if bytes.len() + pair.len() > max_bytes {
            break;
        }
        bytes.extend_from_slice(&pair);
    }
    finish(&bytes)
}

/// Whether the whole map of `done` beyond `base` encodes in at most `budget` bytes; reads no
/// more runs than a budget holds.
pub(crate) fn fits(base: i64, done: impl IntoIterator<Item = i64>, budget: usize) -> bool {
    let max_bytes = payload_bytes(budget);
    let mut bytes = 0;
    for (gap, run) in pairs(base, done) {
        bytes += varint_len(gap) + varint_len(run);
        if bytes > max_bytes {
            return false;
        }
    }
    true
}

/// Bytes of varints a map of `budget` bytes holds: base64 turns every 3 into 4 characters.
fn payload_bytes(budget: usize) -> usize {
    budget.saturating_sub(PREFIX.len()) / 4 * 3
}

/// The map's `(gap, run)` pairs for `done` (increasing) above `base`, in order.
fn pairs(base: i64, done: impl IntoIterator<Item = i64>) -> impl Iterator<Item = (u64, u64)> {
    let mut done = done
        .into_iter()
        .filter(move |offset| *offset > base)
        .peekable();
    let mut cursor = base + 1;
    std::iter::from_fn(move || {
        let start = done.next()?;
        let mut end = start;
        while done.next_if_eq(&(end + 1)).is_some() {
            end += 1;
        }
        let pair = ((start - cursor) as u64, (end - start + 1) as u64);
        cursor = end + 1;
        Some(pair)
    })
}

fn varint_len(value: u64) -> usize {
    (64 - value.leading_zeros() as usize).div_ceil(7).max(1)
}

fn finish(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        String::new()
    } else {
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The done offsets (inclusive ranges, increasing) of a map committed with offset `base`, for
/// tools and tests that read a group's commits; `Err` names what is malformed.
pub fn done_ranges(base: i64, metadata: &str) -> Result<Vec<(i64, i64)>, String> {
    DoneRanges::decode(base, metadata).map(|d| d.ranges.into_iter().collect())
}

/// Done offsets read from a committed map, consumed as records arrive in offset order.
#[derive(Debug, Default)]
pub(crate) struct DoneRanges {
    /// Inclusive ranges, increasing.
    ranges: VecDeque<(i64, i64)>,
}

impl DoneRanges {
    /// The map committed with offset `base`; `Err` names what is malformed (nothing is skipped
    /// then). Metadata that is not a map (another tool's, or none) is an empty map.
    pub(crate) fn decode(base: i64, metadata: &str) -> Result<Self, String> {
        let Some(encoded) = metadata.strip_prefix(PREFIX) else {
            return Ok(DoneRanges::default());
        };
        if metadata.len() > MAX_METADATA_BYTES * 2 {
            return Err(format!("{} bytes of metadata", metadata.len()));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|e| format!("not base64: {e}"))?;
        let mut values = Vec::new();
        let (mut value, mut shift) = (0u64, 0u32);
        for byte in bytes {
            if shift > 56 {
                return Err("varint too long".into());
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                values.push(value);
                (value, shift) = (0, 0);
            } else {
                shift += 7;
            }
        }
        if shift != 0 || values.len() % 2 != 0 {
            return Err("truncated".into());
        }
        let mut ranges = VecDeque::with_capacity(values.len() / 2);
        let mut cursor = base.checked_add(1).ok_or("offset overflow")?;
        for pair in values.chunks(2) {
            let gap = i64::try_from(pair[0]).map_err(|_| "gap overflow")?;
            let run = i64::try_from(pair[1]).map_err(|_| "run overflow")?;
            if run == 0 {
                return Err("empty run".into());
            }
            let start = cursor.checked_add(gap).ok_or("offset overflow")?;
            let end = start.checked_add(run - 1).ok_or("offset overflow")?;
            ranges.push_back((start, end));
            cursor = end.checked_add(1).ok_or("offset overflow")?;
        }
        Ok(DoneRanges { ranges })
    }

    /// Whether `offset` is done; offsets must be asked in increasing order (ranges below are
    /// forgotten).
    pub(crate) fn take(&mut self, offset: i64) -> bool {
        while let Some(&(start, end)) = self.ranges.front() {
            if end < offset {
                self.ranges.pop_front();
                continue;
            }
            return start <= offset;
        }
        false
    }

    /// Offsets the map still covers.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(base: i64, done: &[i64]) -> Vec<i64> {
        let encoded = encode(base, done.iter().copied(), MAX_METADATA_BYTES);
        let mut ranges = DoneRanges::decode(base, &encoded).expect("decodes");
        (base..base + 200).filter(|o| ranges.take(*o)).collect()
    }

    #[test]
    fn done_offsets_survive_the_round_trip() {
        assert_eq!(round_trip(10, &[]), Vec::<i64>::new());
        assert_eq!(encode(10, [], MAX_METADATA_BYTES), "");
        assert_eq!(round_trip(10, &[11]), vec![11]);
        assert_eq!(
            round_trip(10, &[12, 13, 14, 20, 22, 23]),
            vec![12, 13, 14, 20, 22, 23]
        );
        // Offsets at or below the base are never in a map.
        assert_eq!(round_trip(10, &[5, 10, 11]), vec![11]);
    }

    #[test]
    fn seven_digit_offsets_cost_bytes_per_run_not_per_offset() {
        // 1,000 contiguous done offsets are one run: a handful of bytes.
        let done: Vec<i64> = (4_000_001..4_001_001).collect();
        let encoded = encode(4_000_000, done.iter().copied(), MAX_METADATA_BYTES);
        assert!(encoded.len() < PREFIX.len() + 8, "{encoded}");
    }

    #[test]
    fn a_map_over_budget_keeps_its_first_runs_only() {
        // Every other offset done: 5,000 runs cannot fit in 4,000 bytes.
        let done: Vec<i64> = (0..5_000).map(|i| 1 + 2 * i).collect();
        let encoded = encode(0, done.iter().copied(), MAX_METADATA_BYTES);
        assert!(encoded.len() <= MAX_METADATA_BYTES, "{}", encoded.len());
        let mut ranges = DoneRanges::decode(0, &encoded).expect("decodes");
        let kept: Vec<i64> = (0..10_001).filter(|o| ranges.take(*o)).collect();
        // A prefix of the done offsets, nothing else: never an offset that was not done.
        assert!(kept.len() > 1_000, "{}", kept.len());
        assert_eq!(kept, done[..kept.len()]);
    }

    #[test]
    fn fits_agrees_with_the_encoding() {
        for (count, step) in [(10, 2), (1_000, 2), (1_400, 3), (1_600, 2), (5_000, 7)] {
            let done: Vec<i64> = (0..count).map(|i| 1 + step * i).collect();
            let full = encode(0, done.iter().copied(), usize::MAX);
            for budget in [1_000, 2_000, 4_000] {
                assert_eq!(
                    fits(0, done.iter().copied(), budget),
                    full.len() <= budget,
                    "{count} runs every {step}, budget {budget}: {} bytes",
                    full.len()
                );
            }
        }
    }

    #[test]
    fn malformed_maps_are_refused_and_foreign_metadata_is_no_map() {
        assert!(DoneRanges::decode(0, "").expect("no map").is_empty());
        assert!(
            DoneRanges::decode(0, "kafkit-redrive/1 12-15")
                .expect("foreign")
                .is_empty()
        );
        assert!(DoneRanges::decode(0, "kafkit-done/1:!!").is_err());
        // One varint alone: a gap without its run.
        assert!(DoneRanges::decode(0, &format!("{PREFIX}AQ")).is_err());
        // A zero-length run.
        assert!(DoneRanges::decode(0, &format!("{PREFIX}AQA")).is_err());
        // A gap past i64.
        let huge = URL_SAFE_NO_PAD.encode([
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01,
        ]);
        assert!(DoneRanges::decode(0, &format!("{PREFIX}{huge}")).is_err());
    }
}
