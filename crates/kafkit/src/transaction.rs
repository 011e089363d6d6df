//! [`TransactionalProducer`] and its [`Transaction`]: records sent to any topics, and the
//! offsets of consumed records, become visible to read-committed readers all together, or
//! never.
//!
//! A transaction is never left open: [`TransactionalProducer::transaction`] commits when its
//! closure returns `Ok` and aborts when it returns `Err` (or when its future is dropped), and a
//! [`Transaction`] guard dropped without [`Transaction::commit`] or [`Transaction::abort`] is
//! aborted in a blocking task.
//!
//! Errors are classified as librdkafka classifies them:
//! - **fatal** (fenced by a newer producer with the same transactional id, invalid producer
//!   epoch, ...): [`Error::Fenced`]. The producer can do nothing more; recreate it. The
//!   broker aborts what it had open.
//! - **abortable** (a record failed, the transaction timed out on the broker, ...): the
//!   transaction is aborted and the call fails with [`Error::Transaction`] whose `aborted` is
//!   true ([`ErrorCode::TransactionAborted`](crate::error::ErrorCode::TransactionAborted)). The
//!   producer goes on; the whole transaction may be tried again.
//! - **retriable** (coordinator moving, timeouts): the call is tried again, up to
//!   [`TRANSACTION_ATTEMPTS`] times in all; except a commit or an abort, which is resumed
//!   until it resolves. librdkafka keeps a commit (or abort) that timed out in progress, and
//!   answers every other call with `ERR__CONFLICT` until the same call is made again: the
//!   outcome of a commit is unknown until then, and giving up would leave the producer unable
//!   to begin another transaction. So [`Transaction::commit`] returns only once the commit
//!   resolved (committed, aborted, or fenced), however long the broker takes to answer; it
//!   says in the log that it is waiting. Dropping its future stops the waiting: the broker
//!   settles the transaction (it aborts one it never saw committed after the transaction
//!   timeout), and so does the next producer registered with the same transactional id.
//!
//! One producer runs one transaction at a time (a librdkafka producer has one): a second
//! [`TransactionalProducer::begin`] waits until the first transaction is finished.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{Producer as _, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::producer::{DeliveryContext, Producer, ProducerBuilder};
use crate::record::{Delivery, Record};

/// How many times in all a transaction call (init, commit, abort, offsets) that fails with a
/// retriable error is tried.
pub const TRANSACTION_ATTEMPTS: u32 = 3;
/// Pause between two attempts of a retriable transaction call (librdkafka backs off within a
/// call already).
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a resumed commit or abort waits for its outcome before it is resumed again (and
/// before a dropped [`Transaction::commit`] notices that nobody waits for it any more).
const RESUME_WAIT: Duration = Duration::from_secs(1);
/// How often a commit or abort that has not resolved yet says so in the log.
const UNRESOLVED_LOG_INTERVAL: Duration = Duration::from_secs(10);

type Client = ThreadedProducer<DeliveryContext>;

/// A producer that writes in transactions. Clone it freely: clones share one client, and
/// run their transactions one after the other.
///
/// ```no_run
/// # async fn demo() -> kafkit::Result<()> {
/// use kafkit::{Kafka, KafkaConfig, Record};
/// let kafka = Kafka::connect(&KafkaConfig::new(["localhost:9092"]))?;
/// let producer = kafka.transactional_producer("orders-1").await?;
/// // Both records, or neither, become visible to read-committed readers.
/// let order = producer
///     .transaction(async |tx| {
///         tx.send(Record::to("orders").key("o-1").text("created")).await?;
///         tx.send(Record::to("audit").key("o-1").text("order o-1 created")).await?;
///         Ok::<_, kafkit::Error>("o-1")
///     })
///     .await?;
/// producer.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TransactionalProducer {
    producer: Producer,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    id: String,
    /// What built the producer, for [`TransactionalProducer::recreate`].
    builder: ProducerBuilder,
    /// One transaction at a time; held by the open [`Transaction`].
    turn: Arc<Mutex<()>>,
    /// How long one blocking transaction call may take.
    timeout: Duration,
}

