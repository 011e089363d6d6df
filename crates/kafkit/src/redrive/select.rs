//! The first phase of a replay: which records of the dead-letter topic to replay, read from
//! the position the redrive group committed ([`Choice::Next`], [`Choice::Matching`]) or from
//! the offsets chosen ([`Choice::Offsets`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::filter::RecordFilter;
use crate::reader::{Limits, Reader, Reading, Start, message_size};
use crate::record::Message;

use super::progress::Progress;
use super::{IDLE, MAX_SCAN};

/// The progress each partition of the dead-letter topic had when the replay began.
pub(super) type Committed = HashMap<i32, Progress>;

/// Offsets of the dead-letter topic, per partition.
pub(super) type Offsets = BTreeMap<i32, BTreeSet<i64>>;

/// What a replay takes.
#[derive(Debug)]
pub(super) enum Choice {
    /// The next records from the position.
    Next { limit: usize },
    /// These offsets, per partition; with `again`, also those replayed or passed over before.
    Offsets { chosen: Offsets, again: bool },
    /// Records the filter keeps, from the position on.
    Matching { filter: RecordFilter, limit: usize },
}

impl Choice {
    /// How the replay moves the position.
    pub(super) fn order(&self) -> Order {
        match self {
            Choice::Next { .. } => Order::Sequential,
            Choice::Offsets { .. } | Choice::Matching { .. } => Order::OutOfOrder,
        }
    }
}

/// How a replay moves through a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// Every record from the position on: the position moves past what was read.
    Sequential,
    /// Records chosen here and there: each is remembered as replayed ahead of the position.
    OutOfOrder,
}

/// The records a replay takes.
#[derive(Debug, Default)]
pub(super) struct Selection {
    /// The records not replayed before, in the order read (offset order per partition).
    pub messages: Vec<Message>,
    /// Sequential replay: per partition, the offset after the last record read.
    pub read_to: HashMap<i32, i64>,
    /// Records of the dead-letter topic read.
    pub scanned: usize,
    /// Chosen offsets passed over, with why (`partition/offset: reason`).
    pub skipped: Vec<String>,
    /// Bytes of keys, values and headers of `messages`.
    pub bytes: usize,
    /// Chosen offsets not read because the replay's byte budget was spent: left for the next
    /// replay.
    pub held_back: usize,
}

impl Selection {
    /// Takes `message`.
    fn take(&mut self, message: Message) {
        self.bytes += message_size(&message);
        self.messages.push(message);
    }
}

/// Reads the records `choice` takes, passing over those `committed` says were replayed, and
/// about `max_bytes` of them at most (the record crossing it is the last one taken).
pub(super) async fn select(
    config: &KafkaConfig,
    reading: &mut Reading,
    topic: &str,
    choice: &Choice,
    committed: &Committed,
    max_bytes: usize,
) -> Result<Selection> {
    match choice {
        Choice::Next { limit } => select_next(reading, *limit, committed, max_bytes).await,
        Choice::Matching { filter, limit } => {
            select_matching(reading, filter, *limit, committed, max_bytes).await
        }
        Choice::Offsets { chosen, again } => {
            let committed = if *again { None } else { Some(committed) };
            select_offsets(config, reading, topic, chosen, committed, max_bytes).await
        }
    }
}

/// Whether `committed` says `message` was replayed already.
fn replayed(committed: &Committed, message: &Message) -> bool {
    committed
        .get(&message.partition)
        .is_some_and(|p| p.replayed(message.offset))
}

fn to_end() -> Limits {
    Limits::to_end(usize::MAX).idle(IDLE)
}

async fn select_next(
    reading: &mut Reading,
    limit: usize,
    committed: &Committed,
    max_bytes: usize,
) -> Result<Selection> {
    let mut selection = Selection::default();
    while selection.messages.len() < limit && selection.bytes < max_bytes {
        let Some(message) = reading.next(&to_end()).await? else {
            break;
        };
        selection.scanned += 1;
        selection
            .read_to
            .insert(message.partition, message.offset + 1);
        if !replayed(committed, &message) {
            selection.take(message);
        }
    }
    Ok(selection)
}

async fn select_matching(
    reading: &mut Reading,
    filter: &RecordFilter,
    limit: usize,
    committed: &Committed,
    max_bytes: usize,
) -> Result<Selection> {
    let mut selection = Selection::default();
    while selection.messages.len() < limit
        && selection.scanned < MAX_SCAN
        && selection.bytes < max_bytes
    {
        let Some(message) = reading.next(&to_end()).await? else {
            break;
        };
        selection.scanned += 1;
        if !replayed(committed, &message) && filter.keeps(&message) {
            selection.take(message);
        }
    }
    Ok(selection)
}

