//! Handling one record to its end, the part every processing order shares: the circuit
//! breaker, the handler call (a panic fails that record alone), the verdict on a failure, the
//! wait before the next attempt and the dead-letter copy.
//!
//! What a wait does to the rest of the partition is the order's to say, through [`Flow`]: in
//! partition order the partition is paused while its one record waits; in key order only the
//! record's key waits (its next records queue behind it) and the others go on.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::PauseReason;
use crate::circuit_breaker::{CircuitBreaker, Permit};
use crate::dead_letter::{Failure, Origin, VALUE_OMITTED};
use crate::error::ErrorCode;
use crate::handler::{ErrorKind, Handler, HandlerError};
use crate::metrics::Metrics;
use crate::policy::{Verdict, verdict_on_tier};
use crate::producer::Producer;
use crate::record::{Message, Record};
use crate::retry_topic;
use crate::router::Registration;

/// Bounds of the pause between attempts to publish a dead-letter record.
const DEAD_LETTER_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(10));

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    DeadLettered,
    /// Copied to a retry topic, where it waits for its next attempt.
    Forwarded,
    Skipped,
    /// Shutdown or revocation interrupted it: not done, its offset is not stored.
    Abandoned,
}

/// What a record's waits do to its partition.
pub(crate) trait Flow: Send {
    /// The record waits for `reason` (a retry's delay, an open circuit, a refused dead-letter
    /// copy).
    fn hold(&mut self, reason: PauseReason);
    /// The wait for `reason` is over.
    fn release(&mut self, reason: PauseReason);
}

/// The flow of an order in which a waiting record holds back nothing but its own key.
pub(crate) struct KeyOnly;

impl Flow for KeyOnly {
    fn hold(&mut self, _: PauseReason) {}
    fn release(&mut self, _: PauseReason) {}
}

/// Metric handles resolved once for the worker's topic.
pub(crate) struct Counters {
    pub consumed: IntCounter,
    pub succeeded: IntCounter,
    pub retried: IntCounter,
    pub dead_lettered: IntCounter,
    pub forwarded: IntCounter,
    pub skipped: IntCounter,
    pub panicked: IntCounter,
    pub duration: Histogram,
    pub circuit: IntGauge,
}

impl Counters {
    pub(crate) fn new(metrics: &Metrics, group: &str, topic: &str) -> Self {
        let outcome = |o: &str| {
            metrics
                .consumer_records
                .with_label_values(&[group, topic, o])
        };
        Counters {
            consumed: outcome("consumed"),
            succeeded: outcome("succeeded"),
            retried: outcome("retried"),
            dead_lettered: outcome("dead_lettered"),
            forwarded: outcome("retry_topic"),
            skipped: outcome("skipped"),
            panicked: outcome("panicked"),
            duration: metrics.handler_duration.with_label_values(&[group, topic]),
            circuit: metrics.circuit_state.with_label_values(&[group, topic]),
        }
    }

    /// Counts a settled record.
    pub(crate) fn settled(&self, outcome: Outcome) {
        match outcome {
            Outcome::Succeeded => self.succeeded.inc(),
            Outcome::DeadLettered => self.dead_lettered.inc(),
            Outcome::Forwarded => self.forwarded.inc(),
            Outcome::Skipped => self.skipped.inc(),
            Outcome::Abandoned => {}
        }
    }
}

/// What handling a record of one partition's worker needs; shared by its records.
pub(crate) struct Handling {
    pub registration: Registration,
    pub dead_letters: Option<Producer>,
    pub group: String,
    pub counters: Option<Counters>,
    pub cancel: CancellationToken,
    /// Run each record's handling in a `record{offset}` span.
    pub record_spans: bool,
}

enum Decision {
    Retry(Duration),
    Abandon,
    Done(Outcome),
}

