//! One partition's worker in key or unordered order: records of one key are handled in offset
//! order and one at a time, records of different keys concurrently (in unordered order every
//! record is its own key), up to the route's bounds on records and bytes in flight.
//!
//! Every record is tracked from its arrival, so the stored offset never passes a record that
//! is waiting for its key. The offsets done beyond the lowest one not done go into the commit
//! metadata (`offset_map`); a new owner of the partition reads them at start and skips those
//! records. When the map would outgrow its budget, only the record holding back the committed
//! offset is started until it shrinks: fewer records in flight, never a stall or a lost map.
//!
//! Two records of one key never run at once: within a worker by its key queues; across a
//! revocation and re-assignment because the next worker of the partition starts only once this
//! one has finished every record it started (the poll loop's predecessor); and completions of a
//! revoked worker are fenced by its epoch, so they never store an offset.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::fetched::FetchedChunk;
use super::handling::{Handling, KeyOnly, Outcome};
use super::offset_map::{self, DoneRanges, MAX_METADATA_BYTES, RUN_BYTES};
use super::offsets::OffsetTracker;
use super::queued_size;
use super::worker::Worker;
use crate::handler::Handler;
use crate::record::Message;
use crate::router::{ProcessingOrder, Route};

/// Store offsets at least this often (in settled records) while records keep settling; when
/// the partition runs idle they are stored at once.
const STORE_EVERY: usize = 64;
/// With nothing left to start but records still in flight (which may take long), what is done
/// is stored this often.
const STORE_WAITING: Duration = Duration::from_millis(100);
/// How long a new owner waits for the committed map before it goes on without (records done
/// out of order by the last owner are then handled again).
const INHERIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A record that finished (or was abandoned) in its own task.
struct Settled {
    key: Option<u64>,
    offset: i64,
    bytes: usize,
    outcome: Outcome,
}

/// Handles the partition of `worker` in key or unordered order until cancelled.
pub(crate) async fn run(mut worker: Worker) {
    let handling = worker.prepare().await;
    Keyed::new(worker, handling).run().await;
}

struct Keyed {
    worker: Worker,
    handling: Arc<Handling>,
    handler: Arc<dyn Handler>,
    unordered: bool,
    tracker: OffsetTracker,
    /// Offsets the last owner committed as done: skipped as they arrive.
    inherited: DoneRanges,
    /// Keys with a record in flight or ready, each with its records queued behind that one.
    keys: HashMap<u64, VecDeque<Message>>,
    /// Records free to start: at most one per key, oldest first.
    ready: VecDeque<Message>,
    in_flight: FuturesUnordered<AbortOnDropHandle<Settled>>,
    in_flight_bytes: usize,
    /// Records settled since the offset was last stored.
    unstored: usize,
    last_store: std::time::Instant,
    /// The offset and map last committed by this worker, and when.
    committed: (Option<(i64, String)>, tokio::time::Instant),
    /// A map stored but not committed: librdkafka commits a stored offset only when it moved,
    /// so a map that changed above an unchanged offset is committed by the worker, at most
    /// once per commit interval, at this time.
    commit_due: Option<tokio::time::Instant>,
    hasher: std::collections::hash_map::RandomState,
}

