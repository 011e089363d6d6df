//! The last phase of a replay, without I/O: from what the broker answered, what to report and
//! what to commit (each partition's next offset and the metadata remembering the records
//! replayed ahead of it); and, while publishing, how many more records may go out so that the
//! commit fits Kafka's metadata limit whatever becomes of them.

use std::collections::{BTreeMap, HashMap};

use crate::error::Error;

use super::plan::At;
use super::progress::{METADATA_LIMIT, Progress};
use super::select::{Committed, Order};

/// What became of one copy: where its dead-letter record is, its destination, and the
/// broker's answer.
#[derive(Debug)]
pub(super) struct Published {
    pub at: At,
    pub topic: String,
    pub result: std::result::Result<(), Error>,
}

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
    /// Records not published this time: after a failure, or when the commit could not have
    /// remembered more.
    pub held_back: usize,
}

/// What a replay did so far: the records done (re-published, or passed over for good) and
/// those that failed for now.
#[derive(Debug)]
pub(super) struct Ledger {
    committed: Committed,
    order: Order,
    /// Sequential replay: per partition, the offset after the last record read.
    read_to: HashMap<i32, i64>,
    done: Vec<At>,
    failed: Vec<At>,
    settlement: Settlement,
}

impl Ledger {
    /// A replay that began at `committed` and passes over `passed_over` for good.
    pub(super) fn new(
        committed: &Committed,
        order: Order,
        read_to: HashMap<i32, i64>,
        passed_over: &[(At, String)],
    ) -> Ledger {
        Ledger {
            committed: committed.clone(),
            order,
            read_to,
            done: passed_over.iter().map(|(at, _)| *at).collect(),
            failed: Vec::new(),
            settlement: Settlement {
                skipped: lines(passed_over),
                ..Settlement::default()
            },
        }
    }

    /// Takes in the broker's answers; true when a record failed for now (retriable, or
    /// fatal to the producer): the replay then stops, leaving the rest to the next one.
    pub(super) fn record(&mut self, published: Vec<Published>) -> bool {
        let mut failed = false;
        for Published { at, topic, result } in published {
            match result {
                Ok(()) => {
                    *self.settlement.replayed.entry(topic).or_default() += 1;
                    self.done.push(at);
                }
                Err(error) if error.is_retriable() || error.is_fatal() => {
                    self.settlement.failed.push(format!("{at}: {error}"));
                    self.failed.push(at);
                    failed = true;
                }
                // This record can never be re-published as it is (unknown topic, too large):
                // reported, and passed over so it does not block the rest forever.
                Err(error) => {
                    self.settlement.skipped.push(format!("{at}: {error}"));
                    self.done.push(at);
                }
            }
        }
        failed
    }

    /// How many of `next` (the records still to publish, in order) may go out now: as many
    /// as leave each partition's commit within [`METADATA_LIMIT`] even if every one of them
    /// fails, since each failure can add one range to the set remembered.
    pub(super) fn room(&self, next: &[At]) -> usize {
        let mut trials: HashMap<i32, Trial> = HashMap::new();
        for at in next {
            let trial = trials
                .entry(at.partition)
                .or_insert_with(|| self.trial(at.partition));
            trial.pending.push(at.offset);
            trial.highest = trial.highest.max(at.offset);
        }
        for (taken, at) in next.iter().enumerate() {
            let Some(trial) = trials.get_mut(&at.partition) else {
                continue;
            };
            trial.tried += 1;
            let metadata = match self.order {
                Order::OutOfOrder => {
                    trial.base.insert(at.offset);
                    trial.base.metadata()
                }
                Order::Sequential => {
                    let held = trial.pending.get(trial.tried).copied();
                    self.sequential(at.partition, held)
                        .map(|p| p.metadata())
                        .unwrap_or_default()
                }
            };
            // In a sequential replay the first failure of a partition only sets its position.
            let free = usize::from(self.order == Order::Sequential && !trial.failed);
            let growth = Progress::growth(&metadata, trial.tried - free, trial.highest);
            if metadata.len() + growth > METADATA_LIMIT {
                return taken;
            }
        }
        next.len()
    }

