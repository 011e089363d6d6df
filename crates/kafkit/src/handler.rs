//! Handlers: what the runtime calls for each record, and [`HandlerError`], whose kind tells the
//! runtime what to do with a failure (retry, dead-letter, or skip).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::codec::{Decoder, Json};
use crate::record::Message;

/// What kind of failure a handler reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// May succeed later (a dependency is down, a timeout): retried with backoff, then
    /// dead-lettered when attempts run out.
    Transient,
    /// Will never succeed: dead-lettered at once.
    Permanent,
    /// The record itself is bad (undecodable, fails validation): never retried; dead-lettered
    /// or skipped per the topic's [`InvalidPolicy`](crate::router::InvalidPolicy).
    Invalid,
    /// The handler chose to ignore the record: it is marked done.
    Skip,
    /// The handler panicked: a bug, not a dependency outage. Treated as permanent (dead-lettered
    /// at once, counted against the circuit breaker); the partition goes on.
    Panic,
}

impl ErrorKind {
    /// The value of the `error-kind` dead-letter header.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Skip => "skip",
            ErrorKind::Panic => "panic",
        }
    }
}

/// A handler's failure: a kind and a message.
///
/// Any `std::error::Error + Send + Sync` (and `anyhow::Error`, and a `String` message)
/// converts into a transient error, so `?` inside a handler retries by default; use
/// [`HandlerError::permanent`] or [`HandlerError::invalid`] to say otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    kind: ErrorKind,
    message: String,
    /// No next attempt before this long (an HTTP `Retry-After`, a rate limit's reset).
    retry_after: Option<Duration>,
}

impl HandlerError {
    /// A failure that may go away: retry.
    pub fn transient(message: impl fmt::Display) -> Self {
        HandlerError {
            kind: ErrorKind::Transient,
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// A failure that will not go away: dead-letter now.
    pub fn permanent(message: impl fmt::Display) -> Self {
        HandlerError {
            kind: ErrorKind::Permanent,
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// The record is invalid: never retried.
    pub fn invalid(message: impl fmt::Display) -> Self {
        HandlerError {
            kind: ErrorKind::Invalid,
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// Ignore this record and move on.
    pub fn skip(reason: impl fmt::Display) -> Self {
        HandlerError {
            kind: ErrorKind::Skip,
            message: reason.to_string(),
            retry_after: None,
        }
    }

    /// The handler panicked with `payload` (the runtime catches the panic per record).
    pub fn panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-text panic payload".to_owned());
        HandlerError {
            kind: ErrorKind::Panic,
            message: format!("handler panicked: {message}"),
            retry_after: None,
        }
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Asks for the next attempt no sooner than `delay` from now (an HTTP `Retry-After`, a
    /// rate limit's reset): the runtime waits the longer of this and the retry policy's
    /// backoff. Only a transient failure is retried; the wait still counts as an attempt.
    /// In key order only the record's key waits; in partition order its partition does.
    #[must_use]
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The wait asked for by [`HandlerError::retry_after`].
    pub fn retry_after_hint(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind.as_str(), self.message)
    }
}

// Bounded on `Into<Box<dyn Error>>` rather than on `Error` so that `anyhow::Error` (which is not
// an `Error` itself but converts into the box) works with `?` as well.
impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::transient(error.into())
    }
}

/// The result of handling one record.
pub type HandlerResult = Result<(), HandlerError>;

/// Handles raw records of one topic. Implement it directly for full control, or register a
/// closure through [`Router::register`](crate::router::Router::register) for typed values.
pub trait Handler: Send + Sync + 'static {
    /// Processes one record. Called for records of one partition in offset order.
    fn handle<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, HandlerResult>;
}

/// Checks a decoded value; an `Err` makes the record invalid.
pub type Validator<T> = Arc<dyn Fn(&T) -> Result<(), String> + Send + Sync>;

impl<T, F, C> std::fmt::Debug for Typed<T, F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Typed")
    }
}

/// Adapts a closure over `Message<T>` into a [`Handler`]: decodes (JSON unless another
/// [`Codec`](crate::codec::Codec) is given), validates, calls.
pub(crate) struct Typed<T, F, C = Json> {
    handler: F,
    codec: C,
    validator: Option<Validator<T>>,
    _value: PhantomData<fn() -> T>,
}

impl<T, F> Typed<T, F> {
    /// Wraps `handler`; values are JSON.
    pub fn new(handler: F) -> Self {
        Typed::with_codec(Json, handler)
    }
}

impl<T, F, C> Typed<T, F, C> {
    /// Wraps `handler`; values are decoded by `codec`.
    pub fn with_codec(codec: C, handler: F) -> Self {
        Typed {
            handler,
            codec,
            validator: None,
            _value: PhantomData,
        }
    }

