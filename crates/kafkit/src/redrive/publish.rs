//! The third phase of a replay: the planned copies published in rounds, each round's
//! deliveries awaited together, as many per round as the [`Ledger`] has room for.

use crate::config::KafkaConfig;
use crate::error::Result;
use crate::producer::Producer;
use crate::record::Record;

use super::plan::At;
use super::settle::{Ledger, Published};

/// Publishes `copies` in order, without kafkit's standard headers (a replayed record keeps the
/// headers it had), into `ledger`. Stops after a round in which a record failed for now, when
/// the commit would have no room for another record's failure, or when `holds` says the
/// replay lost its lock (another process may be replaying); returns where the records not
/// published are.
pub(super) async fn publish(
    config: &KafkaConfig,
    mut copies: Vec<(At, Record)>,
    ledger: &mut Ledger,
    holds: impl Fn() -> bool,
) -> Result<Vec<At>> {
    let producer = Producer::builder(config).standard_headers(false).build()?;
    while !copies.is_empty() {
        let next: Vec<At> = copies.iter().map(|(at, _)| *at).collect();
        let room = ledger.room(&next);
        if room == 0 || !holds() {
            break;
        }
        let round: Vec<(At, Record)> = copies.drain(..room).collect();
        if ledger.record(send(&producer, round).await) {
            break;
        }
    }
    producer.shutdown().await?;
    Ok(copies.into_iter().map(|(at, _)| at).collect())
}

/// Sends `copies` together and awaits their deliveries.
async fn send(producer: &Producer, copies: Vec<(At, Record)>) -> Vec<Published> {
    let (origins, records): (Vec<At>, Vec<Record>) = copies.into_iter().unzip();
    let topics: Vec<String> = records.iter().map(|r| r.topic.clone()).collect();
    let results = producer.send_batch(records).await;
    origins
        .into_iter()
        .zip(topics)
        .zip(results)
        .map(|((at, topic), result)| Published {
            at,
            topic,
            result: result.map(drop),
        })
        .collect()
}
