//! [`Admin`]: topics (ensure, list, describe, delete), the cluster, consumer groups and lag.
//!
//! Metadata, watermark and committed-offset calls block in librdkafka, so they run on
//! `spawn_blocking`. On the embedded development broker topics are created through the mock's
//! own call, since it has no CreateTopics API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::cluster::EmbeddedBroker;
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::record::validate_topic;

/// How errors name the embedded development broker.
const EMBEDDED_BROKER: &str =
    "the embedded development broker (it has no admin API for this; use an Apache Kafka broker)";
/// How errors name the embedded development broker reached from another process (`kafkit
/// broker`), with what to do instead.
const REMOTE_EMBEDDED_BROKER: &str = "the embedded development broker (librdkafka's mock cluster has no admin API; \
     create topics with `kafkit broker --topics NAME:PARTITIONS`, or produce to a new topic to \
     create it with the default partition count)";
/// The start of the cluster id librdkafka's mock cluster reports.
const MOCK_CLUSTER_ID: &str = "mockCluster";

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

/// One broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerInfo {
    /// Node id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
}

/// What the cluster says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterInfo {
    /// Cluster id, when the broker reports one.
    pub cluster_id: Option<String>,
    /// Node id of the controller, when known.
    pub controller_id: Option<i32>,
    /// The brokers.
    pub brokers: Vec<BrokerInfo>,
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

/// Where [`Admin::offsets_for`] places a group in each partition of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The oldest record kept (low watermark).
    Earliest,
    /// The next record to be written (high watermark): nothing left to read.
    Latest,
    /// The first record at or after this time (milliseconds since the epoch); the high
    /// watermark where there is none.
    Timestamp(i64),
    /// This offset, clamped to the partition's watermarks.
    Offset(i64),
}

/// A consumer group as the coordinator lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// Group id.
    pub name: String,
    /// State (`Stable`, `Empty`, `PreparingRebalance`...), as the broker reports it.
    pub state: String,
    /// Protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// Number of members the broker reported.
    pub members: usize,
}

/// A consumer group with its members, as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// Group id.
    pub name: String,
    /// State (`Stable`, `Empty`, `PreparingRebalance`...), as the broker reports it.
    pub state: String,
    /// Protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// The partition assignor the members agreed on (`range`, `cooperative-sticky`...).
    pub protocol: String,
    /// The members, sorted by client id then member id.
    pub members: Vec<GroupMember>,
}

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    /// Member id the coordinator gave it.
    pub member_id: String,
    /// The client's `client.id`.
    pub client_id: String,
    /// The client's host, as the coordinator saw its connection (e.g. `/127.0.0.1`).
    pub host: String,
    /// Partitions assigned to it, by topic (empty while a rebalance is under way).
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// A group's position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset the group will read; `None` when it never committed here.
    pub committed: Option<i64>,
    /// Offset the next record will get.
    pub high_watermark: i64,
    /// Records the group has yet to process: high watermark minus committed offset (from the
    /// low watermark when nothing was committed).
    pub lag: i64,
}