    /// Validates each decoded value before the handler sees it.
    #[must_use]
    pub fn validate(mut self, validator: Validator<T>) -> Self {
        self.validator = Some(validator);
        self
    }
}

impl<T, F, Fut, C> Handler for Typed<T, F, C>
where
    T: Send + 'static,
    C: Decoder<T>,
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn handle<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, HandlerResult> {
        Box::pin(async move {
            let typed = decode(message, &self.codec)?;
            if let Some(validator) = &self.validator {
                validator(&typed.value).map_err(|reason| {
                    HandlerError::invalid(format!("validation failed: {reason}"))
                })?;
            }
            (self.handler)(typed).await
        })
    }
}

/// Shared state handed to a handler registered with
/// [`Router::register_with_state`](crate::router::Router::register_with_state), as axum's
/// `State` extractor does: the runtime clones it per call (share an `Arc` or a pool handle).
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

/// A typed closure with shared state: decodes JSON, then calls `handler(State(state), message)`.
pub(crate) struct Stateful<S, T, F> {
    state: S,
    handler: F,
    _value: PhantomData<fn() -> T>,
}

impl<S, T, F> std::fmt::Debug for Stateful<S, T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stateful")
    }
}

impl<S, T, F> Stateful<S, T, F> {
    /// Wraps `handler` with `state`.
    pub fn new(state: S, handler: F) -> Self {
        Stateful {
            state,
            handler,
            _value: PhantomData,
        }
    }
}

impl<S, T, F, Fut> Handler for Stateful<S, T, F>
where
    S: Clone + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
    F: Fn(State<S>, Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn handle<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, HandlerResult> {
        Box::pin(async move {
            let typed = decode(message, &Json)?;
            (self.handler)(State(self.state.clone()), typed).await
        })
    }
}

/// A typed handler as a type: state lives in `self`, no closure and no clones.
///
/// ```
/// use kafkit::{handler::HandlerResult, Message, Router, handler::TypedHandler};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// struct Billing { fee: u64 }
///
/// impl TypedHandler<Order> for Billing {
///     async fn handle(&self, order: Message<Order>) -> HandlerResult {
///         println!("charging {} for order {}", self.fee, order.value.id);
///         Ok(())
///     }
/// }
///
/// let mut router = Router::new();
/// router.register_typed("orders", Billing { fee: 3 });
/// ```
pub trait TypedHandler<T>: Send + Sync + 'static {
    /// Processes one decoded record. Called for records of one partition in offset order.
    fn handle(&self, message: Message<T>) -> impl Future<Output = HandlerResult> + Send;
}

/// Adapts a [`TypedHandler`] into a [`Handler`]: decodes (JSON unless another codec is given;
/// undecodable is invalid).
pub(crate) struct ByType<T, H, C = Json> {
    handler: H,
    codec: C,
    _value: PhantomData<fn() -> T>,
}

impl<T, H, C> std::fmt::Debug for ByType<T, H, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ByType")
    }
}

impl<T, H> ByType<T, H> {
    /// Wraps `handler`; values are JSON.
    pub fn new(handler: H) -> Self {
        ByType::with_codec(Json, handler)
    }
}

impl<T, H, C> ByType<T, H, C> {
    /// Wraps `handler`; values are decoded by `codec`.
    pub fn with_codec(codec: C, handler: H) -> Self {
        ByType {
            handler,
            codec,
            _value: PhantomData,
        }
    }
}

