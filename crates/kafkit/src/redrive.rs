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

use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::KafkaConfig;
use crate::dead_letter::{self, FAILURE_HEADERS};
use crate::error::{Error, Result};
use crate::producer::Producer;
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
        let group = format!("kafkit-browse-{}", uuid::Uuid::new_v4().simple());
        let (consumer, ends) = self
            .open(dead_letter_topic, &group, Offset::Beginning)
            .await?;
        read(&consumer, ends, limit).await
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
        let group = Redrive::group_of(dead_letter_topic);
        let (consumer, ends) = self.open(dead_letter_topic, &group, Offset::Stored).await?;
        let messages = read(&consumer, ends, limit).await?;
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
        if !next.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (partition, offset) in next {
                tpl.add_partition_offset(dead_letter_topic, partition, Offset::Offset(offset))
                    .map_err(|source| consume_error("commit replay", source))?;
            }
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                .await
                .map_err(Error::Task)?
                .map_err(|source| consume_error("commit replay", source))?;
        }
        Ok(report)
    }

    /// A group consumer assigned to every partition of `topic` from `start`, and where each
    /// partition ends now.
    async fn open(
        &self,
        topic: &str,
        group: &str,
        start: Offset,
    ) -> Result<(StreamConsumer, HashMap<i32, i64>)> {
        crate::record::validate_topic(topic)?;
        let mut client = self.config.to_consumer_config(group);
        client
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "false");
        let consumer: StreamConsumer = client.create().map_err(|source| Error::ClientCreation {
            client: "consumer",
            source,
        })?;
        let timeout = self.config.request_timeout;
        let name = topic.to_owned();
        let (consumer, ends) = tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&name), timeout)?;
            let mut ends = HashMap::new();
            let mut tpl = TopicPartitionList::new();
            let mut known = TopicPartitionList::new();
            for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
                for p in t.partitions() {
                    known.add_partition(&name, p.id());
                }
            }
            // Where reading starts per partition: the group's commit, or the beginning.
            let committed = match start {
                Offset::Stored => consumer.committed_offsets(known.clone(), timeout)?,
                _ => known.clone(),
            };
            for element in committed.elements() {
                let partition = element.partition();
                let (low, high) = consumer.fetch_watermarks(&name, partition, timeout)?;
                let from = match element.offset() {
                    Offset::Offset(o) if start == Offset::Stored => o,
                    _ => low,
                };
                if from < high {
                    ends.insert(partition, high);
                }
                tpl.add_partition_offset(&name, partition, start)?;
            }
            if known.count() == 0 {
                return Err(rdkafka::error::KafkaError::MetadataFetch(
                    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
                ));
            }
            consumer.assign(&tpl)?;
            Ok::<_, rdkafka::error::KafkaError>((consumer, ends))
        })
        .await
        .map_err(Error::Task)?
        .map_err(|source| consume_error(&format!("open {topic}"), source))?;
        Ok((consumer, ends))
    }
}

/// Reads until every partition reached its end as of opening, `limit` records, or silence.
async fn read(
    consumer: &StreamConsumer,
    mut ends: HashMap<i32, i64>,
    limit: usize,
) -> Result<Vec<Message>> {
    let mut messages = Vec::new();
    let mut stream = consumer.stream();
    while messages.len() < limit && !ends.is_empty() {
        match tokio::time::timeout(IDLE, stream.next()).await {
            Ok(Some(Ok(message))) => {
                let message = Message::from_borrowed(&message);
                if ends
                    .get(&message.partition)
                    .is_some_and(|end| message.offset + 1 >= *end)
                {
                    ends.remove(&message.partition);
                }
                messages.push(message);
            }
            Ok(Some(Err(source))) => return Err(consume_error("read dead-letter topic", source)),
            Ok(None) | Err(_) => break,
        }
        // Partitions with nothing left to read (empty, or all replayed already).
        if let Ok(positions) = consumer.position() {
            for element in positions.elements() {
                if let Offset::Offset(position) = element.offset()
                    && ends
                        .get(&element.partition())
                        .is_some_and(|end| position >= *end)
                {
                    ends.remove(&element.partition());
                }
            }
        }
    }
    Ok(messages)
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

fn consume_error(operation: &str, source: rdkafka::error::KafkaError) -> Error {
    Error::Consume {
        operation: operation.to_owned(),
        source,
    }
}