impl Keyed {
    fn new(worker: Worker, handling: Arc<Handling>) -> Self {
        let Route::Single(handler) = worker.registration.route.clone() else {
            unreachable!("key order is refused for batch routes when the consumer is built")
        };
        Keyed {
            unordered: worker.registration.order == ProcessingOrder::Unordered,
            worker,
            handling,
            handler,
            tracker: OffsetTracker::new(),
            inherited: DoneRanges::default(),
            keys: HashMap::new(),
            ready: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            in_flight_bytes: 0,
            unstored: 0,
            last_store: std::time::Instant::now(),
            committed: (None, tokio::time::Instant::now()),
            commit_due: None,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    async fn run(mut self) {
        let cancel = self.worker.cancel.clone();
        tokio::select! {
            biased;
            () = cancel.cancelled() => {}
            inherited = self.inherit() => self.inherited = inherited,
        }
        loop {
            self.start_ready();
            if cancel.is_cancelled() {
                break;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(settled) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.settle(settled);
                }
                () = sleep_until(self.commit_due), if self.commit_due.is_some() => self.commit(),
                chunk = self.worker.rx.recv() => match chunk {
                    Some(chunk) => self.receive(chunk),
                    None => break,
                },
            }
        }
        // Records in flight see the cancellation at their next wait; a handler call under way
        // finishes. Until all have, the partition's next worker does not start. What is done
        // is stored first: a drain timeout may abort this worker while it waits.
        self.store();
        while let Some(settled) = self.in_flight.next().await {
            self.settle(settled);
        }
        self.store();
        // Records received but never started are abandoned: re-read by the next owner.
        let mut untaken = (0usize, 0usize);
        for message in self
            .ready
            .drain(..)
            .chain(self.keys.drain().flat_map(|(_, q)| q))
        {
            untaken.0 += 1;
            untaken.1 += queued_size(&message);
        }
        while let Ok(chunk) = self.worker.rx.try_recv() {
            untaken.0 += chunk.len();
            untaken.1 += chunk.bytes();
        }
        self.worker.state.unqueue(untaken.0, untaken.1);
        self.worker.report_in_flight(0);
    }

    /// The done offsets the last owner committed with the partition's offset.
    async fn inherit(&self) -> DoneRanges {
        let consumer = self.worker.consumer.clone();
        let (topic, partition) = self.worker.tp.clone();
        let committed = tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            consumer.committed_offsets(tpl, INHERIT_TIMEOUT)
        })
        .await;
        let tpl = match committed {
            Ok(Ok(tpl)) => tpl,
            Ok(Err(error)) => {
                tracing::warn!(%error, "committed offset map not read: records done out of order by the last owner are handled again");
                return DoneRanges::default();
            }
            Err(_) => return DoneRanges::default(),
        };
        let Some(element) = tpl.elements().into_iter().next() else {
            return DoneRanges::default();
        };
        let Offset::Offset(base) = element.offset() else {
            return DoneRanges::default();
        };
        match DoneRanges::decode(base, element.metadata()) {
            Ok(ranges) => ranges,
            Err(reason) => {
                tracing::warn!(%reason, "malformed committed offset map ignored");
                DoneRanges::default()
            }
        }
    }

    /// Takes a chunk's records: each is tracked from now on, then skipped (done by the last
    /// owner), made ready, or queued behind its key.
    fn receive(&mut self, chunk: FetchedChunk) {
        let topic = self.worker.tp.0.clone();
        for message in chunk.into_messages(&topic, &mut self.worker.unreadable) {
            self.tracker.start(message.offset);
            if !self.inherited.is_empty() && self.inherited.take(message.offset) {
                self.worker.unreadable.remove(&message.offset);
                tracing::debug!(offset = message.offset, "done by the last owner: skipped");
                let bytes = queued_size(&message);
                self.done(message.offset, bytes, 1);
                continue;
            }
            match self.key_of(&message) {
                Some(key) => match self.keys.get_mut(&key) {
                    Some(queue) => queue.push_back(message),
                    None => {
                        self.keys.insert(key, VecDeque::new());
                        self.ready.push_back(message);
                    }
                },
                None => self.ready.push_back(message),
            }
        }
    }

    /// The record's key as the worker orders by: a hash of its bytes (two keys sharing a hash
    /// only share a queue), or `None` for a record that is its own key.
    fn key_of(&self, message: &Message) -> Option<u64> {
        if self.unordered {
            return None;
        }
        let key = message.key.as_ref()?;
        Some(self.hasher.hash_one(key))
    }

    /// Starts ready records while the bounds allow.
    fn start_ready(&mut self) {
        let registration = &self.worker.registration;
        let (max_records, max_bytes) =
            (registration.max_in_flight, registration.max_in_flight_bytes);
        while self.in_flight.len() < max_records && !self.ready.is_empty() {
            let index = if self.map_fits() {
                match self.ready.front() {
                    Some(front) => {
                        let size = queued_size(front);
                        if !self.in_flight.is_empty() && self.in_flight_bytes + size > max_bytes {
                            return;
                        }
                        0
                    }
                    None => return,
                }
            } else {
                // Over budget: only the record holding back the committed offset, which
                // shrinks the map when it settles.
                let lowest = self.tracker.lowest_pending();
                match self.ready.iter().position(|m| Some(m.offset) == lowest) {
                    Some(index) => index,
                    None => return,
                }
            };
            let message = self.ready.remove(index).expect("index in range");
            self.spawn(message);
        }
    }

    /// Whether the done-offset map is within its budget, with room for one more run.
    fn map_fits(&self) -> bool {
        let runs = self.tracker.done_runs() + 1;
        if runs * RUN_BYTES + offset_map::PREFIX.len() <= MAX_METADATA_BYTES {
            return true;
        }
        // Near the budget: measure (at most a budget's worth of runs). A map that is cut when
        // stored only costs re-handling.
        let Some(base) = self.tracker.next_to_commit() else {
            return true;
        };
        offset_map::fits(
            base,
            self.tracker.done_beyond(),
            MAX_METADATA_BYTES - RUN_BYTES,
        )
    }

    fn spawn(&mut self, mut message: Message) {
        let key = self.key_of(&message);
        let bytes = queued_size(&message);
        self.in_flight_bytes += bytes;
        let handling = self.handling.clone();
        let handler = self
            .worker
            .refusal(message.offset)
            .unwrap_or_else(|| self.handler.clone());
        let task = tokio::spawn(
            async move {
                let offset = message.offset;
                let outcome = handling.record(&handler, &mut message, &mut KeyOnly).await;
                Settled {
                    key,
                    offset,
                    bytes,
                    outcome,
                }
            }
            .in_current_span(),
        );
        self.in_flight.push(AbortOnDropHandle::new(task));
        self.worker.report_in_flight(self.in_flight.len());
    }

    /// A record's task ended: its key's next record becomes ready, and a finished record is
    /// done.
    fn settle(&mut self, settled: Result<Settled, tokio::task::JoinError>) {
        self.worker.report_in_flight(self.in_flight.len());
        let settled = match settled {
            Ok(settled) => settled,
            // Only an abort (a drain timeout) ends a task early: its record is not done.
            Err(_) => return,
        };
        self.in_flight_bytes -= settled.bytes;
        if let Some(key) = settled.key {
            match self.keys.get_mut(&key).and_then(VecDeque::pop_front) {
                // Older than most ready records: first in line.
                Some(next) => self.ready.push_front(next),
                None => {
                    self.keys.remove(&key);
                }
            }
        }
        if settled.outcome == Outcome::Abandoned {
            self.worker.state.unqueue(1, settled.bytes);
            return;
        }
        if let Some(c) = &self.handling.counters {
            c.settled(settled.outcome);
        }
        self.done(settled.offset, settled.bytes, 1);
    }

    /// Marks a record done: the tracker, the queue count, progress, and the stored offset.
    fn done(&mut self, offset: i64, bytes: usize, count: usize) {
        self.tracker.complete(offset);
        self.unstored += count;
        let (remaining, remaining_bytes) = self.worker.state.unqueue(count, bytes);
        let state = &self.worker.state;
        state.settled.fetch_add(count as u64, Ordering::Relaxed);
        if let Some(watermark) = self.tracker.watermark()
            && state.epoch.load(Ordering::SeqCst) == self.worker.epoch
        {
            state.last_done.store(watermark, Ordering::SeqCst);
        }
        // Nothing left to start: what is in flight may take long (or never end before a drain
        // timeout), so what is done is stored soon, without storing on every completion.
        let waiting = self.ready.is_empty() && self.worker.rx.is_empty();
        let idle = waiting && self.in_flight.is_empty();
        if self.unstored >= STORE_EVERY
            || idle
            || self.worker.commit_each
            || (waiting && self.last_store.elapsed() >= STORE_WAITING)
        {
            self.store();
        }
        self.worker.lift_backpressure(remaining, remaining_bytes);
    }

    /// Hands the lowest offset not done, with the map of those done beyond it, to librdkafka
    /// (committed with the next periodic commit, on revocation and on shutdown).
    fn store(&mut self) {
        if self.unstored == 0 {
            return;
        }
        let Some(next) = self.tracker.next_to_commit() else {
            return;
        };
        self.unstored = 0;
        self.last_store = std::time::Instant::now();
        // Revoked since this worker started: another member may have committed further.
        if self.worker.consumer.context().epoch(&self.worker.tp) != self.worker.epoch {
            return;
        }
        let metadata = offset_map::encode(next, self.tracker.done_beyond(), MAX_METADATA_BYTES);
        let (topic, partition) = &self.worker.tp;
        let mut tpl = TopicPartitionList::new();
        if let Err(error) = tpl.add_partition_offset(topic, *partition, Offset::Offset(next)) {
            tracing::debug!(%error, "offset not stored");
            return;
        }
        if !metadata.is_empty()
            && let Some(mut element) = tpl.find_partition(topic, *partition)
        {
            element.set_metadata(&metadata);
        }
        // librdkafka commits a stored offset with the metadata stored beside it.
        match self.worker.consumer.store_offsets(&tpl) {
            Ok(()) => {
                let stored = Some((next, metadata));
                *self.worker.state.committable.lock().expect("not poisoned") = stored.clone();
                if self.committed.0 != stored && self.commit_due.is_none() {
                    self.commit_due = Some(self.committed.1 + self.worker.commit_interval);
                }
                if self.worker.commit_each {
                    self.commit();
                }
            }
            Err(error) => tracing::debug!(%error, "offset not stored"),
        }
    }

    /// Commits the stored offset and map explicitly (asynchronously): a commit of librdkafka's
    /// current state leaves metadata out, and skips an offset that did not move.
    fn commit(&mut self) {
        self.commit_due = None;
        let stored = self
            .worker
            .state
            .committable
            .lock()
            .expect("not poisoned")
            .clone();
        let Some((offset, metadata)) = stored.clone() else {
            return;
        };
        if self.committed.0 == stored
            || self.worker.consumer.context().epoch(&self.worker.tp) != self.worker.epoch
        {
            return;
        }
        let (topic, partition) = &self.worker.tp;
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(topic, *partition, Offset::Offset(offset))
            .is_err()
        {
            return;
        }
        if !metadata.is_empty()
            && let Some(mut element) = tpl.find_partition(topic, *partition)
        {
            element.set_metadata(&metadata);
        }
        if let Err(error) = self.worker.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(%error, "offset map not committed");
        }
        self.committed = (stored, tokio::time::Instant::now());
    }
}

/// Waits until `deadline`; forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
