//! [`FailurePolicy`]: what happens to a record whose handler failed — retry it, copy it to the
//! dead-letter topic, or skip it — decided by one pure function, [`verdict`], that every
//! delivery mode (at-least-once, exactly-once) applies. Each runtime only carries the verdict
//! out: sleeping before a retry, publishing or transacting the dead-letter copy, logging a skip.

use std::time::Duration;

use crate::dead_letter::DeadLetter;
use crate::handler::{ErrorKind, HandlerError};
use crate::retry::RetryPolicy;
use crate::retry_topic::RetryTopics;

/// What happens to an invalid record (undecodable, or failing validation). Never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvalidPolicy {
    /// Copy it to the dead-letter topic (default when the topic has one).
    #[default]
    DeadLetter,
    /// Log it and move on.
    Skip,
}

/// A route's failure policy: retries of transient failures, the dead-letter topic, and what
/// happens to invalid records.
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePolicy {
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Where failures go; `None` means failures that exhaust retries are logged and skipped.
    pub dead_letter: Option<DeadLetter>,
    /// Invalid records: dead-letter or skip.
    pub invalid: InvalidPolicy,
    /// Tiers of non-blocking retries after the in-place ones (none by default).
    pub retry_topics: Option<RetryTopics>,
}

impl Default for FailurePolicy {
    /// The default retries, the `{topic}.dlq` dead-letter topic, invalid records dead-lettered.
    fn default() -> Self {
        FailurePolicy {
            retry: RetryPolicy::default(),
            dead_letter: Some(DeadLetter::default()),
            invalid: InvalidPolicy::DeadLetter,
            retry_topics: None,
        }
    }
}

impl FailurePolicy {
    /// Sets the retry policy of transient failures.
    pub fn retry(&mut self, policy: RetryPolicy) -> &mut Self {
        self.retry = policy;
        self
    }

    /// Sets the dead-letter policy (default `{topic}.dlq`).
    pub fn dead_letter(&mut self, dead_letter: DeadLetter) -> &mut Self {
        self.dead_letter = Some(dead_letter);
        self
    }

    /// No dead-letter topic: exhausted and invalid records are logged and skipped.
    pub fn no_dead_letter(&mut self) -> &mut Self {
        self.dead_letter = None;
        self
    }

    /// Sets what happens to invalid records.
    pub fn on_invalid(&mut self, policy: InvalidPolicy) -> &mut Self {
        self.invalid = policy;
        self
    }

    /// After the in-place retries, send transient failures through `tiers` of retry topics
    /// before the dead-letter topic.
    pub fn retry_topics(&mut self, tiers: RetryTopics) -> &mut Self {
        self.retry_topics = Some(tiers);
        self
    }

    /// How long to wait before attempt `attempts + 1` after a [`Verdict::Retry`] on `error`:
    /// the retry policy's backoff (with its jitter, so not pure: the verdict itself is), or
    /// longer when the handler asked for it (an HTTP `Retry-After`), never shorter.
    pub fn retry_delay(&self, attempts: u32, error: &HandlerError) -> Duration {
        self.retry
            .delay(attempts)
            .max(error.retry_after_hint().unwrap_or_default())
    }
}

/// What to do with a record whose handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try it again after [`FailurePolicy::retry_delay`].
    Retry,
    /// Copy it to this tier (1-based) of the policy's retry topics, due after the tier's
    /// delay; its offset moves on once the copy is stored.
    RetryTopic(usize),
    /// Copy it to the policy's dead-letter topic; its offset moves on once the copy is stored.
    DeadLetter,
    /// It should be dead-lettered but the policy has no dead-letter topic: log it as lost and
    /// move on.
    Drop,
    /// Move on without a copy: the handler asked to skip it, or it is invalid and the policy
    /// skips invalid records.
    Skip,
}

/// The verdict on a record whose handler failed with `kind` on attempt `attempts` (1 for the
/// first try), under `policy`:
///
/// | kind | verdict |
/// |---|---|
/// | `Skip` | skip |
/// | `Invalid` | never retried: dead letter, or skip when [`InvalidPolicy::Skip`] |
/// | `Transient` | retry while the retry policy allows, then dead letter |
/// | `Permanent`, `Panic` | dead letter |
///
/// "Dead letter" becomes [`Verdict::Drop`] when the policy has no dead-letter topic.
///
/// With retry topics, a transient failure whose in-place retries are exhausted goes to the
/// first tier instead of the dead-letter topic; see [`verdict_on_tier`] for what follows.
pub fn verdict(kind: ErrorKind, attempts: u32, policy: &FailurePolicy) -> Verdict {
    verdict_on_tier(kind, attempts, policy, 0)
}