/// The records at `chosen`, passing over those `committed` says were replayed (none when
/// `None`: the operator asked for them again); those past `max_bytes` are held back.
async fn select_offsets(
    config: &KafkaConfig,
    reading: &Reading,
    topic: &str,
    chosen: &Offsets,
    committed: Option<&Committed>,
    max_bytes: usize,
) -> Result<Selection> {
    let highs: HashMap<i32, i64> = reading
        .partitions()
        .into_iter()
        .filter_map(|p| reading.position(p).map(|position| (p, position.high)))
        .collect();
    let (located, skipped) = locate(topic, chosen, &highs)?;
    let mut selection = Selection {
        skipped,
        ..Selection::default()
    };
    for (partition, offsets) in located {
        let (done, wanted): (BTreeSet<i64>, BTreeSet<i64>) = match committed {
            Some(committed) => {
                let Some(progress) = committed.get(&partition) else {
                    continue;
                };
                offsets.into_iter().partition(|o| progress.replayed(*o))
            }
            None => (BTreeSet::new(), offsets),
        };
        selection.skipped.extend(
            done.iter()
                .map(|offset| format!("{partition}/{offset}: already replayed")),
        );
        if selection.bytes >= max_bytes {
            selection.held_back += wanted.len();
            continue;
        }
        let span = (partition, wanted, max_bytes);
        read_offsets(config, topic, span, &mut selection).await?;
    }
    Ok(selection)
}

/// Reads the records at `wanted` of `partition` into `selection` until it holds `max_bytes`
/// (the rest are held back); an offset without a record (compacted away, a transaction
/// marker) is passed over.
async fn read_offsets(
    config: &KafkaConfig,
    topic: &str,
    (partition, mut wanted, max_bytes): (i32, BTreeSet<i64>, usize),
    selection: &mut Selection,
) -> Result<()> {
    let (Some(first), Some(last)) = (wanted.first().copied(), wanted.last().copied()) else {
        return Ok(());
    };
    let mut span = Reader::new(config)?
        .open(topic, Some(&[partition]), Start::Offset(first))
        .await?;
    while let Some(message) = span.next(&to_end()).await? {
        selection.scanned += 1;
        let offset = message.offset;
        if wanted.remove(&offset) {
            selection.take(message);
        }
        if offset >= last {
            break;
        }
        if selection.bytes >= max_bytes {
            // Those after it wait for the next replay.
            selection.held_back += wanted.split_off(&offset).len();
            break;
        }
    }
    for offset in wanted {
        selection
            .skipped
            .push(format!("{partition}/{offset}: no record at this offset"));
    }
    Ok(())
}

/// The chosen offsets that name a record, per partition, and those that cannot, with why:
/// past the end of the partition (`highs`: each partition's high watermark), or of a partition
/// the topic does not have. An error when the offsets of one partition are too far apart to
/// read in one go.
fn locate(
    topic: &str,
    chosen: &Offsets,
    highs: &HashMap<i32, i64>,
) -> Result<(Offsets, Vec<String>)> {
    let mut located = Offsets::new();
    let mut skipped = Vec::new();
    for (partition, offsets) in chosen {
        for offset in offsets {
            match highs.get(partition) {
                Some(high) if offset < high => {
                    located.entry(*partition).or_default().insert(*offset);
                }
                Some(high) => skipped.push(format!(
                    "{partition}/{offset}: past the end of partition {partition} \
                     (its next offset is {high})"
                )),
                None => skipped.push(format!(
                    "{partition}/{offset}: {topic} has no partition {partition}"
                )),
            }
        }
    }
    for (partition, offsets) in &located {
        if let (Some(first), Some(last)) = (offsets.first(), offsets.last())
            && last - first >= MAX_SCAN as i64
        {
            return Err(Error::InvalidSelection {
                field: "offsets".to_owned(),
                reason: format!(
                    "offsets {first} and {last} of partition {partition} are more than \
                     {MAX_SCAN} apart; replay them in separate requests"
                ),
            });
        }
    }
    Ok((located, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_offsets_past_the_end_name_no_record_and_far_apart_ones_are_refused() {
        let chosen = BTreeMap::from([(0, BTreeSet::from([1, 3, 5, 9])), (7, BTreeSet::from([2]))]);
        let highs = HashMap::from([(0, 9)]);
        let (located, skipped) = locate("t.dlq", &chosen, &highs).unwrap();
        assert_eq!(located, BTreeMap::from([(0, BTreeSet::from([1, 3, 5]))]));
        assert_eq!(
            skipped,
            [
                "0/9: past the end of partition 0 (its next offset is 9)",
                "7/2: t.dlq has no partition 7",
            ]
        );
        let far = BTreeMap::from([(0, BTreeSet::from([0, MAX_SCAN as i64]))]);
        let highs = HashMap::from([(0, i64::MAX)]);
        let error = locate("t.dlq", &far, &highs).unwrap_err();
        assert!(
            error.to_string().contains("more than 100000 apart"),
            "{error}"
        );
    }
}
