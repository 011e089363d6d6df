//! The crate's one error type and its classification.
//!
//! Callers branch on [`Error::is_retriable`] and [`Error::is_fatal`], never on message text.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Result alias used across kafkit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in kafkit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing, malformed or contradicts another one.
    #[error("{variable}: {reason}")]
    Config {
        /// The environment variable or setting at fault (e.g. `KAFKA_SESSION_TIMEOUT`).
        variable: String,
        /// What was expected and what was found.
        reason: String,
    },
    /// Kafka is switched off (`KAFKA_ENABLED=false`); nothing was attempted.
    #[error("kafka is disabled (KAFKA_ENABLED=false)")]
    Disabled,
    /// librdkafka refused to create a client.
    #[error("creating the {client} client failed: {source}")]
    ClientCreation {
        /// Which client (`producer`, `consumer`, `admin`).
        client: &'static str,
        /// The underlying librdkafka error.
        source: KafkaError,
    },
    /// Producing a record failed (enqueueing or delivery).
    #[error("producing to {topic} failed: {source}")]
    Produce {
        /// The record's topic.
        topic: String,
        /// The underlying librdkafka error.
        source: KafkaError,
    },
    /// The producer is shutting down and refuses new records.
    #[error("the producer is shut down and accepts no new records")]
    ProducerClosed,
    /// A value could not be encoded into a payload.
    #[error("encoding the payload failed: {0}")]
    Encode(#[source] serde_json::Error),
    /// A payload could not be decoded into the requested type.
    #[error("decoding the payload failed: {0}")]
    Decode(#[source] serde_json::Error),
    /// A record was refused before reaching Kafka (bad topic name, partition out of range...).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// An admin or metadata operation failed.
    #[error("{operation} failed: {source}")]
    Admin {
        /// The operation, e.g. `create topic orders`.
        operation: String,
        /// The underlying librdkafka error.
        source: KafkaError,
    },
    /// A consumer operation failed.
    #[error("{operation} failed: {source}")]
    Consume {
        /// The operation, e.g. `subscribe`.
        operation: String,
        /// The underlying librdkafka error.
        source: KafkaError,
    },
    /// The embedded development broker could not be started or used.
    #[error("embedded broker: {0}")]
    EmbeddedBroker(String),
    /// A blocking task was cancelled or panicked.
    #[error("background task failed: {0}")]
    Task(String),
}

impl Error {
    /// The librdkafka error code behind this error, if there is one.
    pub fn kafka_code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            Error::ClientCreation { source, .. }
            | Error::Produce { source, .. }
            | Error::Admin { source, .. }
            | Error::Consume { source, .. } => source.rdkafka_error_code(),
            _ => None,
        }
    }

    /// True when trying the same operation again later may succeed (broker busy or moving,
    /// local queue full, timeouts). Retry these with backoff.
    pub fn is_retriable(&self) -> bool {
        self.kafka_code().is_some_and(is_retriable_code)
    }

    /// True when the client is unusable and must be recreated (e.g. an idempotent producer
    /// fenced or out of sequence), or the configuration is wrong.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Config { .. } | Error::Disabled | Error::ClientCreation { .. } => true,
            _ => self.kafka_code().is_some_and(|code| {
                matches!(
                    code,
                    RDKafkaErrorCode::Fatal
                        | RDKafkaErrorCode::Fenced
                        | RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                        | RDKafkaErrorCode::OutOfOrderSequenceNumber
                        | RDKafkaErrorCode::UnknownProducerId
                        | RDKafkaErrorCode::SaslAuthenticationFailed
                        | RDKafkaErrorCode::Authentication
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::ClusterAuthorizationFailed
                )
            }),
        }
    }

    /// True when the local producer queue is full: the caller should slow down (back-pressure).
    pub fn is_queue_full(&self) -> bool {
        self.kafka_code() == Some(RDKafkaErrorCode::QueueFull)
    }

    /// A short, stable, machine-readable name for the kind of error (for HTTP bodies, headers
    /// and metrics labels).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config { .. } => "config",
            Error::Disabled => "disabled",
            Error::ClientCreation { .. } => "client_creation",
            Error::ProducerClosed => "producer_closed",
            Error::Encode(_) => "encode",
            Error::Decode(_) => "decode",
            Error::InvalidRecord(_) => "invalid_record",
            Error::EmbeddedBroker(_) => "embedded_broker",
            Error::Task(_) => "task",
            Error::Produce { .. } | Error::Admin { .. } | Error::Consume { .. } => {
                match self.kafka_code() {
                    Some(RDKafkaErrorCode::QueueFull) => "queue_full",
                    Some(RDKafkaErrorCode::MessageSizeTooLarge) => "message_too_large",
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                    | Some(RDKafkaErrorCode::UnknownTopic) => "unknown_topic",
                    Some(RDKafkaErrorCode::UnknownPartition) => "unknown_partition",
                    Some(RDKafkaErrorCode::MessageTimedOut) => "timed_out",
                    _ if self.is_retriable() => "kafka_retriable",
                    _ => "kafka",
                }
            }
        }
    }

    pub(crate) fn config(variable: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            variable: variable.into(),
            reason: reason.into(),
        }
    }
}

/// Error codes for which a later retry can succeed.
fn is_retriable_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::QueueFull
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::BrokerNotAvailable
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::KafkaStorageError
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::WaitingForCoordinator
            | RDKafkaErrorCode::ThrottlingQuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce_error(code: RDKafkaErrorCode) -> Error {
        Error::Produce {
            topic: "t".into(),
            source: KafkaError::MessageProduction(code),
        }
    }

    #[test]
    fn classification_follows_error_codes() {
        let full = produce_error(RDKafkaErrorCode::QueueFull);
        assert!(full.is_retriable() && full.is_queue_full() && !full.is_fatal());
        assert_eq!(full.code(), "queue_full");

        let too_large = produce_error(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(!too_large.is_retriable() && !too_large.is_fatal());
        assert_eq!(too_large.code(), "message_too_large");

        let unknown = produce_error(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert!(!unknown.is_retriable());
        assert_eq!(unknown.code(), "unknown_topic");

        let fenced = produce_error(RDKafkaErrorCode::ProducerFenced);
        assert!(fenced.is_fatal() && !fenced.is_retriable());

        assert!(Error::config("KAFKA_BROKERS", "empty").is_fatal());
        assert!(!Error::ProducerClosed.is_retriable());
    }
}
