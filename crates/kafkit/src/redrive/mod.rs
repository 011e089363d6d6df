//! [`Redrive`]: browse a dead-letter topic and re-publish its records to the topics they came
//! from, read from kafkit's `original-topic` header, Spring's `kafka_dlt-original-topic` (the
//! first, when Spring appended one per hop) or Karafka's `source_topic`.
//!
//! A record dead-lettered after retry topics goes back to the topic the tiers serve, never to
//! a tier: a copy naming a retry topic ([`crate::retry_topic::KNOWN_TEMPLATES`]) is sent to its
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
//! One replay per dead-letter topic runs at a time, across processes too: module `flight` holds
//! the lock (a consumer group's membership) and fences the commit (a transactional producer),
//! so a replay that lost its lock unnoticed cannot commit over the one that took over.
//!
//! Three ways to choose what to replay, all through the same checks (destination, permission,
//! one replay per dead-letter topic at a time, `redrive-of` header):
//! - [`Redrive::replay`] / [`Redrive::replay_where`]: the next records from the position;
//! - [`Redrive::replay_offsets`]: chosen records, wherever they are;
//! - [`Redrive::replay_matching`]: the not-yet-replayed records a [`RecordFilter`] keeps.
//!
//! The last two replay out of order. Which records they replayed ahead of the position is
//! committed with the position itself, in the offset commit's metadata (module `progress`),
//! so every later replay (in this process or another, after a restart) passes over them
//! instead of publishing them twice. That set has a budget in bytes; a replay that would exceed it is
//! refused before it publishes anything.
//!
//! A replay runs as four phases: `select` reads what to replay, `plan` decides where each
//! record goes (or why it cannot) and checks the budget, `publish` sends the copies, `settle`
//! decides what to report and commit. Plan and settle do no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::config::KafkaConfig;
use crate::dead_letter;
use crate::error::{Error, Result};
use crate::filter::RecordFilter;
use crate::reader::{Limits, Reader, Reading, Start};
use crate::record::Message;

use flight::Flight;
use select::{Choice, Committed};
use settle::Ledger;

mod flight;
mod plan;
mod progress;
mod publish;
mod select;
mod settle;

pub use flight::LOCK_TOPIC;
pub use progress::PartitionProgress;
pub(crate) use progress::Progress;

/// Header a replayed record carries: `<dead-letter topic>/<partition>/<offset>` of its copy.
pub const REDRIVE_OF: &str = "redrive-of";
/// How long reading waits for the next record before deciding the topic is drained.
const IDLE: Duration = Duration::from_secs(5);
/// Most records a replay of chosen or matching records reads to find them.
pub const MAX_SCAN: usize = 100_000;
/// About the most bytes of keys, values and headers one replay holds (the record crossing it
/// is the last one taken): 10,000 records of Kafka's largest would be 10 GB. What is left
/// waits for the next replay (a chosen record is counted as held back).
pub const MAX_REPLAY_BYTES: usize = 64 << 20;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Records re-published, by destination topic.
    pub replayed: BTreeMap<String, usize>,
    /// Records passed over for good, with why (`partition/offset: reason`). They stay in the
    /// dead-letter topic; later replays do not retry them, but [`Redrive::replay_again`]
    /// re-publishes them by offset once the cause is fixed.
    pub skipped: Vec<String>,
    /// Records whose re-publication failed for now (broker busy or down), with why. A
    /// sequential replay's position goes back to the first of them in each partition, and the
    /// records published after it are remembered ahead of it: the next replay tries the
    /// failed ones again and publishes no other twice.
    pub failed: Vec<String>,
    /// Records chosen but not published this time, left for the next replay (a chosen offset:
    /// choose it again): a replay publishes in rounds and stops after a round in which a
    /// record failed for now, and before a round whose failures could make the commit
    /// remembering what was replayed longer than Kafka keeps (`offset.metadata.max.bytes`),
    /// and chosen records past the replay's byte budget ([`Redrive::max_bytes`]).
    pub held_back: usize,
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
/// kafkit's default, `{topic}_dlt`, Spring Kafka's two defaults.
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
    max_bytes: usize,
}

impl Redrive {
    /// Works on the cluster of `config`.
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self> {
        config.ensure_enabled()?;
        Ok(Redrive {
            config: config.clone(),
            any_destination: false,
            max_bytes: MAX_REPLAY_BYTES,
        })
    }