impl Handling {
    /// Handles `message` with `handler` until it succeeds, is dead-lettered or skipped, or
    /// the worker is cancelled.
    pub(crate) async fn record(
        &self,
        handler: &Arc<dyn Handler>,
        message: &mut Message,
        flow: &mut dyn Flow,
    ) -> Outcome {
        if let Some(c) = &self.counters {
            c.consumed.inc();
        }
        // With record spans on, everything logged while the record is handled (by kafkit and
        // by the user's handler) carries its offset; the worker's span adds group, topic and
        // partition. Off, only kafkit's own events about a failure do (see `failure_span`).
        if self.record_spans {
            let span = tracing::info_span!("record", offset = message.offset);
            self.attempt_until_done(handler, message, flow)
                .instrument(span)
                .await
        } else {
            self.attempt_until_done(handler, message, flow).await
        }
    }

    async fn attempt_until_done(
        &self,
        handler: &Arc<dyn Handler>,
        message: &mut Message,
        flow: &mut dyn Flow,
    ) -> Outcome {
        // A retry topic's copy counts the attempts it had before, and waits until it is due.
        let prior = if self.registration.tier.is_some() {
            if !self.await_due(message, flow).await {
                return Outcome::Abandoned;
            }
            retry_topic::prior_attempts(message)
        } else {
            0
        };
        let mut attempts = 0u32;
        loop {
            // Held until the attempt is settled: a probe that ends without a verdict (skipped,
            // invalid, cancelled) is released when the guard drops.
            let Some(_probe) = self.await_circuit(flow).await else {
                return Outcome::Abandoned;
            };
            attempts += 1;
            message.attempt = prior + attempts;
            // The clock is read only when someone records the duration.
            let started = self.counters.as_ref().map(|_| std::time::Instant::now());
            let result = call(handler, message).await;
            if let (Some(c), Some(started)) = (&self.counters, started) {
                c.duration.observe(started.elapsed().as_secs_f64());
            }
            let error = match result {
                Ok(()) => {
                    self.breaker_success();
                    return Outcome::Succeeded;
                }
                Err(error) => error,
            };
            let span = self.failure_span(message.offset);
            let decision = self
                .decide(&error, attempts, prior, message, flow)
                .instrument(span)
                .await;
            match decision {
                Decision::Retry(delay) => {
                    if let Some(c) = &self.counters {
                        c.retried.inc();
                    }
                    // In partition order the partition stays paused while the record waits, so
                    // nothing piles up behind it; other partitions keep flowing and the
                    // consumer keeps polling. In key order the record's key waits alone.
                    flow.hold(PauseReason::Retrying);
                    let waited = self.sleep(delay).await;
                    flow.release(PauseReason::Retrying);
                    if !waited {
                        return Outcome::Abandoned;
                    }
                }
                Decision::Abandon => return Outcome::Abandoned,
                Decision::Done(outcome) => return outcome,
            }
        }
    }

    /// The span of kafkit's own events about a failed record: `record{offset}`, unless the
    /// record's whole handling already runs in one.
    pub(crate) fn failure_span(&self, offset: i64) -> tracing::Span {
        if self.record_spans {
            tracing::Span::none()
        } else {
            tracing::info_span!("record", offset)
        }
    }

    /// Waits until a retry topic's copy is due. In partition order the partition is paused
    /// meanwhile: what queues behind the copy is due no sooner. False when cancelled.
    async fn await_due(&self, message: &Message, flow: &mut dyn Flow) -> bool {
        let Some(wait) = retry_topic::due_at(message)
            .and_then(|due| due.duration_since(std::time::SystemTime::now()).ok())
        else {
            return true;
        };
        flow.hold(PauseReason::RetryDue);
        let waited = self.sleep(wait).await;
        flow.release(PauseReason::RetryDue);
        waited
    }

