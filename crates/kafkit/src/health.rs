//! [`HealthReport`]: whether a consumer is really consuming — running, polling, committing,
//! making progress on its waiting records — with the details behind the verdict.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use crate::circuit_breaker::CircuitState;

/// Why a partition is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// Too many records waiting for the handler.
    Backpressure,
    /// A record waits for its next attempt.
    Retrying,
    /// The handler's circuit breaker is open.
    CircuitOpen,
    /// A dead-letter copy could not be stored yet; the record waits for it.
    DeadLetterRetry,
    /// A retry topic's head waits until it is due (expected: not a stall).
    RetryDue,
}

/// One assigned partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionHealth {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records fetched and not yet settled.
    pub queued: usize,
    /// Bytes of those records (keys and values).
    pub queued_bytes: usize,
    /// Records being handled now: at most one in partition order, up to the route's bound in
    /// key and unordered order.
    pub in_flight: usize,
    /// Offset of the last settled record.
    pub last_done_offset: Option<i64>,
    /// Time since the partition last made progress.
    #[serde(serialize_with = "millis")]
    pub since_progress: Option<Duration>,
    /// Why it is paused, if it is.
    pub paused: Vec<PauseReason>,
    /// Records behind the high watermark, when known.
    pub lag: Option<i64>,
}

/// A consumer's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// Consumer group.
    pub group: String,
    /// The verdict.
    pub healthy: bool,
    /// What makes it unhealthy (empty when healthy) or worth a look (open circuits).
    pub problems: Vec<String>,
    /// Whether the runtime is running.
    pub running: bool,
    /// Time since the poll loop last turned.
    #[serde(serialize_with = "millis_plain")]
    pub since_poll: Duration,
    /// Time since the last commit and whether it succeeded.
    pub last_commit: Option<CommitHealth>,
    /// Assigned partitions.
    pub partitions: Vec<PartitionHealth>,
    /// Circuit breaker state by topic.
    pub circuits: BTreeMap<String, CircuitState>,
    /// Records fetched and not yet settled, all partitions.
    pub in_flight: usize,
}

/// The last commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommitHealth {
    /// Milliseconds since it happened.
    pub ago_ms: u64,
    /// Whether it succeeded.
    pub ok: bool,
}

/// What the runtime knows of its offset commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CommitStatus {
    /// The last commit: how long ago, and whether it succeeded.
    pub last: Option<(Duration, bool)>,
    /// How long commits have been failing, when the last one failed.
    pub failing_for: Option<Duration>,
}

impl HealthReport {
    pub(crate) fn new(
        group: &str,
        running: bool,
        since_poll: Duration,
        commits: CommitStatus,
        partitions: Vec<PartitionHealth>,
        circuits: BTreeMap<String, CircuitState>,
        stall_timeout: Duration,
    ) -> Self {
        let mut problems = Vec::new();
        if !running {
            problems.push("consumer is not running".to_owned());
        } else if since_poll > stall_timeout {
            problems.push(format!(
                "poll loop silent for {} ms",
                since_poll.as_millis()
            ));
        }
        // One failed commit is routine (a rebalance under way); commits failing for as long as
        // a stall means offsets no longer advance, and a restart would re-process everything.
        if let Some(failing) = commits.failing_for.filter(|d| *d > stall_timeout) {
            problems.push(format!(
                "offset commits failing for {} ms",
                failing.as_millis()
            ));
        }
        for p in &partitions {
            let stalled = p.queued > 0
                && p.since_progress.is_some_and(|d| d > stall_timeout)
                && !p.paused.contains(&PauseReason::CircuitOpen)
                && !p.paused.contains(&PauseReason::RetryDue);
            if stalled {
                problems.push(format!(
                    "{}/{} stalled: {} records waiting, no progress for {} ms",
                    p.topic,
                    p.partition,
                    p.queued,
                    p.since_progress.unwrap_or_default().as_millis()
                ));
            }
        }
        let healthy = problems.is_empty();
        for (topic, state) in &circuits {
            if *state == CircuitState::Open {
                problems.push(format!("circuit of {topic} is open"));
            }
        }
        HealthReport {
            group: group.to_owned(),
            healthy,
            problems,
            running,
            since_poll,
            last_commit: commits.last.map(|(ago, ok)| CommitHealth {
                ago_ms: ago.as_millis() as u64,
                ok,
            }),
            in_flight: partitions.iter().map(|p| p.queued).sum(),
            partitions,
            circuits,
        }
    }

