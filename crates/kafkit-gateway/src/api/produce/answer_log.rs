//! `AnswerLog`: idempotency answers shared by every gateway replica through a compacted Kafka
//! topic, so replicas behind a load balancer behave as one (Kafka is the only store).
//!
//! Each stored answer is also written to the topic, keyed by kind, scope (API key) and
//! idempotency key, before the client gets it. Every replica reads the topic at start and
//! then follows it, learning the answers the others gave. A replica about to produce for a key
//! it has no answer for first reads the topic up to its high watermark as of that moment: an
//! answer some replica gave before this request arrived is then known, and replayed instead of
//! producing again. Two duplicates arriving at two replicas at the same instant can still both
//! produce (the claim itself is per process); a retry after an answer cannot.
//!
//! Compaction keeps the newest answer per key; an answer carries its expiry, and expired ones
//! are skipped when read.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafkit::reader::{Limits, Start};
use kafkit::{Kafka, Producer, Record, TopicSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Default topic of the answers.
pub const DEFAULT_TOPIC: &str = "_kafkit-idempotency";

/// Longest a claim waits to read the topic up to its end before going on without it.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3);

/// Which cache an answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request's `Idempotency-Key` answer.
    Request,
    /// A record's `idempotency_key` delivery.
    Record,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Record => "record",
        }
    }
}

/// The shared answers: where they are written, and how far this replica has read them.
#[derive(Clone)]
pub struct AnswerLog {
    topic: String,
    producer: Producer,
    /// Asks the topic's high watermark.
    watermarks: Arc<BaseConsumer>,
    /// The next offset of partition 0 this replica has not read yet.
    read: watch::Receiver<i64>,
}

impl std::fmt::Debug for AnswerLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerLog")
            .field("topic", &self.topic)
            .field("read", &*self.read.borrow())
            .finish_non_exhaustive()
    }
}

/// One answer as written to the topic.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored<T> {
    /// Milliseconds since the epoch after which the answer is no longer replayed.
    expires_ms: u64,
    answer: T,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The topic key of `key` of `scope`: kind, scope and key, newline-separated (keys are
/// visible ASCII, scopes are key names, neither holds a newline).
fn log_key(kind: Kind, scope: &str, key: &str) -> String {
    format!("{}\n{scope}\n{key}", kind.prefix())
}

fn parse_key(raw: &str) -> Option<(Kind, &str, &str)> {
    let (kind, rest) = raw.split_once('\n')?;
    let (scope, key) = rest.split_once('\n')?;
    let kind = match kind {
        "request" => Kind::Request,
        "record" => Kind::Record,
        _ => return None,
    };
    Some((kind, scope, key))
}

impl AnswerLog {
    /// Creates `topic` if missing (one partition, compacted), hands every answer in it to
    /// `learn`, and follows it from then on (`learn` gets each new answer too).
    pub async fn start(
        kafka: &Kafka,
        topic: &str,
        producer: Producer,
        learn: impl Fn(&Learnt<'_>) + Send + 'static,
    ) -> kafkit::Result<Self> {
        let admin = kafka.admin()?;
        admin
            .ensure_topics(&[TopicSpec::new(topic, 1).config("cleanup.policy", "compact")])
            .await?;
        let watermarks: BaseConsumer = kafka
            .config()
            .to_reader_config("kafkit-answer-log")
            .create()
            .map_err(|source| kafkit::Error::ClientCreation {
                client: "answer log",
                source,
            })?;
        let mut reading = kafka.reader()?.open(topic, None, Start::Beginning).await?;
        let (progress, read) = watch::channel(reading.watermarks(0).map_or(0, |(low, _)| low));
        let learn = move |message: &kafkit::Message| {
            if let Some((kind, scope, key)) = message.key_str().and_then(parse_key) {
                learn(&Learnt {
                    kind,
                    scope,
                    key,
                    message,
                });
            }
        };
        // Everything stored before this replica started.
        while let Some(message) = reading.next(&Limits::to_end(usize::MAX)).await? {
            learn(&message);
            progress.send_replace(message.offset + 1);
        }
        if let Some((_, high)) = reading.watermarks(0) {
            progress.send_modify(|read| *read = (*read).max(high));
        }
        tokio::spawn({
            let topic = topic.to_owned();
            async move {
                loop {
                    match reading.next(&Limits::follow()).await {
                        Ok(Some(message)) => {
                            learn(&message);
                            progress.send_replace(message.offset + 1);
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(%error, topic, "reading the idempotency answers");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    if progress.is_closed() {
                        return;
                    }
                }
            }
        });
        Ok(AnswerLog {
            topic: topic.to_owned(),
            producer,
            watermarks: Arc::new(watermarks),
            read,
        })
    }

    /// Writes `answer` for `key` of `scope`, replayed until `ttl` from now; returns once the
    /// broker stored it.
    pub async fn publish<T: Serialize>(
        &self,
        kind: Kind,
        scope: &str,
        key: &str,
        answer: &T,
        ttl: Duration,
    ) -> kafkit::Result<()> {
        let stored = Stored {
            expires_ms: now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            answer,
        };
        let record = Record::to(&self.topic)
            .key(log_key(kind, scope, key))
            .json(&stored)?;
        self.producer.send(record).await.map(|_| ())
    }

    /// Reads the topic up to its high watermark as of now, so every answer stored before this
    /// call is known. Bounded by a few seconds: past them, the caller goes on without.
    pub async fn catch_up(&self) -> kafkit::Result<()> {
        let (consumer, topic) = (Arc::clone(&self.watermarks), self.topic.clone());
        let high = tokio::task::spawn_blocking(move || {
            consumer.fetch_watermarks(&topic, 0, CATCH_UP_TIMEOUT)
        })
        .await
        .map_err(kafkit::Error::Task)?
        .map_err(|source| kafkit::Error::Consume {
            operation: format!("ask the high watermark of {}", self.topic),
            source,
        })?
        .1;
        let mut read = self.read.clone();
        match tokio::time::timeout(CATCH_UP_TIMEOUT, read.wait_for(|read| *read >= high)).await {
            Ok(Ok(_)) => Ok(()),
            _ => {
                tracing::warn!(topic = %self.topic, high, "idempotency answers not read up to their end in time");
                Ok(())
            }
        }
    }
}

/// One answer read from the topic: whose, and the record holding it.
#[derive(Debug)]
pub struct Learnt<'a> {
    /// Which cache it belongs to.
    pub kind: Kind,
    /// The API key's scope.
    pub scope: &'a str,
    /// The idempotency key.
    pub key: &'a str,
    message: &'a kafkit::Message,
}

impl Learnt<'_> {
    /// The answer and how much longer it is replayed, unless it expired or does not parse.
    pub fn answer<T: DeserializeOwned>(&self) -> Option<(T, Duration)> {
        let stored = self.message.json::<Stored<T>>().ok()?;
        let now = now_ms();
        (stored.expires_ms > now).then(|| {
            (
                stored.answer,
                Duration::from_millis(stored.expires_ms - now),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_kind_scope_and_key() {
        let raw = log_key(Kind::Record, "key#2", "orders\norder-1");
        // A record key holds its topic before a newline: the scope is the first field after
        // the kind, the rest is the key.
        assert_eq!(
            parse_key(&raw),
            Some((Kind::Record, "key#2", "orders\norder-1"))
        );
        assert_eq!(parse_key("other\na\nb"), None);
        assert_eq!(parse_key("request\nonly-scope"), None);
    }
}
