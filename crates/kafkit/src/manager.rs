//! [`Manager`] (a NestJS-style Kafka manager): named producers and consumers, their health, and one
//! call that shuts all of them down in order (consumers first, so their last dead-letter
//! records still have a producer, then producers, flushed).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consumer::Consumer;
use crate::error::{Error, Result};
use crate::health::HealthReport;
use crate::producer::Producer;

/// A started consumer and the task running it.
type RunningConsumer = (Arc<Consumer>, JoinHandle<Result<()>>);

/// Holds the process's Kafka clients by name.
#[derive(Debug, Default)]
pub struct Manager {
    producers: Mutex<BTreeMap<String, Producer>>,
    consumers: Mutex<BTreeMap<String, RunningConsumer>>,
    shutdown: CancellationToken,
}

impl Manager {
    /// An empty manager.
    pub fn new() -> Self {
        Manager::default()
    }

    /// Adds a producer under `name` (replacing one of the same name).
    pub fn add_producer(&self, name: impl Into<String>, producer: Producer) {
        self.producers
            .lock()
            .expect("not poisoned")
            .insert(name.into(), producer);
    }

    /// The producer named `name`.
    pub fn producer(&self, name: &str) -> Option<Producer> {
        self.producers
            .lock()
            .expect("not poisoned")
            .get(name)
            .cloned()
    }

    /// Starts `consumer` in the background under `name`; it runs until [`Manager::shutdown`].
    pub fn start_consumer(&self, name: impl Into<String>, consumer: Consumer) -> Arc<Consumer> {
        let consumer = Arc::new(consumer);
        let running = consumer.clone();
        let token = self.shutdown.clone();
        let task = tokio::spawn(async move { running.run(token.cancelled_owned()).await });
        self.consumers
            .lock()
            .expect("not poisoned")
            .insert(name.into(), (consumer.clone(), task));
        consumer
    }

    /// The consumer named `name`.
    pub fn consumer(&self, name: &str) -> Option<Arc<Consumer>> {
        self.consumers
            .lock()
            .expect("not poisoned")
            .get(name)
            .map(|(c, _)| c.clone())
    }

    /// Names of the producers and consumers.
    pub fn names(&self) -> (Vec<String>, Vec<String>) {
        (
            self.producers
                .lock()
                .expect("not poisoned")
                .keys()
                .cloned()
                .collect(),
            self.consumers
                .lock()
                .expect("not poisoned")
                .keys()
                .cloned()
                .collect(),
        )
    }

    /// Health of every consumer, by name.
    pub fn health(&self) -> BTreeMap<String, HealthReport> {
        self.consumers
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(name, (c, _))| (name.clone(), c.health()))
            .collect()
    }

    /// Stops every consumer (drain, commit, leave), then flushes every producer. Returns the
    /// first error, after trying everything.
    pub async fn shutdown(&self) -> Result<()> {
        self.shutdown.cancel();
        let consumers: Vec<_> = std::mem::take(&mut *self.consumers.lock().expect("not poisoned"))
            .into_iter()
            .collect();
        let mut first_error = None;
        for (name, (_, task)) in consumers {
            let result = task.await.map_err(Error::Task).and_then(|r| r);
            if let Err(error) = result {
                tracing::error!(consumer = %name, %error, "consumer stopped with an error");
                first_error.get_or_insert(error);
            }
        }
        let producers: Vec<_> = std::mem::take(&mut *self.producers.lock().expect("not poisoned"))
            .into_iter()
            .collect();
        for (name, producer) in producers {
            if let Err(error) = producer.shutdown().await {
                tracing::error!(producer = %name, %error, "producer flush failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
