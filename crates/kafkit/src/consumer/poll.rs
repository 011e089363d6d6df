//! The poll loop: reads records, routes them to per-partition workers, applies pause and
//! resume requests, follows rebalances and refreshes lag.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::Message as _;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::context::{Event, RuntimeContext};
use super::fetched::FetchedChunk;
use super::worker::Worker;
use super::{Consumer, Control, PartitionState, PauseReason, TopicPartition};
use crate::producer::Producer;
use tracing::Instrument;

/// How often the loop proves it is alive when no record arrives.
const TICK: Duration = Duration::from_secs(1);
/// Records taken without waiting after the first one, before they are handed to workers in
/// one chunk per partition: one wake-up per chunk instead of per record.
const MAX_CHUNK: usize = 512;
/// How long a partition over its queue bound may stop the poll loop before it is paused
/// instead. Pausing makes librdkafka drop what it prefetched for the partition (it fetches it
/// again on resume), which under steady load costs more than the whole record's handling;
/// waiting briefly for the worker costs the other partitions only this delay.
const BACKPRESSURE_GRACE: Duration = Duration::from_millis(100);

struct WorkerHandle {
    epoch: u64,
    tx: UnboundedSender<FetchedChunk>,
    state: Arc<PartitionState>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// `state.settled` at the last tick: a change is progress.
    seen_settled: u64,
}

/// Records of one partition polled in one revocation generation, in offset order.
struct Chunk {
    generation: u64,
    messages: FetchedChunk,
}

pub(super) struct PollLoop<'a> {
    owner: &'a Consumer,
    consumer: Arc<StreamConsumer<RuntimeContext>>,
    dead_letters: Option<Producer>,
    events: UnboundedReceiver<Event>,
    control_tx: UnboundedSender<Control>,
    control_rx: UnboundedReceiver<Control>,
    workers: HashMap<TopicPartition, WorkerHandle>,
    /// Workers cancelled by a revocation and maybe still finishing their current record; the
    /// partition's next worker waits for them, so one partition never runs two handlers.
    retired: HashMap<TopicPartition, (CancellationToken, JoinHandle<()>)>,
    /// Partitions over their queue bound, each with when its grace ends: no record is polled
    /// while any is here. Each leaves when its worker drains half its queue, or is paused when
    /// its grace ends.
    blocked: HashMap<TopicPartition, tokio::time::Instant>,
    shutdown: CancellationToken,
}

impl<'a> PollLoop<'a> {
    pub(super) fn new(
        owner: &'a Consumer,
        consumer: Arc<StreamConsumer<RuntimeContext>>,
        dead_letters: Option<Producer>,
        events: UnboundedReceiver<Event>,
    ) -> Self {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        PollLoop {
            owner,
            consumer,
            dead_letters,
            events,
            control_tx,
            control_rx,
            workers: HashMap::new(),
            retired: HashMap::new(),
            blocked: HashMap::new(),
            shutdown: CancellationToken::new(),
        }
    }