impl Producer {
    /// A transactional producer with default behaviour, registered with the cluster under
    /// `transactional_id` (`init_transactions`). Registering fences any older producer with
    /// the same id and aborts what it left open.
    pub(crate) async fn transactional(
        config: &KafkaConfig,
        transactional_id: impl Into<String>,
    ) -> Result<TransactionalProducer> {
        Producer::builder(config)
            .build_transactional(transactional_id)
            .await
    }
}

impl ProducerBuilder {
    /// Creates a transactional producer named `transactional_id` with this builder's
    /// partitioner, headers, enqueue timeout and metrics, and registers it with the cluster.
    /// It is idempotent whatever the configuration says, and its records' delivery timeout is
    /// at most the transaction timeout.
    pub async fn build_transactional(
        self,
        transactional_id: impl Into<String>,
    ) -> Result<TransactionalProducer> {
        let id = transactional_id.into();
        if id.trim().is_empty() {
            return Err(Error::config("KAFKA_TRANSACTIONAL_ID", "must not be empty"));
        }
        let config = self.config();
        // Registering may wait for the previous holder's transaction to be aborted.
        let timeout = config.transaction_timeout.max(config.request_timeout);
        let settings = config.to_transactional_producer_config(&id);
        let builder = self.clone();
        let producer = TransactionalProducer {
            producer: self.build_with(settings)?,
            shared: Arc::new(Shared {
                id,
                builder,
                turn: Arc::new(Mutex::new(())),
                timeout,
            }),
        };
        producer
            .call(|client, timeout| client.init_transactions(timeout))
            .await?
            .map_err(|error| producer.failure("init", false, error))?;
        tracing::info!(transactional_id = %producer.shared.id, "transactional producer ready");
        Ok(producer)
    }
}

impl TransactionalProducer {
    /// The transactional id this producer registered.
    pub fn transactional_id(&self) -> &str {
        &self.shared.id
    }

    /// Runs `work` in a transaction: commits when it returns `Ok`, aborts when it returns
    /// `Err` (the error is returned as it is) or when this future is dropped before the end.
    /// A failed commit aborts the transaction and fails with [`Error::Transaction`] (or
    /// [`Error::Fenced`]): `Ok` means every record sent in `work` is committed.
    pub async fn transaction<T, E>(
        &self,
        work: impl AsyncFnOnce(&Transaction) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<Error>,
    {
        let tx = self.begin().await?;
        match work(&tx).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(error) => {
                if let Err(abort) = tx.abort().await {
                    tracing::warn!(transactional_id = %self.shared.id, error = %abort,
                        "aborting the failed transaction failed too");
                }
                Err(error)
            }
        }
    }

    /// Begins a transaction, once the previous one (of this producer or a clone) is finished.
    /// Commit or abort the guard; dropped, it aborts.
    pub async fn begin(&self) -> Result<Transaction> {
        let turn = self.shared.turn.clone().lock_owned().await;
        if let Some(fenced) = self.fatal() {
            return Err(fenced);
        }
        self.call(|client, _| client.begin_transaction())
            .await?
            .map_err(|error| self.failure("begin", false, error))?;
        Ok(Transaction {
            producer: self.clone(),
            turn: Some(turn),
        })
    }

    /// True once the producer is fenced or failed fatally: it must be recreated.
    pub fn is_fenced(&self) -> bool {
        self.fatal().is_some()
    }

    /// A new producer with this one's settings and transactional id, registered with the
    /// cluster: what a producer that failed with [`Error::Fenced`] is replaced with. Registering
    /// settles what this producer left open and fences it for good, as well as any other
    /// instance registered with the same transactional id since. This one (and its clones)
    /// can do nothing more.
    pub async fn recreate(&self) -> Result<TransactionalProducer> {
        self.shared
            .builder
            .clone()
            .build_transactional(self.shared.id.clone())
            .await
    }

