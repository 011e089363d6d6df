//! The poll loop: reads records, routes them to per-partition workers, applies pause and
//! resume requests, follows rebalances and refreshes lag.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::context::{Event, RuntimeContext};
use super::worker::Worker;
use super::{Consumer, Control, PartitionState, PauseReason, TopicPartition};
use crate::producer::Producer;
use crate::record::Message;

/// How often the loop proves it is alive when no record arrives.
const TICK: Duration = Duration::from_secs(1);
/// Records taken without waiting after the first one, before they are handed to workers in
/// one chunk per partition: one wake-up per chunk instead of per record.
const MAX_CHUNK: usize = 512;

struct WorkerHandle {
    epoch: u64,
    tx: UnboundedSender<Vec<Message>>,
    state: Arc<PartitionState>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
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
                message = stream.next() => {
                    self.owner.shared.touch_poll();
                    let mut staged: Vec<Vec<Message>> = Vec::new();
                    match message {
                        Some(Ok(message)) => stage(&mut staged, Message::from_borrowed(&message)),
                        Some(Err(error)) => tracing::warn!(%error, "consumer error"),
                        None => break,
                    }
                    // Take what is already fetched, without waiting.
                    for _ in 0..MAX_CHUNK {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(message))) => {
                                stage(&mut staged, Message::from_borrowed(&message));
                            }
                            Some(Some(Err(error))) => tracing::warn!(%error, "consumer error"),
                            Some(None) | None => break,
                        }
                    }
                    for chunk in staged {
                        self.dispatch(chunk);
                    }
                }
                _ = tick.tick() => {
                    self.owner.shared.touch_poll();
                    if last_lag.elapsed() >= self.owner.options.lag_interval {
                        last_lag = tokio::time::Instant::now();
                        self.refresh_lag();
                    }
                }
            }
        }
        tracing::info!(group = %self.owner.shared.group, "shutdown: no more fetching, draining");
        self.shutdown.cancel();
    }

    /// The workers' cancellation tokens and tasks, for the drain.
    pub(super) fn into_workers(self) -> Vec<(CancellationToken, JoinHandle<()>)> {
        self.workers
            .into_values()
            .map(|w| (w.cancel, w.task))
            .chain(self.retired.into_values())
            .collect()
    }

    /// Hands a chunk of one partition's records, in offset order, to its worker.
    fn dispatch(&mut self, chunk: Vec<Message>) {
        let Some(first) = chunk.first() else {
            return;
        };
        let tp = (first.topic.clone(), first.partition);
        let epoch = self.consumer.context().epoch(&tp);
        let current = self.workers.get(&tp).is_some_and(|w| w.epoch == epoch);
        if !current {
            self.spawn_worker(tp.clone(), epoch);
        }
        let Some(worker) = self.workers.get(&tp) else {
            return;
        };
        let count = chunk.len();
        let queued = worker.state.queued.fetch_add(count, Ordering::SeqCst) + count;
        if worker.tx.send(chunk).is_err() {
            worker.state.unqueue(count);
            return;
        }
        if queued >= self.owner.options.max_queued_per_partition
            && !worker.state.backpressured.swap(true, Ordering::SeqCst)
        {
            self.set_pause(&tp, PauseReason::Backpressure, true);
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
        // abandons; it is not reset here.
        let state = self.owner.shared.partition(&tp);
        state.backpressured.store(false, Ordering::SeqCst);
        state.paused.lock().expect("not poisoned").clear();
        state.touch();
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
            max_queued: self.owner.options.max_queued_per_partition,
            metrics: self.owner.metrics.clone(),
            predecessor,
        };
        let task = tokio::spawn(worker.run());
        self.workers.insert(
            tp,
            WorkerHandle {
                epoch,
                tx,
                state,
                cancel,
                task,
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
                    // Only workers of an older epoch: one may already serve the new assignment.
                    if self.workers.get(&tp).is_some_and(|w| w.epoch < epoch) {
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
        if assigned.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        let shared = self.owner.shared.clone();
        let metrics = self.owner.metrics.clone();
        tokio::task::spawn_blocking(move || {
            for tp in assigned {
                let Ok((_, high)) = consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(2))
                else {
                    continue;
                };
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

/// Adds a record to the chunk of its partition (records of a partition keep their order).
fn stage(staged: &mut Vec<Vec<Message>>, message: Message) {
    match staged
        .iter_mut()
        .find(|chunk| chunk[0].partition == message.partition && chunk[0].topic == message.topic)
    {
        Some(chunk) => chunk.push(message),
        None => staged.push(vec![message]),
    }
}