    /// What the commit and report are once the replay ends with `held_back` not published.
    pub(super) fn settle(mut self, held_back: &[At]) -> Settlement {
        let mut progress = Committed::new();
        for partition in self.committed.keys() {
            let held = held_back
                .iter()
                .find(|at| at.partition == *partition)
                .map(|at| at.offset);
            let after = match self.order {
                Order::OutOfOrder => Some(self.trial(*partition).base),
                Order::Sequential => self.sequential(*partition, held),
            };
            progress.extend(after.map(|p| (*partition, p)));
        }
        self.settlement.commits = progress
            .iter()
            .filter(|(partition, p)| self.committed.get(partition) != Some(p))
            .map(|(partition, p)| (*partition, (p.next(), p.metadata())))
            .collect();
        self.settlement.held_back = held_back.len();
        self.settlement
    }

    /// Where `partition` of an out-of-order replay stands with what is done so far.
    fn trial(&self, partition: i32) -> Trial {
        let mut base = self.committed.get(&partition).cloned().unwrap_or_default();
        let mut highest = base.last();
        for at in self.done.iter().filter(|at| at.partition == partition) {
            highest = highest.max(at.offset);
            if self.order == Order::OutOfOrder {
                base.insert(at.offset);
            }
        }
        for at in self.failed.iter().filter(|at| at.partition == partition) {
            highest = highest.max(at.offset);
        }
        Trial {
            base,
            pending: Vec::new(),
            tried: 0,
            highest: highest.max(self.read_to.get(&partition).copied().unwrap_or(0)),
            failed: self.failed.iter().any(|at| at.partition == partition),
        }
    }

    /// Where `partition` of a sequential replay stands when the records from `held` on are
    /// not published: everything read before that is done but the records that failed. The
    /// position moves to the first of them (or past what was read), and the records done
    /// after it are remembered ahead of it, so the next replay tries the failed ones again
    /// and publishes no other a second time.
    fn sequential(&self, partition: i32, held: Option<i64>) -> Option<Progress> {
        let mut progress = self.committed.get(&partition)?.clone();
        let read_to = self.read_to.get(&partition).copied();
        let Some(stop) = held.into_iter().chain(read_to).min() else {
            return Some(progress);
        };
        let mut failed: Vec<i64> = self
            .failed
            .iter()
            .filter(|at| at.partition == partition && at.offset < stop)
            .map(|at| at.offset)
            .collect();
        failed.sort_unstable();
        let Some(first) = failed.first() else {
            progress.move_to(stop);
            return Some(progress);
        };
        progress.move_to(*first);
        // The spans between failures, and after the last one up to `stop`.
        let ends = failed.iter().skip(1).copied().chain([stop]);
        for (failure, end) in failed.iter().zip(ends) {
            progress.insert_range(failure + 1, end - 1);
        }
        Some(progress)
    }
}

/// One partition while [`Ledger::room`] counts.
struct Trial {
    /// Out-of-order replay: the progress with every record tried so far done.
    base: Progress,
    /// The offsets of this partition still to publish, in order.
    pending: Vec<i64>,
    /// How many of them were counted in.
    tried: usize,
    /// The highest offset a range of this partition can end at.
    highest: i64,
    /// Whether a record of it failed already.
    failed: bool,
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

