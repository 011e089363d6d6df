//! The crate's one error type and its classification.
//!
//! Callers branch on [`Error::code`] (an [`ErrorCode`]), [`Error::is_retriable`] and
//! [`Error::is_fatal`], never on message text.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A boxed error from a codec or a user's code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// Flushing the producer's queue failed or ran out of time.
    #[error("flushing the producer failed: {source}")]
    Flush {
        /// The underlying librdkafka error.
        source: KafkaError,
    },
    /// `run` was called on a consumer that is already running.
    #[error("the consumer is already running")]
    AlreadyRunning,
    /// A value could not be encoded into a payload.
    #[error("encoding the payload as {content_type} failed: {source}")]
    Encode {
        /// The codec's content type.
        content_type: &'static str,
        /// What the codec reported.
        source: BoxError,
    },
    /// A payload could not be decoded into the requested type.
    #[error("decoding the payload as {content_type} failed: {source}")]
    Decode {
        /// The codec's content type.
        content_type: &'static str,
        /// What the codec reported.
        source: BoxError,
    },
    /// A record was refused before reaching Kafka (bad topic name, partition out of range...).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A topic to create or grow was refused before reaching Kafka (no partitions, shrinking).
    #[error("topic {topic}: {reason}")]
    InvalidTopicSpec {
        /// The topic.
        topic: String,
        /// What is wrong with the request.
        reason: String,
    },
    /// What to replay or browse was chosen wrongly: a record filter that cannot be applied as
    /// written (see [`RecordFilter::check`]), no or duplicate offsets.
    ///
    /// [`RecordFilter::check`]: crate::filter::RecordFilter::check
    #[error("{field}: {reason}")]
    InvalidSelection {
        /// The field at fault, e.g. `filter.json` or `offsets`.
        field: String,
        /// What was expected.
        reason: String,
    },
    /// A replay was refused before anything was re-published: remembering which records it
    /// replayed out of order would take more offset-commit metadata than the budget, or the
    /// remembered set could not be read.
    #[error("replay of {topic} refused, nothing was replayed: {reason}")]
    ReplayRefused {
        /// The dead-letter topic.
        topic: String,
        /// Why, and what to do.
        reason: String,
    },
    /// Another process (a gateway replica, the CLI) is replaying this dead-letter topic: this
    /// replay published nothing, or was cut off and its progress was not committed.
    #[error("replay of {topic} not done: {reason}")]
    ReplayInProgress {
        /// The dead-letter topic.
        topic: String,
        /// What happened, and what to do.
        reason: String,
    },
    /// The broker cannot do this at all (the embedded development broker has no admin API for
    /// some operations).
    #[error("{operation} is not supported by {broker}")]
    Unsupported {
        /// What was attempted, e.g. `add partitions to orders`.
        operation: String,
        /// Which broker refused, e.g. `the embedded development broker`.
        broker: &'static str,
    },
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
    /// A transactional producer can do nothing more: a newer producer with the same
    /// transactional id fenced it (zombie fencing), or another fatal error struck it. Its open
    /// transaction, if any, is aborted by the broker; recreate the producer to go on.
    #[error(
        "transactional producer {transactional_id} is fenced or failed fatally and can do \
         nothing more ({code:?}: {reason}); recreate it"
    )]
    Fenced {
        /// The producer's transactional id.
        transactional_id: String,
        /// librdkafka's fatal error code (e.g. `Fenced`, `InvalidProducerEpoch`).
        code: RDKafkaErrorCode,
        /// librdkafka's description.
        reason: String,
    },
    /// A consumer can consume nothing more: librdkafka raised a fatal error (e.g. a static
    /// member fenced by another process with the same `group.instance.id`). `Consumer::run`
    /// ends with it once in-flight records are drained; restart the consumer after fixing the
    /// cause.
    #[error(
        "consumer of group {group} failed fatally and consumes nothing more ({code:?}: {reason})"
    )]
    ConsumerFailed {
        /// The consumer group.
        group: String,
        /// librdkafka's fatal error code (e.g. `FencedInstanceId`).
        code: RDKafkaErrorCode,
        /// librdkafka's description.
        reason: String,
    },
    /// A transaction could not be begun, committed or aborted, or a record sent in it failed
    /// and it had to be aborted.
    #[error("{operation} of a transaction failed{}: {source}", aborted_note(*.aborted))]
    Transaction {
        /// `init`, `begin`, `send`, `send offsets`, `commit` or `abort`.
        operation: &'static str,
        /// Whether the transaction was aborted: none of its records will ever be visible to a
        /// read-committed reader. When false after a commit, the outcome is unknown.
        aborted: bool,
        /// The underlying librdkafka error.
        source: KafkaError,
    },
    /// The embedded development broker could not be started or used.
    #[error("embedded broker: {0}")]
    EmbeddedBroker(String),
    /// A blocking task was cancelled or panicked.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What kind of error an [`Error`] is: a stable, machine-readable code for HTTP bodies, exit