    pub(super) async fn run(&mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let consumer = self.consumer.clone();
        let mut stream = consumer.stream();
        let mut tick = tokio::time::interval(TICK);
        let mut last_lag = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(event) = self.events.recv() => self.on_event(event),
                Some(control) = self.control_rx.recv() => self.on_control(control),
                // Before the records: a busy stream must not starve progress and lag.
                _ = tick.tick() => {
                    self.owner.shared.touch_poll();
                    self.note_progress();
                    if last_lag.elapsed() >= self.owner.options.lag_interval {
                        last_lag = tokio::time::Instant::now();
                        self.refresh_lag();
                    }
                }
                () = sleep_until(self.blocked.values().min().copied()), if !self.blocked.is_empty() => {
                    self.pause_blocked_past_grace();
                }
                message = stream.next(), if self.blocked.is_empty() => {
                    self.owner.shared.touch_poll();
                    let context = consumer.context();
                    let mut staged: Vec<Chunk> = Vec::new();
                    // A chunk never holds more than a partition's byte bound, so large records
                    // are paused at the bound instead of a whole prefetch past it.
                    let mut staged_bytes = 0;
                    let mut fatal = false;
                    match message {
                        Some(Ok(message)) => {
                            staged_bytes += stage(&mut staged, &consumer, context.generation(), message);
                        }
                        Some(Err(error)) => {
                            if self.on_consume_error(error) {
                                break;
                            }
                        }
                        None => break,
                    }
                    // Take what is already fetched, without waiting. Each record is tagged with
                    // the generation right after its poll: a rebalance inside a later poll
                    // makes it stale.
                    for _ in 0..MAX_CHUNK {
                        if staged_bytes >= self.owner.options.max_queued_bytes_per_partition {
                            break;
                        }
                        match stream.next().now_or_never() {
                            Some(Some(Ok(message))) => {
                                staged_bytes += stage(&mut staged, &consumer, context.generation(), message);
                            }
                            Some(Some(Err(error))) => {
                                if self.on_consume_error(error) {
                                    fatal = true;
                                    break;
                                }
                            }
                            Some(None) | None => break,
                        }
                    }
                    for chunk in staged {
                        self.dispatch(chunk);
                    }
                    if fatal {
                        break;
                    }
                }
            }
        }
        tracing::info!(group = %self.owner.shared.group, "shutdown: no more fetching, draining");
        self.shutdown.cancel();
        // No tick samples them any more: a stopping member reports nothing stale.
        let partitions: Vec<TopicPartition> = self.workers.keys().cloned().collect();
        for tp in &partitions {
            self.forget_gauges(tp);
        }
    }

    /// Logs a consumer error; returns true when it is fatal (librdkafka consumes nothing more, e.g.
    /// a static member fenced by another with its `group.instance.id`): it is kept for health
    /// and for `run`'s result, and the loop ends so that `run` drains and returns it.
    fn on_consume_error(&self, error: KafkaError) -> bool {
        let fatal = self.consumer.client().fatal_error().or(match error {
            KafkaError::MessageConsumptionFatal(code) => Some((code, error.to_string())),
            _ => None,
        });
        match fatal {
            Some((code, reason)) => {
                tracing::error!(group = %self.owner.shared.group, ?code, %reason, "fatal consumer error: stopping");
                *self.owner.shared.fatal.lock().expect("not poisoned") = Some((code, reason));
                true
            }
            None => {
                tracing::warn!(%error, "consumer error");
                false
            }
        }
    }

    /// The workers' cancellation tokens and tasks, for the drain.
    pub(super) fn into_workers(self) -> Vec<(CancellationToken, JoinHandle<()>)> {
        self.workers
            .into_values()
            .map(|w| (w.cancel, w.task))
            .chain(self.retired.into_values())
            .collect()
    }

    /// Hands a chunk of one partition's records, in offset order, to the worker of the
    /// partition's current epoch; drops it when the partition was revoked after it was polled.
    fn dispatch(&mut self, chunk: Chunk) {
        let Some(first) = chunk.messages.first() else {
            return;
        };
        let tp = (first.topic().to_owned(), first.partition());
        let Some(epoch) = self.consumer.context().epoch_since(&tp, chunk.generation) else {
            // Not handled here: the partition's owner re-reads them from the committed offset,
            // which never passes a record that was not done.
            tracing::debug!(topic = %tp.0, partition = tp.1, records = chunk.messages.len(), "records polled before a rebalance dropped");
            return;
        };
        let current = self.workers.get(&tp).is_some_and(|w| w.epoch == epoch);
        if !current {
            self.spawn_worker(tp.clone(), epoch);
        }
        let Some(worker) = self.workers.get(&tp) else {
            return;
        };
        let (count, bytes) = (chunk.messages.len(), chunk.messages.bytes());
        let (queued, queued_bytes) = worker.state.enqueue(count, bytes);
        if worker.tx.send(chunk.messages).is_err() {
            worker.state.unqueue(count, bytes);
            return;
        }
        let options = &self.owner.options;
        if (queued >= options.max_queued_per_partition
            || queued_bytes >= options.max_queued_bytes_per_partition)
            && !worker.state.backpressured.swap(true, Ordering::SeqCst)
        {
            // The worker may have drained the queue between our count and the flag: it then
            // saw no back-pressure to lift, so nothing would lift it. Whoever swaps the flag
            // back lifts it, exactly once: the worker with `Control::Resume`, or this check.
            let state = &worker.state;
            let drained = state.queued.load(Ordering::SeqCst)
                <= options.max_queued_per_partition / 2
                && state.queued_bytes.load(Ordering::SeqCst)
                    <= options.max_queued_bytes_per_partition / 2;
            if !(drained && state.backpressured.swap(false, Ordering::SeqCst)) {
                // Stop polling first; the partition is paused only if its worker stays behind.
                self.blocked
                    .insert(tp, tokio::time::Instant::now() + BACKPRESSURE_GRACE);
            }
        }
    }

    /// Pauses the partitions whose grace ended while over their bound (their worker lifts
    /// the pause as it would have lifted the block), so polling goes on for the others.
    fn pause_blocked_past_grace(&mut self) {
        let now = tokio::time::Instant::now();
        let expired: Vec<TopicPartition> = self
            .blocked
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in expired {
            self.blocked.remove(&tp);
            self.set_pause(&tp, PauseReason::Backpressure, true);
        }
    }

    /// Turns settled-record counts into progress times: a partition that settled a record since
    /// the last tick, or has nothing waiting, made progress now.
    /// Also samples each partition's records in flight into its gauge.
    fn note_progress(&mut self) {
        let group = &self.owner.shared.group;
        for (tp, worker) in self.workers.iter_mut() {
            let settled = worker.state.settled.load(Ordering::Relaxed);
            if settled != worker.seen_settled || worker.state.queued.load(Ordering::SeqCst) == 0 {
                worker.seen_settled = settled;
                worker.state.touch();
            }
            if let Some(metrics) = &self.owner.metrics {
                let in_flight = worker.state.in_flight.load(Ordering::SeqCst);
                metrics
                    .consumer_in_flight
                    .with_label_values(&[group, &tp.0, &tp.1.to_string()])
                    .set(in_flight as i64);
            }
        }
    }

    /// Removes a partition's gauges: another member reports it now, or nobody does.
    fn forget_gauges(&self, tp: &TopicPartition) {
        if let Some(metrics) = &self.owner.metrics {
            let labels = [&self.owner.shared.group, &tp.0, &tp.1.to_string()];
            let _ = metrics.consumer_lag.remove_label_values(&labels);
            let _ = metrics.consumer_in_flight.remove_label_values(&labels);
        }
    }

    fn spawn_worker(&mut self, tp: TopicPartition, epoch: u64) {
        let Some(registration) = self.owner.router.get(&tp.0).cloned() else {
            tracing::error!(topic = %tp.0, "record from a topic without handler");
            return;
        };
        let predecessor = match self.workers.remove(&tp) {
            Some(old) => {
                old.cancel.cancel();
                Some(old.task)
            }
            None => self.retired.remove(&tp).map(|(_, task)| task),
        };
        // The queue count is shared with a retiring predecessor, which subtracts what it
        // abandons; it is not reset here. What the partition has done is the new worker's to
        // say from now on.
        let state = self.owner.shared.partition(&tp);
        state.epoch.store(epoch, Ordering::SeqCst);
        state.last_done.store(-1, Ordering::SeqCst);
        let seen_settled = state.settled.load(Ordering::Relaxed);
        state.backpressured.store(false, Ordering::SeqCst);
        state.paused.lock().expect("not poisoned").clear();
        state.touch();
        self.blocked.remove(&tp);
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = self.shutdown.child_token();
        let worker = Worker {
            tp: tp.clone(),
            epoch,
            rx,
            registration,
            consumer: self.consumer.clone(),
            control: self.control_tx.clone(),
            state: state.clone(),
            cancel: cancel.clone(),
            dead_letters: self.dead_letters.clone(),
            group: self.owner.shared.group.clone(),
            commit_each: self.owner.options.commit == super::CommitStrategy::EveryRecord,
            commit_interval: match self.owner.options.commit {
                super::CommitStrategy::Periodic(interval) => interval,
                super::CommitStrategy::EveryRecord => Duration::ZERO,
            },
            max_queued: self.owner.options.max_queued_per_partition,
            max_queued_bytes: self.owner.options.max_queued_bytes_per_partition,
            record_spans: self.owner.options.record_spans,
            metrics: self.owner.metrics.clone(),
            predecessor: predecessor.map(AbortOnDropHandle::new),
            unreadable: HashMap::new(),
        };
        // Every event of the worker and of the handlers it calls carries these fields.
        let span = tracing::info_span!(
            parent: None,
            "partition",
            group = %self.owner.shared.group,
            topic = %tp.0,
            partition = tp.1,
        );
        let task = if worker.is_keyed() {
            tokio::spawn(super::keyed::run(worker).instrument(span))
        } else {
            tokio::spawn(worker.run().instrument(span))
        };
        self.workers.insert(
            tp,
            WorkerHandle {
                epoch,
                tx,
                state,
                cancel,
                task,
                seen_settled,
            },
        );
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Revoked(partitions) => {
                self.owner.shared.rebalances.fetch_add(1, Ordering::SeqCst);
                if let Some(metrics) = &self.owner.metrics {
                    metrics
                        .rebalances
                        .with_label_values(&[&self.owner.shared.group])
                        .inc();
                }
                let mut assigned = self.owner.shared.assigned.lock().expect("not poisoned");
                for (tp, epoch) in partitions {
                    assigned.remove(&tp);
                    self.forget_gauges(&tp);
                    self.owner
                        .shared
                        .partition(&tp)
                        .high_watermark
                        .store(-1, Ordering::SeqCst);
                    // Only workers of an older epoch: one may already serve the new assignment.
                    if self.workers.get(&tp).is_some_and(|w| w.epoch < epoch) {
                        // Its queue is abandoned: it no longer holds up polling.
                        self.blocked.remove(&tp);
                        let old = self.workers.remove(&tp).expect("checked");
                        old.cancel.cancel();
                        self.retired.insert(tp, (old.cancel, old.task));
                    }
                }
            }
            Event::Assigned(partitions) => {
                let mut assigned = self.owner.shared.assigned.lock().expect("not poisoned");
                for tp in partitions {
                    // The context resumed the partition; forget pauses of the last owner,
                    // unless a worker of the new assignment already runs and owns them.
                    let epoch = self.consumer.context().epoch(&tp);
                    if self.workers.get(&tp).is_some_and(|w| w.epoch == epoch) {
                        assigned.insert(tp);
                        continue;
                    }
                    let state = self.owner.shared.partition(&tp);
                    state.paused.lock().expect("not poisoned").clear();
                    state.backpressured.store(false, Ordering::SeqCst);
                    state.touch();
                    assigned.insert(tp);
                }
            }
        }
    }

    fn on_control(&mut self, control: Control) {
        let (tp, epoch, reason, pause) = match control {
            Control::Pause(tp, epoch, reason) => (tp, epoch, reason, true),
            Control::Resume(tp, epoch, reason) => (tp, epoch, reason, false),
        };
        if self.workers.get(&tp).is_some_and(|w| w.epoch == epoch) {
            if reason == PauseReason::Backpressure && !pause {
                self.blocked.remove(&tp);
            }
            self.set_pause(&tp, reason, pause);
        }
    }

    /// Adds or removes a pause reason; the partition is paused while any reason remains.
    fn set_pause(&self, tp: &TopicPartition, reason: PauseReason, pause: bool) {
        let state = self.owner.shared.partition(tp);
        let mut reasons = state.paused.lock().expect("not poisoned");
        let was_paused = !reasons.is_empty();
        if pause {
            reasons.insert(reason);
        } else {
            reasons.remove(&reason);
        }
        let paused = !reasons.is_empty();
        if paused == was_paused {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        let result = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        match result {
            Ok(()) => {
                tracing::debug!(topic = %tp.0, partition = tp.1, ?reason, paused, "partition flow changed")
            }
            Err(error) => {
                tracing::debug!(topic = %tp.0, partition = tp.1, %error, "pause/resume of a partition no longer assigned")
            }
        }
    }

    /// Fetches high watermarks of assigned partitions in the background; updates lag gauges.
    fn refresh_lag(&self) {
        let assigned: Vec<TopicPartition> = self
            .owner
            .shared
            .assigned
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect();
        // One refresh at a time: while a broker does not answer, each one waits up to 2 s per
        // partition, longer than the interval, and they would pile up, each holding a thread
        // and the consumer.
        if assigned.is_empty()
            || self
                .owner
                .shared
                .refreshing_lag
                .swap(true, Ordering::SeqCst)
        {
            return;
        }
        let consumer = self.consumer.clone();
        let shared = self.owner.shared.clone();
        let metrics = self.owner.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let _refreshing = RefreshingLag(shared.clone());
            for tp in assigned {
                let Ok((_, high)) = consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(2))
                else {
                    continue;
                };
                // Revoked while the watermarks were fetched: its lag is not ours to report. The
                // assignment stays locked until the gauge is set, as a revocation removes the
                // gauge under the same lock: a gauge is never set back after its removal.
                let assigned = shared.assigned.lock().expect("not poisoned");
                if !assigned.contains(&tp) {
                    continue;
                }
                let state = shared.partition(&tp);
                state.high_watermark.store(high, Ordering::SeqCst);
                if let (Some(metrics), Some(lag)) = (&metrics, state.lag()) {
                    metrics
                        .consumer_lag
                        .with_label_values(&[&shared.group, &tp.0, &tp.1.to_string()])
                        .set(lag);
                }
            }
        });
    }
}