    /// Waits for the open transaction, if any, to finish, then refuses new records and flushes.
    pub async fn shutdown(&self) -> Result<()> {
        let _turn = self.shared.turn.lock().await;
        self.producer.shutdown().await
    }

    /// Runs a blocking transaction call in a blocking task, again while it fails with a
    /// retriable error.
    async fn call(
        &self,
        call: impl Fn(&Client, Duration) -> KafkaResult<()> + Send + 'static,
    ) -> Result<KafkaResult<()>> {
        let client = self.producer.client().clone();
        let timeout = self.shared.timeout;
        tokio::task::spawn_blocking(move || retrying(&client, timeout, call))
            .await
            .map_err(Error::Task)
    }

    /// [`Error::Fenced`] when the client failed fatally.
    fn fatal(&self) -> Option<Error> {
        self.producer
            .client()
            .client()
            .fatal_error()
            .map(|(code, reason)| Error::Fenced {
                transactional_id: self.shared.id.clone(),
                code,
                reason,
            })
    }

    /// What `error` of `operation` means: [`Error::Fenced`] when the producer failed fatally,
    /// else an [`Error::Transaction`].
    fn failure(&self, operation: &'static str, aborted: bool, error: KafkaError) -> Error {
        if let Some(fenced) = self.fatal() {
            return fenced;
        }
        match error {
            KafkaError::Transaction(error) if error.is_fatal() => Error::Fenced {
                transactional_id: self.shared.id.clone(),
                code: error.code(),
                reason: error.string(),
            },
            source => Error::Transaction {
                operation,
                aborted,
                source,
            },
        }
    }
}

/// An open transaction of a [`TransactionalProducer`]. Send records with [`Transaction::send`]
/// and [`Transaction::send_batch`] (any topics), add consumed offsets with
/// [`Transaction::send_offsets`], then [`Transaction::commit`]. Dropped without commit or
/// abort, it is aborted: `Drop` cannot wait, so the abort runs in a blocking task (or at once
/// when there is no tokio runtime), and the producer's next transaction waits for it. Should
/// the process end before the abort reaches the broker, the broker aborts the transaction
/// after the transaction timeout.
#[must_use = "a transaction is aborted when dropped: commit it"]
pub struct Transaction {
    producer: TransactionalProducer,
    /// Held while open; `None` once committed or aborted.
    turn: Option<OwnedMutexGuard<()>>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("transactional_id", &self.producer.shared.id)
            .field("open", &self.turn.is_some())
            .finish()
    }
}

impl Transaction {
    /// Sends one record in the transaction and waits for the broker to store it (visible to
    /// read-committed readers only once the transaction commits).
    pub async fn send(&self, record: Record) -> Result<Delivery> {
        let mut deliveries = self.send_batch([record]).await?;
        Ok(deliveries.pop().expect("one delivery per record"))
    }

    /// Sends records to any topics in the transaction, enqueued together and acknowledged
    /// together. Fails with the first record's error if any failed: the transaction can then
    /// only be aborted (committing it fails and aborts it).
    pub async fn send_batch(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Vec<Delivery>> {
        self.producer
            .producer
            .send_batch(records)
            .await
            .into_iter()
            .map(|result| result.map_err(|error| self.producer.fatal().unwrap_or(error)))
            .collect()
    }

    /// Adds consumed offsets to the transaction, so they are committed for the consumer group
    /// if and only if the transaction commits (consume-transform-produce, KIP-447). `offsets`
    /// are the next offsets to consume (the last processed offset + 1) per partition; `group`
    /// is the consumer's current [`ConsumerGroupMetadata`]
    /// (`rdkafka::consumer::Consumer::group_metadata`), which lets the broker fence a
    /// consumer that lost its partitions in a rebalance.
    pub async fn send_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: ConsumerGroupMetadata,
    ) -> Result<()> {
        let offsets = offsets.clone();
        self.producer
            .call(move |client, timeout| {
                client.send_offsets_to_transaction(&offsets, &group, timeout)
            })
            .await?
            .map_err(|error| self.producer.failure("send offsets", false, error))
    }

