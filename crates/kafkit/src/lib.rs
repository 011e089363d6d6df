//! # kafkit
//!
//! A toolkit for building services on Apache Kafka, on top of librdkafka (through `rdkafka`).
//!
//! Start at [`Kafka`], the front door: it reads [`KafkaConfig`] (every `KAFKA_*` variable,
//! TLS and SASL), connects to `KAFKA_BROKERS` or starts the embedded development broker
//! ([`cluster`]) when that is unset, and builds every client already pointed at the cluster:
//!
//! - [`Producer`]: typed sends, pipelined multi-topic batches with per-record results,
//!   idempotent by default, Java-compatible murmur2 partitioning, flush on shutdown;
//!   [`transaction::TransactionalProducer`] commits records and consumed offsets together.
//! - [`Admin`]: ensure topics ([`TopicSpec`]), describe the cluster, list topics with
//!   watermarks, consumer groups and their lag.
//! - [`Consumer`]: the at-least-once runtime. A [`Router`] maps topics to typed handlers;
//!   partitions run concurrently, records in partition, key or no order; failures
//!   ([`HandlerError`], by [`ErrorKind`]) are retried ([`RetryPolicy`]), dead-lettered
//!   ([`DeadLetter`]) or skipped as one [`policy::FailurePolicy`] decides; a
//!   [`circuit_breaker`] pauses partitions; shutdown drains, commits and leaves the group;
//!   [`health`] tells whether it is really consuming.
//! - [`ExactlyOnce`]: consume-transform-produce, one transaction per batch.
//! - [`Reader`]: group-less reads from an offset, a time or a group's commit.
//! - [`Redrive`]: browse dead-letter topics and replay them safely.
//! - [`Manager`]: named producers and consumers, shut down together.
//!
//! ```no_run
//! # async fn demo() -> kafkit::Result<()> {
//! use kafkit::{Kafka, Record, TopicSpec};
//!
//! let kafka = Kafka::from_env()?;
//! kafka.admin()?.ensure_topics(&[TopicSpec::new("orders", 6)]).await?;
//! let producer = kafka.producer()?;
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
pub mod retry_topic;
pub mod router;
pub mod secret;
pub mod shutdown;
pub mod transaction;
pub mod view;

// The names users type; everything else is reached through its module.
pub use admin::{Admin, TopicSpec};
pub use config::KafkaConfig;
pub use consumer::Consumer;
pub use consumer::exactly_once::ExactlyOnce;
pub use dead_letter::DeadLetter;
pub use error::{Error, Result};
pub use handler::{ErrorKind, HandlerError, State};
pub use kafka::Kafka;
pub use manager::Manager;
pub use producer::Producer;
pub use reader::Reader;
pub use record::{Message, Record};
pub use redrive::Redrive;
pub use retry::RetryPolicy;
pub use router::Router;

/// The rdkafka crate kafkit is built on, for what kafkit does not wrap.
pub use rdkafka;
