//! [`Flight`]: one replay of a dead-letter topic at a time across processes (gateway replicas,
//! the CLI), kept in Kafka itself.
//!
//! **The lock** is membership of a consumer group, `kafkit-redrive-lock.<dead-letter topic>`,
//! subscribed to the one-partition topic [`LOCK_TOPIC`] (created when missing, never written):
//! the member assigned its partition holds the lock. The assignment is cooperative-sticky, so a
//! process that joins while another holds the lock gets nothing, learns so from its first
//! assignment, leaves, and its replay is refused ([`Error::ReplayInProgress`]) before it read
//! or published anything. The holder leaves the group when its replay ends; a holder that
//! crashed, or stopped answering the group coordinator, is removed after the session timeout
//! (`KAFKA_SESSION_TIMEOUT`), and the partition goes to the next process that asks.
//!
//! **The fence** makes a lock lost without the holder noticing harmless to the progress: the
//! holder registers a transactional producer under `kafkit-redrive.<dead-letter topic>` once it
//! holds the lock, before it reads the progress, and commits the progress through it
//! (TxnOffsetCommit to the redrive group, with the position and its metadata). Registering
//! fences every earlier producer of that id and waits for a commit it had in flight to settle.
//! So a holder cut off from the group, whose successor has read the progress, can no longer
//! commit: its late commit would otherwise move the position back over what the successor
//! published, or mark records the successor has not. What such a holder published and never
//! committed is published again by its successor, as after a crash (at-least-once); it checks
//! that it still holds the lock before each round of publishing, so that is at most the
//! records it published before it noticed the loss.
//!
//! The embedded development broker honours neither groups across processes nor transactions
//! (librdkafka's mock), and only the process that runs it can use it: there the per-process
//! lock of the caller is the single flight, and the progress is committed as a plain offset
//! commit.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{Admin, TopicSpec};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::reader::Reading;
use crate::transaction::TransactionalProducer;

/// The one-partition topic whose partition is the replay lock of every dead-letter topic (each
/// has its own group). Nothing is ever written to it.
pub const LOCK_TOPIC: &str = "__kafkit-redrive-locks";
/// Pause after the lock group reported an error, before serving it again.
const ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Where a process stands with the lock of one dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Joining the group: no assignment yet.
    Joining,
    /// Assigned the lock partition.
    Held,
    /// Assigned, but not the lock partition: another process holds it.
    Elsewhere,
    /// Held, then revoked (removed from the group, say after a session timeout).
    Lost,
}

/// The lock group's callbacks: each assignment says whether this process holds the lock.
struct LockContext {
    hold: watch::Sender<Hold>,
}

impl ClientContext for LockContext {}

impl ConsumerContext for LockContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let lock = |tpl: &TopicPartitionList| tpl.find_partition(LOCK_TOPIC, 0).is_some();
        match rebalance {
            Rebalance::Assign(tpl) if lock(tpl) => {
                self.hold.send_replace(Hold::Held);
            }
            // A cooperative assignment lists only what it adds: after the first, one without
            // the lock partition changes nothing.
            Rebalance::Assign(_) => {
                self.hold.send_if_modified(|hold| {
                    let first = *hold == Hold::Joining;
                    if first {
                        *hold = Hold::Elsewhere;
                    }
                    first
                });
            }
            Rebalance::Revoke(tpl) if lock(tpl) => {
                self.hold.send_replace(Hold::Lost);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "replay lock: rebalance failed"),
        }
    }
}

type LockConsumer = StreamConsumer<LockContext>;

/// The right to replay one dead-letter topic, held from [`Flight::take`] to [`Flight::land`].
pub(super) struct Flight {
    /// `None` on the embedded development broker.
    held: Option<Held>,
}

struct Held {
    topic: String,
    consumer: Arc<LockConsumer>,
    hold: watch::Receiver<Hold>,
    /// Serves the lock group's callbacks for as long as the lock is held; taken on landing.
    poll: Option<JoinHandle<()>>,
    fence: TransactionalProducer,
}