    /// Commits: every record sent and every offset added becomes visible at once. On failure
    /// the transaction is aborted ([`Error::Transaction`] with `aborted` true) unless the
    /// producer is fenced ([`Error::Fenced`]); either way nothing of it is visible, except for
    /// an `Error::Transaction` with `aborted` false, whose outcome is unknown (commit and abort
    /// both failed: recreate the producer, which settles it).
    ///
    /// A commit the broker does not answer in time is resumed (librdkafka's
    /// `commit_transaction` called again) until it resolves, however long that takes: until
    /// then its outcome is unknown, and librdkafka refuses any other transaction call. Drop
    /// this future to stop waiting (at shutdown, say): the producer then waits for nothing
    /// more, and the transaction is settled by the broker or by the next producer with this
    /// transactional id.
    pub async fn commit(mut self) -> Result<()> {
        let turn = self.turn.take();
        let producer = self.producer.clone();
        let id = producer.shared.id.clone();
        tracing::debug!(transactional_id = %id, "committing the transaction");
        let client = producer.producer.client().clone();
        let timeout = producer.shared.timeout;
        let waiting = Waiting::default();
        let abandoned = waiting.0.clone();
        let (commit, abort) = tokio::task::spawn_blocking(move || {
            // The next transaction may begin only once this one is settled.
            let _turn = turn;
            let commit = resolving(&client, &id, "commit", timeout, &abandoned, |c, t| {
                c.commit_transaction(t)
            });
            let abort = match &commit {
                Resolution::Resolved(Err(_)) if client.client().fatal_error().is_none() => Some(
                    resolving(&client, &id, "abort", timeout, &abandoned, |c, t| {
                        c.abort_transaction(t)
                    }),
                ),
                _ => None,
            };
            (commit, abort)
        })
        .await
        .map_err(Error::Task)?;
        drop(waiting);
        let error = match commit {
            Resolution::Resolved(Ok(())) => return Ok(()),
            Resolution::Resolved(Err(error)) | Resolution::Abandoned(error) => error,
        };
        if let Some(fenced) = producer.fatal() {
            return Err(fenced);
        }
        match abort {
            Some(Resolution::Resolved(Ok(()))) => Err(producer.failure("commit", true, error)),
            Some(Resolution::Resolved(Err(abort)) | Resolution::Abandoned(abort)) => {
                tracing::warn!(transactional_id = %producer.shared.id, error = %abort,
                    "aborting after a failed commit failed too: the outcome is unknown");
                Err(producer.failure("commit", false, error))
            }
            None => Err(producer.failure("commit", false, error)),
        }
    }

    /// Aborts: nothing sent in the transaction will ever be visible to read-committed readers.
    /// An abort the broker does not answer in time is resumed until it resolves, as a
    /// commit is.
    pub async fn abort(mut self) -> Result<()> {
        let turn = self.turn.take();
        let producer = self.producer.clone();
        let id = producer.shared.id.clone();
        let client = producer.producer.client().clone();
        let timeout = producer.shared.timeout;
        let waiting = Waiting::default();
        let abandoned = waiting.0.clone();
        let abort = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            resolving(&client, &id, "abort", timeout, &abandoned, |c, t| {
                c.abort_transaction(t)
            })
        })
        .await
        .map_err(Error::Task)?;
        drop(waiting);
        match abort {
            Resolution::Resolved(Ok(())) => Ok(()),
            Resolution::Resolved(Err(error)) | Resolution::Abandoned(error) => {
                Err(producer.failure("abort", true, error))
            }
        }
    }
}

