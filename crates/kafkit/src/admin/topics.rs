//! Topics: create if missing, delete, list and describe with watermarks, configs, partitions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::{Admin, EMBEDDED_BROKER, blocking};
use crate::error::{Error, Result};
use crate::record::validate_topic;

/// A topic to create if it does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic configs, e.g. `retention.ms`.
    pub configs: BTreeMap<String, String>,
}

impl TopicSpec {
    /// `name` with `partitions` partitions and replication factor 1.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
        }
    }

    /// Sets the replication factor.
    pub fn replication_factor(mut self, factor: i32) -> Self {
        self.replication_factor = factor;
        self
    }

    /// Adds a topic config.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// One partition of a topic with its watermarks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// Partition id.
    pub id: i32,
    /// Node id of the leader (-1 when none).
    pub leader: i32,
    /// Node ids of the replicas.
    pub replicas: Vec<i32>,
    /// Node ids of the in-sync replicas.
    pub isr: Vec<i32>,
    /// Oldest offset still kept.
    pub low_watermark: i64,
    /// Offset the next record will get.
    pub high_watermark: i64,
}

/// A topic with its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Partitions, by id.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// Records currently kept across all partitions.
    pub fn record_count(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| p.high_watermark - p.low_watermark)
            .sum()
    }
}

impl Admin {
    /// Creates the topics that do not exist yet; existing ones are left as they are.
    pub async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        for spec in topics {
            validate_topic(&spec.name)?;
            if spec.partitions < 1 {
                return Err(Error::InvalidTopicSpec {
                    topic: spec.name.clone(),
                    reason: format!("needs at least one partition, got {}", spec.partitions),
                });
            }
        }
        if let Some(broker) = &self.embedded {
            for spec in topics {
                if !spec.configs.is_empty() {
                    tracing::warn!(topic = %spec.name, "the embedded broker ignores topic configs");
                }
                broker.create_topic(&spec.name, spec.partitions)?;
            }
            return self.wait_for_topics(topics).await;
        }
        self.refuse_on_remote_mock(|| {
            let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
            format!("creating topics {}", names.join(", "))
        })
        .await?;
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|spec| {
                spec.configs.iter().fold(
                    NewTopic::new(
                        &spec.name,
                        spec.partitions,
                        TopicReplication::Fixed(spec.replication_factor),
                    ),
                    |topic, (k, v)| topic.set(k, v),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = self
            .client
            .create_topics(&new_topics, &options)
            .await
            .map_err(|source| Error::Admin {
                operation: "create topics".into(),
                source,
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(Error::Admin {
                        operation: format!("create topic {topic}"),
                        source: rdkafka::error::KafkaError::AdminOp(code),
                    });
                }
            }
        }
        self.wait_for_topics(topics).await
    }

