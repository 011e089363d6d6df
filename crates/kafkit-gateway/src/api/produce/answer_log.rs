//! `AnswerLog`: idempotency answers and claims shared by every gateway replica through a
//! compacted Kafka topic, so replicas behind a load balancer behave as one (Kafka is the only
//! store).
//!
//! Each stored answer is also written to the topic, keyed by kind, scope (API key) and
//! idempotency key, before the client gets it. Every replica reads the topic at start and
//! then follows it, learning the answers the others gave.
//!
//! A replica about to produce for a key first appends a *claim* of it under the same topic key
//! ([`AnswerLog::claim`]), then reads the topic up to that claim: every answer and claim
//! written before it is then known. The log orders concurrent claims, so every replica agrees
//! on which one holds the key ([`LogClaims`]); only its replica produces. The holder then writes
//! the answer, or a *release* if the send failed, and a holder that crashed is passed over once
//! its claim expires (a delivery timeout and a margin later). Whatever cannot be written or read
//! in time fails closed: the request is refused (503), never produced without knowing.
//!
//! Compaction keeps the newest entry per key (an answer or release supersedes the claim); an
//! answer carries its expiry, and expired ones are skipped when read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafkit::reader::{Limits, Start};
use kafkit::{Kafka, Producer, Record, TopicSpec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::api::produce::log_claims::{LogClaims, Mark};

/// Default topic of the answers.
pub const DEFAULT_TOPIC: &str = "_kafkit-idempotency";

/// Longest a claim waits to be stored, then to be read back, before the request is refused.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a claim outlives the delivery timeout: its holder writes the answer (or release)
/// after the delivery report, which comes at the latest at the delivery timeout.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

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
    /// Who holds each key being worked on, as read so far.
    claims: Arc<Mutex<LogClaims>>,
    /// How long a claim holds its key.
    claim_ttl: Duration,
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
    /// `learn`, and follows it from then on (`learn` gets each new answer too). Claims are
    /// written through `producer` and hold their key for `kafka`'s delivery timeout and a
    /// margin.
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
        let claims = Arc::new(Mutex::new(LogClaims::default()));
        let mut reading = kafka.reader()?.open(topic, None, Start::Beginning).await?;
        let (progress, read) = watch::channel(reading.watermarks(0).map_or(0, |(low, _)| low));
        let learn = {
            let claims = Arc::clone(&claims);
            move |message: &kafkit::Message| {
                let Some(raw) = message.key_str() else {
                    return;
                };
                let Some((kind, scope, key)) = parse_key(raw) else {
                    return;
                };
                let mut claims = claims.lock().expect("not poisoned");
                match message.json::<Mark>() {
                    Ok(mark) => claims.mark(raw, mark, now_ms()),
                    Err(_) => {
                        claims.answered(raw);
                        drop(claims);
                        learn(&Learnt {
                            kind,
                            scope,
                            key,
                            message,
                        });
                    }
                }
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
            claims,
            claim_ttl: kafka.config().delivery_timeout + CLAIM_MARGIN,
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
            expires_ms: now_ms().saturating_add(millis(ttl)),
            answer,
        };
        let record = Record::to(&self.topic)
            .key(log_key(kind, scope, key))
            .json(&stored)?;
        self.producer.send(record).await.map(|_| ())
    }

    /// Claims `key` of `scope` for this replica: appends a claim, then reads the topic up to
    /// it. Held when it is the key's first live claim in the log (an answer read before it is
    /// the caller's to find in its cache); refused when another replica's claim came first;
    /// unknown when the claim could not be stored or read back in time.
    pub async fn claim(&self, kind: Kind, scope: &str, key: &str) -> Standing {
        let mut held = LogClaim {
            log: self.clone(),
            key: log_key(kind, scope, key),
            by: uuid::Uuid::new_v4().simple().to_string(),
            armed: true,
        };
        let mark = Mark::Claimed {
            by: held.by.clone(),
            expires_ms: now_ms().saturating_add(millis(self.claim_ttl)),
        };
        // Dropped from here on (a timeout, the request given up), `held` releases the claim:
        // written after it by the same producer, the release lands after it in the log.
        let stored = match Record::to(&self.topic).key(held.key.clone()).json(&mark) {
            Ok(record) => tokio::time::timeout(CLAIM_TIMEOUT, self.producer.send(record)).await,
            Err(error) => Ok(Err(error)),
        };
        let offset = match stored {
            Ok(Ok(delivery)) => delivery.offset,
            Ok(Err(error)) => {
                tracing::warn!(%error, topic = %self.topic, "writing an idempotency claim");
                held.armed = false;
                return Standing::Unknown;
            }
            Err(_) => {
                tracing::warn!(topic = %self.topic, "an idempotency claim not stored in time");
                return Standing::Unknown;
            }
        };
        let mut read = self.read.clone();
        let caught_up = read.wait_for(|read| *read > offset);
        if !matches!(
            tokio::time::timeout(CLAIM_TIMEOUT, caught_up).await,
            Ok(Ok(_))
        ) {
            tracing::warn!(topic = %self.topic, offset, "an idempotency claim not read back in time");
            return Standing::Unknown;
        }
        let holds = self
            .claims
            .lock()
            .expect("not poisoned")
            .holds(&held.key, &held.by);
        if holds {
            Standing::Held(held)
        } else {
            Standing::Taken
        }
    }

    /// Writes `mark` for `key` in a task of its own (a release, from a drop).
    fn mark_in_background(&self, key: String, mark: Mark) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (the process is ending): the claim expires instead.
            return;
        };
        let log = self.clone();
        runtime.spawn(async move {
            let sent = match Record::to(&log.topic).key(key).json(&mark) {
                Ok(record) => log.producer.send(record).await.map(drop),
                Err(error) => Err(error),
            };
            if let Err(error) = sent {
                tracing::warn!(%error, topic = %log.topic, "releasing an idempotency claim");
            }
        });
    }
}

/// What claiming a key through the log decided.
#[derive(Debug)]
pub enum Standing {
    /// This replica holds the key: produce, then answer (or drop the claim to release it).
    Held(LogClaim),
    /// Another replica's claim came first and is still live: do not produce.
    Taken,
    /// The claim could not be stored or read back in time: do not produce (fail closed).
    Unknown,
}

/// A claim this replica wrote; dropped before [`LogClaim::answered`], it writes its release.
#[derive(Debug)]
pub struct LogClaim {
    log: AnswerLog,
    key: String,
    by: String,
    armed: bool,
}

impl LogClaim {
    /// The key's answer was written: it supersedes the claim, no release is due.
    pub fn answered(mut self) {
        self.armed = false;
    }
}

impl Drop for LogClaim {
    fn drop(&mut self) {
        if self.armed {
            let mark = Mark::Released {
                by: std::mem::take(&mut self.by),
            };
            self.log
                .mark_in_background(std::mem::take(&mut self.key), mark);
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
