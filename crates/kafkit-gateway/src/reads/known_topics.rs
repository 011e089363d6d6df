//! `KnownTopics`: with topic auto-creation off, a record for a missing topic would wait in
//! librdkafka's queue until its delivery timeout. The gateway looks the topic up first (a
//! metadata request that never creates it) and answers 404 at once; topics found are cached
//! with their partition counts, so the lookup costs one round trip per topic and TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kafkit::Admin;
use tokio::time::Instant;

use crate::http::error::ApiError;

/// How long a topic's existence and partition count are trusted.
pub const TTL: Duration = Duration::from_secs(60);

/// Existence checks for topics before producing to them.
#[derive(Debug)]
pub struct KnownTopics {
    /// False when the broker creates topics on use: nothing to check then.
    enabled: bool,
    partitions: Mutex<HashMap<String, (i32, Instant)>>,
}

impl KnownTopics {
    /// Checks topics only when `auto_create` is off.
    pub fn new(auto_create: bool) -> Self {
        KnownTopics {
            enabled: !auto_create,
            partitions: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` when `topic` (and `partition`, if given) exists or checks are off; 404
    /// `unknown_topic` / `unknown_partition` otherwise.
    pub async fn check(
        &self,
        admin: &Admin,
        topic: &str,
        partition: Option<i32>,
    ) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let cached = self
            .partitions
            .lock()
            .expect("not poisoned")
            .get(topic)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(count, _)| *count);
        let count = match cached {
            Some(count) => count,
            None => {
                let info = admin
                    .describe_topic(topic)
                    .await
                    .map_err(|error| lookup_error(topic, error))?;
                let count = info.partitions.len() as i32;
                self.partitions
                    .lock()
                    .expect("not poisoned")
                    .insert(topic.to_owned(), (count, Instant::now()));
                count
            }
        };
        match partition {
            Some(p) if p >= count => Err(ApiError::not_found(
                "unknown_partition",
                format!("topic {topic:?} has {count} partitions, there is no partition {p}"),
            )),
            _ => Ok(()),
        }
    }
}

/// The answer for a failed topic lookup: 404 when the topic does not exist.
pub fn lookup_error(topic: &str, error: kafkit::Error) -> ApiError {
    if error.code() == kafkit::error::ErrorCode::UnknownTopic {
        ApiError::not_found("unknown_topic", format!("topic {topic:?} does not exist"))
    } else {
        ApiError::from(error)
    }
}
