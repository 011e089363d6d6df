//! [`Redrive`]: browse a dead-letter topic and re-publish its records to the topics they came
//! from, read from kafkit's `original-topic` header, Spring's `kafka_dlt-original-topic` (the
//! first, when Spring appended one per hop) or Karafka's `source_topic`.
//!
//! A record dead-lettered after retry topics goes back to the topic the tiers serve, never to
//! a tier: a copy naming a retry topic ([`retry_topic::KNOWN_TEMPLATES`]) is sent to its
//! source. The re-published record starts afresh there: the failure headers (kafkit's and
//! Spring's `kafka_dlt-*`) and the retry headers (kafkit's tier and due time, Spring's
//! `retry_topic-*`) are dropped, so nothing makes it wait or count earlier attempts.
//!
//! Replay is safe to re-run: it reads the dead-letter topic with the committed offsets of its
//! own group (`kafkit-redrive.<topic>`, never joined) and commits only after the re-published
//! copies are acknowledged, so a second run continues where the first stopped. A crash between
//! the two re-publishes those records again (at-least-once), never skips them. A record that
//! cannot go back (no or forged `original-topic`, unknown topic) is reported and passed over,
//! never a poison for the rest.
//!
//! Three ways to choose what to replay, all through the same checks (destination, permission,
//! one replay per dead-letter topic at a time, `redrive-of` header):
//! - [`Redrive::replay`] / [`Redrive::replay_where`]: the next records from the position;
//! - [`Redrive::replay_offsets`]: chosen records, wherever they are;
//! - [`Redrive::replay_matching`]: the not-yet-replayed records a [`RecordFilter`] keeps.
//!
//! The last two replay out of order. Which records they replayed ahead of the position is
//! committed with the position itself, in the offset commit's metadata ([`progress`]), so every
//! later replay (in this process or another, after a restart) passes over them instead of
//! publishing them twice. That set has a budget in bytes; a replay that would exceed it is
//! refused before it publishes anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::config::KafkaConfig;
use crate::dead_letter::{self, FAILURE_HEADERS};
use crate::error::{Error, Result};
use crate::filter::RecordFilter;
use crate::producer::Producer;
use crate::reader::{Limits, Reader, Start};
use crate::record::{Message, Record};
use crate::retry_topic;

mod progress;

pub use progress::PartitionProgress;
pub(crate) use progress::{METADATA_BUDGET, Progress};

/// Header a replayed record carries: `<dead-letter topic>/<partition>/<offset>` of its copy.
pub const REDRIVE_OF: &str = "redrive-of";
/// The prefix of Spring Kafka's dead-letter headers (`KafkaHeaders.DLT_*`).
const SPRING_DLT_PREFIX: &str = "kafka_dlt-";
/// How long reading waits for the next record before deciding the topic is drained.
const IDLE: Duration = Duration::from_secs(5);
/// Most records a replay of chosen or matching records reads to find them.
pub const MAX_SCAN: usize = 100_000;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Records re-published, by destination topic.
    pub replayed: BTreeMap<String, usize>,
    /// Records passed over for good, with why (`partition/offset: reason`). They stay in the
    /// dead-letter topic; later replays do not retry them.
    pub skipped: Vec<String>,
    /// Records whose re-publication failed for now (broker busy or down), with why. The
    /// replay stopped at the first of them in each partition; the next replay starts there.
    pub failed: Vec<String>,
    /// Destination topics the caller may not write; when any, nothing was replayed.
    pub denied: Vec<String>,
    /// Records of the dead-letter topic read to find what to replay.
    pub scanned: usize,
}

impl ReplayReport {
    /// Records re-published in all.
    pub fn total(&self) -> usize {
        self.replayed.values().sum()
    }
}

/// Templates a dead-letter topic's name is matched against to find the topic it serves:
/// kafkit's default, seed 001's, Spring Kafka's two defaults.
pub const KNOWN_TEMPLATES: [&str; 4] = [
    dead_letter::DEFAULT_TEMPLATE,
    "{topic}_dlt",
    "{topic}-dlt",
    "{topic}.DLT",
];

