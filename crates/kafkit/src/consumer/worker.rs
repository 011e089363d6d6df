//! One partition's worker: handles its records in offset order with retries, the circuit
//! breaker and dead-lettering, and stores offsets only for records whose work is done.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use prometheus::{Histogram, IntCounter, IntGauge};
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::context::RuntimeContext;
use super::fetched::FetchedChunk;
use super::offsets::OffsetTracker;
use super::{Control, PartitionState, PauseReason, TopicPartition, queued_size};
use crate::batch::BatchOptions;
use crate::circuit_breaker::{CircuitBreaker, Permit};
use crate::dead_letter::Failure;
use crate::handler::{ErrorKind, Handler, HandlerError};
use crate::metrics::Metrics;
use crate::producer::Producer;
use crate::record::Message;
use crate::router::{InvalidPolicy, Registration, Route};

/// Store offsets at least this often (in records) even while records keep arriving; when the
/// queue runs dry they are stored at once. Storing is a local call, committing is periodic.
const STORE_EVERY: usize = 128;
/// Bounds of the pause between attempts to publish a dead-letter record.
const DEAD_LETTER_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(10));

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    DeadLettered,
    Skipped,
    /// Shutdown or revocation interrupted it: not done, its offset is not stored.
    Abandoned,
}

/// Metric handles resolved once for the worker's topic.
struct Counters {
    consumed: IntCounter,
    succeeded: IntCounter,
    retried: IntCounter,
    dead_lettered: IntCounter,
    skipped: IntCounter,
    panicked: IntCounter,
    duration: Histogram,
    circuit: IntGauge,
}

impl Counters {
    fn new(metrics: &Metrics, group: &str, topic: &str) -> Self {
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
            skipped: outcome("skipped"),
            panicked: outcome("panicked"),
            duration: metrics.handler_duration.with_label_values(&[group, topic]),
            circuit: metrics.circuit_state.with_label_values(&[group, topic]),
        }
    }
}

/// Everything a worker needs; built by the poll loop.
pub(crate) struct Worker {
    pub tp: TopicPartition,
    pub epoch: u64,
    pub rx: UnboundedReceiver<FetchedChunk>,
    pub registration: Registration,
    pub consumer: Arc<StreamConsumer<RuntimeContext>>,
    pub control: UnboundedSender<Control>,
    pub state: Arc<PartitionState>,
    pub cancel: CancellationToken,
    pub dead_letters: Option<Producer>,
    pub group: String,
    pub commit_each: bool,
    pub max_queued: usize,
    pub max_queued_bytes: usize,
    /// Run each record's handling in a `record{offset}` span.
    pub record_spans: bool,
    pub metrics: Option<Metrics>,
    /// The worker this one replaces after a rebalance; it finishes first, so two workers never
    /// run the same partition's handler at once. Aborting this worker (a drain timeout) aborts
    /// the predecessor too, so no task keeps the consumer open after shutdown.
    pub predecessor: Option<AbortOnDropHandle<()>>,
}

struct Running {
    worker: Worker,
    /// Records received in a chunk and not yet taken.
    buffer: VecDeque<Message>,
    tracker: OffsetTracker,
    unstored: usize,
    counters: Option<Counters>,
    paused: Vec<PauseReason>,
}

impl Worker {
    pub(crate) async fn run(mut self) {
        if let Some(predecessor) = self.predecessor.take() {
            let _ = predecessor.await;
        }
        let counters = self
            .metrics
            .as_ref()
            .map(|m| Counters::new(m, &self.group, &self.tp.0));
        let mut running = Running {
            worker: self,
            buffer: VecDeque::new(),
            tracker: OffsetTracker::new(),
            unstored: 0,
            counters,
            paused: Vec::new(),
        };
        running.run().await;
    }
}

