//! # kafkit
//!
//! A toolkit for building services on Apache Kafka, on top of librdkafka (through `rdkafka`).
//!
//! - [`KafkaConfig`]: every `KAFKA_*` variable, TLS and SASL, one translation to librdkafka.
//! - [`Cluster`]: a real cluster, or the embedded development broker when `KAFKA_BROKERS` is
//!   unset.
//! - [`Producer`]: typed sends, pipelined multi-topic batches with per-record results,
//!   idempotent by default, Java-compatible murmur2 partitioning, flush on shutdown.
//! - [`Admin`]: ensure topics, describe the cluster, list topics with watermarks, consumer
//!   groups and their lag.
//! - [`Metrics`]: Prometheus metrics under the names the seeds use.
//!
//! ```no_run
//! # async fn demo() -> kafkit::Result<()> {
//! use kafkit::{Admin, KafkaConfig, Producer, Record, TopicSpec};
//!
//! let config = KafkaConfig::from_env()?;
//! Admin::new(&config)?.ensure_topics(&[TopicSpec::new("orders", 6)]).await?;
//! let producer = Producer::new(&config)?;
//! let delivery = producer
//!     .send(Record::to("orders").key("order-1").header("tenant-id", "acme").json(&42)?)
//!     .await?;
//! println!("stored at {}:{}", delivery.partition, delivery.offset);
//! producer.shutdown().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod admin;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod error;
pub mod metrics;
pub mod partitioner;
pub mod producer;
pub mod record;
pub mod secret;
pub mod shutdown;

pub use admin::{Admin, ClusterInfo, GroupInfo, PartitionLag, TopicInfo, TopicSpec};
pub use cluster::{Cluster, EmbeddedBroker};
pub use config::{Compression, KafkaConfig, Security};
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use partitioner::{HeaderHash, Murmur2, Partitioner, RoundRobin};
pub use producer::{Producer, ProducerBuilder};
pub use record::{Delivery, Message, Record};
pub use secret::Secret;

/// The rdkafka crate kafkit is built on, for what kafkit does not wrap.
pub use rdkafka;
