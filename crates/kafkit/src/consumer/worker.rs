//! One partition's worker: handles its records in offset order with retries, the circuit
//! breaker and dead-lettering, and stores offsets only for records whose work is done.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntGauge};
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::RuntimeContext;
use super::offsets::OffsetTracker;
use super::{Control, PartitionState, PauseReason, TopicPartition};
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
/// Note progress at least every this many settled records.
const TOUCH_EVERY: usize = 64;
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
            duration: metrics.handler_duration.with_label_values(&[group, topic]),
            circuit: metrics.circuit_state.with_label_values(&[group, topic]),
        }
    }
}

/// Everything a worker needs; built by the poll loop.
pub(crate) struct Worker {
    pub tp: TopicPartition,
    pub epoch: u64,
    pub rx: UnboundedReceiver<Vec<Message>>,
    pub registration: Registration,
    pub consumer: Arc<StreamConsumer<RuntimeContext>>,
    pub control: UnboundedSender<Control>,
    pub state: Arc<PartitionState>,
    pub cancel: CancellationToken,
    pub dead_letters: Option<Producer>,
    pub group: String,
    pub commit_each: bool,
    pub max_queued: usize,
    pub metrics: Option<Metrics>,
    /// The worker this one replaces after a rebalance; it finishes first, so two workers never
    /// run the same partition's handler at once.
    pub predecessor: Option<JoinHandle<()>>,
}