    /// What to do after a failed attempt (`attempts` on this topic, `prior` on earlier
    /// tiers): wait and retry, copy to a retry topic, dead-letter, or skip.
    async fn decide(
        &self,
        error: &HandlerError,
        attempts: u32,
        prior: u32,
        message: &Message,
        flow: &mut dyn Flow,
    ) -> Decision {
        let kind = error.kind();
        match kind {
            ErrorKind::Skip => {
                tracing::info!(reason = error.message(), "record skipped by handler")
            }
            ErrorKind::Invalid => {
                tracing::warn!(error = error.message(), "invalid record, not retried");
            }
            ErrorKind::Panic => {
                tracing::error!(
                    error = error.message(),
                    "handler panicked; the record is dead-lettered"
                );
                if let Some(c) = &self.counters {
                    c.panicked.inc();
                }
                self.breaker_failure();
            }
            ErrorKind::Permanent | ErrorKind::Transient => self.breaker_failure(),
        }
        let policy = &self.registration.failure;
        let tier = self.registration.tier.as_ref().map_or(0, |t| t.number);
        let failure = Failure {
            kind,
            message: error.message().to_owned(),
            attempts: prior + attempts,
        };
        match verdict_on_tier(kind, attempts, policy, tier) {
            Verdict::Skip => Decision::Done(Outcome::Skipped),
            Verdict::DeadLetter | Verdict::Drop => {
                if kind == ErrorKind::Transient {
                    tracing::warn!(
                        attempts = failure.attempts,
                        error = error.message(),
                        "retries exhausted"
                    );
                }
                self.dead_letter(message, &failure, flow).await
            }
            Verdict::RetryTopic(next) => {
                let tiers = policy.retry_topics.as_ref().expect("a retry-topic verdict");
                // The tier's delay, or longer when the handler asked for it (`Retry-After`).
                let delay = tiers
                    .delay(next)
                    .max(error.retry_after_hint().unwrap_or_default());
                let record = tiers.record(
                    message,
                    &self.origin(message),
                    &self.group,
                    &failure,
                    next,
                    delay,
                );
                tracing::info!(retry_topic = %record.topic, delay_ms = delay.as_millis() as u64, error = error.message(), "record sent to a retry topic");
                self.publish_copy(record, Outcome::Forwarded, flow).await
            }
            Verdict::Retry => {
                let delay = policy.retry_delay(attempts, error);
                tracing::debug!(
                    attempts,
                    delay_ms = delay.as_millis() as u64,
                    error = error.message(),
                    "retrying"
                );
                Decision::Retry(delay)
            }
        }
    }

    /// Handles a failure of a batch's first record: `Some(delay)` to retry the batch after
    /// `delay`, else the record's outcome (it is settled alone).
    pub(crate) async fn batch_failure(
        &self,
        error: &HandlerError,
        attempts: u32,
        message: &Message,
        flow: &mut dyn Flow,
    ) -> Result<Duration, Outcome> {
        let span = tracing::info_span!("record", offset = message.offset);
        match self
            .decide(error, attempts, 0, message, flow)
            .instrument(span)
            .await
        {
            Decision::Retry(delay) => Ok(delay),
            Decision::Abandon => Err(Outcome::Abandoned),
            Decision::Done(outcome) => Err(outcome),
        }
    }

    /// Where `message` was first consumed: itself, or for a retry topic's copy the record it
    /// stands for, on the tier's source topic.
    fn origin(&self, message: &Message) -> Origin {
        match &self.registration.tier {
            None => Origin::of(message),
            Some(tier) => Origin {
                topic: tier.source.clone(),
                ..Origin::of_retry_copy(message)
            },
        }
    }

    /// Publishes the dead-letter copy of `message` (to the dead-letter topic of the topic it
    /// was first read from).
    async fn dead_letter(
        &self,
        message: &Message,
        failure: &Failure,
        flow: &mut dyn Flow,
    ) -> Decision {
        let Some(policy) = self.registration.failure.dead_letter.as_ref() else {
            tracing::error!(
                error = failure.message,
                "no dead-letter topic: record dropped after failure"
            );
            return Decision::Done(Outcome::Skipped);
        };
        let record = policy.record_from(message, &self.origin(message), &self.group, failure);
        self.publish_copy(record, Outcome::DeadLettered, flow).await
    }

