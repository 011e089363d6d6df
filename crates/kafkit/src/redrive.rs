//! [`Redrive`]: browse a dead-letter topic and re-publish its records to the topics they came
//! from, read from kafkit's `original-topic` header, Spring's `kafka_dlt-original-topic` or
//! Karafka's `source_topic`.
//!
//! Replay is safe to re-run: it reads the dead-letter topic with the committed offsets of its
//! own group (`kafkit-redrive.<topic>`, never joined) and commits only after the re-published
//! copies are acknowledged, so a second run continues where the first stopped. A crash between
//! the two re-publishes those records again (at-least-once), never skips them. A record that
//! cannot go back (no or forged `original-topic`, unknown topic) is reported and passed over,
//! never a poison for the rest.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::config::KafkaConfig;
use crate::dead_letter::{self, FAILURE_HEADERS};
use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::reader::{Limits, Reader, Start};
use crate::record::{Message, Record};

/// Header a replayed record carries: `<dead-letter topic>/<partition>/<offset>` of its copy.
pub const REDRIVE_OF: &str = "redrive-of";
/// How long reading waits for the next record before deciding the topic is drained.
const IDLE: Duration = Duration::from_secs(5);

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
            this.replay_locked(&topic, limit, source.as_deref(), allowed)
                .await
        })
        .await
        .map_err(Error::Task)?
    }

    async fn replay_locked(
        &self,
        dead_letter_topic: &str,
        limit: usize,
        source: Option<&str>,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<ReplayReport> {
        let mut reading = Reader::new(&self.config)?
            .with_group(Redrive::group_of(dead_letter_topic))
            .open(dead_letter_topic, None, Start::Committed)
            .await?;
        let messages = reading.collect(&Limits::to_end(limit).idle(IDLE)).await?;
        let mut report = ReplayReport::default();
        let mut records = Vec::new();
        for message in &messages {
            let at = format!("{}/{}", message.partition, message.offset);
            match destination(message, source) {
                Ok(topic) => records.push((message, replay_record(message, topic))),
                Err(reason) => report.skipped.push(format!("{at}: {reason}")),
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
        let producer = Producer::builder(&self.config)
            .standard_headers(false)
            .build()?;
        let (origins, records): (Vec<&Message>, Vec<Record>) = records.into_iter().unzip();
        let destinations: Vec<String> = records.iter().map(|r| r.topic.clone()).collect();
        let results = producer.send_batch(records).await;
        producer.shutdown().await?;
        // Where the next replay starts in each partition: after the last record read, or at
        // the first record that could not be re-published for now.
        let mut next: HashMap<i32, i64> = HashMap::new();
        for message in &messages {
            let entry = next.entry(message.partition).or_default();
            *entry = (*entry).max(message.offset + 1);
        }
        let mut stopped: HashMap<i32, i64> = HashMap::new();
        for ((result, topic), message) in results.into_iter().zip(destinations).zip(origins) {
            let at = format!("{}/{}", message.partition, message.offset);
            match result {
                Ok(_) => *report.replayed.entry(topic).or_default() += 1,
                Err(error) if error.is_retriable() || error.is_fatal() => {
                    report.failed.push(format!("{at}: {error}"));
                    let first = stopped.entry(message.partition).or_insert(message.offset);
                    *first = (*first).min(message.offset);
                }
                // This record can never be re-published as it is (unknown topic, too large):
                // reported, and passed over so it does not block the rest forever.
                Err(error) => report.skipped.push(format!("{at}: {error}")),
            }
        }
        next.extend(stopped);
        reading.commit(&next).await?;
        Ok(report)
    }
}

/// Where `message` goes back to, or why it cannot.
fn destination(message: &Message, source: Option<&str>) -> std::result::Result<String, String> {
    let topic = dead_letter::original_topic(message)
        .ok_or_else(|| "no original-topic header".to_owned())?;
    crate::record::validate_topic(&topic)
        .map_err(|e| format!("original-topic {topic:?} is not a topic name: {e}"))?;
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

/// The copy to re-publish: original key, value and headers, failure headers dropped.
fn replay_record(message: &Message, topic: String) -> Record {
    let mut record = Record::to(topic);
    record.key = message.key.clone();
    record.payload = message.value.clone();
    record.headers = message
        .headers
        .iter()
        .filter(|(name, _)| {
            !FAILURE_HEADERS.contains(&name.as_str())
                && name != dead_letter::SPRING_ORIGINAL_TOPIC
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
