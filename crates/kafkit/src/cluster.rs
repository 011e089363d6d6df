//! Where the brokers are: a remote bootstrap list, or the embedded development broker.
//!
//! The embedded broker is librdkafka's in-process mock cluster. It speaks the Kafka protocol on
//! loopback ports, so any Kafka client can use it, but it keeps everything in memory (about
//! 5 MiB per partition), has no admin API (topics are created through the mock's own call) and
//! does not implement transactions faithfully. It is for development, never for production.
//! The mock is `!Send`, so it lives on a thread of its own and is driven through a channel.

use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// What the embedded broker cannot do; logged whenever it starts.
pub const EMBEDDED_LIMITS: &str = "in-memory and not durable, about 5 MiB kept per partition, \
     no admin API (topics are created by kafkit through the mock), transactions accepted but not \
     honoured (read-committed readers see aborted records too)";

/// The brokers a process talks to.
#[derive(Debug)]
pub enum Cluster {
    /// A real cluster at these bootstrap servers.
    Remote(Vec<String>),
    /// The in-process development broker.
    Embedded(Arc<EmbeddedBroker>),
}

impl Cluster {
    /// The cluster `config` names; starts the embedded broker when `config.brokers` is empty.
    pub fn from_config(config: &KafkaConfig) -> Result<Self> {
        config.ensure_enabled()?;
        if config.brokers.is_empty() {
            Ok(Cluster::Embedded(Arc::new(EmbeddedBroker::start(1)?)))
        } else {
            Ok(Cluster::Remote(config.brokers.clone()))
        }
    }

    /// The cluster `config` names, and `config` pointed at it: the one call a program needs to
    /// run against `KAFKA_BROKERS`, or the embedded broker when that is unset.
    ///
    /// ```no_run
    /// # fn main() -> kafkit::Result<()> {
    /// let (cluster, config) = kafkit::Cluster::connect(&kafkit::KafkaConfig::from_env()?)?;
    /// # Ok(()) }
    /// ```
    pub fn connect(config: &KafkaConfig) -> Result<(Self, KafkaConfig)> {
        let cluster = Cluster::from_config(config)?;
        let config = cluster.configure(config);
        Ok((cluster, config))
    }

    /// Comma-separated bootstrap servers.
    pub fn bootstrap_servers(&self) -> String {
        match self {
            Cluster::Remote(brokers) => brokers.join(","),
            Cluster::Embedded(broker) => broker.bootstrap_servers().to_owned(),
        }
    }

    /// `config` pointed at this cluster.
    pub fn configure(&self, config: &KafkaConfig) -> KafkaConfig {
        KafkaConfig {
            brokers: self
                .bootstrap_servers()
                .split(',')
                .map(str::to_owned)
                .collect(),
            ..config.clone()
        }
    }

    /// The embedded broker, when this is one.
    pub fn embedded(&self) -> Option<&Arc<EmbeddedBroker>> {
        match self {
            Cluster::Embedded(broker) => Some(broker),
            Cluster::Remote(_) => None,
        }
    }
}

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
        let (cluster, config) = Cluster::connect(config)?;
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

    /// Where the brokers are.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// A producer with the default settings.
    pub fn producer(&self) -> Result<crate::producer::Producer> {
        crate::producer::Producer::new(&self.config)
    }

    /// A transactional producer named `transactional_id`, registered with the cluster. The
    /// embedded broker accepts transactions but does not honour them faithfully.
    pub async fn transactional_producer(
        &self,
        transactional_id: impl Into<String>,
    ) -> Result<crate::transaction::TransactionalProducer> {
        crate::producer::Producer::transactional(&self.config, transactional_id).await
    }

    /// A producer builder, for a partitioner, metrics or an enqueue timeout.
    pub fn producer_builder(&self) -> crate::producer::ProducerBuilder {
        crate::producer::Producer::builder(&self.config)
    }

    /// An admin client; on the embedded broker it creates topics through the broker itself.
    pub fn admin(&self) -> Result<crate::admin::Admin> {
        Ok(crate::admin::Admin::new(&self.config)?.on(&self.cluster))
    }

    /// A consumer of `group` running `router`'s handlers, with the default options.
    pub fn consumer(
        &self,
        group: &str,
        router: crate::router::Router,
    ) -> Result<crate::consumer::Consumer> {
        self.consumer_with_options(group, router, crate::consumer::ConsumerOptions::default())
    }

    /// A consumer with explicit options.
    pub fn consumer_with_options(
        &self,
        group: &str,
        router: crate::router::Router,
        options: crate::consumer::ConsumerOptions,
    ) -> Result<crate::consumer::Consumer> {
        Ok(
            crate::consumer::Consumer::with_options(&self.config, group, router, options)?
                .on(&self.cluster),
        )
    }
}

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: mpsc::Sender<Result<()>>,
    },
}

/// librdkafka's mock cluster on a dedicated thread. Dropping it stops the broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a mock cluster of `broker_count` brokers and logs where it listens.
    pub fn start(broker_count: i32) -> Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String>>();
        let (commands_tx, commands_rx) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("kafkit-embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(broker_count) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::EmbeddedBroker(e.to_string())));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Serve commands until every sender is gone, then drop the mock on this thread.
                for command in commands_rx {
                    match command {
                        Command::CreateTopic {
                            name,
                            partitions,
                            reply,
                        } => {
                            let result = cluster
                                .create_topic(&name, partitions, 1)
                                .map_err(|e| Error::EmbeddedBroker(format!("create {name}: {e}")));
                            let _ = reply.send(result);
                        }
                    }
                }
            })
            .map_err(|e| Error::EmbeddedBroker(format!("spawning its thread: {e}")))?;
        let bootstrap_servers = ready_rx
            .recv()
            .map_err(|_| Error::EmbeddedBroker("its thread exited during start".into()))??;
        tracing::warn!(
            bootstrap_servers = %bootstrap_servers,
            "KAFKA_BROKERS is unset: started the EMBEDDED DEVELOPMENT BROKER ({EMBEDDED_LIMITS})"
        );
        Ok(EmbeddedBroker {
            bootstrap_servers,
            commands: Some(commands_tx),
            thread: Some(thread),
        })
    }

    /// Where Kafka clients connect (`127.0.0.1:PORT`).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Creates `name` with `partitions` partitions (replication factor 1). Creating an existing
    /// topic again is not an error.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .as_ref()
            .ok_or_else(|| Error::EmbeddedBroker("stopped".into()))?
            .send(Command::CreateTopic {
                name: name.to_owned(),
                partitions,
                reply,
            })
            .map_err(|_| Error::EmbeddedBroker("its thread has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| Error::EmbeddedBroker("its thread has stopped".into()))?
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop, which drops the mock cluster.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
