//! The end of a batch: its transaction (outputs and offsets), and what follows each way the
//! transaction can resolve: go on, read the batch again, start over with a new producer, or stop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use super::context::PipelineContext;
use super::intake::Intake;
use super::rewind::{RewindTo, next_offsets};
use super::{ExactlyOnce, finish_unless_stopped};
use crate::error::{Error, ErrorCode, Result};
use crate::record::{Message, Record};
use crate::transaction::TransactionalProducer;

impl ExactlyOnce {
    /// Commits `batch`'s `outputs` and offsets in one transaction, then does what its outcome
    /// calls for ([`ExactlyOnce::after_commit`]): whether to go on; `None` when stopping with
    /// the commit unresolved.
    pub(super) async fn commit_batch<S: Future<Output = ()>>(
        &self,
        intake: &mut Intake<'_>,
        batch: &[Message],
        outputs: Vec<Record>,
        shutdown: &mut Pin<Box<S>>,
    ) -> Result<Option<bool>> {
        let consumer = intake.consumer();
        let began = Instant::now();
        let commit =
            tokio::time::timeout(self.unresolved_limit(), self.commit(intake, outputs, batch));
        let (outcome, stopping) = finish_unless_stopped(commit, shutdown).await;
        let Some(outcome) = outcome else {
            tracing::warn!(
                records = batch.len(),
                "stopping while the transaction's commit is unresolved: its outcome is \
                 unknown; the broker settles it, and the offsets committed say where the \
                 next member resumes"
            );
            return Ok(None);
        };
        let committed = matches!(outcome, Ok(Ok(())));
        self.vitals.transaction(committed);
        self.vitals.turned();
        if committed {
            self.transactions.fetch_add(1, Ordering::Relaxed);
            self.committed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        let go_on = match outcome {
            Ok(outcome) => {
                self.after_commit(consumer, batch, outcome, began, stopping, shutdown)
                    .await?
            }
            Err(_) => {
                tracing::warn!(
                    records = batch.len(),
                    limit_ms = self.unresolved_limit().as_millis() as u64,
                    "the transaction's commit has not resolved (librdkafka has not settled \
                     it with the broker): the broker aborts a transaction it did not see \
                     committed after the transaction timeout"
                );
                !stopping && self.start_over(consumer, batch, shutdown).await?
            }
        };
        Ok(Some(go_on))
    }

    /// What follows a transaction that resolved with `outcome`: going on (true), reading the
    /// batch again (after a rewind, or a new producer), or stopping (false, or the error the
    /// run stops with). `began` is when the commit began; `stopping` says shutdown came.
    pub(super) async fn after_commit<S: Future<Output = ()>>(
        &self,
        consumer: &Arc<StreamConsumer<PipelineContext>>,
        batch: &[Message],
        outcome: Result<()>,
        began: Instant,
        stopping: bool,
        shutdown: &mut Pin<Box<S>>,
    ) -> Result<bool> {
        match outcome {
            Ok(()) => Ok(!stopping),
            Err(error @ Error::Fenced { .. })
                if began.elapsed() >= self.config.transaction_timeout =>
            {
                // librdkafka reports a transaction the broker aborted for its timeout as
                // fenced; it cannot be told from a newer instance with the same id, which
                // the new producer fences in turn (it then stops with this error).
                tracing::warn!(%error, open_ms = began.elapsed().as_millis() as u64,
                    "fenced after the transaction stayed open longer than the transaction \
                     timeout (the broker did not answer): the broker aborted it");
                Ok(!stopping && self.start_over(consumer, batch, shutdown).await?)
            }
            Err(error @ Error::Fenced { .. }) => {
                tracing::error!(%error, "fenced: another instance registered this transactional id; stopping");
                Err(error)
            }
            Err(error) if never_written(&error) => {
                tracing::error!(%error, records = batch.len(),
                    "an output of the batch can never be written (too large for its topic, or \
                     the topic is unknown or not authorized): the transaction is aborted, \
                     nothing of the batch is written, and the pipeline stops");
                Err(error)
            }
            Err(error @ Error::Transaction { aborted: false, .. }) => {
                tracing::warn!(%error, records = batch.len(), "the transaction's outcome is unknown");
                Ok(!stopping && self.start_over(consumer, batch, shutdown).await?)
            }
            Err(error) => {
                tracing::warn!(%error, records = batch.len(), "transaction failed and was aborted: its batch is read again");
                if stopping
                    || !self
                        .rewind(consumer, batch, RewindTo::BatchStart, shutdown)
                        .await?
                {
                    return Ok(false);
                }
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => Ok(false),
                    () = tokio::time::sleep(self.options.retry_pause) => Ok(true),
                }
            }
        }
    }