    /// Deletes topics; unknown ones are ignored.
    pub async fn delete_topics(&self, names: &[&str]) -> Result<()> {
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = self
            .client
            .delete_topics(names, &options)
            .await
            .map_err(|source| Error::Admin {
                operation: "delete topics".into(),
                source,
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => {
                    return Err(Error::Admin {
                        operation: format!("delete topic {topic}"),
                        source: rdkafka::error::KafkaError::AdminOp(code),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every topic (internal ones, starting with `__`, excluded) with partitions and
    /// watermarks, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        self.list_topics_where(|_| true).await
    }

    /// Like [`Admin::list_topics`], for the topics `wanted` accepts: the others cost no
    /// watermark request (a caller sees only what it may read, and pays only for that).
    pub async fn list_topics_where(
        &self,
        wanted: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Vec<TopicInfo>> {
        let client = Arc::clone(&self.metadata);
        let timeout = self.timeout;
        blocking("list topics", move || {
            let metadata = client.fetch_metadata(None, timeout)?;
            let wanted = |name: &str| !name.starts_with("__") && wanted(name);
            let mut topics = topic_infos(&client, &metadata, wanted, timeout)?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(topics)
        })
        .await
    }

    /// One topic with partitions and watermarks; an error when it does not exist.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        validate_topic(name)?;
        let client = Arc::clone(&self.metadata);
        let timeout = self.timeout;
        let topic = name.to_owned();
        blocking(&format!("describe topic {name}"), move || {
            let metadata = client.fetch_metadata(Some(&topic), timeout)?;
            let mut infos = topic_infos(&client, &metadata, |name| name == topic, timeout)?;
            infos.retain(|t| !t.partitions.is_empty());
            infos.pop().ok_or(rdkafka::error::KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ))
        })
        .await
    }

    /// The topic's configuration as the broker reports it (name → value), secrets left out.
    pub async fn topic_configs(&self, name: &str) -> Result<BTreeMap<String, String>> {
        if self.embedded.is_some() {
            return Err(Error::Unsupported {
                operation: format!("describing the configs of {name}"),
                broker: EMBEDDED_BROKER,
            });
        }
        self.refuse_on_remote_mock(|| format!("describing the configs of {name}"))
            .await?;
        let options = AdminOptions::new().request_timeout(Some(self.timeout));
        let results = self
            .client
            .describe_configs([&ResourceSpecifier::Topic(name)], &options)
            .await
            .map_err(|source| Error::Admin {
                operation: format!("describe configs of {name}"),
                source,
            })?;
        let mut configs = BTreeMap::new();
        for result in results {
            let resource = result.map_err(|code| Error::Admin {
                operation: format!("describe configs of {name}"),
                source: rdkafka::error::KafkaError::AdminOp(code),
            })?;
            for entry in resource.entries {
                if let (false, Some(value)) = (entry.is_sensitive, entry.value) {
                    configs.insert(entry.name, value);
                }
            }
        }
        Ok(configs)
    }

    /// Grows `topic` to `partitions` partitions in all. Kafka cannot shrink a topic: asking for
    /// fewer than it has is an error; asking for as many as it has is a no-op.
    pub async fn create_partitions(&self, topic: &str, partitions: usize) -> Result<()> {
        validate_topic(topic)?;
        let current = self.describe_topic(topic).await?.partitions.len();
        if partitions == current {
            return Ok(());
        }
        if partitions < current {
            return Err(Error::InvalidTopicSpec {
                topic: topic.to_owned(),
                reason: format!("has {current} partitions; Kafka cannot shrink it to {partitions}"),
            });
        }
        if self.embedded.is_some() {
            return Err(Error::Unsupported {
                operation: format!("adding partitions to {topic}"),
                broker: EMBEDDED_BROKER,
            });
        }
        self.refuse_on_remote_mock(|| format!("adding partitions to {topic}"))
            .await?;
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = self
            .client
            .create_partitions(&[NewPartitions::new(topic, partitions)], &options)
            .await
            .map_err(|source| Error::Admin {
                operation: format!("add partitions to {topic}"),
                source,
            })?;
        for result in results {
            if let Err((_, code)) = result {
                return Err(Error::Admin {
                    operation: format!("add partitions to {topic}"),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                });
            }
        }
        // Wait until metadata shows every new partition with a leader that answers (a new
        // partition's leader may refuse watermark requests for a moment).
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let ready = self.describe_topic(topic).await.is_ok_and(|info| {
                info.partitions.len() >= partitions && info.partitions.iter().all(|p| p.leader >= 0)
            });
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Admin {
                    operation: format!("add partitions to {topic}"),
                    source: rdkafka::error::KafkaError::AdminOp(
                        RDKafkaErrorCode::LeaderNotAvailable,
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until metadata shows every topic with its partitions, so that a produce right
    /// after `ensure_topics` does not race topic creation.
    async fn wait_for_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        for spec in topics {
            loop {
                match self.describe_topic(&spec.name).await {
                    Ok(info) if info.partitions.iter().all(|p| p.leader >= 0) => break,
                    Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(_) => {
                        return Err(Error::Admin {
                            operation: format!("create topic {}", spec.name),
                            source: rdkafka::error::KafkaError::AdminOp(
                                RDKafkaErrorCode::LeaderNotAvailable,
                            ),
                        });
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }
}

/// Partitions and watermarks of the topics in `metadata` that `wanted` accepts.
fn topic_infos(
    client: &BaseConsumer,
    metadata: &Metadata,
    wanted: impl Fn(&str) -> bool,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<Vec<TopicInfo>> {
    let topics: Vec<_> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && wanted(t.name()))
        .collect();
    let partitions: Vec<(&str, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| (t.name(), p.id())))
        .collect();
    let known = all_watermarks(client, &partitions, timeout);
    topics
        .into_iter()
        .map(|topic| {
            let mut partitions = topic
                .partitions()
                .iter()
                .map(|p| {
                    let (low, high) = match known.get(&(topic.name(), p.id())) {
                        Some(marks) => *marks,
                        None => watermarks(client, topic.name(), p.id(), timeout)?,
                    };
                    Ok(PartitionInfo {
                        id: p.id(),
                        leader: p.leader(),
                        replicas: p.replicas().to_vec(),
                        isr: p.isr().to_vec(),
                        low_watermark: low,
                        high_watermark: high,
                    })
                })
                .collect::<rdkafka::error::KafkaResult<Vec<_>>>()?;
            partitions.sort_by_key(|p| p.id);
            Ok(TopicInfo {
                name: topic.name().to_owned(),
                partitions,
            })
        })
        .collect()
}

/// The low and high watermarks of `partitions` (topic, partition) in two ListOffsets requests
/// per leader (earliest, then latest: what [`watermarks`] asks partition by partition, with the
/// same client and so the same isolation level), so listing 1,000 topics costs two round trips,
/// not 2,000. A partition missing from the answer (its leader moving, or the requests failing)
/// is left out, for [`watermarks`] to ask on its own.
pub(super) fn all_watermarks<'a, C: rdkafka::consumer::ConsumerContext>(
    client: &BaseConsumer<C>,
    partitions: &[(&'a str, i32)],
    timeout: Duration,
) -> std::collections::HashMap<(&'a str, i32), (i64, i64)> {
    let ask = |offset: Offset| {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition_offset(topic, *partition, offset).ok()?;
        }
        client.offsets_for_times(list, timeout).ok()
    };
    let mut known = std::collections::HashMap::new();
    if partitions.is_empty() {
        return known;
    }
    let (Some(earliest), Some(latest)) = (ask(Offset::Beginning), ask(Offset::End)) else {
        return known;
    };
    let found = |list: &TopicPartitionList, topic: &str, partition: i32| {
        let element = list.find_partition(topic, partition)?;
        match (element.error(), element.offset()) {
            (Ok(()), Offset::Offset(offset)) => Some(offset),
            _ => None,
        }
    };
    for (topic, partition) in partitions {
        if let (Some(low), Some(high)) = (
            found(&earliest, topic, *partition),
            found(&latest, topic, *partition),
        ) {
            known.insert((*topic, *partition), (low, high));
        }
    }
    known
}

/// A partition's low and high watermarks. A partition created a moment ago (by anyone) may
/// answer "not leader" until its leader is elected: that is retried for up to a second, so one
/// new topic elsewhere in the cluster does not fail a whole listing.
fn watermarks(
    client: &BaseConsumer,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<(i64, i64)> {
    let mut attempts = 0;
    loop {
        match client.fetch_watermarks(topic, partition, timeout) {
            Err(error)
                if attempts < 10
                    && matches!(
                        error.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::NotLeaderForPartition
                                | RDKafkaErrorCode::LeaderNotAvailable
                        )
                    ) =>
            {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}