/// Admin operations on a cluster.
pub struct Admin {
    client: AdminClient<DefaultClientContext>,
    /// A group-less consumer used only for metadata, watermarks and group lists: unlike the
    /// admin client it can be shared with blocking tasks.
    metadata: Arc<BaseConsumer>,
    config: KafkaConfig,
    embedded: Option<Arc<EmbeddedBroker>>,
    /// Whether the cluster is the embedded development broker of another process, asked once:
    /// its missing admin API would otherwise make each call wait out the full timeout.
    remote_mock: tokio::sync::OnceCell<bool>,
    timeout: Duration,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("brokers", &self.config.brokers)
            .field("embedded", &self.embedded.is_some())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// An admin client for `config`'s cluster.
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        config.ensure_enabled()?;
        config.validate()?;
        let client = config
            .to_admin_config()
            .create()
            .map_err(|source| Error::ClientCreation {
                client: "admin",
                source,
            })?;
        let metadata: BaseConsumer =
            config
                .to_admin_config()
                .create()
                .map_err(|source| Error::ClientCreation {
                    client: "metadata",
                    source,
                })?;
        Ok(Admin {
            client,
            metadata: Arc::new(metadata),
            config: config.clone(),
            embedded: None,
            remote_mock: tokio::sync::OnceCell::new(),
            timeout: config.request_timeout,
        })
    }

    /// `Err(Unsupported)` at once when the cluster is the embedded development broker of
    /// another process (`kafkit broker`): `operation` would only time out there.
    async fn refuse_on_remote_mock(&self, operation: impl FnOnce() -> String) -> Result<()> {
        if self.embedded.is_some() {
            return Ok(());
        }
        let mock = *self
            .remote_mock
            .get_or_try_init(|| async {
                let cluster = self.describe_cluster().await?;
                Ok::<_, Error>(
                    cluster
                        .cluster_id
                        .is_some_and(|id| id.starts_with(MOCK_CLUSTER_ID)),
                )
            })
            .await?;
        if mock {
            return Err(Error::Unsupported {
                operation: operation(),
                broker: REMOTE_EMBEDDED_BROKER,
            });
        }
        Ok(())
    }

    /// Works on `cluster`: with the embedded broker, topics are created through it.
    #[must_use]
    pub(crate) fn on(self, cluster: &crate::cluster::Cluster) -> Self {
        match cluster.embedded() {
            Some(broker) => self.with_embedded(broker.clone()),
            None => self,
        }
    }

    /// Creates topics through `broker`'s own API instead of CreateTopics.
    #[must_use]
    pub(crate) fn with_embedded(mut self, broker: Arc<EmbeddedBroker>) -> Self {
        self.embedded = Some(broker);
        self
    }

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

    /// Cluster id, controller and brokers.
    pub async fn describe_cluster(&self) -> Result<ClusterInfo> {
        let client = Arc::clone(&self.metadata);
        let timeout = self.timeout;
        blocking("describe cluster", move || {
            let metadata = client.fetch_metadata(None, timeout)?;
            let cluster_id = client.client().fetch_cluster_id(timeout);
            // SAFETY: the pointer is a live client owned by `client` for the whole call, and
            // rd_kafka_controllerid only reads its metadata cache.
            let controller = unsafe {
                rdkafka::bindings::rd_kafka_controllerid(
                    client.client().native_ptr(),
                    timeout.as_millis() as i32,
                )
            };
            Ok(ClusterInfo {
                cluster_id,
                controller_id: (controller >= 0).then_some(controller),
                brokers: metadata
                    .brokers()
                    .iter()
                    .map(|b| BrokerInfo {
                        id: b.id(),
                        host: b.host().to_owned(),
                        port: b.port(),
                    })
                    .collect(),
            })
        })
        .await
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

    /// Consumer groups known to the cluster, sorted by name.
    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>> {
        let client = Arc::clone(&self.metadata);
        let timeout = self.timeout;
        blocking("list groups", move || {
            let list = client.fetch_group_list(None, timeout)?;
            let mut groups: Vec<GroupInfo> = list
                .groups()
                .iter()
                .map(|g| GroupInfo {
                    name: g.name().to_owned(),
                    state: g.state().to_owned(),
                    protocol_type: g.protocol_type().to_owned(),
                    members: g.members().len(),
                })
                .collect();
            groups.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(groups)
        })
        .await
    }

    /// One group with its members, their client ids, hosts and assignments; `None` when the
    /// coordinator does not know the group.
    pub async fn describe_group(&self, group: &str) -> Result<Option<GroupDescription>> {
        let client = Arc::clone(&self.metadata);
        let timeout = self.timeout;
        let name = group.to_owned();
        blocking(&format!("describe group {group}"), move || {
            let list = client.fetch_group_list(Some(&name), timeout)?;
            let Some(g) = list.groups().iter().find(|g| g.name() == name) else {
                return Ok(None);
            };
            // The coordinator answers an unknown group with state "Dead" and no members.
            if g.state() == "Dead" && g.members().is_empty() {
                return Ok(None);
            }
            let mut members: Vec<GroupMember> = g
                .members()
                .iter()
                .map(|m| GroupMember {
                    member_id: m.id().to_owned(),
                    client_id: m.client_id().to_owned(),
                    host: m.client_host().to_owned(),
                    assignment: m
                        .assignment()
                        .and_then(decode_assignment)
                        .unwrap_or_default(),
                })
                .collect();
            members.sort_by(|a, b| (&a.client_id, &a.member_id).cmp(&(&b.client_id, &b.member_id)));
            Ok(Some(GroupDescription {
                name: g.name().to_owned(),
                state: g.state().to_owned(),
                protocol_type: g.protocol_type().to_owned(),
                protocol: g.protocol().to_owned(),
                members,
            }))
        })
        .await
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

    /// A consumer client of `group` that never joins it: for reading and writing the group's
    /// committed offsets.
    fn group_client(&self, group: &str) -> Result<BaseConsumer> {
        self.config
            .to_consumer_config(group)
            .create()
            .map_err(|source| Error::ClientCreation {
                client: "consumer",
                source,
            })
    }

    /// The group's committed offset and lag in every partition of `topics` (every topic when
    /// empty). Partitions where the group never committed are left out unless a topic was
    /// named explicitly.
    pub async fn group_lag(&self, group: &str, topics: &[&str]) -> Result<Vec<PartitionLag>> {
        let consumer = self.group_client(group)?;
        let timeout = self.timeout;
        let named: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        blocking(&format!("lag of group {group}"), move || {
            let metadata = consumer.fetch_metadata(None, timeout)?;
            let mut tpl = TopicPartitionList::new();
            for topic in metadata.topics() {
                let wanted = if named.is_empty() {
                    !topic.name().starts_with("__")
                } else {
                    named.iter().any(|n| n == topic.name())
                };
                if wanted {
                    for partition in topic.partitions() {
                        tpl.add_partition(topic.name(), partition.id());
                    }
                }
            }
            let committed =
                with_coordinator(timeout, || consumer.committed_offsets(tpl.clone(), timeout))?;
            let elements: Vec<_> = committed
                .elements()
                .into_iter()
                .filter(|e| !named.is_empty() || matches!(e.offset(), Offset::Offset(_)))
                .collect();
            // Every partition's watermarks at once; one by one only where that failed.
            let partitions: Vec<(&str, i32)> = elements
                .iter()
                .map(|e| (e.topic(), e.partition()))
                .collect();
            let known = all_watermarks(&consumer, &partitions, timeout);
            let mut lags = Vec::new();
            for element in &elements {
                let offset = match element.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                let (low, high) = match known.get(&(element.topic(), element.partition())) {
                    Some(marks) => *marks,
                    None => {
                        consumer.fetch_watermarks(element.topic(), element.partition(), timeout)?
                    }
                };
                lags.push(PartitionLag {
                    topic: element.topic().to_owned(),
                    partition: element.partition(),
                    committed: offset,
                    high_watermark: high,
                    lag: (high - offset.unwrap_or(low)).max(0),
                });
            }
            lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            // The consumer never joined the group; dropping it here, off the runtime, is cheap.
            drop(consumer);
            Ok(lags)
        })
        .await
    }

    /// Where `to` lies in every partition of `topic`: `(partition, offset)`, by partition. The
    /// plan of an offset reset, to show before [`Admin::commit_offsets`] carries it out.
    pub async fn offsets_for(&self, topic: &str, to: ResetTo) -> Result<Vec<(i32, i64)>> {
        let info = self.describe_topic(topic).await?;
        let client = Arc::clone(&self.metadata);
        let timeout = self.timeout;
        let name = topic.to_owned();
        blocking(&format!("find offsets in {topic}"), move || {
            let found = match to {
                ResetTo::Timestamp(millis) => {
                    let mut list = TopicPartitionList::new();
                    for p in &info.partitions {
                        list.add_partition_offset(&name, p.id, Offset::Offset(millis))?;
                    }
                    Some(client.offsets_for_times(list, timeout)?)
                }
                _ => None,
            };
            Ok(info
                .partitions
                .iter()
                .map(|p| {
                    let (low, high) = (p.low_watermark, p.high_watermark);
                    let offset = match to {
                        ResetTo::Earliest => low,
                        ResetTo::Latest => high,
                        ResetTo::Offset(offset) => offset,
                        ResetTo::Timestamp(_) => found
                            .as_ref()
                            .and_then(|list| list.find_partition(&name, p.id))
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            })
                            .unwrap_or(high),
                    };
                    (p.id, offset.clamp(low, high))
                })
                .collect())
        })
        .await
    }

    /// Commits `offsets` (`(partition, next offset to read)`) of `topic` for `group`, without
    /// joining it. The broker refuses this while the group has members: reset an empty group.
    pub async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<()> {
        validate_topic(topic)?;
        let consumer = self.group_client(group)?;
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|source| Error::Admin {
                    operation: format!("commit offsets of group {group}"),
                    source,
                })?;
        }
        let timeout = self.timeout;
        blocking(&format!("commit offsets of group {group}"), move || {
            with_coordinator(timeout, || {
                consumer.commit(&list, rdkafka::consumer::CommitMode::Sync)
            })?;
            drop(consumer);
            Ok(())
        })
        .await
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
fn all_watermarks<'a, C: rdkafka::consumer::ConsumerContext>(
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