    /// How long a commit may stay unresolved before the pipeline starts over with a new
    /// producer: the broker has aborted the transaction by then unless it committed it.
    pub(super) fn unresolved_limit(&self) -> Duration {
        self.config.transaction_timeout + self.config.request_timeout
    }

    /// After a transaction whose outcome this producer cannot learn any more: registers a new
    /// producer with the same transactional id, which settles the transaction with the broker
    /// (committed or aborted), then rewinds `batch`'s partitions to the committed offsets,
    /// which say which it was. Tries again while the broker does not answer; false when
    /// shutdown came meanwhile.
    pub(super) async fn start_over<S: Future<Output = ()>>(
        &self,
        consumer: &Arc<StreamConsumer<PipelineContext>>,
        batch: &[Message],
        shutdown: &mut Pin<Box<S>>,
    ) -> Result<bool> {
        tracing::warn!(
            records = batch.len(),
            "registering a new producer with the same transactional id, which settles the \
             transaction; the batch is then read again from the committed offsets"
        );
        while let Err(error) = self.recreate_producer().await {
            tracing::warn!(%error, "registering a new producer failed; trying again");
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(false),
                () = tokio::time::sleep(self.options.retry_pause) => {}
            }
        }
        self.rewind(consumer, batch, RewindTo::Committed, shutdown)
            .await
    }

    /// The producer transactions are written with.
    pub(super) fn producer(&self) -> TransactionalProducer {
        self.producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the (fenced) producer with a new one of the same transactional id.
    pub(super) async fn recreate_producer(&self) -> Result<()> {
        let old = self.producer();
        let fresh = old.recreate().await?;
        *self
            .producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        // Dropping a client blocks until its threads end.
        tokio::task::spawn_blocking(move || drop(old))
            .await
            .map_err(Error::Task)
    }

    /// Writes `outputs` and the offsets after `batch` in one transaction.
    pub(super) async fn commit(
        &self,
        intake: &mut Intake<'_>,
        outputs: Vec<Record>,
        batch: &[Message],
    ) -> Result<()> {
        let consumer = intake.consumer();
        let mut offsets = TopicPartitionList::new();
        for (tp, next) in next_offsets(batch) {
            offsets
                .add_partition_offset(&tp.0, tp.1, Offset::Offset(next))
                .map_err(|source| Error::Consume {
                    operation: format!("offset {next} of {} [{}]", tp.0, tp.1),
                    source,
                })?;
        }
        let group = consumer.group_metadata().ok_or_else(|| {
            Error::config("group", "the consumer has no group metadata to commit with")
        })?;
        let transaction = self.producer().begin().await?;
        if !outputs.is_empty()
            && let Err(error) = transaction.send_batch(outputs).await
        {
            // A failed send leaves a transaction that can only abort.
            if let Err(abort) = transaction.abort().await {
                tracing::warn!(error = %abort, "aborting after a failed send failed too");
            }
            return Err(error);
        }
        transaction.send_offsets(&offsets, group).await?;
        // The offsets are sent: polling again is safe (KIP-447). A rebalance served during the
        // commit may give these partitions to another member, but the group coordinator holds
        // the transaction's offsets as pending until it resolves, and a read-committed member
        // (librdkafka asks for stable offsets under `isolation.level=read_committed`) that
        // fetches its start offsets meanwhile is answered `UNSTABLE_OFFSET_COMMIT` and asks
        // again: it starts after the batch if the commit succeeds, at the batch otherwise.
        // Before this point a rebalance could hand the partitions on while offsets for them
        // are still to be sent; `ExactlyOnce::consume` checks for one with polling stopped.
        intake.polling(transaction.commit()).await
    }
}

/// Whether a failed send of a batch's outputs would fail the same way every time the batch is
/// read again: then the pipeline stops with the error rather than abort and retry forever.
/// An unknown topic counts: librdkafka has waited `topic.metadata.propagation.max.ms` for it
/// to appear before failing the record.
fn never_written(error: &Error) -> bool {
    matches!(error, Error::Produce { .. } | Error::InvalidRecord(_))
        && matches!(
            error.code(),
            ErrorCode::MessageTooLarge
                | ErrorCode::UnknownTopic
                | ErrorCode::UnknownPartition
                | ErrorCode::NotAuthorized
                | ErrorCode::InvalidRecord
        )
}