/// Reads and replays dead-letter topics.
#[derive(Debug, Clone)]
pub struct Redrive {
    config: KafkaConfig,
    any_destination: bool,
}

impl Redrive {
    /// Works on the cluster of `config`.
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        config.ensure_enabled()?;
        Ok(Redrive {
            config: config.clone(),
            any_destination: false,
        })
    }

    /// The operator's override: replay each record to whatever its `original-topic` header
    /// names. Without it a record goes back only to the topic the dead-letter topic serves
    /// (its name per [`KNOWN_TEMPLATES`]), since anyone who can write to a dead-letter topic
    /// can forge that header.
    pub fn any_destination(mut self) -> Self {
        self.any_destination = true;
        self
    }

    /// The redrive group of a dead-letter topic.
    pub fn group_of(dead_letter_topic: &str) -> String {
        format!("kafkit-redrive.{dead_letter_topic}")
    }

    /// The topic `dead_letter_topic` serves, read from its name with [`KNOWN_TEMPLATES`].
    pub fn source_of(dead_letter_topic: &str) -> Option<String> {
        KNOWN_TEMPLATES.iter().find_map(|template| {
            let (prefix, suffix) = template.split_once("{topic}")?;
            dead_letter_topic
                .strip_prefix(prefix)?
                .strip_suffix(suffix)
                .filter(|source| !source.is_empty())
                .map(str::to_owned)
        })
    }

    /// Up to `limit` records of `dead_letter_topic`, oldest first, without committing.
    pub async fn list(&self, dead_letter_topic: &str, limit: usize) -> Result<Vec<Message>> {
        self.list_within(dead_letter_topic, Limits::to_end(limit))
            .await
    }

    /// Records of `dead_letter_topic` within `limits` (records, bytes), oldest first.
    pub async fn list_within(
        &self,
        dead_letter_topic: &str,
        limits: Limits,
    ) -> Result<Vec<Message>> {
        Reader::new(&self.config)?
            .open(dead_letter_topic, None, Start::Beginning)
            .await?
            .collect(&limits.idle(IDLE))
            .await
    }

    /// Re-publishes up to `limit` not-yet-replayed records of `dead_letter_topic` to their
    /// original topics, without the failure headers, then commits them as replayed.
    pub async fn replay(&self, dead_letter_topic: &str, limit: usize) -> Result<ReplayReport> {
        self.replay_where(dead_letter_topic, limit, |_| true).await
    }

    /// Like [`Redrive::replay`], but only when `allowed` accepts every destination topic;
    /// otherwise nothing is re-published or committed and the report lists the denied topics.
    /// Records already replayed out of order ([`Redrive::replay_offsets`],
    /// [`Redrive::replay_matching`]) are passed over, not counted.
    ///
    /// One replay of a dead-letter topic runs at a time in this process (a second waits, then
    /// continues where the first stopped), and once records are re-published the replay
    /// commits them even if the caller stops waiting: a cancelled request cannot leave
    /// published records uncommitted to be published again.
    pub async fn replay_where(
        &self,
        dead_letter_topic: &str,
        limit: usize,
        allowed: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ReplayReport> {
        self.replay_chosen(dead_letter_topic, Choice::Next { limit }, allowed)
            .await
    }

    /// Re-publishes the records at `offsets` (`(partition, offset)`) of `dead_letter_topic`,
    /// as [`Redrive::replay_where`] does, and remembers them as replayed: later replays pass
    /// over them. A record replayed already (before the position, or chosen before) is
    /// reported skipped, not published again; an offset without a record too (compacted away,
    /// past the end of its partition, or of a partition the topic does not have).
    ///
    /// Refused with [`Error::ReplayRefused`], before anything is published, when remembering
    /// them would exceed [`METADATA_BUDGET`]: replay the earlier records first.
    pub async fn replay_offsets(
        &self,
        dead_letter_topic: &str,
        offsets: &[(i32, i64)],
        allowed: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ReplayReport> {
        let invalid = |reason: String| Error::InvalidSelection {
            field: "offsets".to_owned(),
            reason,
        };
        if offsets.is_empty() {
            return Err(invalid("choose at least one record".to_owned()));
        }
        let mut chosen: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
        for (partition, offset) in offsets {
            if *partition < 0 || *offset < 0 {
                return Err(invalid(format!(
                    "{partition}/{offset}: partitions and offsets are 0 or more"
                )));
            }
            chosen.entry(*partition).or_default().insert(*offset);
        }
        self.replay_chosen(dead_letter_topic, Choice::Offsets(chosen), allowed)
            .await
    }

    /// Re-publishes up to `limit` not-yet-replayed records of `dead_letter_topic` that
    /// `filter` keeps, as [`Redrive::replay_offsets`] does. It reads from the position
    /// onwards, at most [`MAX_SCAN`] records (the report says how many it read); records the
    /// filter passes over stay for later replays.
    pub async fn replay_matching(
        &self,
        dead_letter_topic: &str,
        filter: &RecordFilter,
        limit: usize,
        allowed: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ReplayReport> {
        filter.check()?;
        let choice = Choice::Matching {
            filter: filter.clone(),
            limit,
        };
        self.replay_chosen(dead_letter_topic, choice, allowed).await
    }

    /// Per partition of `dead_letter_topic`: the replay's position, the records replayed
    /// ahead of it, and the end of the partition.
    pub async fn progress(&self, dead_letter_topic: &str) -> Result<Vec<PartitionProgress>> {
        let positions = Reader::new(&self.config)?
            .with_group(Redrive::group_of(dead_letter_topic))
            .positions(dead_letter_topic, Start::Committed)
            .await?;
        let mut partitions = Vec::new();
        for (partition, position) in positions {
            partitions.push(PartitionProgress {
                partition,
                progress: progress_of(
                    dead_letter_topic,
                    partition,
                    position.from,
                    &position.metadata,
                )?,
                high_watermark: position.high,
            });
        }
        partitions.sort_by_key(|p| p.partition);
        Ok(partitions)
    }

    async fn replay_chosen(
        &self,
        dead_letter_topic: &str,
        choice: Choice,
        allowed: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ReplayReport> {
        crate::record::validate_topic(dead_letter_topic)?;
        let source = if self.any_destination {
            None
        } else {
            let source =
                Redrive::source_of(dead_letter_topic).ok_or_else(|| Error::InvalidTopicSpec {
                    topic: dead_letter_topic.to_owned(),
                    reason: format!(
                        "its name follows none of the dead-letter templates {KNOWN_TEMPLATES:?}, \
                         so the topic it serves is unknown; replay it with an explicit \
                         destination override"
                    ),
                })?;
            // The only destination is known before anything is read.
            if !allowed(&source) {
                return Ok(ReplayReport {
                    denied: vec![source],
                    ..ReplayReport::default()
                });
            }
            Some(source)
        };
        let this = self.clone();
        let topic = dead_letter_topic.to_owned();
        tokio::spawn(async move {
            let lock = replay_lock(&topic);
            let _single = lock.lock().await;
            this.replay_locked(&topic, choice, source.as_deref(), allowed)
                .await
        })
        .await
        .map_err(Error::Task)?
    }

    async fn replay_locked(
        &self,
        dead_letter_topic: &str,
        choice: Choice,
        source: Option<&str>,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<ReplayReport> {
        // The position and the set replayed ahead of it, per partition, as committed; this
        // reading also commits the outcome.
        let mut reading = Reader::new(&self.config)?
            .with_group(Redrive::group_of(dead_letter_topic))
            .open(dead_letter_topic, None, Start::Committed)
            .await?;
        let mut progress: HashMap<i32, Progress> = HashMap::new();
        for partition in reading.partitions() {
            if let Some(position) = reading.position(partition) {
                let at = progress_of(
                    dead_letter_topic,
                    partition,
                    position.from,
                    &position.metadata,
                )?;
                progress.insert(partition, at);
            }
        }
        let committed = progress.clone();
        let mut report = ReplayReport::default();
        // The records to replay, in order, and (sequential replay) how far it read.
        let mut messages = Vec::new();
        let mut read_to: HashMap<i32, i64> = HashMap::new();
        let not_replayed = |message: &Message| {
            !progress
                .get(&message.partition)
                .is_some_and(|p| p.replayed(message.offset))
        };
        let to_end = Limits::to_end(usize::MAX).idle(IDLE);
        match &choice {
            Choice::Next { limit } => {
                while messages.len() < *limit {
                    let Some(message) = reading.next(&to_end).await? else {
                        break;
                    };
                    report.scanned += 1;
                    read_to.insert(message.partition, message.offset + 1);
                    if not_replayed(&message) {
                        messages.push(message);
                    }
                }
            }
            Choice::Matching { filter, limit } => {
                while messages.len() < *limit && report.scanned < MAX_SCAN {
                    let Some(message) = reading.next(&to_end).await? else {
                        break;
                    };
                    report.scanned += 1;
                    if not_replayed(&message) && filter.keeps(&message) {
                        messages.push(message);
                    }
                }
            }
            Choice::Offsets(chosen) => {
                // A choice past the end of its partition, or of a partition the topic does not
                // have, names no record: reported, as a compacted-away offset is.
                let mut stored: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
                for (partition, offsets) in chosen {
                    let high = reading.position(*partition).map(|position| position.high);
                    for offset in offsets {
                        match high {
                            Some(high) if *offset < high => {
                                stored.entry(*partition).or_default().insert(*offset);
                            }
                            Some(high) => report.skipped.push(format!(
                                "{partition}/{offset}: past the end of partition {partition} \
                                 (its next offset is {high})"
                            )),
                            None => report.skipped.push(format!(
                                "{partition}/{offset}: {dead_letter_topic} has no partition \
                                 {partition}"
                            )),
                        }
                    }
                }
                for (partition, offsets) in &stored {
                    if let (Some(first), Some(last)) = (offsets.first(), offsets.last())
                        && last - first >= MAX_SCAN as i64
                    {
                        return Err(Error::InvalidSelection {
                            field: "offsets".to_owned(),
                            reason: format!(
                                "offsets {first} and {last} of partition {partition} are more \
                                 than {MAX_SCAN} apart; replay them in separate requests"
                            ),
                        });
                    }
                }
                for (partition, offsets) in &stored {
                    let Some(at) = progress.get(partition) else {
                        continue;
                    };
                    let mut wanted: BTreeSet<i64> = BTreeSet::new();
                    for offset in offsets {
                        if at.replayed(*offset) {
                            report
                                .skipped
                                .push(format!("{partition}/{offset}: already replayed"));
                        } else {
                            wanted.insert(*offset);
                        }
                    }
                    let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
                        continue;
                    };
                    let last = *last;
                    let mut span = Reader::new(&self.config)?
                        .open(
                            dead_letter_topic,
                            Some(&[*partition]),
                            Start::Offset(*first),
                        )
                        .await?;
                    while let Some(message) = span.next(&to_end).await? {
                        report.scanned += 1;
                        let offset = message.offset;
                        if wanted.remove(&offset) {
                            messages.push(message);
                        }
                        if offset >= last {
                            break;
                        }
                    }
                    for offset in wanted {
                        report
                            .skipped
                            .push(format!("{partition}/{offset}: no record at this offset"));
                    }
                }
            }
        }
        let mut records = Vec::new();
        let mut passed_over = Vec::new();
        for message in &messages {
            let at = format!("{}/{}", message.partition, message.offset);
            match destination(message, source) {
                Ok(topic) => records.push((message, replay_record(message, topic))),
                Err(reason) => {
                    report.skipped.push(format!("{at}: {reason}"));
                    passed_over.push(message);
                }
            }
        }
        let mut denied: Vec<String> = records
            .iter()
            .map(|(_, r)| r.topic.clone())
            .filter(|topic| !allowed(topic))
            .collect();
        if !denied.is_empty() {
            denied.sort();
            denied.dedup();
            report.denied = denied;
            return Ok(report);
        }
        let out_of_order = !matches!(choice, Choice::Next { .. });
        if out_of_order {
            // Everything chosen remembered as replayed must fit the budget: checked before
            // anything is published, since Kafka would refuse the commit after it.
            let mut planned = progress.clone();
            for message in records
                .iter()
                .map(|(m, _)| *m)
                .chain(passed_over.iter().copied())
            {
                if let Some(p) = planned.get_mut(&message.partition) {
                    p.insert(message.offset);
                }
            }
            if let Some((partition, needed)) = planned
                .iter()
                .map(|(partition, p)| (*partition, p.metadata().len()))
                .find(|(_, needed)| *needed > METADATA_BUDGET)
            {
                return Err(Error::ReplayRefused {
                    topic: dead_letter_topic.to_owned(),
                    reason: format!(
                        "remembering which records of partition {partition} were replayed out \
                         of order would take {needed} bytes of offset-commit metadata, over the \
                         budget of {METADATA_BUDGET} bytes (Kafka keeps at most \
                         offset.metadata.max.bytes, 4096 by default); replay the earlier records \
                         of partition {partition} first (replay next or replay all), which moves \
                         the position past them and frees the budget"
                    ),
                });
            }
        }
        let producer = Producer::builder(&self.config)
            .standard_headers(false)
            .build()?;
        let (origins, records): (Vec<&Message>, Vec<Record>) = records.into_iter().unzip();
        let destinations: Vec<String> = records.iter().map(|r| r.topic.clone()).collect();
        let results = producer.send_batch(records).await;
        producer.shutdown().await?;
        // Records re-published, or passed over for good, per partition; and the first record
        // of each partition that could not be re-published for now.
        let mut done: Vec<&Message> = passed_over;
        let mut stopped: HashMap<i32, i64> = HashMap::new();
        for ((result, topic), message) in results.into_iter().zip(destinations).zip(origins) {
            let at = format!("{}/{}", message.partition, message.offset);
            match result {
                Ok(_) => {
                    *report.replayed.entry(topic).or_default() += 1;
                    done.push(message);
                }
                Err(error) if error.is_retriable() || error.is_fatal() => {
                    report.failed.push(format!("{at}: {error}"));
                    let first = stopped.entry(message.partition).or_insert(message.offset);
                    *first = (*first).min(message.offset);
                }
                // This record can never be re-published as it is (unknown topic, too large):
                // reported, and passed over so it does not block the rest forever.
                Err(error) => {
                    report.skipped.push(format!("{at}: {error}"));
                    done.push(message);
                }
            }
        }
        if out_of_order {
            for message in done {
                if let Some(p) = progress.get_mut(&message.partition) {
                    p.insert(message.offset);
                }
            }
        } else {
            // The sequential replay moves each partition's position past what it read, or
            // to the first record that could not be re-published for now.
            read_to.extend(stopped);
            for (partition, next) in read_to {
                if let Some(p) = progress.get_mut(&partition) {
                    p.move_to(next);
                }
            }
        }
        let changed: HashMap<i32, (i64, String)> = progress
            .iter()
            .filter(|(partition, p)| committed.get(partition) != Some(p))
            .map(|(partition, p)| (*partition, (p.next(), p.metadata())))
            .collect();
        reading.commit_with_metadata(&changed).await?;
        Ok(report)
    }
}

/// What a replay takes.
#[derive(Debug)]
enum Choice {
    /// The next records from the position.
    Next { limit: usize },
    /// These offsets, per partition.
    Offsets(BTreeMap<i32, BTreeSet<i64>>),
    /// Records the filter keeps, from the position on.
    Matching { filter: RecordFilter, limit: usize },
}

/// The progress committed for `partition` (at `next`, with `metadata`).
fn progress_of(topic: &str, partition: i32, next: i64, metadata: &str) -> Result<Progress> {
    Progress::from_commit(next, metadata).map_err(|reason| Error::ReplayRefused {
        topic: topic.to_owned(),
        reason: format!(
            "the redrive group's commit of partition {partition} is unreadable ({reason}); \
             reset the offsets of group {} to start over",
            Redrive::group_of(topic)
        ),
    })
}

/// Where `message` goes back to, or why it cannot.
fn destination(message: &Message, source: Option<&str>) -> std::result::Result<String, String> {
    let topic = dead_letter::original_topic(message)
        .ok_or_else(|| "no original-topic header".to_owned())?;
    // Re-publishing the copy would write an empty value (a tombstone on a compacted topic).
    if let Some(size) = message.header_value(dead_letter::VALUE_OMITTED) {
        return Err(format!(
            "the copy was stored without its {}-byte value (too large for the dead-letter \
             topic); the value is in {topic} at the original partition and offset",
            String::from_utf8_lossy(size)
        ));
    }
    crate::record::validate_topic(&topic)
        .map_err(|e| format!("original-topic {topic:?} is not a topic name: {e}"))?;
    // A copy that failed last on a retry topic goes to the topic the tiers serve: that of this
    // dead-letter topic, or (with any destination) the one the retry topic's name says, when
    // the copy carries retry headers to show it took that round trip.
    let topic = match retry_topic::source_of(&topic) {
        Some((tiers_of, _))
            if source == Some(tiers_of.as_str())
                || (source.is_none() && retry_topic::is_retry_copy(message)) =>
        {
            tiers_of
        }
        _ => topic,
    };
    match source {
        Some(source) if topic != source => Err(format!(
            "original-topic {topic:?} is not {source:?}, the topic this dead-letter topic serves"
        )),
        _ => Ok(topic),
    }
}

/// The lock that makes replays of one dead-letter topic run one at a time in this process.
fn replay_lock(dead_letter_topic: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Mutex::default);
    LOCKS
        .lock()
        .expect("not poisoned")
        .entry(dead_letter_topic.to_owned())
        .or_default()
        .clone()
}

/// The copy to re-publish: original key, value and headers, failure and retry headers dropped.
fn replay_record(message: &Message, topic: String) -> Record {
    let mut record = Record::to(topic);
    record.key = message.key.clone();
    record.payload = message.value.clone();
    record.headers = message
        .headers
        .iter()
        .filter(|(name, _)| {
            !FAILURE_HEADERS.contains(&name.as_str())
                && !retry_topic::is_retry_header(name)
                && !name.starts_with(SPRING_DLT_PREFIX)
                && name != dead_letter::KARAFKA_ORIGINAL_TOPIC
                && name != REDRIVE_OF
        })
        .cloned()
        .collect();
    record.headers.push((
        REDRIVE_OF.to_owned(),
        format!("{}/{}/{}", message.topic, message.partition, message.offset).into_bytes(),
    ));
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(headers: &[(&str, &str)]) -> Message {
        Message {
            topic: "orders.dlq".into(),
            partition: 0,
            offset: 7,
            timestamp: None,
            key: None,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            value: None,
            attempt: 0,
        }
    }

    #[test]
    fn a_copy_stored_without_its_value_is_passed_over_naming_why() {
        let whole = copy(&[(dead_letter::ORIGINAL_TOPIC, "orders")]);
        assert_eq!(destination(&whole, None), Ok("orders".to_owned()));
        let omitted = copy(&[
            (dead_letter::ORIGINAL_TOPIC, "orders"),
            (dead_letter::VALUE_OMITTED, "2000000"),
        ]);
        let reason = destination(&omitted, None).unwrap_err();
        assert!(
            reason.contains("without its 2000000-byte value"),
            "{reason}"
        );
    }

    #[test]
    fn a_copy_naming_a_retry_topic_goes_back_to_the_topic_the_tiers_serve() {
        let spring = copy(&[
            ("kafka_dlt-original-topic", "orders-retry-1"),
            ("retry_topic-attempts", "3"),
        ]);
        assert_eq!(destination(&spring, Some("orders")).unwrap(), "orders");
        assert_eq!(destination(&spring, None).unwrap(), "orders");
        let kafkit = copy(&[(dead_letter::ORIGINAL_TOPIC, "orders.retry.2")]);
        assert_eq!(destination(&kafkit, Some("orders")).unwrap(), "orders");
        // With any destination, a name alone is no proof of a round trip.
        assert_eq!(destination(&kafkit, None).unwrap(), "orders.retry.2");
        // A retry topic of another topic is not this dead-letter topic's to replay to.
        let other = copy(&[(dead_letter::ORIGINAL_TOPIC, "payments.retry.1")]);
        assert!(destination(&other, Some("orders")).is_err());
    }
}