/// reports and metric labels. Match on it instead of on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A configuration value is wrong ([`Error::Config`]).
    Config,
    /// Kafka is switched off ([`Error::Disabled`]).
    Disabled,
    /// A client could not be created.
    ClientCreation,
    /// The producer refuses new records.
    ProducerClosed,
    /// Flushing the producer failed.
    Flush,
    /// The consumer already runs.
    AlreadyRunning,
    /// A value could not be encoded.
    Encode,
    /// A payload could not be decoded.
    Decode,
    /// A record was refused before reaching Kafka.
    InvalidRecord,
    /// A topic request was refused before reaching Kafka.
    InvalidTopicSpec,
    /// A filter or choice of records is malformed ([`Error::InvalidSelection`]).
    InvalidSelection,
    /// A replay was refused before re-publishing anything ([`Error::ReplayRefused`]).
    ReplayRefused,
    /// Another process is replaying the dead-letter topic ([`Error::ReplayInProgress`]).
    ReplayInProgress,
    /// The broker cannot do this at all.
    Unsupported,
    /// The local producer queue is full: slow down.
    QueueFull,
    /// The record exceeds the broker's or topic's size limit.
    MessageTooLarge,
    /// The topic does not exist.
    UnknownTopic,
    /// The partition does not exist.
    UnknownPartition,
    /// The operation timed out (a record may still be delivered later).
    TimedOut,
    /// The broker refused for lack of permission.
    NotAuthorized,
    /// Another Kafka error that a retry may cure.
    KafkaRetriable,
    /// Another Kafka error.
    Kafka,
    /// The embedded development broker failed.
    EmbeddedBroker,
    /// A background task failed.
    Task,
    /// A transactional producer is fenced (or failed fatally): recreate it.
    Fenced,
    /// A consumer failed fatally ([`Error::ConsumerFailed`]): restart it.
    ConsumerFailed,
    /// A transaction was aborted: none of its records is visible to read-committed readers.
    TransactionAborted,
    /// A transaction operation failed otherwise.
    Transaction,
}

impl ErrorCode {
    /// The code as `snake_case` text, e.g. `unknown_topic`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Config => "config",
            ErrorCode::Disabled => "disabled",
            ErrorCode::ClientCreation => "client_creation",
            ErrorCode::ProducerClosed => "producer_closed",
            ErrorCode::Flush => "flush",
            ErrorCode::AlreadyRunning => "already_running",
            ErrorCode::Encode => "encode",
            ErrorCode::Decode => "decode",
            ErrorCode::InvalidRecord => "invalid_record",
            ErrorCode::InvalidTopicSpec => "invalid_topic_spec",
            ErrorCode::InvalidSelection => "invalid_selection",
            ErrorCode::ReplayRefused => "replay_refused",
            ErrorCode::ReplayInProgress => "replay_in_progress",
            ErrorCode::Unsupported => "unsupported_by_broker",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::UnknownTopic => "unknown_topic",
            ErrorCode::UnknownPartition => "unknown_partition",
            ErrorCode::TimedOut => "timed_out",
            ErrorCode::NotAuthorized => "not_authorized",
            ErrorCode::KafkaRetriable => "kafka_retriable",
            ErrorCode::Kafka => "kafka",
            ErrorCode::EmbeddedBroker => "embedded_broker",
            ErrorCode::Task => "task",
            ErrorCode::Fenced => "fenced",
            ErrorCode::ConsumerFailed => "consumer_failed",
            ErrorCode::TransactionAborted => "transaction_aborted",
            ErrorCode::Transaction => "transaction",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The librdkafka error code behind this error, if there is one.
    pub fn kafka_code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            Error::ClientCreation { source, .. }
            | Error::Produce { source, .. }
            | Error::Admin { source, .. }
            | Error::Consume { source, .. }
            | Error::Transaction { source, .. }
            | Error::Flush { source } => source.rdkafka_error_code(),
            Error::Fenced { code, .. } | Error::ConsumerFailed { code, .. } => Some(*code),
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
            Error::Config { .. }
            | Error::Disabled
            | Error::ClientCreation { .. }
            | Error::Fenced { .. }
            | Error::ConsumerFailed { .. } => true,
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

