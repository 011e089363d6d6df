//! What a pipeline does with each input record: its [`Transform`], called until the record
//! succeeds, is dead-lettered in the transaction, or is skipped, per the route's policy.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use super::ExactlyOnce;
use crate::dead_letter::Failure;
use crate::handler::HandlerError;
use crate::policy::{FailurePolicy, Verdict, verdict};
use crate::record::{Message, Record};

/// What a transform answers for one input record: the records to write for it (none is fine).
pub type TransformResult = std::result::Result<Vec<Record>, HandlerError>;

/// Turns one input record into output records. Register a closure with
/// [`ExactlyOnce::route`], or implement this for full control over decoding.
pub trait Transform: Send + Sync + 'static {
    /// The output records of `message`. Called for records of one partition in offset order;
    /// may be called again for the same record when its transaction is aborted.
    fn transform<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, TransformResult>;
}

/// A closure over decoded JSON values as a [`Transform`]; an undecodable value is invalid.
pub(super) struct Typed<T, F> {
    pub(super) transform: F,
    pub(super) _value: PhantomData<fn() -> T>,
}

impl<T, F, Fut> Transform for Typed<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TransformResult> + Send + 'static,
{
    fn transform<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, TransformResult> {
        Box::pin(async move {
            let typed = message
                .decode()
                .map_err(|e| HandlerError::invalid(format!("undecodable value: {e}")))?;
            (self.transform)(typed).await
        })
    }
}

/// An input topic's transform and its failure policy.
#[derive(Clone)]
pub(super) struct TransformRoute {
    pub(super) transform: Arc<dyn Transform>,
    pub(super) failure: FailurePolicy,
}

impl std::fmt::Debug for TransformRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformRoute")
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl ExactlyOnce {
    /// The output records of a batch, dead-letter copies included. `None` when shutdown came
    /// while a record waited for its next attempt: nothing of the batch is written.
    /// A record of `unreadable` (index in `batch`, reason) is invalid without being
    /// transformed.
    pub(super) async fn transform<S: Future<Output = ()>>(
        &self,
        batch: &[Message],
        unreadable: &BTreeMap<usize, String>,
        shutdown: &mut Pin<Box<S>>,
    ) -> Option<Vec<Record>> {
        let mut outputs = Vec::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            let Some(route) = self.routes.get(&message.topic) else {
                tracing::error!(topic = %message.topic, "record from a topic without transform");
                continue;
            };
            let unreadable = unreadable.get(&index).map(String::as_str);
            if !self
                .settle(route, message, unreadable, shutdown, &mut outputs)
                .await
            {
                return None;
            }
        }
        Some(outputs)
    }

    /// Transforms one record until it succeeds, is dead-lettered or skipped, adding what it
    /// writes to `outputs`; a record `unreadable` (saying why) is invalid as it is. False when
    /// shutdown interrupted a wait between attempts.
    pub(super) async fn settle<S: Future<Output = ()>>(
        &self,
        route: &TransformRoute,
        message: &Message,
        unreadable: Option<&str>,
        shutdown: &mut Pin<Box<S>>,
        outputs: &mut Vec<Record>,
    ) -> bool {
        let mut attempts = 0u32;
        let (error, verdict) = loop {
            attempts += 1;
            let result = match unreadable {
                Some(reason) => Err(HandlerError::invalid(reason)),
                None => attempt(route, message).await,
            };
            let error = match result {
                Ok(records) => {
                    outputs.extend(records);
                    return true;
                }
                Err(error) => error,
            };
            match verdict(error.kind(), attempts, &route.failure) {
                Verdict::Retry => {}
                settled => break (error, settled),
            }
            tracing::debug!(parent: &record_span(message), attempts, error = error.message(), "retrying");
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return false,
                () = tokio::time::sleep(route.failure.retry_delay(attempts, &error)) => {}
            }
        };
        // Only a failed record gets a span (a span per record costs as much as the rest of the
        // per-record work, see ConsumerOptions::record_spans).
        let _span = record_span(message).entered();
        // A pipeline reads no retry topics: what would go to one is dead-lettered.
        match (&route.failure.dead_letter, verdict) {
            (Some(policy), Verdict::DeadLetter | Verdict::RetryTopic(_)) => {
                tracing::warn!(
                    error = error.message(),
                    attempts,
                    "record dead-lettered in the transaction"
                );
                let failure = Failure {
                    kind: error.kind(),
                    message: error.message().to_owned(),
                    attempts,
                };
                outputs.push(policy.record(message, &self.group, &failure));
            }
            (_, Verdict::Drop | Verdict::DeadLetter | Verdict::RetryTopic(_)) => tracing::error!(
                error = error.message(),
                "no dead-letter topic: record dropped after failure"
            ),
            (_, Verdict::Skip | Verdict::Retry) => {
                tracing::info!(error = error.message(), "record skipped")
            }
        }
        true
    }
}

/// One call of `route`'s transform on `message`; a panic, while it builds its future or in
/// the future, is the record's failure ([`HandlerError::panic`]) rather than the pipeline's.
async fn attempt(route: &TransformRoute, message: &Message) -> TransformResult {
    match std::panic::catch_unwind(AssertUnwindSafe(|| route.transform.transform(message))) {
        Ok(future) => AssertUnwindSafe(future)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(HandlerError::panic(&*panic))),
        Err(panic) => Err(HandlerError::panic(&*panic)),
    }
}

/// The span of kafkit's events about a failed record.
fn record_span(message: &Message) -> tracing::Span {
    tracing::info_span!(
        "record",
        topic = %message.topic,
        partition = message.partition,
        offset = message.offset
    )
}
