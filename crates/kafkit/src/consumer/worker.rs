//! One partition's worker in partition order: handles its records one at a time in offset
//! order (see [`super::handling`] for what handling one record means) and stores offsets only
//! for records whose work is done. Key and unordered order are [`super::keyed`]'s.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::context::RuntimeContext;
use super::fetched::FetchedChunk;
use super::handling::{Counters, Flow, Handling, Outcome};
use super::offsets::OffsetTracker;
use super::{Control, PartitionState, PauseReason, TopicPartition, queued_size};
use crate::batch::{BatchError, BatchHandler, BatchOptions};
use crate::handler::{Handler, HandlerError, Raw};
use crate::metrics::Metrics;
use crate::producer::Producer;
use crate::record::Message;
use crate::router::{ProcessingOrder, Registration, Route};

/// Store offsets at least this often (in records) even while records keep arriving; when the
/// queue runs dry they are stored at once. Storing is a local call, committing is periodic.
const STORE_EVERY: usize = 128;

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
    /// How often stored offsets are committed (zero: after every record).
    pub commit_interval: std::time::Duration,
    pub max_queued: usize,
    pub max_queued_bytes: usize,
    /// Run each record's handling in a `record{offset}` span.
    pub record_spans: bool,
    pub metrics: Option<Metrics>,
    /// The worker this one replaces after a rebalance; it finishes first, so two workers never
    /// run the same partition's handler at once. Aborting this worker (a drain timeout) aborts
    /// the predecessor too, so no task keeps the consumer open after shutdown.
    pub predecessor: Option<AbortOnDropHandle<()>>,
    /// Records received that cannot be handled as they are, by offset, with the reason: each
    /// is refused as invalid when its turn comes (see [`FetchedChunk::into_messages`]).
    pub unreadable: HashMap<i64, String>,
}

impl Worker {
    /// Whether this worker's records go to [`super::keyed`] (key and unordered order).
    pub(crate) fn is_keyed(&self) -> bool {
        matches!(self.registration.route, Route::Single(_))
            && self.registration.order != ProcessingOrder::Partition
    }

    /// Waits for the partition's previous worker to finish, then makes what handling a record
    /// needs.
    pub(crate) async fn prepare(&mut self) -> Arc<Handling> {
        if let Some(predecessor) = self.predecessor.take() {
            let _ = predecessor.await;
        }
        let counters = self
            .metrics
            .as_ref()
            .map(|m| Counters::new(m, &self.group, &self.tp.0));
        Arc::new(Handling {
            registration: self.registration.clone(),
            dead_letters: self.dead_letters.clone(),
            group: self.group.clone(),
            counters,
            cancel: self.cancel.clone(),
            record_spans: self.record_spans,
        })
    }

    /// Lifts the partition's back-pressure once `remaining` records of `remaining_bytes` are
    /// left, at most half the bounds.
    pub(crate) fn lift_backpressure(&self, remaining: usize, remaining_bytes: usize) {
        self.state.lift_backpressure(
            &self.tp,
            self.epoch,
            &self.control,
            (self.max_queued, self.max_queued_bytes),
            (remaining, remaining_bytes),
        );
    }

    /// Reports `records` being handled now, for health and the in-flight gauge. Only the
    /// partition's current worker speaks for it: a retiring predecessor finishing late must not
    /// overwrite its successor's count.
    pub(crate) fn report_in_flight(&self, records: usize) {
        if self.state.epoch.load(Ordering::SeqCst) == self.epoch {
            self.state.in_flight.store(records, Ordering::SeqCst);
        }
    }

    /// The handler that refuses the record at `offset` as invalid, when it cannot be handled as
    /// it is: the user's handler never sees it.
    pub(crate) fn refusal(&mut self, offset: i64) -> Option<Arc<dyn Handler>> {
        let reason = self.unreadable.remove(&offset)?;
        Some(Arc::new(Raw(move |_: Message| {
            let reason = reason.clone();
            async move { Err(HandlerError::invalid(reason)) }
        })))
    }

    /// Handles the partition in partition order until cancelled.
    pub(crate) async fn run(mut self) {
        let handling = self.prepare().await;
        let mut running = Running {
            partition: Partition {
                tp: self.tp.clone(),
                epoch: self.epoch,
                consumer: self.consumer.clone(),
                control: self.control.clone(),
                commit_each: self.commit_each,
                tracker: OffsetTracker::new(),
                unstored: 0,
                paused: Vec::new(),
            },
            worker: self,
            buffer: VecDeque::new(),
            handling,
        };
        running.run().await;
    }
}