/// Clears `Shared::refreshing_lag` when dropped: however a refresh ends, a panic included.
struct RefreshingLag(Arc<super::Shared>);

impl Drop for RefreshingLag {
    fn drop(&mut self) {
        self.0.refreshing_lag.store(false, Ordering::SeqCst);
    }
}

/// Adds a record read by `consumer` to the chunk of its partition and generation (records of
/// a partition keep their order); returns its size.
fn stage(
    staged: &mut Vec<Chunk>,
    consumer: &Arc<StreamConsumer<RuntimeContext>>,
    generation: u64,
    message: BorrowedMessage<'_>,
) -> usize {
    let index = staged.iter().position(|chunk| {
        chunk.generation == generation
            && chunk.messages.first().is_some_and(|first| {
                // One librdkafka topic handle per topic name: no string compare per record.
                first.partition() == message.partition() && first.topic_ptr() == message.topic_ptr()
            })
    });
    let chunk = match index {
        Some(index) => &mut staged[index],
        None => {
            staged.push(Chunk {
                generation,
                messages: FetchedChunk::new(consumer.clone()),
            });
            staged.last_mut().expect("just pushed")
        }
    };
    // SAFETY: `message` was read by `consumer`, the chunk's consumer.
    unsafe { chunk.messages.push(message) }
}

/// Waits until `deadline`; forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