struct Running {
    worker: Worker,
    /// Records received in a chunk and not yet taken.
    buffer: VecDeque<Message>,
    /// Records settled since progress was last noted.
    settled: usize,
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
            settled: 0,
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
            // registering a waiter per record.
            let first = match self.buffer.pop_front() {
                Some(_) if cancel.is_cancelled() => break,
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
        let mut untaken = self.buffer.len();
        self.buffer.clear();
        while let Ok(chunk) = self.worker.rx.try_recv() {
            untaken += chunk.len();
        }
        self.worker.state.unqueue(untaken);
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
        let outcome = self.attempt_until_done(handler, &message).await;
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
            self.buffer.extend(chunk);
        }
    }

    /// Handles a batch: on failure at index i, records before i are done and the rest are
    /// retried; a record that keeps failing is dead-lettered alone. False when interrupted.
    async fn batch(&mut self, mut batch: Vec<Message>) -> bool {
        let Route::Batch(handler, _) = self.worker.registration.route.clone() else {
            unreachable!("batch() is only called for batch routes")
        };
        for message in &batch {
            self.tracker.start(message.offset);
            if let Some(c) = &self.counters {
                c.consumed.inc();
            }
        }
        let mut attempts = 0u32;
        while !batch.is_empty() {
            if !self.await_circuit().await {
                return self.finish(&batch, Outcome::Abandoned);
            }
            attempts += 1;
            // The clock is read only when someone records the duration.
            let started = self.counters.as_ref().map(|_| std::time::Instant::now());
            let result = handler.handle_batch(&batch).await;
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
            }
            batch = rest;
            let decision = self.decide(&error.error, attempts, &batch[0]).await;
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
            if !self.await_circuit().await {
                return Outcome::Abandoned;
            }
            attempts += 1;
            // The clock is read only when someone records the duration.
            let started = self.counters.as_ref().map(|_| std::time::Instant::now());
            let result = handler.handle(message).await;
            if let (Some(c), Some(started)) = (&self.counters, started) {
                c.duration.observe(started.elapsed().as_secs_f64());
            }
            match result {
                Ok(()) => {
                    self.breaker_success();
                    return Outcome::Succeeded;
                }
                Err(error) => match self.decide(&error, attempts, message).await {
                    Decision::Retry => {}
                    Decision::Abandon => return Outcome::Abandoned,
                    Decision::Done(outcome) => return outcome,
                },
            }
        }
    }

    /// What to do after a failed attempt: wait and retry, dead-letter, or skip.
    async fn decide(&mut self, error: &HandlerError, attempts: u32, message: &Message) -> Decision {
        let registration = &self.worker.registration;
        let topic = &self.worker.tp.0;
        match error.kind() {
            ErrorKind::Skip => {
                tracing::info!(%topic, partition = message.partition, offset = message.offset, reason = error.message(), "record skipped by handler");
                Decision::Done(Outcome::Skipped)
            }
            ErrorKind::Invalid => {
                tracing::warn!(%topic, partition = message.partition, offset = message.offset, error = error.message(), "invalid record, not retried");
                match registration.invalid {
                    InvalidPolicy::Skip => Decision::Done(Outcome::Skipped),
                    InvalidPolicy::DeadLetter => self.dead_letter(message, error, attempts).await,
                }
            }
            ErrorKind::Permanent => {
                self.breaker_failure();
                self.dead_letter(message, error, attempts).await
            }
            ErrorKind::Transient => {
                self.breaker_failure();
                if !registration.retry.should_retry(attempts) {
                    tracing::warn!(%topic, partition = message.partition, offset = message.offset, attempts, error = error.message(), "retries exhausted");
                    return self.dead_letter(message, error, attempts).await;
                }
                let delay = registration.retry.delay(attempts);
                tracing::debug!(%topic, partition = message.partition, offset = message.offset, attempts, delay_ms = delay.as_millis() as u64, error = error.message(), "retrying");
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
            tracing::error!(topic = %message.topic, partition = message.partition, offset = message.offset, error = error.message(), "no dead-letter topic: record dropped after failure");
            return Decision::Done(Outcome::Skipped);
        };
        let failure = Failure {
            kind: error.kind(),
            message: error.message().to_owned(),
            attempts,
        };
        let record = policy.record(message, &self.worker.group, &failure);
        let mut backoff = DEAD_LETTER_BACKOFF.0;
        loop {
            match producer.send(record.clone()).await {
                Ok(delivery) => {
                    tracing::warn!(topic = %message.topic, partition = message.partition, offset = message.offset, dead_letter_topic = %record.topic, dead_letter_offset = delivery.offset, error = error.message(), "record dead-lettered");
                    return Decision::Done(Outcome::DeadLettered);
                }
                Err(send_error) => {
                    tracing::error!(dead_letter_topic = %record.topic, error = %send_error, "publishing to the dead-letter topic failed; retrying");
                    if !self.sleep(backoff).await {
                        return Decision::Abandon;
                    }
                    backoff = (backoff * 2).min(DEAD_LETTER_BACKOFF.1);
                }
            }
        }
    }

    /// Waits while the circuit is open, with the partition paused. False when interrupted.
    async fn await_circuit(&mut self) -> bool {
        if self.worker.registration.circuit_breaker.is_none() {
            return true;
        }
        let Some(breaker) = self.breaker() else {
            return true;
        };
        loop {
            match breaker.acquire() {
                Permit::Allowed => {
                    self.resume(PauseReason::CircuitOpen);
                    self.report_circuit(&breaker);
                    return true;
                }
                Permit::WaitUntil(until) => {
                    self.pause(PauseReason::CircuitOpen);
                    self.report_circuit(&breaker);
                    tokio::select! {
                        biased;
                        () = self.worker.cancel.cancelled() => return false,
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
        if outcome == Outcome::Abandoned {
            self.worker.state.unqueue(messages.len());
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
        let remaining = self.worker.state.unqueue(messages.len());
        self.settled += messages.len();
        // Progress is noted per chunk of work, not per record: stall detection works in seconds.
        if self.settled >= TOUCH_EVERY || self.buffer.is_empty() {
            self.settled = 0;
            self.worker.state.touch();
        }
        if let Some(last) = messages.last() {
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
            Err(error) => tracing::debug!(%topic, partition, %error, "offset not stored"),
        }
    }

    fn pause(&mut self, reason: PauseReason) {
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