impl Running {
    async fn run(&mut self) {
        let route = self.worker.registration.route.clone();
        let cancel = self.worker.cancel.clone();
        loop {
            // Buffered records need no wait: check cancellation with an atomic load instead of
            // registering a waiter per record. A cancelled worker leaves the record buffered,
            // so it is counted out of the queue with the rest below.
            if cancel.is_cancelled() {
                break;
            }
            let first = match self.buffer.pop_front() {
                Some(message) => message,
                None => tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    message = self.recv() => match message {
                        Some(message) => message,
                        None => break,
                    },
                },
            };
            let done = match &route {
                Route::Single(handler) => self.single(handler, first).await,
                Route::Batch(_, options) => {
                    let batch = self.collect(first, *options).await;
                    self.batch(batch).await
                }
            };
            if !done {
                break;
            }
        }
        self.store();
        // Records received but never taken are abandoned: re-read by the next owner.
        let mut untaken = (self.buffer.len(), self.buffer.iter().map(queued_size).sum());
        self.buffer.clear();
        while let Ok(chunk) = self.worker.rx.try_recv() {
            untaken.0 += chunk.len();
            untaken.1 += chunk.bytes();
        }
        self.worker.state.unqueue(untaken.0, untaken.1);
        for reason in std::mem::take(&mut self.paused) {
            let _ = self.worker.control.send(Control::Resume(
                self.worker.tp.clone(),
                self.worker.epoch,
                reason,
            ));
        }
    }

    /// Handles one record to its end. False when interrupted.
    async fn single(&mut self, handler: &Arc<dyn Handler>, message: Message) -> bool {
        self.tracker.start(message.offset);
        if let Some(c) = &self.counters {
            c.consumed.inc();
        }
        // With record spans on, everything logged while the record is handled (by kafkit and
        // by the user's handler) carries its offset; the worker's span adds group, topic and
        // partition. Off, only kafkit's own events about a failure do (see `decide`).
        let outcome = if self.worker.record_spans {
            let span = tracing::info_span!("record", offset = message.offset);
            self.attempt_until_done(handler, &message)
                .instrument(span)
                .await
        } else {
            self.attempt_until_done(handler, &message).await
        };
        self.finish(&[message], outcome)
    }

    /// Gathers a batch: up to `max_records`, or what arrived within `max_wait` of the first.
    async fn collect(&mut self, first: Message, options: BatchOptions) -> Vec<Message> {
        let deadline = Instant::now() + options.max_wait;
        let cancel = self.worker.cancel.clone();
        let mut batch = vec![first];
        while batch.len() < options.max_records {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => break,
                message = self.recv() => match message {
                    Some(message) => batch.push(message),
                    None => break,
                },
            }
        }
        batch
    }

    /// The next record: from the current chunk, or the next chunk from the poll loop.
    /// `None` once the poll loop dropped the channel. Cancel-safe: a chunk is buffered whole.
    async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.buffer.pop_front() {
                return Some(message);
            }
            let chunk = self.worker.rx.recv().await?;
            self.buffer.extend(chunk.into_messages(&self.worker.tp.0));
        }
    }

    /// Handles a batch: on failure at index i, records before i are done and the rest are
    /// retried; a record that keeps failing is dead-lettered alone. False when interrupted.
    async fn batch(&mut self, batch: Vec<Message>) -> bool {
        let span = tracing::info_span!(
            "batch",
            first_offset = batch[0].offset,
            records = batch.len()
        );
        self.handle_batch(batch).instrument(span).await
    }

    async fn handle_batch(&mut self, mut batch: Vec<Message>) -> bool {
        let Route::Batch(handler, _) = self.worker.registration.route.clone() else {
            unreachable!("batch() is only called for batch routes")
        };
        for message in &batch {
            self.tracker.start(message.offset);
            if let Some(c) = &self.counters {
                c.consumed.inc();
            }
        }
        // Failed attempts of the batch's first record: the count restarts whenever the first
        // record changes, so one record's retries are never charged to the next.
        let mut attempts = 0u32;
        while !batch.is_empty() {
            let Some(_probe) = self.await_circuit().await else {
                return self.finish(&batch, Outcome::Abandoned);
            };
            attempts += 1;
            // The clock is read only when someone records the duration.
            let started = self.counters.as_ref().map(|_| std::time::Instant::now());
            let result = AssertUnwindSafe(handler.handle_batch(&batch))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(crate::batch::BatchError::all(HandlerError::panic(&*panic)))
                });
            if let (Some(c), Some(started)) = (&self.counters, started) {
                c.duration.observe(started.elapsed().as_secs_f64());
            }
            let error = match result {
                Ok(()) => {
                    self.breaker_success();
                    return self.finish(&batch, Outcome::Succeeded);
                }
                Err(error) => error,
            };
            // Records before the failing one are done.
            let failed_at = error.failed_at.unwrap_or(0).min(batch.len() - 1);
            let rest = batch.split_off(failed_at);
            if !batch.is_empty() {
                self.finish(&batch, Outcome::Succeeded);
                // A new record failed: this was its first attempt.
                attempts = 1;
            }
            batch = rest;
            let span = tracing::info_span!("record", offset = batch[0].offset);
            let decision = self
                .decide(&error.error, attempts, &batch[0])
                .instrument(span)
                .await;
            match decision {
                Decision::Retry => continue,
                Decision::Abandon => return self.finish(&batch, Outcome::Abandoned),
                Decision::Done(outcome) => {
                    // The failing record is settled alone; the rest start over.
                    let rest = batch.split_off(1);
                    if !self.finish(&batch, outcome) {
                        return false;
                    }
                    batch = rest;
                    attempts = 0;
                }
            }
        }
        true
    }

    /// Calls the handler until the record succeeds, is dead-lettered or skipped.
    async fn attempt_until_done(
        &mut self,
        handler: &Arc<dyn Handler>,
        message: &Message,
    ) -> Outcome {
        let mut attempts = 0u32;
        loop {
            // Held until the attempt is settled: a probe that ends without a verdict (skipped,
            // invalid, cancelled) is released when the guard drops.
            let Some(_probe) = self.await_circuit().await else {
                return Outcome::Abandoned;
            };
            attempts += 1;
            // The clock is read only when someone records the duration.
            let started = self.counters.as_ref().map(|_| std::time::Instant::now());
            // A panic fails this record alone; the partition's worker goes on.
            let result = AssertUnwindSafe(handler.handle(message))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(HandlerError::panic(&*panic)));
            if let (Some(c), Some(started)) = (&self.counters, started) {
                c.duration.observe(started.elapsed().as_secs_f64());
            }
            match result {
                Ok(()) => {
                    self.breaker_success();
                    return Outcome::Succeeded;
                }
                Err(error) => {
                    let span = self.failure_span(message.offset);
                    match self
                        .decide(&error, attempts, message)
                        .instrument(span)
                        .await
                    {
                        Decision::Retry => {}
                        Decision::Abandon => return Outcome::Abandoned,
                        Decision::Done(outcome) => return outcome,
                    }
                }
            }
        }
    }

    /// The span of kafkit's own events about a failed record: `record{offset}`, unless the
    /// record's whole handling already runs in one.
    fn failure_span(&self, offset: i64) -> tracing::Span {
        if self.worker.record_spans {
            tracing::Span::none()
        } else {
            tracing::info_span!("record", offset)
        }
    }

    /// What to do after a failed attempt: wait and retry, dead-letter, or skip.
    async fn decide(&mut self, error: &HandlerError, attempts: u32, message: &Message) -> Decision {
        let registration = &self.worker.registration;
        match error.kind() {
            ErrorKind::Skip => {
                tracing::info!(reason = error.message(), "record skipped by handler");
                Decision::Done(Outcome::Skipped)
            }
            ErrorKind::Invalid => {
                tracing::warn!(error = error.message(), "invalid record, not retried");
                match registration.invalid {
                    InvalidPolicy::Skip => Decision::Done(Outcome::Skipped),
                    InvalidPolicy::DeadLetter => self.dead_letter(message, error, attempts).await,
                }
            }
            ErrorKind::Permanent => {
                self.breaker_failure();
                self.dead_letter(message, error, attempts).await
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
                self.dead_letter(message, error, attempts).await
            }
            ErrorKind::Transient => {
                self.breaker_failure();
                if !registration.retry.should_retry(attempts) {
                    tracing::warn!(attempts, error = error.message(), "retries exhausted");
                    return self.dead_letter(message, error, attempts).await;
                }
                let delay = registration.retry.delay(attempts);
                tracing::debug!(
                    attempts,
                    delay_ms = delay.as_millis() as u64,
                    error = error.message(),
                    "retrying"
                );
                if let Some(c) = &self.counters {
                    c.retried.inc();
                }
                // The partition stays paused while the record waits, so nothing piles up
                // behind it; other partitions keep flowing and the consumer keeps polling.
                self.pause(PauseReason::Retrying);
                let waited = self.sleep(delay).await;
                self.resume(PauseReason::Retrying);
                if waited {
                    Decision::Retry
                } else {
                    Decision::Abandon
                }
            }
        }
    }

    /// Publishes the dead-letter copy and waits for the broker's acknowledgement, retrying
    /// until it is stored: the source offset moves on only after that.
    async fn dead_letter(
        &mut self,
        message: &Message,
        error: &HandlerError,
        attempts: u32,
    ) -> Decision {
        let (Some(policy), Some(producer)) = (
            self.worker.registration.dead_letter.clone(),
            self.worker.dead_letters.clone(),
        ) else {
            tracing::error!(
                error = error.message(),
                "no dead-letter topic: record dropped after failure"
            );
            return Decision::Done(Outcome::Skipped);
        };
        let failure = Failure {
            kind: error.kind(),
            message: error.message().to_owned(),
            attempts,
        };
        let record = policy.record(message, &self.worker.group, &failure);
        let mut backoff = DEAD_LETTER_BACKOFF.0;
        let decision = loop {
            match producer.send(record.clone()).await {
                Ok(delivery) => {
                    tracing::warn!(dead_letter_topic = %record.topic, dead_letter_offset = delivery.offset, error = error.message(), "record dead-lettered");
                    break Decision::Done(Outcome::DeadLettered);
                }
                Err(send_error) => {
                    tracing::error!(dead_letter_topic = %record.topic, error = %send_error, "publishing to the dead-letter topic failed; retrying");
                    // Nothing piles up behind the record while its copy cannot be stored.
                    self.pause(PauseReason::DeadLetterRetry);
                    if !self.sleep(backoff).await {
                        break Decision::Abandon;
                    }
                    backoff = (backoff * 2).min(DEAD_LETTER_BACKOFF.1);
                }
            }
        };
        self.resume(PauseReason::DeadLetterRetry);
        decision
    }

    /// Waits while the circuit is open, with the partition paused. `None` when interrupted;
    /// otherwise the caller may call the handler, holding the returned guard until the attempt
    /// is settled.
    async fn await_circuit(&mut self) -> Option<ProbeGuard> {
        let Some(breaker) = self.breaker() else {
            return Some(ProbeGuard(None));
        };
        loop {
            match breaker.acquire() {
                permit @ (Permit::Allowed | Permit::Probe(_)) => {
                    self.resume(PauseReason::CircuitOpen);
                    self.report_circuit(&breaker);
                    let probe = match permit {
                        Permit::Probe(id) => Some((breaker, id)),
                        _ => None,
                    };
                    return Some(ProbeGuard(probe));
                }
                Permit::WaitUntil(until) => {
                    self.pause(PauseReason::CircuitOpen);
                    self.report_circuit(&breaker);
                    tokio::select! {
                        biased;
                        () = self.worker.cancel.cancelled() => return None,
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
            }
        }
    }

    fn breaker(&self) -> Option<Arc<CircuitBreaker>> {
        self.worker.registration.circuit_breaker.clone()
    }

    fn breaker_success(&self) {
        if let Some(breaker) = self.breaker() {
            breaker.on_success();
            self.report_circuit(&breaker);
        }
    }

    fn breaker_failure(&self) {
        if let Some(breaker) = self.breaker() {
            breaker.on_failure();
            self.report_circuit(&breaker);
        }
    }

    fn report_circuit(&self, breaker: &CircuitBreaker) {
        if let Some(c) = &self.counters {
            c.circuit.set(breaker.state().as_gauge());
        }
    }

    /// Sleeps unless cancelled first. False when cancelled.
    async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            biased;
            () = self.worker.cancel.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }

    /// Settles records: counts them, and for finished ones advances the stored offset.
    /// False when the outcome was an interruption.
    fn finish(&mut self, messages: &[Message], outcome: Outcome) -> bool {
        let bytes = messages.iter().map(queued_size).sum();
        if outcome == Outcome::Abandoned {
            self.worker.state.unqueue(messages.len(), bytes);
            return false;
        }
        for message in messages {
            if let Some(c) = &self.counters {
                match outcome {
                    Outcome::Succeeded => c.succeeded.inc(),
                    Outcome::DeadLettered => c.dead_lettered.inc(),
                    Outcome::Skipped => c.skipped.inc(),
                    Outcome::Abandoned => {}
                }
            }
            if self.tracker.complete(message.offset).is_some() {
                self.unstored += 1;
            }
        }
        let (remaining, remaining_bytes) = self.worker.state.unqueue(messages.len(), bytes);
        // Progress is counted here and turned into a time by the poll loop's tick: no clock
        // read per record, and a slow handler still shows progress every second.
        self.worker
            .state
            .settled
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        // Only the partition's current worker speaks for it: a retiring predecessor finishing
        // late must not overwrite what the new owner of the partition has done.
        if let Some(last) = messages.last()
            && self.worker.state.epoch.load(Ordering::SeqCst) == self.worker.epoch
        {
            self.worker
                .state
                .last_done
                .store(last.offset, Ordering::SeqCst);
        }
        let idle = self.buffer.is_empty() && self.worker.rx.is_empty();
        if self.unstored >= STORE_EVERY || idle || self.worker.commit_each {
            self.store();
        }
        if remaining <= self.worker.max_queued / 2
            && remaining_bytes <= self.worker.max_queued_bytes / 2
            && self
                .worker
                .state
                .backpressured
                .swap(false, Ordering::SeqCst)
        {
            let _ = self.worker.control.send(Control::Resume(
                self.worker.tp.clone(),
                self.worker.epoch,
                PauseReason::Backpressure,
            ));
        }
        true
    }

    /// Hands the watermark to librdkafka (committed with the next periodic commit, on
    /// revocation and on shutdown).
    fn store(&mut self) {
        let Some(offset) = self.tracker.watermark() else {
            return;
        };
        if self.unstored == 0 {
            return;
        }
        self.unstored = 0;
        let (topic, partition) = &self.worker.tp;
        // Revoked since this worker started (and maybe assigned again): another member may
        // have committed further meanwhile, and storing this older offset would move the
        // group back. Whoever owns the partition now re-reads from the committed offset.
        if self.worker.consumer.context().epoch(&self.worker.tp) != self.worker.epoch {
            return;
        }
        // rd_kafka_offset_store keeps offset + 1, the next record to read.
        match self.worker.consumer.store_offset(topic, *partition, offset) {
            Ok(()) => {
                if self.worker.commit_each {
                    let _ = self
                        .worker
                        .consumer
                        .commit_consumer_state(CommitMode::Async);
                }
            }
            // Revoked meanwhile: the new owner re-reads from the last commit (at-least-once).
            Err(error) => tracing::debug!(%error, "offset not stored"),
        }
    }

    fn pause(&mut self, reason: PauseReason) {
        // A pause means a wait of unknown length (a retry, an open circuit, a refused
        // dead-letter copy): store what is done first, so it is committed meanwhile.
        self.store();
        if !self.paused.contains(&reason) {
            self.paused.push(reason);
            let _ = self.worker.control.send(Control::Pause(
                self.worker.tp.clone(),
                self.worker.epoch,
                reason,
            ));
        }
    }

    fn resume(&mut self, reason: PauseReason) {
        if let Some(index) = self.paused.iter().position(|r| *r == reason) {
            self.paused.swap_remove(index);
            let _ = self.worker.control.send(Control::Resume(
                self.worker.tp.clone(),
                self.worker.epoch,
                reason,
            ));
        }
    }
}

enum Decision {
    Retry,
    Abandon,
    Done(Outcome),
}

/// The half-open circuit's probe held by one attempt: released without a verdict when dropped,
/// whatever ended the attempt (a skip, invalid input, a panic, cancellation). A probe already
/// settled by `on_success` / `on_failure` makes the release a no-op.
struct ProbeGuard(Option<(Arc<CircuitBreaker>, u64)>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some((breaker, id)) = &self.0 {
            breaker.release_probe(*id);
        }
    }
}
