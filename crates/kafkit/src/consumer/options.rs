//! How a [`Consumer`](super::Consumer) runs: commit strategy, queue bounds, drain and stall
//! timeouts, and their defaults.

use std::time::Duration;

/// Default bound on records waiting per partition before it is paused.
pub const DEFAULT_MAX_QUEUED_PER_PARTITION: usize = 10_000;
/// Default bound on the bytes (keys and values) of records waiting per partition before it is
/// paused: large records reach it long before the record bound.
pub const DEFAULT_MAX_QUEUED_BYTES_PER_PARTITION: usize = 32 * 1024 * 1024;
/// Default time shutdown waits for in-flight records.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time without progress after which a consumer with waiting records is unhealthy.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often lag is refreshed from the brokers' watermarks.
pub const DEFAULT_LAG_INTERVAL: Duration = Duration::from_secs(5);

/// When stored offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitStrategy {
    /// Periodically (librdkafka auto-commit of stored offsets), on revocation and on shutdown.
    Periodic(Duration),
    /// After every handled record or batch (asynchronously), as KafkaJS's manual commits.
    EveryRecord,
}

impl Default for CommitStrategy {
    fn default() -> Self {
        CommitStrategy::Periodic(Duration::from_secs(5))
    }
}

/// Runtime settings of a [`Consumer`](super::Consumer).
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// When offsets are committed.
    pub commit: CommitStrategy,
    /// Records waiting per partition before it is paused (bounds memory).
    pub max_queued_per_partition: usize,
    /// Bytes of records (keys and values) waiting per partition before it is paused.
    pub max_queued_bytes_per_partition: usize,
    /// How long shutdown waits for in-flight records; keep it below the session timeout.
    pub drain_timeout: Duration,
    /// No progress for this long with records waiting makes the consumer unhealthy.
    pub stall_timeout: Duration,
    /// How often lag is refreshed.
    pub lag_interval: Duration,
    /// Create missing dead-letter topics at start, with the source topic's partition count.
    pub create_dead_letter_topics: bool,
    /// Run each record's handling in a `record{offset}` span, inside the worker's
    /// `partition{group, topic, partition}` span, so every line the handler logs names its
    /// record. Off by default: with a formatting subscriber a span per record costs about as
    /// much as the rest of the runtime's per-record work (see BENCHMARKS.md). kafkit's own
    /// events about a failed record (retry, dead letter, skip) carry its offset either way.
    pub record_spans: bool,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            commit: CommitStrategy::default(),
            max_queued_per_partition: DEFAULT_MAX_QUEUED_PER_PARTITION,
            max_queued_bytes_per_partition: DEFAULT_MAX_QUEUED_BYTES_PER_PARTITION,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            lag_interval: DEFAULT_LAG_INTERVAL,
            create_dead_letter_topics: true,
            record_spans: false,
        }
    }
}
