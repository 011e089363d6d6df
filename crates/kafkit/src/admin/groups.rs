//! Consumer groups: list, describe with members, committed offsets, lag, offset resets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::topics::all_watermarks;
use super::{Admin, blocking};
use crate::error::{Error, Result};
use crate::record::validate_topic;

/// Where [`Admin::offsets_for`] places a group in each partition of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The oldest record kept (low watermark).
    Earliest,
    /// The next record to be written (high watermark): nothing left to read.
    Latest,
    /// The first record at or after this time (milliseconds since the epoch); the high
    /// watermark where there is none.
    Timestamp(i64),
    /// This offset, clamped to the partition's watermarks.
    Offset(i64),
}

/// A consumer group as the coordinator lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// Group id.
    pub name: String,
    /// State (`Stable`, `Empty`, `PreparingRebalance`...), as the broker reports it.
    pub state: String,
    /// Protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// Number of members the broker reported.
    pub members: usize,
}

/// A consumer group with its members, as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// Group id.
    pub name: String,
    /// State (`Stable`, `Empty`, `PreparingRebalance`...), as the broker reports it.
    pub state: String,
    /// Protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// The partition assignor the members agreed on (`range`, `cooperative-sticky`...).
    pub protocol: String,
    /// The members, sorted by client id then member id.
    pub members: Vec<GroupMember>,
}

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    /// Member id the coordinator gave it.
    pub member_id: String,
    /// The client's `client.id`.
    pub client_id: String,
    /// The client's host, as the coordinator saw its connection (e.g. `/127.0.0.1`).
    pub host: String,
    /// Partitions assigned to it, by topic (empty while a rebalance is under way).
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// A group's position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset the group will read; `None` when it never committed here.
    pub committed: Option<i64>,
    /// Offset the next record will get.
    pub high_watermark: i64,
    /// Records the group has yet to process: high watermark minus committed offset (from the
    /// low watermark when nothing was committed).
    pub lag: i64,
}

impl Admin {
    /// Consumer groups known to the cluster, sorted by name.
    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>> {
        let client = Arc::clone(&self.metadata);
        let timeout = self.timeout;
        blocking("list groups", move || {
            let list = client.fetch_group_list(None, timeout)?;
            let mut groups: Vec<GroupInfo> = list
                .groups()
                .iter()
                .map(|g| GroupInfo {
                    name: g.name().to_owned(),
                    state: g.state().to_owned(),
                    protocol_type: g.protocol_type().to_owned(),
                    members: g.members().len(),
                })
                .collect();
            groups.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(groups)
        })
        .await
    }

    /// One group with its members, their client ids, hosts and assignments; `None` when the
    /// coordinator does not know the group.
    pub async fn describe_group(&self, group: &str) -> Result<Option<GroupDescription>> {
        let client = Arc::clone(&self.metadata);
        let timeout = self.timeout;
        let name = group.to_owned();
        blocking(&format!("describe group {group}"), move || {
            let list = client.fetch_group_list(Some(&name), timeout)?;
            let Some(g) = list.groups().iter().find(|g| g.name() == name) else {
                return Ok(None);
            };
            // The coordinator answers an unknown group with state "Dead" and no members.
            if g.state() == "Dead" && g.members().is_empty() {
                return Ok(None);
            }
            let mut members: Vec<GroupMember> = g
                .members()
                .iter()
                .map(|m| GroupMember {
                    member_id: m.id().to_owned(),
                    client_id: m.client_id().to_owned(),
                    host: m.client_host().to_owned(),
                    assignment: m
                        .assignment()
                        .and_then(decode_assignment)
                        .unwrap_or_default(),
                })
                .collect();
            members.sort_by(|a, b| (&a.client_id, &a.member_id).cmp(&(&b.client_id, &b.member_id)));
            Ok(Some(GroupDescription {
                name: g.name().to_owned(),
                state: g.state().to_owned(),
                protocol_type: g.protocol_type().to_owned(),
                protocol: g.protocol().to_owned(),
                members,
            }))
        })
        .await
    }

    /// A consumer client of `group` that never joins it: for reading and writing the group's
    /// committed offsets.
    fn group_client(&self, group: &str) -> Result<BaseConsumer> {
        self.config
            .to_consumer_config(group)
            .create()
            .map_err(|source| Error::ClientCreation {
                client: "consumer",
                source,
            })
    }

    /// The group's committed offset and lag in every partition of `topics` (every topic when
    /// empty). Partitions where the group never committed are left out unless a topic was
    /// named explicitly.
    pub async fn group_lag(&self, group: &str, topics: &[&str]) -> Result<Vec<PartitionLag>> {
        let consumer = self.group_client(group)?;
        let timeout = self.timeout;
        let named: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        blocking(&format!("lag of group {group}"), move || {
            let metadata = consumer.fetch_metadata(None, timeout)?;
            let mut tpl = TopicPartitionList::new();
            for topic in metadata.topics() {
                let wanted = if named.is_empty() {
                    !topic.name().starts_with("__")
                } else {
                    named.iter().any(|n| n == topic.name())
                };
                if wanted {
                    for partition in topic.partitions() {
                        tpl.add_partition(topic.name(), partition.id());
                    }
                }
            }
            let committed =
                with_coordinator(timeout, || consumer.committed_offsets(tpl.clone(), timeout))?;
            let elements: Vec<_> = committed
                .elements()
                .into_iter()
                .filter(|e| !named.is_empty() || matches!(e.offset(), Offset::Offset(_)))
                .collect();
            // Every partition's watermarks at once; one by one only where that failed.
            let partitions: Vec<(&str, i32)> = elements
                .iter()
                .map(|e| (e.topic(), e.partition()))
                .collect();
            let known = all_watermarks(&consumer, &partitions, timeout);
            let mut lags = Vec::new();
            for element in &elements {
                let offset = match element.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                let (low, high) = match known.get(&(element.topic(), element.partition())) {
                    Some(marks) => *marks,
                    None => {
                        consumer.fetch_watermarks(element.topic(), element.partition(), timeout)?
                    }
                };
                lags.push(PartitionLag {
                    topic: element.topic().to_owned(),
                    partition: element.partition(),
                    committed: offset,
                    high_watermark: high,
                    lag: (high - offset.unwrap_or(low)).max(0),
                });
            }
            lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            // The consumer never joined the group; dropping it here, off the runtime, is cheap.
            drop(consumer);
            Ok(lags)
        })
        .await
    }

