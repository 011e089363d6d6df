//! Delivery reports: librdkafka's delivery callback fills the slot of each record of a
//! [`Batch`] and wakes its sender once, when the last one is in; the [`DeliveryContext`] also
//! wakes senders waiting for room in a full queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::record::Delivery;

/// What librdkafka reported for one record: where it landed, or why it failed (with its
/// topic), and how long after the batch started.
pub(super) type Outcome = (
    std::result::Result<Delivery, (String, KafkaError)>,
    Duration,
);

/// What each enqueued record carries to its delivery report: its batch and its index there.
pub(super) type Opaque = Box<(Arc<Batch>, usize)>;

/// The deliveries of one `send_batch` call. librdkafka's delivery callback fills the slots;
/// the caller is woken once, when the last one is filled, instead of once per record. Public
/// only because it is the [`DeliveryContext`]'s opaque type; nothing of it is exposed.
pub struct Batch {
    pub(super) slots: Vec<OnceLock<Outcome>>,
    /// Records not yet settled, plus one held by the caller until everything is enqueued.
    pending: AtomicUsize,
    done: Notify,
    started: Instant,
    /// Whether delivery times are wanted (metrics on); reading the clock per record is not free.
    timed: bool,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("records", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Batch {
    pub(super) fn new(len: usize, timed: bool) -> Self {
        Batch {
            slots: (0..len).map(|_| OnceLock::new()).collect(),
            pending: AtomicUsize::new(len + 1),
            done: Notify::new(),
            started: Instant::now(),
            timed,
        }
    }

    /// Marks one record settled; wakes the caller when it was the last.
    pub(super) fn settle(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    /// Releases the caller's hold once every record is enqueued, and waits for the last
    /// delivery unless they are all in already.
    pub(super) async fn settled(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) > 1 {
            self.done.notified().await;
        }
    }

    /// One result per record, in input order: its delivery, its delivery failure, or
    /// `refused`'s error for the records that never reached librdkafka.
    pub(super) fn results(&self, mut refused: HashMap<usize, Error>) -> Vec<Result<Delivery>> {
        (0..self.slots.len())
            .map(|index| {
                // Refusals are rare: skip hashing when there are none.
                let refusal = if refused.is_empty() {
                    None
                } else {
                    refused.remove(&index)
                };
                match refusal {
                    Some(error) => Err(error),
                    None => match self.slots[index].get() {
                        Some((Ok(delivery), _)) => Ok(*delivery),
                        Some((Err((topic, source)), _)) => Err(Error::Produce {
                            topic: topic.clone(),
                            source: source.clone(),
                        }),
                        None => unreachable!("every enqueued record is settled before the wake-up"),
                    },
                }
            })
            .collect()
    }
}

/// The producer's rdkafka context: routes each delivery report to its batch, and wakes senders
/// waiting for room in a full queue.
#[derive(Default)]
pub(crate) struct DeliveryContext {
    pub(super) room: Notify,
    pub(super) waiting: AtomicUsize,
}

impl std::fmt::Debug for DeliveryContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryContext").finish_non_exhaustive()
    }
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Opaque;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (batch, index) = *opaque;
        let outcome = match result {
            Ok(message) => Ok(Delivery {
                partition: message.partition(),
                offset: message.offset(),
            }),
            Err((error, message)) => Err((message.topic().to_owned(), error.clone())),
        };
        let took = if batch.timed {
            batch.started.elapsed()
        } else {
            Duration::ZERO
        };
        let _ = batch.slots[index].set((outcome, took));
        batch.settle();
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.room.notify_waiters();
        }
    }
}
