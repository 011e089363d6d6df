//! [`Kafka`]: the front door. One connection to a cluster (`KAFKA_BROKERS`, or the embedded
//! development broker when that is unset) that builds every client already pointed at it.

use std::sync::Arc;

use crate::admin::Admin;
use crate::cluster::Cluster;
use crate::config::KafkaConfig;
use crate::consumer::exactly_once::ExactlyOnce;
use crate::consumer::{Consumer, ConsumerOptions};
use crate::error::Result;
use crate::producer::{Producer, ProducerBuilder};
use crate::reader::Reader;
use crate::redrive::Redrive;
use crate::router::Router;
use crate::transaction::TransactionalProducer;

/// A connection to a cluster that makes clients already pointed at it: producers, consumers
/// and admins created here use `KAFKA_BROKERS`, or the embedded broker (creating their topics
/// and dead-letter topics through it) when that is unset. Cheap to clone; the embedded broker
/// lives as long as any clone.
///
/// ```no_run
/// # async fn demo() -> kafkit::Result<()> {
/// let kafka = kafkit::Kafka::from_env()?;
/// kafka.admin()?.ensure_topics(&[kafkit::TopicSpec::new("orders", 3)]).await?;
/// let producer = kafka.producer()?;
/// producer.send_json("orders", Some("o-1"), &serde_json::json!({"id": 1})).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Kafka {
    cluster: Arc<Cluster>,
    config: KafkaConfig,
}

impl Kafka {
    /// Connects as `config` says: its brokers, or the embedded broker when it names none.
    pub fn connect(config: &KafkaConfig) -> Result<Self> {
        let cluster = Cluster::from_config(config)?;
        let config = cluster.configure(config);
        Ok(Kafka {
            cluster: Arc::new(cluster),
            config,
        })
    }

    /// Connects as the `KAFKA_*` environment says.
    pub fn from_env() -> Result<Self> {
        Kafka::connect(&KafkaConfig::from_env()?)
    }

    /// The configuration every client here starts from, pointed at the cluster.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// The same cluster with `change` applied to the configuration, for clients that need
    /// other settings than the rest (a producer that does not linger, a shorter session
    /// timeout). The brokers stay this cluster's whatever `change` does to them.
    #[must_use]
    pub fn reconfigured(&self, change: impl FnOnce(&mut KafkaConfig)) -> Kafka {
        let mut config = self.config.clone();
        change(&mut config);
        Kafka {
            config: self.cluster.configure(&config),
            cluster: Arc::clone(&self.cluster),
        }
    }

    /// Where the brokers are.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// A producer with the default settings.
    pub fn producer(&self) -> Result<Producer> {
        Producer::new(&self.config)
    }

    /// A transactional producer named `transactional_id`, registered with the cluster. The
    /// embedded broker accepts transactions but does not honour them faithfully.
    pub async fn transactional_producer(
        &self,
        transactional_id: impl Into<String>,
    ) -> Result<TransactionalProducer> {
        Producer::transactional(&self.config, transactional_id).await
    }

    /// A producer builder, for a partitioner, metrics or an enqueue timeout.
    pub fn producer_builder(&self) -> ProducerBuilder {
        Producer::builder(&self.config)
    }

    /// An admin client; on the embedded broker it creates topics through the broker itself.
    pub fn admin(&self) -> Result<Admin> {
        Ok(Admin::new(&self.config)?.on(&self.cluster))
    }

    /// A consumer of `group` running `router`'s handlers, with the default options.
    pub fn consumer(&self, group: &str, router: Router) -> Result<Consumer> {
        self.consumer_with_options(group, router, ConsumerOptions::default())
    }

    /// A consumer with explicit options.
    pub fn consumer_with_options(
        &self,
        group: &str,
        router: Router,
        options: ConsumerOptions,
    ) -> Result<Consumer> {
        Ok(Consumer::with_options(&self.config, group, router, options)?.on(&self.cluster))
    }

    /// An exactly-once pipeline of `group` writing through `producer` (from
    /// [`Kafka::transactional_producer`]).
    pub fn exactly_once(
        &self,
        group: &str,
        producer: TransactionalProducer,
    ) -> Result<ExactlyOnce> {
        Ok(ExactlyOnce::new(&self.config, group, producer)?.on(&self.cluster))
    }

    /// A group-less reader of topics.
    pub fn reader(&self) -> Result<Reader> {
        Reader::new(&self.config)
    }

    /// Dead-letter browsing and replay.
    pub fn redrive(&self) -> Result<Redrive> {
        Redrive::new(&self.config)
    }
}
