//! [`Redrive`]: browse a dead-letter topic and re-publish its records to the topics they came
//! from, read from kafkit's `original-topic` header, Spring's `kafka_dlt-original-topic` or
//! Karafka's `source_topic`.
//!
//! Replay is safe to re-run: it reads the dead-letter topic as its own consumer group
//! (`kafkit-redrive.<topic>`) and commits only after the re-published copies are acknowledged,
//! so a second run continues where the first stopped. A crash between the two re-publishes
//! those records again (at-least-once), never skips them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::config::KafkaConfig;
use crate::dead_letter::{self, FAILURE_HEADERS};
use crate::error::Result;
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
    /// Records left alone, with why (`partition/offset: reason`).
    pub skipped: Vec<String>,
    /// Destination topics the caller may not write; when any, nothing was replayed.
    pub denied: Vec<String>,
}

impl ReplayReport {
    /// Records re-published in all.
    pub fn total(&self) -> usize {
        self.replayed.values().sum()
    }
}

/// Reads and replays dead-letter topics.
#[derive(Debug)]
pub struct Redrive {
    config: KafkaConfig,
}

impl Redrive {
    /// Works on the cluster of `config`.
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        config.ensure_enabled()?;
        Ok(Redrive {
            config: config.clone(),
        })
    }

    /// The redrive group of a dead-letter topic.
    pub fn group_of(dead_letter_topic: &str) -> String {
        format!("kafkit-redrive.{dead_letter_topic}")
    }

    /// Up to `limit` records of `dead_letter_topic`, oldest first, without committing.
    pub async fn list(&self, dead_letter_topic: &str, limit: usize) -> Result<Vec<Message>> {
        Reader::new(&self.config)?
            .open(dead_letter_topic, None, Start::Beginning)
            .await?
            .collect(&Limits::to_end(limit).idle(IDLE))
            .await
    }

    /// Re-publishes up to `limit` not-yet-replayed records of `dead_letter_topic` to their
    /// original topics, without the failure headers, then commits them as replayed.
    pub async fn replay(&self, dead_letter_topic: &str, limit: usize) -> Result<ReplayReport> {
        self.replay_where(dead_letter_topic, limit, |_| true).await
    }

    /// Like [`Redrive::replay`], but only when `allowed` accepts every destination topic;
    /// otherwise nothing is re-published or committed and the report lists the denied topics.
    pub async fn replay_where(
        &self,
        dead_letter_topic: &str,
        limit: usize,
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
            match dead_letter::original_topic(message) {
                Some(topic) => records.push(replay_record(message, topic)),
                None => report.skipped.push(format!(
                    "{}/{}: no original-topic header",
                    message.partition, message.offset
                )),
            }
        }
        let mut denied: Vec<String> = records
            .iter()
            .map(|r| r.topic.clone())
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
        let destinations: Vec<String> = records.iter().map(|r| r.topic.clone()).collect();
        let results = producer.send_batch(records).await;
        producer.shutdown().await?;
        let mut failed = None;
        for (result, topic) in results.into_iter().zip(destinations) {
            match result {
                Ok(_) => *report.replayed.entry(topic).or_default() += 1,
                Err(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failed {
            // Nothing is committed: a re-run re-publishes this whole batch.
            return Err(error);
        }
        // Commit the position after the last record read in each partition.
        let mut next: HashMap<i32, i64> = HashMap::new();
        for message in &messages {
            let entry = next.entry(message.partition).or_default();
            *entry = (*entry).max(message.offset + 1);
        }
        reading.commit(&next).await?;
        Ok(report)
    }
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
