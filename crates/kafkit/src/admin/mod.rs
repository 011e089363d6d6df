//! [`Admin`]: topics (ensure, list, describe, delete), the cluster, consumer groups and lag.
//!
//! Metadata, watermark and committed-offset calls block in librdkafka, so they run on
//! `spawn_blocking`. On the embedded development broker topics are created through the mock's
//! own call, since it has no CreateTopics API. The operations are split by what they act on:
//! `topics`, `groups` and `cluster`, each adding its methods to [`Admin`].

mod cluster;
mod groups;
mod topics;

pub use cluster::{BrokerInfo, ClusterInfo};
pub(crate) use groups::with_coordinator;
pub use groups::{GroupDescription, GroupInfo, GroupMember, PartitionLag, ResetTo};
pub use topics::{PartitionInfo, TopicInfo, TopicSpec};

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;

use crate::cluster::EmbeddedBroker;
use crate::config::KafkaConfig;
use crate::error::{Error, Result};

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
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self> {
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
        if self.is_mock().await? {
            return Err(Error::Unsupported {
                operation: operation(),
                broker: REMOTE_EMBEDDED_BROKER,
            });
        }
        Ok(())
    }

    /// Whether the cluster is the embedded development broker (librdkafka's mock cluster),
    /// of this process or another; asked of the cluster once.
    pub(crate) async fn is_mock(&self) -> Result<bool> {
        if self.embedded.is_some() {
            return Ok(true);
        }
        let mock = self
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
        Ok(*mock)
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