    /// What kind of error this is.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Config { .. } => ErrorCode::Config,
            Error::Disabled => ErrorCode::Disabled,
            Error::ClientCreation { .. } => ErrorCode::ClientCreation,
            Error::ProducerClosed => ErrorCode::ProducerClosed,
            Error::AlreadyRunning => ErrorCode::AlreadyRunning,
            Error::Encode { .. } => ErrorCode::Encode,
            Error::Decode { .. } => ErrorCode::Decode,
            Error::InvalidRecord(_) => ErrorCode::InvalidRecord,
            Error::InvalidTopicSpec { .. } => ErrorCode::InvalidTopicSpec,
            Error::InvalidSelection { .. } => ErrorCode::InvalidSelection,
            Error::ReplayRefused { .. } => ErrorCode::ReplayRefused,
            Error::ReplayInProgress { .. } => ErrorCode::ReplayInProgress,
            Error::Unsupported { .. } => ErrorCode::Unsupported,
            Error::EmbeddedBroker(_) => ErrorCode::EmbeddedBroker,
            Error::Task(_) => ErrorCode::Task,
            Error::Fenced { .. } => ErrorCode::Fenced,
            Error::ConsumerFailed { .. } => ErrorCode::ConsumerFailed,
            Error::Transaction { aborted: true, .. } => ErrorCode::TransactionAborted,
            Error::Transaction { .. } => ErrorCode::Transaction,
            Error::Flush { .. }
            | Error::Produce { .. }
            | Error::Admin { .. }
            | Error::Consume { .. } => match self.kafka_code() {
                Some(RDKafkaErrorCode::QueueFull) => ErrorCode::QueueFull,
                Some(RDKafkaErrorCode::MessageSizeTooLarge) => ErrorCode::MessageTooLarge,
                Some(
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                ) => ErrorCode::UnknownTopic,
                Some(RDKafkaErrorCode::UnknownPartition) => ErrorCode::UnknownPartition,
                Some(RDKafkaErrorCode::MessageTimedOut) => ErrorCode::TimedOut,
                Some(
                    RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
                ) => ErrorCode::NotAuthorized,
                _ if self.is_retriable() => ErrorCode::KafkaRetriable,
                _ if matches!(self, Error::Flush { .. }) => ErrorCode::Flush,
                _ => ErrorCode::Kafka,
            },
        }
    }

    pub(crate) fn config(variable: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            variable: variable.into(),
            reason: reason.into(),
        }
    }
}

/// The end of a [`Error::Transaction`] message: what became of the transaction.
fn aborted_note(aborted: bool) -> &'static str {
    if aborted {
        " and it was aborted (none of its records is visible to read-committed readers)"
    } else {
        ""
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
        assert_eq!(full.code(), ErrorCode::QueueFull);

        let too_large = produce_error(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(!too_large.is_retriable() && !too_large.is_fatal());
        assert_eq!(too_large.code(), ErrorCode::MessageTooLarge);

        let unknown = produce_error(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert!(!unknown.is_retriable());
        assert_eq!(unknown.code(), ErrorCode::UnknownTopic);

        let fenced = produce_error(RDKafkaErrorCode::ProducerFenced);
        assert!(fenced.is_fatal() && !fenced.is_retriable());

        assert!(Error::config("KAFKA_BROKERS", "empty").is_fatal());
        assert!(!Error::ProducerClosed.is_retriable());

        let denied = produce_error(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(denied.code(), ErrorCode::NotAuthorized);
        assert_eq!(denied.code().as_str(), "not_authorized");

        let fenced = Error::Fenced {
            transactional_id: "orders-1".into(),
            code: RDKafkaErrorCode::Fenced,
            reason: "producer fenced by a newer instance".into(),
        };
        assert!(fenced.is_fatal() && !fenced.is_retriable());
        assert_eq!(fenced.code().as_str(), "fenced");
        assert!(fenced.to_string().contains("recreate it"), "{fenced}");
        let aborted = Error::Transaction {
            operation: "commit",
            aborted: true,
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        };
        assert!(!aborted.is_fatal());
        assert_eq!(aborted.code(), ErrorCode::TransactionAborted);
        assert!(aborted.to_string().contains("aborted"), "{aborted}");
    }
}
