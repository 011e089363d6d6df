//! The third phase of a replay: the planned copies published, each delivery's outcome kept.

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::record::Record;

use super::plan::At;

/// What became of one copy: where its dead-letter record is, its destination, and the
/// broker's answer.
#[derive(Debug)]
pub(super) struct Published {
    pub at: At,
    pub topic: String,
    pub result: std::result::Result<(), Error>,
}

/// Publishes `copies` together (one batch, deliveries awaited at once), without kafkit's
/// standard headers: a replayed record keeps the headers it had.
pub(super) async fn publish(
    config: &KafkaConfig,
    copies: Vec<(At, Record)>,
) -> Result<Vec<Published>> {
    let producer = Producer::builder(config).standard_headers(false).build()?;
    let (origins, records): (Vec<At>, Vec<Record>) = copies.into_iter().unzip();
    let topics: Vec<String> = records.iter().map(|r| r.topic.clone()).collect();
    let results = producer.send_batch(records).await;
    producer.shutdown().await?;
    Ok(origins
        .into_iter()
        .zip(topics)
        .zip(results)
        .map(|((at, topic), result)| Published {
            at,
            topic,
            result: result.map(drop),
        })
        .collect())
}