/// Set when the future waiting for a commit or abort is dropped: the blocking task resuming
/// the call then stops at its next resume.
#[derive(Default)]
struct Waiting(Arc<AtomicBool>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// How a resumable transaction call (commit, abort) ended.
enum Resolution {
    /// It returned something other than "not finished yet".
    Resolved(KafkaResult<()>),
    /// Nobody waits for it any more; the last "not finished yet" error.
    Abandoned(KafkaError),
}

/// Runs `call` (librdkafka's `commit_transaction` or `abort_transaction`) and resumes it
/// (calls it again) while it fails with a retriable error, which for these calls means "not
/// finished yet": librdkafka goes on in the background and refuses any other call meanwhile.
/// Stops resuming once `abandoned` is set. Blocking.
fn resolving(
    client: &Client,
    id: &str,
    operation: &'static str,
    timeout: Duration,
    abandoned: &AtomicBool,
    call: impl Fn(&Client, Duration) -> KafkaResult<()>,
) -> Resolution {
    let started = Instant::now();
    let mut wait = timeout;
    let mut logged: Option<Instant> = None;
    loop {
        let error = match call(client, wait) {
            Err(KafkaError::Transaction(error))
                if error.is_retriable()
                    && !error.is_fatal()
                    && !error.txn_requires_abort()
                    // Another call is in progress: resuming this one cannot settle it.
                    && error.code() != RDKafkaErrorCode::Conflict =>
            {
                error
            }
            outcome => {
                if logged.is_some() {
                    match &outcome {
                        Ok(()) => tracing::info!(transactional_id = %id, operation,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "the {operation} resolved: it succeeded"),
                        Err(error) => tracing::warn!(transactional_id = %id, operation, %error,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "the {operation} resolved: it failed"),
                    }
                }
                return Resolution::Resolved(outcome);
            }
        };
        if abandoned.load(Ordering::SeqCst) {
            tracing::warn!(transactional_id = %id, operation, %error,
                "stopped waiting for the {operation} of the transaction, which has not resolved: \
                 its outcome is unknown; the broker aborts a transaction it never saw committed \
                 after the transaction timeout, and the next producer with this transactional \
                 id settles it");
            return Resolution::Abandoned(KafkaError::Transaction(error));
        }
        if logged.is_none_or(|at| at.elapsed() >= UNRESOLVED_LOG_INTERVAL) {
            tracing::warn!(transactional_id = %id, operation, %error,
                waited_ms = started.elapsed().as_millis() as u64,
                "the {operation} of the transaction has not resolved yet (the broker has not \
                 answered): its outcome is unknown until it does; resuming it");
            logged = Some(Instant::now());
        }
        wait = RESUME_WAIT;
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        if self.producer.is_fenced() {
            return;
        }
        let id = self.producer.shared.id.clone();
        tracing::warn!(transactional_id = %id, "transaction dropped open: aborting it");
        let client = self.producer.producer.client().clone();
        let timeout = self.producer.shared.timeout;
        let abort = move || {
            if let Err(error) = retrying(&client, timeout, |client, timeout| {
                client.abort_transaction(timeout)
            }) {
                tracing::warn!(transactional_id = %id, %error, "aborting a dropped transaction failed");
            }
            // The next transaction may begin only now.
            drop(turn);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(abort);
            }
            Err(_) => abort(),
        }
    }
}

/// Runs `call`, again while it fails with a retriable (neither fatal nor abortable) error, at
/// most [`TRANSACTION_ATTEMPTS`] times in all. Blocking.
fn retrying(
    client: &Client,
    timeout: Duration,
    call: impl Fn(&Client, Duration) -> KafkaResult<()>,
) -> KafkaResult<()> {
    let mut attempt = 1;
    loop {
        match call(client, timeout) {
            Err(KafkaError::Transaction(error))
                if error.is_retriable()
                    && !error.is_fatal()
                    && !error.txn_requires_abort()
                    && attempt < TRANSACTION_ATTEMPTS =>
            {
                tracing::debug!(attempt, %error, "retriable transaction error, trying again");
                attempt += 1;
                std::thread::sleep(RETRY_PAUSE);
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_transactional_id_is_refused_before_connecting() {
        let error = Producer::transactional(&KafkaConfig::new(["127.0.0.1:1"]), " ")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Config { variable, .. } if variable == "KAFKA_TRANSACTIONAL_ID"),
            "{error:?}"
        );
    }
}