/// Decodes a member's assignment as the classic consumer protocol encodes it: version (i16),
/// then an array of (topic: i16-length string, partitions: array of i32), then user data. `None`
/// when the bytes are not such an assignment (another protocol type).
fn decode_assignment(bytes: &[u8]) -> Option<BTreeMap<String, Vec<i32>>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = bytes.split_at_checked(n)?;
        *bytes = tail;
        Some(head)
    }
    fn int16(bytes: &mut &[u8]) -> Option<i16> {
        Some(i16::from_be_bytes(take(bytes, 2)?.try_into().ok()?))
    }
    fn int32(bytes: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(bytes, 4)?.try_into().ok()?))
    }
    let mut rest = bytes;
    let _version = int16(&mut rest)?;
    let topics = int32(&mut rest)?;
    let mut assignment = BTreeMap::new();
    for _ in 0..topics.max(0) {
        let length = usize::try_from(int16(&mut rest)?).ok()?;
        let topic = std::str::from_utf8(take(&mut rest, length)?)
            .ok()?
            .to_owned();
        let count = int32(&mut rest)?;
        let mut partitions = Vec::with_capacity(usize::try_from(count).ok()?.min(4096));
        for _ in 0..count {
            partitions.push(int32(&mut rest)?);
        }
        partitions.sort_unstable();
        assignment.insert(topic, partitions);
    }
    Some(assignment)
}

