//! The runtime's state, shared by the poll loop, the workers and health reports: per partition
//! ([`PartitionState`]: its queue, progress, epoch, pauses) and per consumer ([`Shared`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;

use super::TopicPartition;
use crate::health::PauseReason;

/// Requests from workers to the poll loop.
#[derive(Debug)]
pub(crate) enum Control {
    Pause(TopicPartition, u64, PauseReason),
    Resume(TopicPartition, u64, PauseReason),
}

/// A partition as the runtime sees it; shared by the poll loop, its worker and health.
#[derive(Debug)]
pub(crate) struct PartitionState {
    started: Instant,
    /// Records dispatched and not yet settled.
    pub queued: AtomicUsize,
    /// Their bytes, as [`queued_size`] counts them.
    pub queued_bytes: AtomicUsize,
    /// Records settled so far; the poll loop turns changes into progress times.
    pub settled: AtomicU64,
    /// Epoch of the partition's current worker: only it writes `last_done`.
    pub epoch: AtomicU64,
    /// Offset of the last settled record of the current worker (-1: none).
    pub last_done: AtomicI64,
    /// Milliseconds since `started` of the last progress.
    last_progress_ms: AtomicI64,
    /// Set from when the partition's queue reaches its bound until its worker drains half of
    /// it: polling stops, and the partition is paused if that takes long.
    pub backpressured: AtomicBool,
    /// High watermark at the last lag refresh (-1: unknown).
    pub high_watermark: AtomicI64,
    /// Records being handled now (key and unordered order: up to the route's bound).
    pub in_flight: AtomicUsize,
    /// Key and unordered order: the offset and done-offset map last stored, committed
    /// explicitly at shutdown (librdkafka's commit of its current state drops metadata).
    pub committable: Mutex<Option<(i64, String)>>,
    /// Why it is paused, if it is.
    pub paused: Mutex<BTreeSet<PauseReason>>,
}

impl PartitionState {
    fn new() -> Self {
        PartitionState {
            started: Instant::now(),
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            settled: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            last_done: AtomicI64::new(-1),
            last_progress_ms: AtomicI64::new(0),
            backpressured: AtomicBool::new(false),
            high_watermark: AtomicI64::new(-1),
            in_flight: AtomicUsize::new(0),
            committable: Mutex::new(None),
            paused: Mutex::new(BTreeSet::new()),
        }
    }

    /// Puts `count` records of `bytes` on the queue; returns the records and bytes queued.
    pub fn enqueue(&self, count: usize, bytes: usize) -> (usize, usize) {
        (
            self.queued.fetch_add(count, Ordering::SeqCst) + count,
            self.queued_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes,
        )
    }

    /// Takes `count` records of `bytes` off the queue; returns the records and bytes left.
    pub fn unqueue(&self, count: usize, bytes: usize) -> (usize, usize) {
        let take = |counter: &AtomicUsize, n: usize| {
            let previous = counter
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                    Some(q.saturating_sub(n))
                })
                .unwrap_or_default();
            previous.saturating_sub(n)
        };
        (take(&self.queued, count), take(&self.queued_bytes, bytes))
    }

    /// Lifts back-pressure once the worker of `epoch` is down to half its bounds (`remaining`
    /// of `bounds`, in records and bytes). Only the partition's current worker may: a retiring
    /// predecessor clearing the flag would swallow its successor's `Resume`, leaving the
    /// partition paused with nothing queued.
    pub(crate) fn lift_backpressure(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        control: &mpsc::UnboundedSender<Control>,
        bounds: (usize, usize),
        remaining: (usize, usize),
    ) {
        if remaining.0 <= bounds.0 / 2
            && remaining.1 <= bounds.1 / 2
            && self.epoch.load(Ordering::SeqCst) == epoch
            && self.backpressured.swap(false, Ordering::SeqCst)
        {
            let _ = control.send(Control::Resume(
                tp.clone(),
                epoch,
                PauseReason::Backpressure,
            ));
        }
    }

    /// Notes progress now.
    pub fn touch(&self) {
        self.last_progress_ms
            .store(self.started.elapsed().as_millis() as i64, Ordering::SeqCst);
    }

    pub(super) fn since_progress(&self) -> Duration {
        let last = Duration::from_millis(self.last_progress_ms.load(Ordering::SeqCst) as u64);
        self.started.elapsed().saturating_sub(last)
    }

    pub(super) fn lag(&self) -> Option<i64> {
        let high = self.high_watermark.load(Ordering::SeqCst);
        let done = self.last_done.load(Ordering::SeqCst);
        (high >= 0 && done >= 0).then(|| (high - done - 1).max(0))
    }
}

/// What a queued record counts against the per-partition byte bound: its key and value, as
/// [`super::fetched::size`] counts it before the record is copied.
pub(crate) fn queued_size(message: &crate::record::Message) -> usize {
    message.value.as_ref().map_or(0, Vec::len) + message.key.as_ref().map_or(0, Vec::len)
}

/// Runtime state visible to health reports.
#[derive(Debug)]
pub(crate) struct Shared {
    pub group: String,
    pub running: AtomicBool,
    started: Instant,
    last_poll_ms: AtomicI64,
    pub partitions: Mutex<HashMap<TopicPartition, Arc<PartitionState>>>,
    pub assigned: Mutex<BTreeSet<TopicPartition>>,
    pub rebalances: AtomicUsize,
    /// librdkafka's fatal error, once it raised one: the consumer consumes nothing more.
    pub fatal: Mutex<Option<(RDKafkaErrorCode, String)>>,
    /// A lag refresh is under way: at most one at a time, or refreshes stuck on an
    /// unreachable broker would pile up.
    pub refreshing_lag: AtomicBool,
}

impl Shared {
    /// The state of a consumer of `group` that has not started.
    pub(super) fn new(group: &str) -> Self {
        Shared {
            group: group.to_owned(),
            running: AtomicBool::new(false),
            started: Instant::now(),
            last_poll_ms: AtomicI64::new(0),
            partitions: Mutex::new(HashMap::new()),
            assigned: Mutex::new(BTreeSet::new()),
            rebalances: AtomicUsize::new(0),
            fatal: Mutex::new(None),
            refreshing_lag: AtomicBool::new(false),
        }
    }

    pub(super) fn touch_poll(&self) {
        self.last_poll_ms
            .store(self.started.elapsed().as_millis() as i64, Ordering::SeqCst);
    }

    pub(super) fn since_poll(&self) -> Duration {
        let last = Duration::from_millis(self.last_poll_ms.load(Ordering::SeqCst) as u64);
        self.started.elapsed().saturating_sub(last)
    }

    pub(super) fn partition(&self, tp: &TopicPartition) -> Arc<PartitionState> {
        self.partitions
            .lock()
            .expect("not poisoned")
            .entry(tp.clone())
            .or_insert_with(|| Arc::new(PartitionState::new()))
            .clone()
    }
}