    /// Publishes a failure copy (dead-letter or retry topic) and waits for the broker's
    /// acknowledgement, retrying until it is stored: the source offset moves on only after
    /// that, as `outcome`.
    async fn publish_copy(
        &self,
        mut record: Record,
        outcome: Outcome,
        flow: &mut dyn Flow,
    ) -> Decision {
        let Some(producer) = self.dead_letters.as_ref() else {
            tracing::error!(topic = %record.topic, "no producer for failure copies: record dropped after failure");
            return Decision::Done(Outcome::Skipped);
        };
        let mut backoff = DEAD_LETTER_BACKOFF.0;
        let decision = loop {
            match producer.send(record.clone()).await {
                Ok(delivery) => {
                    tracing::warn!(copy_topic = %record.topic, copy_offset = delivery.offset, ?outcome, "failure copy stored");
                    break Decision::Done(outcome);
                }
                Err(send_error)
                    if send_error.code() == ErrorCode::MessageTooLarge
                        && outcome == Outcome::DeadLettered
                        && record.payload.is_some() =>
                {
                    // The dead-letter copy can never be stored whole: store where the record
                    // is and why it failed, without its value (still in the source topic at
                    // that offset). A retry copy needs its value: it waits paused instead.
                    let size = record.payload.take().map_or(0, |v| v.len());
                    tracing::error!(copy_topic = %record.topic, value_bytes = size, error = %send_error, "failure copy too large: storing it without its value");
                    record
                        .headers
                        .push((VALUE_OMITTED.to_owned(), size.to_string().into_bytes()));
                }
                Err(send_error) => {
                    tracing::error!(copy_topic = %record.topic, error = %send_error, "publishing a failure copy failed; retrying");
                    // Nothing piles up behind the record while its copy cannot be stored.
                    flow.hold(PauseReason::DeadLetterRetry);
                    if !self.sleep(backoff).await {
                        break Decision::Abandon;
                    }
                    backoff = (backoff * 2).min(DEAD_LETTER_BACKOFF.1);
                }
            }
        };
        flow.release(PauseReason::DeadLetterRetry);
        decision
    }

    /// Waits while the circuit is open. `None` when interrupted; otherwise the caller may
    /// call the handler, holding the returned guard until the attempt is settled.
    pub(crate) async fn await_circuit(&self, flow: &mut dyn Flow) -> Option<ProbeGuard> {
        let Some(breaker) = self.registration.circuit_breaker.clone() else {
            return Some(ProbeGuard(None));
        };
        loop {
            match breaker.acquire() {
                permit @ (Permit::Allowed | Permit::Probe(_)) => {
                    flow.release(PauseReason::CircuitOpen);
                    self.report_circuit(&breaker);
                    let probe = match permit {
                        Permit::Probe(id) => Some((breaker, id)),
                        _ => None,
                    };
                    return Some(ProbeGuard(probe));
                }
                Permit::WaitUntil(until) => {
                    flow.hold(PauseReason::CircuitOpen);
                    self.report_circuit(&breaker);
                    tokio::select! {
                        biased;
                        () = self.cancel.cancelled() => return None,
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
            }
        }
    }

    pub(crate) fn breaker_success(&self) {
        if let Some(breaker) = &self.registration.circuit_breaker {
            breaker.on_success();
            self.report_circuit(breaker);
        }
    }

    fn breaker_failure(&self) {
        if let Some(breaker) = &self.registration.circuit_breaker {
            breaker.on_failure();
            self.report_circuit(breaker);
        }
    }

    fn report_circuit(&self, breaker: &CircuitBreaker) {
        if let Some(c) = &self.counters {
            c.circuit.set(breaker.state().as_gauge());
        }
    }

    /// Sleeps unless cancelled first. False when cancelled.
    pub(crate) async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }
}

/// Calls the handler; a panic fails this record alone, including one raised while the
/// handler builds its future (a closure that panics before its `async` block), so the worker
/// and its partition go on.
async fn call(handler: &Arc<dyn Handler>, message: &Message) -> crate::handler::HandlerResult {
    AssertUnwindSafe(async { handler.handle(message).await })
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(HandlerError::panic(&*panic)))
}

/// The half-open circuit's probe held by one attempt: released without a verdict when dropped,
/// whatever ended the attempt (a skip, invalid input, a panic, cancellation). A probe already
/// settled by `on_success` / `on_failure` makes the release a no-op.
pub(crate) struct ProbeGuard(Option<(Arc<CircuitBreaker>, u64)>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some((breaker, id)) = &self.0 {
            breaker.release_probe(*id);
        }
    }
}