/// A partition-order worker at work.
struct Running {
    worker: Worker,
    /// Records received in a chunk and not yet taken.
    buffer: VecDeque<Message>,
    handling: Arc<Handling>,
    partition: Partition,
}

/// The partition's side of a partition-order worker: its stored offset and its pauses. A
/// record's wait pauses the whole partition, after storing what is done.
struct Partition {
    tp: TopicPartition,
    epoch: u64,
    consumer: Arc<StreamConsumer<RuntimeContext>>,
    control: UnboundedSender<Control>,
    commit_each: bool,
    tracker: OffsetTracker,
    unstored: usize,
    paused: Vec<PauseReason>,
}

impl Flow for Partition {
    fn hold(&mut self, reason: PauseReason) {
        // A pause means a wait of unknown length (a retry, an open circuit, a refused
        // dead-letter copy): store what is done first, so it is committed meanwhile.
        self.store();
        if !self.paused.contains(&reason) {
            self.paused.push(reason);
            let _ = self
                .control
                .send(Control::Pause(self.tp.clone(), self.epoch, reason));
        }
    }

    fn release(&mut self, reason: PauseReason) {
        if let Some(index) = self.paused.iter().position(|r| *r == reason) {
            self.paused.swap_remove(index);
            let _ = self
                .control
                .send(Control::Resume(self.tp.clone(), self.epoch, reason));
        }
    }
}

