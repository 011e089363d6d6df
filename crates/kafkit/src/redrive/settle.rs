//! The last phase of a replay, without I/O: from what the broker answered, what to report and
//! what to commit (each partition's next offset and the metadata remembering the records
//! replayed ahead of it).

use std::collections::{BTreeMap, HashMap};

use super::plan::At;
use super::publish::Published;
use super::select::{Committed, Order};

/// What a replay commits and reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Settlement {
    /// Per partition whose progress changed: the next offset and its metadata.
    pub commits: HashMap<i32, (i64, String)>,
    /// Records re-published, by destination topic.
    pub replayed: BTreeMap<String, usize>,
    /// Records passed over for good, `partition/offset: reason`: the plan's, then those the
    /// broker refused for good.
    pub skipped: Vec<String>,
    /// Records not re-published for now, `partition/offset: error`.
    pub failed: Vec<String>,
}

/// Settles a replay that began at `committed`: `passed_over` records (and those the broker
/// refuses for good) are done as the re-published ones are; a retriable or fatal failure is
/// not. A sequential replay moves each partition's position past what it read (`read_to`), or
/// back to its first failure; an out-of-order one remembers each record done.
pub(super) fn settle(
    committed: &Committed,
    order: Order,
    read_to: &HashMap<i32, i64>,
    passed_over: Vec<(At, String)>,
    published: Vec<Published>,
) -> Settlement {
    let mut settlement = Settlement {
        skipped: lines(&passed_over),
        ..Settlement::default()
    };
    let mut done: Vec<At> = passed_over.iter().map(|(at, _)| *at).collect();
    // The first record of each partition that could not be re-published for now.
    let mut stopped: HashMap<i32, i64> = HashMap::new();
    for Published { at, topic, result } in published {
        match result {
            Ok(()) => {
                *settlement.replayed.entry(topic).or_default() += 1;
                done.push(at);
            }
            Err(error) if error.is_retriable() || error.is_fatal() => {
                settlement.failed.push(format!("{at}: {error}"));
                let first = stopped.entry(at.partition).or_insert(at.offset);
                *first = (*first).min(at.offset);
            }
            // This record can never be re-published as it is (unknown topic, too large):
            // reported, and passed over so it does not block the rest forever.
            Err(error) => {
                settlement.skipped.push(format!("{at}: {error}"));
                done.push(at);
            }
        }
    }
    let mut progress = committed.clone();
    match order {
        Order::OutOfOrder => {
            for at in done {
                if let Some(p) = progress.get_mut(&at.partition) {
                    p.insert(at.offset);
                }
            }
        }
        Order::Sequential => {
            let mut read_to = read_to.clone();
            read_to.extend(stopped);
            for (partition, next) in read_to {
                if let Some(p) = progress.get_mut(&partition) {
                    p.move_to(next);
                }
            }
        }
    }
    settlement.commits = progress
        .iter()
        .filter(|(partition, p)| committed.get(partition) != Some(p))
        .map(|(partition, p)| (*partition, (p.next(), p.metadata())))
        .collect();
    settlement
}

/// `partition/offset: reason`, each.
pub(super) fn lines(reasons: &[(At, String)]) -> Vec<String> {
    reasons
        .iter()
        .map(|(at, reason)| format!("{at}: {reason}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::super::progress::Progress;
    use super::*;
    use crate::error::Error;

    fn at(offset: i64) -> At {
        At {
            partition: 0,
            offset,
        }
    }

    fn committed(next: i64, metadata: &str) -> Committed {
        Committed::from([(0, Progress::from_commit(next, metadata).unwrap())])
    }

    fn failure(code: RDKafkaErrorCode) -> Error {
        Error::Produce {
            topic: "orders".into(),
            source: KafkaError::MessageProduction(code),
        }
    }

    fn published(offset: i64, result: Result<(), Error>) -> Published {
        Published {
            at: at(offset),
            topic: "orders".into(),
            result,
        }
    }

    #[test]
    fn a_sequential_replay_moves_past_what_it_read_or_back_to_its_first_failure() {
        // Read 10..16 (12 was replayed out of order before, so not published): all done.
        let before = committed(10, "kafkit-redrive/1 12,20");
        let read_to = HashMap::from([(0, 16)]);
        let all = [10, 11, 13, 14, 15].map(|o| published(o, Ok(())));
        let settled = settle(&before, Order::Sequential, &read_to, vec![], all.into());
        assert_eq!(
            settled.commits,
            HashMap::from([(0, (16, "kafkit-redrive/1 20".to_owned()))])
        );
        assert_eq!(settled.replayed, BTreeMap::from([("orders".to_owned(), 5)]));

        // 13 timed out: the position goes back to it; 14 was too large, passed over.
        let some = vec![
            published(10, Ok(())),
            published(11, Ok(())),
            published(13, Err(failure(RDKafkaErrorCode::MessageTimedOut))),
            published(14, Err(failure(RDKafkaErrorCode::MessageSizeTooLarge))),
            published(15, Ok(())),
        ];
        let passed = vec![(at(16), "no original-topic header".to_owned())];
        let read_to = HashMap::from([(0, 17)]);
        let settled = settle(&before, Order::Sequential, &read_to, passed, some);
        assert_eq!(settled.commits[&0].0, 13);
        assert_eq!(settled.failed.len(), 1);
        assert!(
            settled.failed[0].starts_with("0/13: "),
            "{:?}",
            settled.failed
        );
        assert_eq!(settled.skipped[0], "0/16: no original-topic header");
        assert!(
            settled.skipped[1].starts_with("0/14: "),
            "{:?}",
            settled.skipped
        );
        assert_eq!(settled.replayed, BTreeMap::from([("orders".to_owned(), 3)]));
    }

    #[test]
    fn an_out_of_order_replay_remembers_what_it_did_and_commits_only_what_changed() {
        let before = Committed::from([
            (0, Progress::from_commit(0, "").unwrap()),
            (1, Progress::from_commit(5, "").unwrap()),
        ]);
        let results = vec![
            published(3, Ok(())),
            published(4, Err(failure(RDKafkaErrorCode::AllBrokersDown))),
            published(5, Ok(())),
        ];
        let passed = vec![(at(0), "no original-topic header".to_owned())];
        let settled = settle(&before, Order::OutOfOrder, &HashMap::new(), passed, results);
        // 0 was at the position: it moves to 1; 3 and 5 are remembered, 4 is not.
        assert_eq!(
            settled.commits,
            HashMap::from([(0, (1, "kafkit-redrive/1 3,5".to_owned()))])
        );
        assert_eq!(settled.failed.len(), 1);
        // Nothing done: nothing to commit.
        let nothing = settle(&before, Order::OutOfOrder, &HashMap::new(), vec![], vec![]);
        assert!(nothing.commits.is_empty());
    }
}