impl Flight {
    /// Takes the lock of `dead_letter_topic` and registers its fence, or fails with
    /// [`Error::ReplayInProgress`] when another process holds the lock.
    pub(super) async fn take(config: &KafkaConfig, dead_letter_topic: &str) -> Result<Flight> {
        let admin = Admin::new(config)?;
        if admin.is_mock().await? {
            return Ok(Flight { held: None });
        }
        // An unknown topic is answered as the replay would answer it, before any group exists.
        admin.describe_topic(dead_letter_topic).await?;
        // Created only when missing: a principal may read the topic without the right to
        // create topics.
        if admin.describe_topic(LOCK_TOPIC).await.is_err() {
            admin
                // The broker's default replication: the lock matters as much as the progress.
                .ensure_topics(&[TopicSpec::new(LOCK_TOPIC, 1).replication_factor(-1)])
                .await?;
        }
        let (consumer, mut hold) = join(config, dead_letter_topic)?;
        let last_error = Arc::new(std::sync::Mutex::new(None));
        let poll = tokio::spawn({
            let (consumer, last_error) = (consumer.clone(), last_error.clone());
            async move {
                // The lock topic holds no records: receiving only serves callbacks.
                loop {
                    if let Err(error) = consumer.recv().await {
                        tracing::debug!(%error, "replay lock");
                        *last_error.lock().expect("not poisoned") = Some(error.to_string());
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
        });
        // Joining waits for the members to rejoin, at worst for a silent holder's session to
        // expire.
        let wait = config.session_timeout + config.request_timeout;
        let decided = tokio::time::timeout(wait, hold.wait_for(|h| *h != Hold::Joining))
            .await
            .map(|hold| hold.map(|hold| *hold));
        let reason = match decided {
            Ok(Ok(Hold::Held)) => None,
            Ok(_) => Some(
                "another process (a gateway replica or the CLI) is replaying it; nothing was \
                 published: ask again once it is done"
                    .to_owned(),
            ),
            Err(_) => Some(format!(
                "its replay lock (group {}) was not granted within {wait:?}: another process \
                 holds it, or the group coordinator did not answer ({}); nothing was published",
                lock_group(dead_letter_topic),
                last_error
                    .lock()
                    .expect("not poisoned")
                    .as_deref()
                    .unwrap_or("no error reported"),
            )),
        };
        if let Some(reason) = reason {
            leave(consumer, poll).await;
            return Err(in_progress(dead_letter_topic, &reason));
        }
        let fence = match Producer::transactional(config, fence_id(dead_letter_topic)).await {
            Ok(fence) => fence,
            Err(error) => {
                leave(consumer, poll).await;
                return Err(error);
            }
        };
        Ok(Flight {
            held: Some(Held {
                topic: dead_letter_topic.to_owned(),
                consumer,
                hold,
                poll: Some(poll),
                fence,
            }),
        })
    }

    /// Whether the lock is still held (as far as this process has heard).
    pub(super) fn holds(&self) -> bool {
        self.held
            .as_ref()
            .is_none_or(|held| *held.hold.borrow() == Hold::Held)
    }

    /// Commits `next` (offset and metadata per partition) for the redrive group of `reading`,
    /// through the fence: refused with [`Error::ReplayInProgress`] once another process took
    /// the lock and registered its own.
    pub(super) async fn commit(
        &self,
        reading: &Reading,
        next: &HashMap<i32, (i64, String)>,
    ) -> Result<()> {
        let Some(held) = &self.held else {
            return reading.commit_with_metadata(next).await;
        };
        if next.is_empty() {
            return Ok(());
        }
        let (offsets, group) = reading.offsets_for_transaction(next)?;
        let fenced = |error: Error| match error {
            Error::Fenced { .. } => in_progress(
                &held.topic,
                "this replay lost its lock (cut off from the group for longer than the session \
                 timeout) and another process took over; its progress was not committed, so \
                 what it published will be published again",
            ),
            other => other,
        };
        let tx = held.fence.begin().await.map_err(fenced)?;
        // Dropped on error, the transaction is aborted.
        tx.send_offsets(&offsets, group).await.map_err(fenced)?;
        tx.commit().await.map_err(fenced)
    }

    /// Gives the lock back: the fence is closed and the group left, so the next process that
    /// asks gets the lock at once.
    pub(super) async fn land(self) {
        let Some(mut held) = self.held else { return };
        if let Err(error) = held.fence.shutdown().await {
            tracing::debug!(%error, "replay lock: closing the fence");
        }
        let (consumer, poll) = (held.consumer.clone(), held.poll.take());
        drop(held);
        if let Some(poll) = poll {
            leave(consumer, poll).await;
        }
    }
}

/// The transactional id that fences the replays of `dead_letter_topic`.
fn fence_id(dead_letter_topic: &str) -> String {
    super::Redrive::group_of(dead_letter_topic)
}

/// The group whose member assigned [`LOCK_TOPIC`]'s partition may replay `dead_letter_topic`.
fn lock_group(dead_letter_topic: &str) -> String {
    format!("kafkit-redrive-lock.{dead_letter_topic}")
}

fn in_progress(topic: &str, reason: &str) -> Error {
    Error::ReplayInProgress {
        topic: topic.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A member of the lock group of `dead_letter_topic`, subscribed to [`LOCK_TOPIC`].
fn join(
    config: &KafkaConfig,
    dead_letter_topic: &str,
) -> Result<(Arc<LockConsumer>, watch::Receiver<Hold>)> {
    let group = lock_group(dead_letter_topic);
    let mut settings = config.to_consumer_config_with(&group, None);
    // Sticky and cooperative: a process joining never takes the partition from the holder.
    // Under KIP-848 the broker assigns, stickily, and librdkafka refuses the key.
    if !config
        .librdkafka
        .get("group.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("consumer"))
    {
        settings.set("partition.assignment.strategy", "cooperative-sticky");
    }
    let (sender, hold) = watch::channel(Hold::Joining);
    let consumer: LockConsumer = settings
        .create_with_context(LockContext { hold: sender })
        .map_err(|source| Error::ClientCreation {
            client: "replay lock",
            source,
        })?;
    consumer
        .subscribe(&[LOCK_TOPIC])
        .map_err(|source| Error::Consume {
            operation: format!("join the replay lock group {group}"),
            source,
        })?;
    Ok((Arc::new(consumer), hold))
}

/// Stops serving the lock group and leaves it (closing a consumer blocks).
async fn leave(consumer: Arc<LockConsumer>, poll: JoinHandle<()>) {
    poll.abort();
    let _ = poll.await;
    let _ = tokio::task::spawn_blocking(move || {
        consumer.unsubscribe();
        drop(consumer);
    })
    .await;
}

impl Drop for Held {
    fn drop(&mut self) {
        // Should the replay's task end without landing (a panic), the group is still left.
        if let Some(poll) = &self.poll {
            poll.abort();
        }
    }
}