    fn before_empty() -> Committed {
        committed(0, "")
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

    fn settle(
        committed: &Committed,
        order: Order,
        read_to: HashMap<i32, i64>,
        passed_over: Vec<(At, String)>,
        published: Vec<Published>,
    ) -> Settlement {
        let mut ledger = Ledger::new(committed, order, read_to, &passed_over);
        ledger.record(published);
        ledger.settle(&[])
    }

    #[test]
    fn a_sequential_replay_moves_past_what_it_read_or_back_to_its_first_failure() {
        // Read 10..16 (12 was replayed out of order before, so not published): all done.
        let before = committed(10, "kafkit-redrive/1 12,20");
        let all = [10, 11, 13, 14, 15].map(|o| published(o, Ok(())));
        let settled = settle(
            &before,
            Order::Sequential,
            HashMap::from([(0, 16)]),
            vec![],
            all.into(),
        );
        assert_eq!(
            settled.commits,
            HashMap::from([(0, (16, "kafkit-redrive/1 20".to_owned()))])
        );
        assert_eq!(settled.replayed, BTreeMap::from([("orders".to_owned(), 5)]));

        // 13 timed out; 14 was too large, passed over; 16 has no original topic.
        let some = vec![
            published(10, Ok(())),
            published(11, Ok(())),
            published(13, Err(failure(RDKafkaErrorCode::MessageTimedOut))),
            published(14, Err(failure(RDKafkaErrorCode::MessageSizeTooLarge))),
            published(15, Ok(())),
        ];
        let passed = vec![(at(16), "no original-topic header".to_owned())];
        let settled = settle(
            &before,
            Order::Sequential,
            HashMap::from([(0, 17)]),
            passed,
            some,
        );
        // The position goes back to 13; 14 to 16, done after it, are remembered.
        assert_eq!(
            settled.commits,
            HashMap::from([(0, (13, "kafkit-redrive/1 14-16,20".to_owned()))])
        );
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
        let settled = settle(&before, Order::OutOfOrder, HashMap::new(), passed, results);
        // 0 was at the position: it moves to 1; 3 and 5 are remembered, 4 is not.
        assert_eq!(
            settled.commits,
            HashMap::from([(0, (1, "kafkit-redrive/1 3,5".to_owned()))])
        );
        assert_eq!(settled.failed.len(), 1);
        // Nothing done: nothing to commit.
        let nothing = settle(&before, Order::OutOfOrder, HashMap::new(), vec![], vec![]);
        assert!(nothing.commits.is_empty());
    }

    #[test]
    fn rounds_leave_room_in_the_commit_for_every_record_of_them_to_fail() {
        // Out of order, from an empty set, 4-digit offsets: k records done are
        // "kafkit-redrive/1 1000-(999+k)" (26 bytes), and each failure may add ",start-end"
        // (10 bytes): 26 + 407 x 10 = 4096.
        let before = committed(0, "");
        let next: Vec<At> = (1_000..3_000).map(at).collect();
        let ledger = Ledger::new(&before, Order::OutOfOrder, HashMap::new(), &[]);
        let room = ledger.room(&next);
        assert_eq!(room, 407);
        // Whatever became of them, the commit fits: here every other one failed.
        let mut ledger = ledger;
        ledger.record(
            next[..room]
                .iter()
                .map(|at| {
                    let result = match at.offset % 2 {
                        0 => Ok(()),
                        _ => Err(failure(RDKafkaErrorCode::MessageTimedOut)),
                    };
                    published(at.offset, result)
                })
                .collect(),
        );
        let settled = ledger.settle(&next[room..]);
        assert!(settled.commits[&0].1.len() <= 4_096);
        assert_eq!(settled.held_back, 2_000 - room);

        // A sequential replay of 2,000 records from an empty set, every other one failing:
        // the failures after the first are holes in what it remembers, and still fit.
        let next: Vec<At> = (0..2_000).map(at).collect();
        let mut ledger = Ledger::new(
            &before_empty(),
            Order::Sequential,
            HashMap::from([(0, 2_000)]),
            &[],
        );
        let room = ledger.room(&next);
        assert_eq!(room, 408, "17 + 407 x 10 bytes, the first failure free");
        ledger.record(
            next[..room]
                .iter()
                .map(|at| {
                    let result = match at.offset % 2 {
                        0 => Ok(()),
                        _ => Err(failure(RDKafkaErrorCode::MessageTimedOut)),
                    };
                    published(at.offset, result)
                })
                .collect(),
        );
        let settled = ledger.settle(&next[room..]);
        let (position, metadata) = &settled.commits[&0];
        assert_eq!(*position, 1);
        assert!(
            metadata.starts_with("kafkit-redrive/1 2,4,6,"),
            "{metadata}"
        );
        assert!(metadata.ends_with(",404,406"), "{metadata}");
        assert!(metadata.len() <= 4_096);

        // In a sequential replay a partition's first failure is free (it only sets the
        // position): with the set full to the limit, one record still goes out.
        let full: Vec<String> = (0..(4_096 - 17) / 6)
            .map(|i| (10_000 + 2 * i).to_string())
            .collect();
        let full = format!("kafkit-redrive/1 {}", full.join(","));
        let before = committed(100, &full);
        let ledger = Ledger::new(&before, Order::Sequential, HashMap::from([(0, 102)]), &[]);
        assert_eq!(ledger.room(&[at(100), at(101)]), 1);
    }
}
