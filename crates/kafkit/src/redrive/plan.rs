//! The second phase of a replay, without I/O: where each selected record goes back to (or why
//! it cannot), whether the caller may write there, and whether remembering the replay fits
//! the commit-metadata budget.

use std::fmt;

use crate::dead_letter;
use crate::error::{Error, Result};
use crate::record::{Message, Record};
use crate::retry_topic;

use super::REDRIVE_OF;
use super::progress::METADATA_BUDGET;
use super::select::{Committed, Order};

/// The prefix of Spring Kafka's dead-letter headers (`KafkaHeaders.DLT_*`).
const SPRING_DLT_PREFIX: &str = "kafka_dlt-";

/// Where a record of the dead-letter topic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct At {
    pub partition: i32,
    pub offset: i64,
}

impl At {
    pub(super) fn of(message: &Message) -> At {
        At {
            partition: message.partition,
            offset: message.offset,
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.partition, self.offset)
    }
}

/// What a replay will do with the records selected.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// The copies to publish, each with where its dead-letter record is, in the order read.
    pub copies: Vec<(At, Record)>,
    /// Records that cannot go back, with why: passed over for good.
    pub passed_over: Vec<(At, String)>,
    /// Destination topics the caller may not write, sorted; when any, nothing is published.
    pub denied: Vec<String>,
}

/// Plans the replay of `messages` (selected from `topic`, whose progress is `committed`):
/// each goes back to `source` (or, when `None`, to whatever its header names) unless it
/// cannot. Refused with [`Error::ReplayRefused`] when an out-of-order replay could not
/// remember what it replays within [`METADATA_BUDGET`].
pub(super) fn plan(
    topic: &str,
    messages: &[Message],
    source: Option<&str>,
    allowed: &dyn Fn(&str) -> bool,
    committed: &Committed,
    order: Order,
) -> Result<Plan> {
    let mut plan = Plan::default();
    for message in messages {
        match destination(message, source) {
            Ok(destination) => plan
                .copies
                .push((At::of(message), replay_record(message, destination))),
            Err(reason) => plan.passed_over.push((At::of(message), reason)),
        }
    }
    plan.denied = plan
        .copies
        .iter()
        .map(|(_, copy)| copy.topic.clone())
        .filter(|destination| !allowed(destination))
        .collect();
    plan.denied.sort();
    plan.denied.dedup();
    if plan.denied.is_empty() && order == Order::OutOfOrder {
        check_budget(topic, &plan, committed)?;
    }
    Ok(plan)
}

/// Everything an out-of-order replay chose, remembered as replayed, must fit the budget:
/// checked before anything is published, since Kafka would refuse the commit after it.
fn check_budget(topic: &str, plan: &Plan, committed: &Committed) -> Result<()> {
    let mut planned = committed.clone();
    let chosen = plan.copies.iter().map(|(at, _)| at);
    for at in chosen.chain(plan.passed_over.iter().map(|(at, _)| at)) {
        if let Some(progress) = planned.get_mut(&at.partition) {
            progress.insert(at.offset);
        }
    }
    let over = planned
        .iter()
        .map(|(partition, progress)| (*partition, progress.metadata().len()))
        .find(|(_, needed)| *needed > METADATA_BUDGET);
    match over {
        None => Ok(()),
        Some((partition, needed)) => Err(Error::ReplayRefused {
            topic: topic.to_owned(),
            reason: format!(
                "remembering which records of partition {partition} were replayed out of \
                 order would take {needed} bytes of offset-commit metadata, over the budget of \
                 {METADATA_BUDGET} bytes (Kafka keeps at most offset.metadata.max.bytes, 4096 \
                 by default); replay the earlier records of partition {partition} first \
                 (replay next or replay all), which moves the position past them and frees \
                 the budget"
            ),
        }),
    }
}

/// Where `message` goes back to, or why it cannot.
pub(super) fn destination(
    message: &Message,
    source: Option<&str>,
) -> std::result::Result<String, String> {
    let topic = dead_letter::original_topic(message)
        .ok_or_else(|| "no original-topic header".to_owned())?;
    // Re-publishing the copy would write an empty value (a tombstone on a compacted topic).
    if let Some(size) = message.header_value(dead_letter::VALUE_OMITTED) {
        return Err(format!(
            "the copy was stored without its {}-byte value (too large for the dead-letter \
             topic); the value is in {topic} at the original partition and offset",
            String::from_utf8_lossy(size)
        ));
    }
    crate::record::validate_topic(&topic)
        .map_err(|e| format!("original-topic {topic:?} is not a topic name: {e}"))?;
    // A copy that failed last on a retry topic goes to the topic the tiers serve: that of this
    // dead-letter topic, or (with any destination) the one the retry topic's name says, when
    // the copy carries retry headers to show it took that round trip.
    let topic = match retry_topic::source_of(&topic) {
        Some((tiers_of, _))
            if source == Some(tiers_of.as_str())
                || (source.is_none() && retry_topic::is_retry_copy(message)) =>
        {
            tiers_of
        }
        _ => topic,
    };
    match source {
        Some(source) if topic != source => Err(format!(
            "original-topic {topic:?} is not {source:?}, the topic this dead-letter topic serves"
        )),
        _ => Ok(topic),
    }
}