/// Calls `call` (a group's offsets: read or commit) until it succeeds, fails for another reason
/// than the group's coordinator, or `timeout` has passed. On a broker just started, or while
/// `__consumer_offsets` moves, the first calls meet a coordinator that is not there yet or still
/// loading, and librdkafka returns that instead of waiting.
pub(crate) fn with_coordinator<T>(
    timeout: Duration,
    mut call: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> rdkafka::error::KafkaResult<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match call() {
            Err(error)
                if matches!(
                    error.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::NotCoordinator
                            | RDKafkaErrorCode::CoordinatorLoadInProgress
                            | RDKafkaErrorCode::CoordinatorNotAvailable
                    )
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

/// Runs a blocking librdkafka call off the async runtime, naming the operation in its error.
async fn blocking<T, F>(operation: &str, call: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> rdkafka::error::KafkaResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(call)
        .await
        .map_err(Error::Task)?
        .map_err(|source| Error::Admin {
            operation: operation.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_consumer_protocol_assignment() {
        // version 1, two topics, then empty user data.
        let mut bytes = vec![0, 1, 0, 0, 0, 2];
        for (topic, partitions) in [("orders", &[2i32, 0][..]), ("audit", &[1][..])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend((-1i32).to_be_bytes());
        let assignment = decode_assignment(&bytes).unwrap();
        assert_eq!(assignment["orders"], [0, 2]);
        assert_eq!(assignment["audit"], [1]);
        assert_eq!(assignment.len(), 2);
    }

    #[test]
    fn a_truncated_assignment_is_not_decoded() {
        assert_eq!(decode_assignment(&[0, 1, 0, 0, 0, 1, 0, 9, b'o']), None);
        assert_eq!(decode_assignment(&[]), None);
    }
}