impl Partition {
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
        let (topic, partition) = &self.tp;
        // Revoked since this worker started (and maybe assigned again): another member may
        // have committed further meanwhile, and storing this older offset would move the
        // group back. Whoever owns the partition now re-reads from the committed offset.
        if self.consumer.context().epoch(&self.tp) != self.epoch {
            return;
        }
        // rd_kafka_offset_store keeps offset + 1, the next record to read.
        match self.consumer.store_offset(topic, *partition, offset) {
            Ok(()) => {
                if self.commit_each {
                    let _ = self.consumer.commit_consumer_state(CommitMode::Async);
                }
            }
            // Revoked meanwhile: the new owner re-reads from the last commit (at-least-once).
            Err(error) => tracing::debug!(%error, "offset not stored"),
        }
    }

    /// Lifts every pause this worker asked for.
    fn release_all(&mut self) {
        for reason in std::mem::take(&mut self.paused) {
            let _ = self
                .control
                .send(Control::Resume(self.tp.clone(), self.epoch, reason));
        }
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
        self.partition.store();
        // Records received but never taken are abandoned: re-read by the next owner.
        let mut untaken = (self.buffer.len(), self.buffer.iter().map(queued_size).sum());
        self.buffer.clear();
        while let Ok(chunk) = self.worker.rx.try_recv() {
            untaken.0 += chunk.len();
            untaken.1 += chunk.bytes();
        }
        self.worker.state.unqueue(untaken.0, untaken.1);
        self.partition.release_all();
    }

    /// Handles one record to its end. False when interrupted.
    async fn single(&mut self, handler: &Arc<dyn Handler>, mut message: Message) -> bool {
        self.partition.tracker.start(message.offset);
        self.worker.report_in_flight(1);
        let refusal = self.worker.refusal(message.offset);
        let handling = self.handling.clone();
        let (inbox, partition) = self.inbox();
        let outcome = inbox
            .meanwhile(handling.record(
                refusal.as_ref().unwrap_or(handler),
                &mut message,
                partition,
            ))
            .await;
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
            self.inbox().0.take(chunk);
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
        let handling = self.handling.clone();
        for message in &batch {
            // A batch handler gets such a record as copied (lossily): a batch has no per-record
            // refusal.
            self.worker.unreadable.remove(&message.offset);
            self.partition.tracker.start(message.offset);
            if let Some(c) = &handling.counters {
                c.consumed.inc();
            }
        }
        // Failed attempts of the batch's first record: the count restarts whenever the first
        // record changes, so one record's retries are never charged to the next.
        let mut attempts = 0u32;
        while !batch.is_empty() {
            self.worker.report_in_flight(batch.len());
            let (inbox, partition) = self.inbox();
            let Some(_probe) = inbox.meanwhile(handling.await_circuit(partition)).await else {
                return self.finish(&batch, Outcome::Abandoned);
            };
            attempts += 1;
            for message in &mut batch {
                message.attempt = attempts;
            }
            let error = match self.call_batch(&handler, &batch).await {
                Ok(()) => {
                    handling.breaker_success();
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
            let (inbox, partition) = self.inbox();
            let verdict = inbox
                .meanwhile(handling.batch_failure(&error.error, attempts, &batch[0], partition))
                .await;
            match verdict {
                Ok(delay) => {
                    if let Some(c) = &handling.counters {
                        c.retried.inc();
                    }
                    self.partition.hold(PauseReason::Retrying);
                    let (inbox, _) = self.inbox();
                    let waited = inbox.meanwhile(handling.sleep(delay)).await;
                    self.partition.release(PauseReason::Retrying);
                    if !waited {
                        return self.finish(&batch, Outcome::Abandoned);
                    }
                }
                Err(Outcome::Abandoned) => return self.finish(&batch, Outcome::Abandoned),
                Err(outcome) => {
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

    /// One call of the batch handler, timed for the duration metric; a panic fails the batch.
    async fn call_batch(
        &mut self,
        handler: &Arc<dyn BatchHandler>,
        batch: &[Message],
    ) -> Result<(), BatchError> {
        let handling = self.handling.clone();
        // The clock is read only when someone records the duration.
        let started = handling
            .counters
            .as_ref()
            .map(|_| std::time::Instant::now());
        let (inbox, _) = self.inbox();
        let result = inbox
            .meanwhile(
                std::panic::AssertUnwindSafe(async { handler.handle_batch(batch).await })
                    .catch_unwind(),
            )
            .await
            .unwrap_or_else(|panic| Err(BatchError::all(HandlerError::panic(&*panic))));
        if let (Some(c), Some(started)) = (&handling.counters, started) {
            c.duration.observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// Where records arriving during a record's handling go, and the partition that handling
    /// pauses and stores: disjoint parts of the worker, borrowed together.
    fn inbox(&mut self) -> (Inbox<'_>, &mut Partition) {
        let inbox = Inbox {
            rx: &mut self.worker.rx,
            buffer: &mut self.buffer,
            unreadable: &mut self.worker.unreadable,
            topic: &self.worker.tp.0,
        };
        (inbox, &mut self.partition)
    }

    /// Settles records: counts them, and for finished ones advances the stored offset.
    /// False when the outcome was an interruption.
    fn finish(&mut self, messages: &[Message], outcome: Outcome) -> bool {
        self.worker.report_in_flight(0);
        let bytes = messages.iter().map(queued_size).sum();
        if outcome == Outcome::Abandoned {
            self.worker.state.unqueue(messages.len(), bytes);
            return false;
        }
        for message in messages {
            if let Some(c) = &self.handling.counters {
                c.settled(outcome);
            }
            if self.partition.tracker.complete(message.offset).is_some() {
                self.partition.unstored += 1;
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
        if self.partition.unstored >= STORE_EVERY || idle || self.worker.commit_each {
            self.partition.store();
        }
        self.worker.lift_backpressure(remaining, remaining_bytes);
        true
    }
}

/// A worker's incoming records: chunks from the poll loop, copied into its buffer.
struct Inbox<'a> {
    rx: &'a mut UnboundedReceiver<FetchedChunk>,
    buffer: &'a mut VecDeque<Message>,
    unreadable: &'a mut HashMap<i64, String>,
    topic: &'a str,
}

impl Inbox<'_> {
    /// Copies a chunk's records out of librdkafka into the buffer, giving the originals back.
    fn take(&mut self, chunk: FetchedChunk) {
        self.buffer
            .extend(chunk.into_messages(self.topic, self.unreadable));
    }

    /// Runs `work` (a record's handling, a retry's wait) to its end, copying the chunks that
    /// arrive meanwhile. A librdkafka message pins the whole fetch response it came in (every
    /// partition's records in it, up to `fetch.max.bytes`): chunks left uncopied behind a slow
    /// or stuck handler would hold far more memory than the records the queue bound counts.
    async fn meanwhile<T>(mut self, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        let mut open = true;
        loop {
            tokio::select! {
                biased;
                output = &mut work => return output,
                chunk = self.rx.recv(), if open => match chunk {
                    Some(chunk) => self.take(chunk),
                    None => open = false,
                },
            }
        }
    }
}