/// The copy to re-publish: original key, value and headers, failure and retry headers dropped.
pub(super) fn replay_record(message: &Message, topic: String) -> Record {
    let mut record = dead_letter::clean_copy(topic, message, |name| {
        retry_topic::is_retry_header(name)
            || name.starts_with(SPRING_DLT_PREFIX)
            || name == dead_letter::KARAFKA_ORIGINAL_TOPIC
            || name == REDRIVE_OF
    });
    record.headers.push((
        REDRIVE_OF.to_owned(),
        format!("{}/{}/{}", message.topic, message.partition, message.offset).into_bytes(),
    ));
    record
}

#[cfg(test)]
mod tests {
    use super::super::progress::Progress;
    use super::*;

    fn copy(headers: &[(&str, &str)]) -> Message {
        copy_at(7, headers)
    }

    fn copy_at(offset: i64, headers: &[(&str, &str)]) -> Message {
        Message {
            topic: "orders.dlq".into(),
            partition: 0,
            offset,
            timestamp: None,
            key: None,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            value: None,
            attempt: 0,
        }
    }

    #[test]
    fn a_copy_stored_without_its_value_is_passed_over_naming_why() {
        let whole = copy(&[(dead_letter::ORIGINAL_TOPIC, "orders")]);
        assert_eq!(destination(&whole, None), Ok("orders".to_owned()));
        let omitted = copy(&[
            (dead_letter::ORIGINAL_TOPIC, "orders"),
            (dead_letter::VALUE_OMITTED, "2000000"),
        ]);
        let reason = destination(&omitted, None).unwrap_err();
        assert!(
            reason.contains("without its 2000000-byte value"),
            "{reason}"
        );
    }

    #[test]
    fn a_copy_naming_a_retry_topic_goes_back_to_the_topic_the_tiers_serve() {
        let spring = copy(&[
            ("kafka_dlt-original-topic", "orders-retry-1"),
            ("retry_topic-attempts", "3"),
        ]);
        assert_eq!(destination(&spring, Some("orders")).unwrap(), "orders");
        assert_eq!(destination(&spring, None).unwrap(), "orders");
        let kafkit = copy(&[(dead_letter::ORIGINAL_TOPIC, "orders.retry.2")]);
        assert_eq!(destination(&kafkit, Some("orders")).unwrap(), "orders");
        // With any destination, a name alone is no proof of a round trip.
        assert_eq!(destination(&kafkit, None).unwrap(), "orders.retry.2");
        // A retry topic of another topic is not this dead-letter topic's to replay to.
        let other = copy(&[(dead_letter::ORIGINAL_TOPIC, "payments.retry.1")]);
        assert!(destination(&other, Some("orders")).is_err());
    }

    fn committed() -> Committed {
        Committed::from([(0, Progress::from_commit(0, "").unwrap())])
    }

    #[test]
    fn a_plan_sends_each_record_home_passes_over_the_rest_and_names_denied_topics() {
        let messages = [
            copy_at(0, &[(dead_letter::ORIGINAL_TOPIC, "orders")]),
            copy_at(1, &[]),
            copy_at(2, &[(dead_letter::ORIGINAL_TOPIC, "payments")]),
            copy_at(3, &[(dead_letter::ORIGINAL_TOPIC, "orders")]),
        ];
        let all = |_: &str| true;
        let planned = plan(
            "orders.dlq",
            &messages,
            Some("orders"),
            &all,
            &committed(),
            Order::Sequential,
        )
        .unwrap();
        let sent: Vec<(String, &str)> = planned
            .copies
            .iter()
            .map(|(at, copy)| (at.to_string(), copy.topic.as_str()))
            .collect();
        assert_eq!(sent, [("0/0".into(), "orders"), ("0/3".into(), "orders")]);
        let redrive_of = planned.copies[1].1.headers.last().unwrap();
        assert_eq!(
            redrive_of,
            &(REDRIVE_OF.to_owned(), b"orders.dlq/0/3".to_vec())
        );
        let passed: Vec<String> = planned
            .passed_over
            .iter()
            .map(|(at, _)| at.to_string())
            .collect();
        assert_eq!(passed, ["0/1", "0/2"]);
        assert!(planned.passed_over[1].1.contains("is not \"orders\""));
        assert!(planned.denied.is_empty());

        // With any destination, every destination the caller may not write is named once.
        let only_orders = |topic: &str| topic == "orders";
        let planned = plan(
            "orders.dlq",
            &messages,
            None,
            &only_orders,
            &committed(),
            Order::Sequential,
        )
        .unwrap();
        assert_eq!(planned.denied, ["payments"]);
    }

    #[test]
    fn an_out_of_order_plan_too_scattered_to_remember_is_refused() {
        // Every other offset from 1001: 5 bytes each in the metadata.
        let messages: Vec<Message> = (0..800)
            .map(|i| copy_at(1_001 + 2 * i, &[(dead_letter::ORIGINAL_TOPIC, "orders")]))
            .collect();
        let all = |_: &str| true;
        let error = plan(
            "orders.dlq",
            &messages,
            Some("orders"),
            &all,
            &committed(),
            Order::OutOfOrder,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("over the budget of 3072 bytes"),
            "{error}"
        );
        // In a row they are one range; and a sequential replay moves the position instead.
        let in_a_row: Vec<Message> = (0..800)
            .map(|i| copy_at(1_001 + i, &[(dead_letter::ORIGINAL_TOPIC, "orders")]))
            .collect();
        assert!(
            plan(
                "orders.dlq",
                &in_a_row,
                Some("orders"),
                &all,
                &committed(),
                Order::OutOfOrder
            )
            .is_ok()
        );
        assert!(
            plan(
                "orders.dlq",
                &messages,
                Some("orders"),
                &all,
                &committed(),
                Order::Sequential
            )
            .is_ok()
        );
    }
}