    /// Names librdkafka's fatal error first, when there is one: the runtime consumes nothing
    /// more, even while it still drains.
    pub(crate) fn with_fatal(mut self, fatal: Option<&(RDKafkaErrorCode, String)>) -> Self {
        if let Some((code, reason)) = fatal {
            self.healthy = false;
            self.problems.insert(
                0,
                format!("fatal consumer error ({code:?}: {reason}): it consumes nothing more"),
            );
        }
        self
    }
}

impl HealthReport {
    /// Names the error the runtime stopped with, first.
    pub(crate) fn with_stop(mut self, error: Option<&str>) -> Self {
        if let Some(error) = error {
            self.healthy = false;
            self.problems.insert(0, error.to_owned());
        }
        self
    }
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

fn millis_plain<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(queued: usize, since: u64, paused: Vec<PauseReason>) -> PartitionHealth {
        PartitionHealth {
            topic: "orders".into(),
            partition: 0,
            queued,
            queued_bytes: queued * 100,
            in_flight: 0,
            last_done_offset: Some(3),
            since_progress: Some(Duration::from_millis(since)),
            paused,
            lag: Some(10),
        }
    }

    fn report(partitions: Vec<PartitionHealth>, running: bool, poll_ms: u64) -> HealthReport {
        HealthReport::new(
            "g",
            running,
            Duration::from_millis(poll_ms),
            CommitStatus::default(),
            partitions,
            BTreeMap::new(),
            Duration::from_secs(30),
        )
    }

    #[test]
    fn verdicts() {
        assert!(report(vec![partition(5, 1_000, vec![])], true, 100).healthy);
        // Idle partitions are fine however long they wait.
        assert!(report(vec![partition(0, 100_000, vec![])], true, 100).healthy);
        let stalled = report(vec![partition(5, 31_000, vec![])], true, 100);
        assert!(!stalled.healthy);
        assert!(
            stalled.problems[0].contains("orders/0 stalled"),
            "{:?}",
            stalled.problems
        );
        // Waiting on an open circuit is deliberate, not a stall.
        assert!(
            report(
                vec![partition(5, 31_000, vec![PauseReason::CircuitOpen])],
                true,
                100
            )
            .healthy
        );
        assert!(!report(vec![], false, 100).healthy);
        assert!(!report(vec![], true, 31_000).healthy);
        // A fatal error is named, even while the runtime still drains.
        let fatal = (RDKafkaErrorCode::FencedInstanceId, "fenced".to_owned());
        let report = HealthReport::new(
            "g",
            true,
            Duration::from_millis(100),
            CommitStatus::default(),
            vec![],
            BTreeMap::new(),
            Duration::from_secs(30),
        )
        .with_fatal(Some(&fatal));
        assert!(!report.healthy);
        assert!(report.problems[0].contains("fatal consumer error (FencedInstanceId"));
    }

    fn with_commits(last: (u64, bool), failing_for: Option<u64>) -> HealthReport {
        HealthReport::new(
            "g",
            true,
            Duration::from_millis(100),
            CommitStatus {
                last: Some((Duration::from_millis(last.0), last.1)),
                failing_for: failing_for.map(Duration::from_millis),
            },
            vec![partition(0, 1_000, vec![])],
            BTreeMap::new(),
            Duration::from_secs(30),
        )
    }

    #[test]
    fn commits_failing_longer_than_the_stall_timeout_are_unhealthy() {
        assert!(with_commits((1_000, true), None).healthy);
        // A failure now and then (a rebalance) is routine.
        assert!(with_commits((1_000, false), Some(5_000)).healthy);
        let failing = with_commits((1_000, false), Some(31_000));
        assert!(!failing.healthy);
        assert!(
            failing.problems[0].contains("offset commits failing for 31000 ms"),
            "{:?}",
            failing.problems
        );
    }

    #[test]
    fn commit_history_tracks_failures_since_the_last_success() {
        use crate::consumer::CommitHistory;
        let start = std::time::Instant::now();
        let later = |ms| start + Duration::from_millis(ms);
        let mut history = CommitHistory::default();
        history.record(later(0), false);
        history.record(later(10), false);
        assert_eq!(history.failing_since, Some(later(0)));
        history.record(later(20), true);
        assert_eq!(history.failing_since, None);
        assert_eq!(history.last, Some((later(20), true)));
    }
}