impl<T, H, C> Handler for ByType<T, H, C>
where
    T: Send + 'static,
    C: Decoder<T>,
    H: TypedHandler<T>,
{
    fn handle<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, HandlerResult> {
        Box::pin(async move {
            let typed = decode(message, &self.codec)?;
            self.handler.handle(typed).await
        })
    }
}

/// Decodes a record's value; an undecodable one is invalid input (never retried).
fn decode<T, C: Decoder<T>>(message: &Message, codec: &C) -> Result<Message<T>, HandlerError> {
    message
        .decode_with(codec)
        .map_err(|e| HandlerError::invalid(format!("undecodable value: {e}")))
}

impl<F> std::fmt::Debug for Raw<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Raw")
    }
}

/// Adapts a closure over raw `Message` into a [`Handler`].
pub(crate) struct Raw<F>(pub F);

impl<F, Fut> Handler for Raw<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn handle<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, HandlerResult> {
        Box::pin((self.0)(message.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(value: &str) -> Message {
        Message {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            timestamp: None,
            key: Some(b"k".to_vec()),
            headers: vec![],
            value: Some(value.as_bytes().to_vec()),
            attempt: 0,
        }
    }

    #[derive(serde::Deserialize)]
    struct Order {
        qty: i32,
    }

    #[tokio::test]
    async fn typed_handlers_decode_validate_and_classify() {
        let handler = Typed::new(|m: Message<Order>| async move {
            assert_eq!(m.offset, 7);
            if m.value.qty == 13 {
                Err(HandlerError::permanent("unlucky"))
            } else {
                Ok(())
            }
        })
        .validate(Arc::new(|o: &Order| {
            if o.qty > 0 {
                Ok(())
            } else {
                Err("qty must be positive".into())
            }
        }));
        assert_eq!(handler.handle(&raw(r#"{"qty": 2}"#)).await, Ok(()));
        let bad_json = handler.handle(&raw("{oops")).await.unwrap_err();
        assert_eq!(bad_json.kind(), ErrorKind::Invalid);
        let invalid = handler.handle(&raw(r#"{"qty": 0}"#)).await.unwrap_err();
        assert_eq!(invalid.kind(), ErrorKind::Invalid);
        assert!(invalid.message().contains("qty must be positive"));
        let permanent = handler.handle(&raw(r#"{"qty": 13}"#)).await.unwrap_err();
        assert_eq!(permanent.kind(), ErrorKind::Permanent);
    }

    #[tokio::test]
    async fn other_codecs_decode_text_and_bytes() {
        let text = Typed::with_codec(crate::codec::Text, |m: Message<String>| async move {
            assert_eq!(m.value, "plain words");
            Ok(())
        });
        assert_eq!(text.handle(&raw("plain words")).await, Ok(()));
        let mut binary = raw("");
        binary.value = Some(vec![0xff, 0x00]);
        let invalid = text.handle(&binary).await.unwrap_err();
        assert_eq!(invalid.kind(), ErrorKind::Invalid);

        let bytes = Typed::with_codec(crate::codec::Bytes, |m: Message<Vec<u8>>| async move {
            assert_eq!(m.value, [0xff, 0x00]);
            Ok(())
        });
        assert_eq!(bytes.handle(&binary).await, Ok(()));
    }

    #[test]
    fn std_errors_are_transient() {
        let error: HandlerError = std::io::Error::other("db down").into();
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert_eq!(error.to_string(), "transient error: db down");
    }

    #[tokio::test]
    async fn question_mark_works_on_anyhow_errors() {
        fn lookup(id: i32) -> anyhow::Result<i32> {
            anyhow::ensure!(id > 0, "no customer {id}");
            Ok(id)
        }
        let handler = Typed::new(|m: Message<Order>| async move {
            lookup(m.value.qty)?;
            Ok(())
        });
        let error = handler.handle(&raw(r#"{"qty": -4}"#)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert_eq!(error.message(), "no customer -4");
    }
}
