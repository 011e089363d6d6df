//! Batch handlers (KafkaJS `eachBatch`, Spring's batch listeners): a handler that receives up to `max_records` records
//! of one partition, or whatever arrived within `max_wait`. Offsets are stored only after the
//! batch succeeds; a failure can name the failing record, so the records before it are done
//! (as Spring's `BatchListenerFailedException`).

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::handler::HandlerError;
use crate::record::Message;

/// When a batch is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Hand over as soon as this many records are waiting.
    pub max_records: usize,
    /// Hand over what is waiting once the oldest record waited this long.
    pub max_wait: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_records: 100,
            max_wait: Duration::from_millis(500),
        }
    }
}

/// A batch failure: the error, and the index of the failing record when known. Records before
/// that index are marked done; the rest are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// Index in the batch of the record that failed; `None` means the whole batch failed.
    pub failed_at: Option<usize>,
    /// What went wrong.
    pub error: HandlerError,
}

impl BatchError {
    /// The whole batch failed.
    pub fn all(error: impl Into<HandlerError>) -> Self {
        BatchError {
            failed_at: None,
            error: error.into(),
        }
    }

    /// The record at `index` failed; the ones before it succeeded.
    pub fn at(index: usize, error: impl Into<HandlerError>) -> Self {
        BatchError {
            failed_at: Some(index),
            error: error.into(),
        }
    }
}

/// The result of handling a batch.
pub type BatchResult = Result<(), BatchError>;

/// Handles batches of raw records of one partition, in offset order.
pub trait BatchHandler: Send + Sync + 'static {
    /// Processes a batch.
    fn handle_batch<'a>(&'a self, batch: &'a [Message]) -> BoxFuture<'a, BatchResult>;
}

impl<T, F> std::fmt::Debug for TypedBatch<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TypedBatch")
    }
}

/// Adapts a closure over `Vec<Message<T>>` into a [`BatchHandler`]. A record that does not
/// decode fails the batch at its index as invalid input.
pub struct TypedBatch<T, F> {
    handler: F,
    _value: PhantomData<fn() -> T>,
}

impl<T, F> TypedBatch<T, F> {
    /// Wraps `handler`.
    pub fn new(handler: F) -> Self {
        TypedBatch {
            handler,
            _value: PhantomData,
        }
    }
}

impl<T, F, Fut> BatchHandler for TypedBatch<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Vec<Message<T>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BatchResult> + Send + 'static,
{
    fn handle_batch<'a>(&'a self, batch: &'a [Message]) -> BoxFuture<'a, BatchResult> {
        Box::pin(async move {
            let mut typed = Vec::with_capacity(batch.len());
            for (index, message) in batch.iter().enumerate() {
                match message.decode::<T>() {
                    Ok(decoded) => typed.push(decoded),
                    Err(e) if index == 0 => {
                        return Err(BatchError::at(
                            0,
                            HandlerError::invalid(format!("undecodable value: {e}")),
                        ));
                    }
                    // Handle the decodable prefix first; the bad record then fails alone.
                    Err(_) => break,
                }
            }
            let decoded = typed.len();
            (self.handler)(typed).await?;
            if decoded < batch.len() {
                let e = batch[decoded].decode::<T>().err().map(|e| e.to_string());
                return Err(BatchError::at(
                    decoded,
                    HandlerError::invalid(format!("undecodable value: {}", e.unwrap_or_default())),
                ));
            }
            Ok(())
        })
    }
}
