//! [`Router`]: the topic → handler registry (what a KafkaJS service's hand-written
//! registry offers: register, unregister, has, list and clear handlers), with each topic's failure policy.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::batch::{BatchHandler, BatchOptions, BatchResult, TypedBatch};
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerConfig};
use crate::codec::Decoder;
use crate::dead_letter::DeadLetter;
use crate::handler::{ByType, Handler, HandlerResult, Raw, State, Stateful, Typed, TypedHandler};
use crate::policy::{FailurePolicy, InvalidPolicy};
use crate::record::Message;
use crate::retry::RetryPolicy;
use crate::retry_topic::RetryTopics;

/// In which order a topic's records are handled within a partition (Confluent Parallel
/// Consumer's `ProcessingOrder`). Offsets are committed the same way in every order: only
/// what is done, never past a record that is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingOrder {
    /// One record of a partition at a time, in offset order (the default).
    #[default]
    Partition,
    /// Records of one key in offset order and one at a time; records of different keys of the
    /// same partition concurrently, up to the route's in-flight bound. Records without a key
    /// are each their own key.
    Key,
    /// Every record on its own, concurrently, up to the in-flight bound.
    Unordered,
}

/// Default bound on records in flight per partition in key and unordered order.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100;
/// Default bound on the bytes (keys and values) of records in flight per partition in key
/// and unordered order.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// How a topic's records are handed over.
#[derive(Clone)]
pub enum Route {
    /// One record at a time.
    Single(Arc<dyn Handler>),
    /// In batches.
    Batch(Arc<dyn BatchHandler>, BatchOptions),
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Single(_) => f.write_str("Single"),
            Route::Batch(_, options) => write!(f, "Batch({options:?})"),
        }
    }
}

/// A topic's handler and failure policy.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The handler.
    pub route: Route,
    /// Retries, dead letters and invalid records.
    pub failure: FailurePolicy,
    /// Circuit breaker shared by the topic's partitions.
    pub circuit_breaker: Option<Arc<CircuitBreaker>>,
    /// Order of handling within a partition.
    pub order: ProcessingOrder,
    /// Records in flight per partition at most, in key and unordered order.
    pub max_in_flight: usize,
    /// Bytes (keys and values) of records in flight per partition at most, in key and
    /// unordered order; one record is always let through, however large.
    pub max_in_flight_bytes: usize,
    /// For the registration of a retry topic: the tier it reads (see [`Router::with_retry_tiers`]).
    pub(crate) tier: Option<RetryTier>,
}

/// The tier a retry topic's registration reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetryTier {
    /// The topic whose failures it holds.
    pub source: String,
    /// Its number, 1 for the first.
    pub number: usize,
}

impl Registration {
    fn new(route: Route) -> Self {
        Registration {
            route,
            failure: FailurePolicy::default(),
            circuit_breaker: None,
            order: ProcessingOrder::Partition,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            tier: None,
        }
    }

    /// The topics `topic`'s route copies records to: its dead-letter topic and retry topics.
    pub(crate) fn copy_topics(&self, topic: &str) -> Vec<String> {
        let mut topics: Vec<String> = self
            .failure
            .retry_topics
            .as_ref()
            .map(|tiers| tiers.topics_for(topic))
            .unwrap_or_default();
        topics.extend(
            self.failure
                .dead_letter
                .as_ref()
                .map(|d| d.topic_for(topic)),
        );
        topics
    }

    /// Sets the retry policy of transient failures.
    pub fn retry(&mut self, policy: RetryPolicy) -> &mut Self {
        self.failure.retry(policy);
        self
    }

    /// Sets the dead-letter policy (default `{topic}.dlq`).
    pub fn dead_letter(&mut self, dead_letter: DeadLetter) -> &mut Self {
        self.failure.dead_letter(dead_letter);
        self
    }

    /// No dead-letter topic: exhausted and invalid records are logged and skipped.
    pub fn no_dead_letter(&mut self) -> &mut Self {
        self.failure.no_dead_letter();
        self
    }

    /// Sets what happens to invalid records.
    pub fn on_invalid(&mut self, policy: InvalidPolicy) -> &mut Self {
        self.failure.on_invalid(policy);
        self
    }

    /// After the in-place retries, sends transient failures through retry topics
    /// (`{topic}.retry.{n}`) before the dead-letter topic, so that a failing record holds
    /// back neither its partition nor its key while it waits. The consumer also reads the
    /// retry topics, with this handler; see [`crate::retry_topic`]. Single-record routes only.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kafkit::{Message, RetryPolicy, Router, retry_topic::RetryTopics};
    ///
    /// let mut router = Router::new();
    /// router
    ///     .register("orders", |_: Message<serde_json::Value>| async { Ok(()) })
    ///     .retry(RetryPolicy::none())
    ///     .retry_topics(RetryTopics::new([Duration::from_secs(10), Duration::from_secs(60)]));
    /// ```
    pub fn retry_topics(&mut self, tiers: RetryTopics) -> &mut Self {
        self.failure.retry_topics(tiers);
        self
    }