    /// About the most bytes of records one replay holds ([`MAX_REPLAY_BYTES`] by default).
    #[must_use]
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
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
    /// continues where the first stopped) and across processes: while another process (a
    /// gateway replica, the CLI) replays it, this one publishes nothing and fails with
    /// [`Error::ReplayInProgress`] (module `flight`). Once records are re-published the replay
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
    /// them would exceed the commit-metadata budget (3,072 bytes): replay the earlier records
    /// first.
    pub async fn replay_offsets(
        &self,
        dead_letter_topic: &str,
        offsets: &[(i32, i64)],
        allowed: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ReplayReport> {
        self.replay_at(dead_letter_topic, offsets, false, allowed)
            .await
    }

    /// Re-publishes the records at `offsets` of `dead_letter_topic` like
    /// [`Redrive::replay_offsets`], even those a replay published or passed over before: the
    /// operator's way back to a record passed over for good once its cause is fixed (its
    /// topic was missing, `UnknownTopic` can be transient; a size limit was too low). The
    /// reports of earlier replays name such records (`partition/offset: reason`). The
    /// destination and permission checks and the single flight still apply; the progress only
    /// changes for records not replayed before, which are remembered as
    /// [`Redrive::replay_offsets`] remembers them. A record chosen again is published again:
    /// choose only those you mean.
    pub async fn replay_again(
        &self,
        dead_letter_topic: &str,
        offsets: &[(i32, i64)],
        allowed: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ReplayReport> {
        self.replay_at(dead_letter_topic, offsets, true, allowed)
            .await
    }

    /// The records at `offsets`, those replayed before included when `again`.
    async fn replay_at(
        &self,
        dead_letter_topic: &str,
        offsets: &[(i32, i64)],
        again: bool,
        allowed: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ReplayReport> {
        let choice = Choice::Offsets {
            chosen: chosen_offsets(offsets)?,
            again,
        };
        self.replay_chosen(dead_letter_topic, choice, allowed).await
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
            // One replay at a time in this process (the others wait their turn), then across
            // processes (the others are refused).
            let lock = replay_lock(&topic);
            let _single = lock.lock().await;
            let flight = Flight::take(&this.config, &topic).await?;
            let report = this
                .replay_locked(&topic, choice, source.as_deref(), allowed, &flight)
                .await;
            flight.land().await;
            report
        })
        .await
        .map_err(Error::Task)?
    }

    /// One replay, as its phases: select what to replay, plan where each record goes, publish
    /// the copies (while `flight` holds the lock), settle what to report and commit (through
    /// `flight`'s fence).
    async fn replay_locked(
        &self,
        dead_letter_topic: &str,
        choice: Choice,
        source: Option<&str>,
        allowed: impl Fn(&str) -> bool,
        flight: &Flight,
    ) -> Result<ReplayReport> {
        // The position and the set replayed ahead of it, per partition, as committed; this
        // reading also commits the outcome.
        let mut reading = Reader::new(&self.config)?
            .with_group(Redrive::group_of(dead_letter_topic))
            .open(dead_letter_topic, None, Start::Committed)
            .await?;
        let committed = committed_progress(dead_letter_topic, &reading)?;
        let selection = select::select(
            &self.config,
            &mut reading,
            dead_letter_topic,
            &choice,
            &committed,
            self.max_bytes,
        )
        .await?;
        let mut report = ReplayReport {
            scanned: selection.scanned,
            skipped: selection.skipped,
            ..ReplayReport::default()
        };
        let order = choice.order();
        let plan = plan::plan(
            dead_letter_topic,
            &selection.messages,
            source,
            &allowed,
            &committed,
            order,
        )?;
        if !plan.denied.is_empty() {
            report.skipped.extend(settle::lines(&plan.passed_over));
            report.denied = plan.denied;
            return Ok(report);
        }
        let mut ledger = Ledger::new(&committed, order, selection.read_to, &plan.passed_over);
        let held_back =
            publish::publish(&self.config, plan.copies, &mut ledger, || flight.holds()).await?;
        let settlement = ledger.settle(&held_back);
        flight.commit(&reading, &settlement.commits).await?;
        report.replayed = settlement.replayed;
        report.skipped.extend(settlement.skipped);
        report.failed = settlement.failed;
        report.held_back = settlement.held_back + selection.held_back;
        Ok(report)
    }
}

/// `offsets` (`(partition, offset)`) per partition; at least one, none negative.
fn chosen_offsets(offsets: &[(i32, i64)]) -> Result<select::Offsets> {
    let invalid = |reason: String| Error::InvalidSelection {
        field: "offsets".to_owned(),
        reason,
    };
    if offsets.is_empty() {
        return Err(invalid("choose at least one record".to_owned()));
    }
    let mut chosen = select::Offsets::new();
    for (partition, offset) in offsets {
        if *partition < 0 || *offset < 0 {
            return Err(invalid(format!(
                "{partition}/{offset}: partitions and offsets are 0 or more"
            )));
        }
        chosen.entry(*partition).or_default().insert(*offset);
    }
    Ok(chosen)
}

/// The progress each partition of the dead-letter topic `reading` reads had, as committed.
fn committed_progress(topic: &str, reading: &Reading) -> Result<Committed> {
    let mut committed = Committed::new();
    for partition in reading.partitions() {
        if let Some(position) = reading.position(partition) {
            let progress = progress_of(topic, partition, position.from, &position.metadata)?;
            committed.insert(partition, progress);
        }
    }
    Ok(committed)
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