    /// Where `to` lies in every partition of `topic`: `(partition, offset)`, by partition. The
    /// plan of an offset reset, to show before [`Admin::commit_offsets`] carries it out.
    pub async fn offsets_for(&self, topic: &str, to: ResetTo) -> Result<Vec<(i32, i64)>> {
        let info = self.describe_topic(topic).await?;
        let client = Arc::clone(&self.metadata);
        let timeout = self.timeout;
        let name = topic.to_owned();
        blocking(&format!("find offsets in {topic}"), move || {
            let found = match to {
                ResetTo::Timestamp(millis) => {
                    let mut list = TopicPartitionList::new();
                    for p in &info.partitions {
                        list.add_partition_offset(&name, p.id, Offset::Offset(millis))?;
                    }
                    Some(client.offsets_for_times(list, timeout)?)
                }
                _ => None,
            };
            Ok(info
                .partitions
                .iter()
                .map(|p| {
                    let (low, high) = (p.low_watermark, p.high_watermark);
                    let offset = match to {
                        ResetTo::Earliest => low,
                        ResetTo::Latest => high,
                        ResetTo::Offset(offset) => offset,
                        ResetTo::Timestamp(_) => found
                            .as_ref()
                            .and_then(|list| list.find_partition(&name, p.id))
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            })
                            .unwrap_or(high),
                    };
                    (p.id, offset.clamp(low, high))
                })
                .collect())
        })
        .await
    }

    /// Commits `offsets` (`(partition, next offset to read)`) of `topic` for `group`, without
    /// joining it. The broker refuses this while the group has members: reset an empty group.
    pub async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<()> {
        validate_topic(topic)?;
        let consumer = self.group_client(group)?;
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|source| Error::Admin {
                    operation: format!("commit offsets of group {group}"),
                    source,
                })?;
        }
        let timeout = self.timeout;
        blocking(&format!("commit offsets of group {group}"), move || {
            with_coordinator(timeout, || {
                consumer.commit(&list, rdkafka::consumer::CommitMode::Sync)
            })?;
            drop(consumer);
            Ok(())
        })
        .await
    }
}

/// Decodes a member's assignment as the classic consumer protocol encodes it: version (i16),
/// then an array of (topic: i16-length string, partitions: array of i32), then user data. `None`
/// when the bytes are not such an assignment (another protocol type).
fn decode_assignment(bytes: &[u8]) -> Option<BTreeMap<String, Vec<i32>>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = bytes.split_at_checked(n)?;
        *bytes = tail;
        Some(head)
    }
    fn int16(bytes: &mut &[u8]) -> Option<i16> {
        Some(i16::from_be_bytes(take(bytes, 2)?.try_into().ok()?))
    }
    fn int32(bytes: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(bytes, 4)?.try_into().ok()?))
    }
    let mut rest = bytes;
    let _version = int16(&mut rest)?;
    let topics = int32(&mut rest)?;
    let mut assignment = BTreeMap::new();
    for _ in 0..topics.max(0) {
        let length = usize::try_from(int16(&mut rest)?).ok()?;
        let topic = std::str::from_utf8(take(&mut rest, length)?)
            .ok()?
            .to_owned();
        let count = int32(&mut rest)?;
        let mut partitions = Vec::with_capacity(usize::try_from(count).ok()?.min(4096));
        for _ in 0..count {
            partitions.push(int32(&mut rest)?);
        }
        partitions.sort_unstable();
        assignment.insert(topic, partitions);
    }
    Some(assignment)
}

/// Calls `call` (a group's offsets: read or commit) until it succeeds, fails for another reason
/// than the group's coordinator, or `timeout` has passed. On a broker just started, or while
/// `__consumer_offsets` moves, the first calls meet a coordinator that is not there yet or still
/// loading, and librdkafka returns that instead of waiting.
pub(crate) fn with_coordinator<T>(
    timeout: Duration,
    mut call: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> rdkafka::error::KafkaResult<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match call() {
            Err(error)
                if matches!(
                    error.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::NotCoordinator
                            | RDKafkaErrorCode::CoordinatorLoadInProgress
                            | RDKafkaErrorCode::CoordinatorNotAvailable
                    )
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_consumer_protocol_assignment() {
        // version 1, two topics, then empty user data.
        let mut bytes = vec![0, 1, 0, 0, 0, 2];
        for (topic, partitions) in [("orders", &[2i32, 0][..]), ("audit", &[1][..])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend((-1i32).to_be_bytes());
        let assignment = decode_assignment(&bytes).unwrap();
        assert_eq!(assignment["orders"], [0, 2]);
        assert_eq!(assignment["audit"], [1]);
        assert_eq!(assignment.len(), 2);
    }

    #[test]
    fn a_truncated_assignment_is_not_decoded() {
        assert_eq!(decode_assignment(&[0, 1, 0, 0, 0, 1, 0, 9, b'o']), None);
        assert_eq!(decode_assignment(&[]), None);
    }
}