/// [`verdict`] for a record read from tier `tier` of the policy's retry topics (0: the
/// source topic). A record gets one attempt per tier: a transient failure there goes to the
/// next tier, or after the last to the dead-letter topic; other kinds are judged as on the
/// source topic.
pub fn verdict_on_tier(
    kind: ErrorKind,
    attempts: u32,
    policy: &FailurePolicy,
    tier: usize,
) -> Verdict {
    let tiers = policy.retry_topics.as_ref().map_or(0, RetryTopics::tiers);
    if kind == ErrorKind::Transient {
        if tier == 0 && policy.retry.should_retry(attempts) {
            return Verdict::Retry;
        }
        if tier < tiers {
            return Verdict::RetryTopic(tier + 1);
        }
    }
    let dead_letter = if policy.dead_letter.is_some() {
        Verdict::DeadLetter
    } else {
        Verdict::Drop
    };
    match kind {
        ErrorKind::Skip => Verdict::Skip,
        ErrorKind::Invalid => match policy.invalid {
            InvalidPolicy::Skip => Verdict::Skip,
            InvalidPolicy::DeadLetter => dead_letter,
        },
        ErrorKind::Transient | ErrorKind::Permanent | ErrorKind::Panic => dead_letter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retries: u32) -> FailurePolicy {
        FailurePolicy {
            retry: RetryPolicy::exponential(retries, Duration::from_millis(10)),
            ..FailurePolicy::default()
        }
    }

    #[test]
    fn transient_failures_are_retried_until_the_policy_is_exhausted_then_dead_lettered() {
        // A policy of 3 attempts: attempts 1 and 2 retry, the 3rd failure dead-letters.
        let policy = policy(3);
        assert_eq!(verdict(ErrorKind::Transient, 1, &policy), Verdict::Retry);
        assert_eq!(verdict(ErrorKind::Transient, 2, &policy), Verdict::Retry);
        assert_eq!(
            verdict(ErrorKind::Transient, 3, &policy),
            Verdict::DeadLetter
        );
        assert_eq!(
            verdict(ErrorKind::Transient, 4, &policy),
            Verdict::DeadLetter
        );
    }

    #[test]
    fn no_retries_dead_letters_the_first_transient_failure() {
        let mut policy = FailurePolicy::default();
        policy.retry(RetryPolicy::none());
        assert_eq!(
            verdict(ErrorKind::Transient, 1, &policy),
            Verdict::DeadLetter
        );
    }

    #[test]
    fn permanent_failures_and_panics_are_dead_lettered_at_once() {
        let policy = policy(5);
        for kind in [ErrorKind::Permanent, ErrorKind::Panic] {
            assert_eq!(verdict(kind, 1, &policy), Verdict::DeadLetter, "{kind:?}");
        }
    }

    #[test]
    fn invalid_records_are_never_retried_and_follow_the_invalid_policy() {
        let mut policy = policy(5);
        assert_eq!(verdict(ErrorKind::Invalid, 1, &policy), Verdict::DeadLetter);
        policy.on_invalid(InvalidPolicy::Skip);
        assert_eq!(verdict(ErrorKind::Invalid, 1, &policy), Verdict::Skip);
    }

    #[test]
    fn a_skip_is_a_skip_whatever_the_policy() {
        let mut policy = policy(5);
        assert_eq!(verdict(ErrorKind::Skip, 1, &policy), Verdict::Skip);
        policy.no_dead_letter();
        assert_eq!(verdict(ErrorKind::Skip, 1, &policy), Verdict::Skip);
    }

    #[test]
    fn retry_topics_follow_the_in_place_retries_one_attempt_per_tier_then_the_dead_letter() {
        let mut policy = policy(2);
        policy.retry_topics(RetryTopics::new([
            Duration::from_secs(1),
            Duration::from_secs(5),
        ]));
        assert_eq!(verdict(ErrorKind::Transient, 1, &policy), Verdict::Retry);
        assert_eq!(
            verdict(ErrorKind::Transient, 2, &policy),
            Verdict::RetryTopic(1)
        );
        // On a tier the first failure moves on: no in-place retries there.
        assert_eq!(
            verdict_on_tier(ErrorKind::Transient, 1, &policy, 1),
            Verdict::RetryTopic(2)
        );
        assert_eq!(
            verdict_on_tier(ErrorKind::Transient, 1, &policy, 2),
            Verdict::DeadLetter
        );
        // Only transient failures are worth a later try.
        for tier in 0..=2 {
            assert_eq!(
                verdict_on_tier(ErrorKind::Permanent, 1, &policy, tier),
                Verdict::DeadLetter
            );
            assert_eq!(
                verdict_on_tier(ErrorKind::Invalid, 1, &policy, tier),
                Verdict::DeadLetter
            );
            assert_eq!(
                verdict_on_tier(ErrorKind::Skip, 1, &policy, tier),
                Verdict::Skip
            );
        }
        // With no in-place retries the first failure goes to tier 1.
        policy.retry(RetryPolicy::none());
        assert_eq!(
            verdict(ErrorKind::Transient, 1, &policy),
            Verdict::RetryTopic(1)
        );
        // Without a dead-letter topic the last tier's failure is dropped.
        policy.no_dead_letter();
        assert_eq!(
            verdict_on_tier(ErrorKind::Transient, 1, &policy, 2),
            Verdict::Drop
        );
    }

    #[test]
    fn without_a_dead_letter_topic_what_would_be_dead_lettered_is_dropped() {
        let mut policy = policy(2);
        policy.no_dead_letter();
        assert_eq!(verdict(ErrorKind::Transient, 1, &policy), Verdict::Retry);
        assert_eq!(verdict(ErrorKind::Transient, 2, &policy), Verdict::Drop);
        assert_eq!(verdict(ErrorKind::Permanent, 1, &policy), Verdict::Drop);
        assert_eq!(verdict(ErrorKind::Invalid, 1, &policy), Verdict::Drop);
        policy.on_invalid(InvalidPolicy::Skip);
        assert_eq!(verdict(ErrorKind::Invalid, 1, &policy), Verdict::Skip);
    }
}
