//! # kafkit
//!
//! A toolkit for building services on Apache Kafka, on top of librdkafka (through `rdkafka`).
//!
//! - [`KafkaConfig`]: every `KAFKA_*` variable, TLS and SASL, one translation to librdkafka.
//! - [`Cluster`]: a real cluster, or the embedded development broker when `KAFKA_BROKERS` is
//!   unset.
//! - [`Producer`]: typed sends, pipelined multi-topic batches with per-record results,
//!   idempotent by default, Java-compatible murmur2 partitioning, flush on shutdown.
//! - [`TransactionalProducer`]: records to many topics, and consumed offsets, committed
//!   together or not at all ([`Transaction`]); zombie producers fenced.
//! - [`Admin`]: ensure topics, describe the cluster, list topics with watermarks, consumer
//!   groups and their lag.
//! - [`Consumer`]: the runtime. A [`Router`] maps topics to typed handlers; each partition is
//!   handled in order while partitions run concurrently; failures are retried
//!   ([`RetryPolicy`]), dead-lettered ([`DeadLetter`]) or skipped per their [`ErrorKind`];
//!   a [`CircuitBreaker`] pauses partitions; offsets are stored only for finished work
//!   (at-least-once); shutdown drains, commits and leaves the group; [`HealthReport`] tells
//!   whether it is really consuming.
//! - [`Manager`]: named producers and consumers, shut down together.
//! - [`Metrics`]: Prometheus metrics under the names the seeds use.
//! - [`Redrive`]: browse dead-letter topics and replay them safely: the next records, chosen
//!   ones, or those a [`RecordFilter`] keeps, each record once.
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
pub mod batch;
pub mod cdc;
pub mod circuit_breaker;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod error;
pub mod filter;
pub mod handler;
pub mod health;
pub mod kafka;
pub mod manager;
pub mod metrics;
pub mod partitioner;
pub mod policy;
pub mod producer;
pub mod reader;
pub mod record;
pub mod redrive;
pub mod retry;
pub mod router;
pub mod secret;
pub mod shutdown;
pub mod transaction;
pub mod view;

pub use admin::{
    Admin, ClusterInfo, GroupDescription, GroupInfo, GroupMember, PartitionLag, ResetTo, TopicInfo,
    TopicSpec,
};
pub use batch::{BatchError, BatchOptions};
pub use cdc::{DatabaseEvent, Operation};
pub use circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
pub use cluster::{Cluster, EmbeddedBroker};
pub use config::{Compression, Isolation, KafkaConfig, Security};
pub use consumer::exactly_once::{ExactlyOnce, ExactlyOnceOptions};
pub use consumer::{CommitStrategy, Consumer, ConsumerOptions};
pub use dead_letter::DeadLetter;
pub use error::{Error, ErrorCode, Result};
pub use filter::RecordFilter;
pub use handler::{ErrorKind, Handler, HandlerError, HandlerResult, State, TypedHandler};
pub use health::HealthReport;
pub use kafka::Kafka;
pub use manager::Manager;
pub use metrics::Metrics;
pub use partitioner::{HeaderHash, Murmur2, Partitioner, RoundRobin};
pub use policy::{FailurePolicy, InvalidPolicy};
pub use producer::{Producer, ProducerBuilder};
pub use reader::{Limits, Reader, Reading, Start};
pub use record::{Delivery, Message, Record};
pub use redrive::{Redrive, ReplayReport};
pub use retry::RetryPolicy;
pub use router::Router;
pub use secret::Secret;
pub use transaction::{Transaction, TransactionalProducer};

/// The rdkafka crate kafkit is built on, for what kafkit does not wrap.
pub use rdkafka;
