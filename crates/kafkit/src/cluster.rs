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
    pub(crate) fn from_config(config: &KafkaConfig) -> Result<Self> {
        config.ensure_enabled()?;
        if config.brokers.is_empty() {
            Ok(Cluster::Embedded(Arc::new(EmbeddedBroker::start(1)?)))
        } else {
            Ok(Cluster::Remote(config.brokers.clone()))
        }
    }

    /// Comma-separated bootstrap servers.
    pub fn bootstrap_servers(&self) -> String {
        match self {
            Cluster::Remote(brokers) => brokers.join(","),
            Cluster::Embedded(broker) => broker.bootstrap_servers().to_owned(),
        }
    }

    /// `config` pointed at this cluster.
    pub(crate) fn configure(&self, config: &KafkaConfig) -> KafkaConfig {
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