    /// Sets the order of handling within a partition (default [`ProcessingOrder::Partition`]).
    pub fn order(&mut self, order: ProcessingOrder) -> &mut Self {
        self.order = order;
        self
    }

    /// Bounds the records in flight per partition in key and unordered order (at least 1).
    pub fn max_in_flight(&mut self, records: usize) -> &mut Self {
        self.max_in_flight = records.max(1);
        self
    }

    /// Bounds the bytes of records in flight per partition in key and unordered order.
    pub fn max_in_flight_bytes(&mut self, bytes: usize) -> &mut Self {
        self.max_in_flight_bytes = bytes.max(1);
        self
    }

    /// Guards the handler with a circuit breaker.
    pub fn circuit_breaker(&mut self, config: CircuitBreakerConfig) -> &mut Self {
        self.circuit_breaker = Some(Arc::new(CircuitBreaker::new(config)));
        self
    }
}

/// The topic → handler registry a consumer runs.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: BTreeMap<String, Registration>,
}

impl Router {
    /// An empty registry.
    pub fn new() -> Self {
        Router::default()
    }

    /// Handles `topic` with a closure over decoded JSON values.
    ///
    /// ```
    /// # use kafkit::{Message, router::Router};
    /// #[derive(serde::Deserialize)]
    /// struct Order { id: u64 }
    /// let mut router = Router::new();
    /// router.register("orders", |order: Message<Order>| async move {
    ///     println!("order {}", order.value.id);
    ///     Ok(())
    /// });
    /// assert!(router.has_handler("orders"));
    /// ```
    pub fn register<T, F, Fut>(&mut self, topic: impl Into<String>, handler: F) -> &mut Registration
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register_handler(topic, Typed::new(handler))
    }

    /// Like [`Router::register`], validating each value first; a failed validation makes the
    /// record invalid (never retried).
    pub fn register_validated<T, F, Fut, V>(
        &mut self,
        topic: impl Into<String>,
        validator: V,
        handler: F,
    ) -> &mut Registration
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
        V: Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    {
        self.register_handler(topic, Typed::new(handler).validate(Arc::new(validator)))
    }

    /// Like [`Router::register`], with shared state handed to each call as [`State`], the way
    /// axum does it: no clone-twice dance around the closure.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kafkit::{Message, Router, State};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Order { id: u64 }
    /// struct Db;
    /// impl Db { async fn save(&self, _id: u64) {} }
    ///
    /// let mut router = Router::new();
    /// router.register_with_state("orders", Arc::new(Db), |State(db): State<Arc<Db>>, order: Message<Order>| async move {
    ///     db.save(order.value.id).await;
    ///     Ok(())
    /// });
    /// ```
    pub fn register_with_state<S, T, F, Fut>(
        &mut self,
        topic: impl Into<String>,
        state: S,
        handler: F,
    ) -> &mut Registration
    where
        S: Clone + Send + Sync + 'static,
        T: DeserializeOwned + Send + 'static,
        F: Fn(State<S>, Message<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register_handler(topic, Stateful::new(state, handler))
    }

    /// Like [`Router::register`], with values decoded by `codec` instead of JSON: UTF-8
    /// text, raw bytes, or a codec of your own (Avro, Protobuf).
    ///
    /// ```
    /// use kafkit::{Message, Router, codec::Text};
    ///
    /// let mut router = Router::new();
    /// router.register_with_codec("log-lines", Text, |line: Message<String>| async move {
    ///     println!("{}", line.value);
    ///     Ok(())
    /// });
    /// ```
    pub fn register_with_codec<T, C, F, Fut>(
        &mut self,
        topic: impl Into<String>,
        codec: C,
        handler: F,
    ) -> &mut Registration
    where
        T: Send + 'static,
        C: Decoder<T>,
        F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register_handler(topic, Typed::with_codec(codec, handler))
    }

    /// Handles `topic` with a [`TypedHandler`]: a type holding its own state. Values are
    /// JSON; for another codec register
    /// [`ByType::with_codec(codec, handler)`](crate::handler::ByType::with_codec) with
    /// [`Router::register_handler`].
    pub fn register_typed<T, H>(
        &mut self,
        topic: impl Into<String>,
        handler: H,
    ) -> &mut Registration
    where
        T: DeserializeOwned + Send + 'static,
        H: TypedHandler<T>,
    {
        self.register_handler(topic, ByType::new(handler))
    }

    /// Handles `topic` with a closure over raw records (non-JSON data).
    pub fn register_raw<F, Fut>(
        &mut self,
        topic: impl Into<String>,
        handler: F,
    ) -> &mut Registration
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register_handler(topic, Raw(handler))
    }

    /// Handles `topic` with any [`Handler`].
    pub fn register_handler(
        &mut self,
        topic: impl Into<String>,
        handler: impl Handler,
    ) -> &mut Registration {
        self.insert(topic.into(), Route::Single(Arc::new(handler)))
    }

    /// Handles `topic` in batches of decoded JSON values.
    pub fn register_batch<T, F, Fut>(
        &mut self,
        topic: impl Into<String>,
        options: BatchOptions,
        handler: F,
    ) -> &mut Registration
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Vec<Message<T>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = BatchResult> + Send + 'static,
    {
        self.register_batch_handler(topic, options, TypedBatch::new(handler))
    }

    /// Handles `topic` in batches with any [`BatchHandler`].
    pub fn register_batch_handler(
        &mut self,
        topic: impl Into<String>,
        options: BatchOptions,
        handler: impl BatchHandler,
    ) -> &mut Registration {
        self.insert(topic.into(), Route::Batch(Arc::new(handler), options))
    }

    /// Removes `topic`'s handler; true if there was one.
    pub fn unregister(&mut self, topic: &str) -> bool {
        self.routes.remove(topic).is_some()
    }

    /// Whether `topic` has a handler.
    pub fn has_handler(&self, topic: &str) -> bool {
        self.routes.contains_key(topic)
    }

    /// The registered topics, sorted.
    pub fn topics(&self) -> Vec<&str> {
        self.routes.keys().map(String::as_str).collect()
    }

    /// Removes every handler.
    pub fn clear(&mut self) {
        self.routes.clear();
    }

    /// `topic`'s registration.
    pub fn get(&self, topic: &str) -> Option<&Registration> {
        self.routes.get(topic)
    }

    /// Every registration by topic.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Registration)> {
        self.routes.iter().map(|(t, r)| (t.as_str(), r))
    }

    /// This router with a registration for each retry topic of each route that has them:
    /// the route's handler, in partition order (a tier's records are due in about the order
    /// they arrive, so its head's wait is the partition's). Refuses a retry configuration it
    /// cannot run, naming the route.
    pub(crate) fn with_retry_tiers(mut self) -> crate::Result<Router> {
        let mut tiers = Vec::new();
        for (topic, registration) in &self.routes {
            let Some(retry_topics) = &registration.failure.retry_topics else {
                continue;
            };
            let problem = retry_topics.problem().or_else(|| {
                matches!(registration.route, Route::Batch(..)).then(|| {
                    "batch routes retry in place; retry topics are for single-record routes"
                        .to_owned()
                })
            });
            if let Some(problem) = problem {
                return Err(crate::Error::config(
                    "retry_topics",
                    format!("{topic}: {problem}"),
                ));
            }
            for (n, tier_topic) in retry_topics.topics_for(topic).into_iter().enumerate() {
                let mut tier = registration.clone();
                tier.order = ProcessingOrder::Partition;
                tier.tier = Some(RetryTier {
                    source: topic.clone(),
                    number: n + 1,
                });
                tiers.push((tier_topic, tier));
            }
        }
        for (topic, tier) in tiers {
            if self.routes.contains_key(&topic) {
                return Err(crate::Error::config(
                    "retry_topics",
                    format!(
                        "{topic} is both a route and a retry topic of {}",
                        tier.tier.as_ref().expect("a tier").source
                    ),
                ));
            }
            self.routes.insert(topic, tier);
        }
        Ok(self)
    }

    fn insert(&mut self, topic: String, route: Route) -> &mut Registration {
        // Re-registering a topic replaces its handler and resets its policy.
        self.routes.insert(topic.clone(), Registration::new(route));
        self.routes.get_mut(&topic).expect("just inserted")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_operations() {
        let mut router = Router::new();
        router.register("orders", |_: Message<serde_json::Value>| async { Ok(()) });
        router
            .register_raw("blobs", |_: Message| async { Ok(()) })
            .retry(RetryPolicy::none())
            .dead_letter(DeadLetter::template("{topic}_dlt"));
        router.register_batch(
            "events",
            BatchOptions::default(),
            |_: Vec<Message<u32>>| async { Ok(()) },
        );
        assert_eq!(router.topics(), ["blobs", "events", "orders"]);
        assert!(router.has_handler("blobs"));
        let blobs = router.get("blobs").unwrap();
        assert_eq!(blobs.failure.retry.max_attempts, 1);
        assert_eq!(
            blobs
                .failure
                .dead_letter
                .as_ref()
                .unwrap()
                .topic_for("blobs"),
            "blobs_dlt"
        );
        assert!(matches!(
            router.get("events").unwrap().route,
            Route::Batch(..)
        ));
        assert!(router.unregister("blobs"));
        assert!(!router.unregister("blobs"));
        assert!(!router.has_handler("blobs"));
        router.clear();
        assert!(router.topics().is_empty());
    }
}
