//! Partitioners: which partition a record goes to.
//!
//! The default is murmur2, the algorithm of the Java client and of KafkaJS's
//! `DefaultPartitioner`, so a key lands on the same partition whichever of them produced it.
//! With the default, kafkit lets librdkafka apply it (`partitioner=murmur2_random`), which needs
//! no metadata lookup; [`murmur2_partition`] is the same function for code that must predict the
//! placement. Custom partitioners ([`HeaderHash`], [`RoundRobin`], or your own) are asked by the
//! producer with the topic's partition count.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::record::Record;

/// Chooses a partition for a record.
pub trait Partitioner: Debug + Send + Sync {
    /// The partition for `record` among `partition_count` partitions, or `None` to let the
    /// client's default (murmur2 on the key, random without one) decide.
    fn partition(&self, record: &Record, partition_count: i32) -> Option<i32>;
}

/// The murmur2 hash exactly as Kafka's Java client computes it (seed `0x9747b28c`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition the Java client and KafkaJS pick for `key`: `(murmur2(key) & 0x7fffffff) % n`.
pub fn murmur2_partition(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) % partition_count as u32) as i32
}

/// The default partitioner, stated explicitly: murmur2 on the key, round-robin without one.
#[derive(Debug, Default)]
pub struct Murmur2 {
    keyless: RoundRobin,
}

impl Partitioner for Murmur2 {
    fn partition(&self, record: &Record, partition_count: i32) -> Option<i32> {
        match &record.key {
            Some(key) => Some(murmur2_partition(key, partition_count)),
            None => self.keyless.partition(record, partition_count),
        }
    }
}

/// Partitions by the murmur2 hash of a header (e.g. `tenant-id`, so one tenant's records stay
/// together and in order); records without the header fall back to the key, then round-robin.
#[derive(Debug)]
pub struct HeaderHash {
    header: String,
    fallback: Murmur2,
}

impl HeaderHash {
    /// Hashes the value of header `header`.
    pub fn new(header: impl Into<String>) -> Self {
        HeaderHash {
            header: header.into(),
            fallback: Murmur2::default(),
        }
    }
}

impl Partitioner for HeaderHash {
    fn partition(&self, record: &Record, partition_count: i32) -> Option<i32> {
        match record.header_value(&self.header) {
            Some(value) => Some(murmur2_partition(value, partition_count)),
            None => self.fallback.partition(record, partition_count),
        }
    }
}

/// Spreads records evenly over the partitions, ignoring keys.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicU32,
}

impl Partitioner for RoundRobin {
    fn partition(&self, _record: &Record, partition_count: i32) -> Option<i32> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some((n % partition_count as u32) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values of Kafka's Java `Utils.murmur2` (the same table KafkaJS and librdkafka
    /// test against), as signed 32-bit integers.
    const JAVA_MURMUR2: &[(&str, i32)] = &[
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        ("abc", 479_470_107),
        ("kafka", -798_503_068),
    ];

    #[test]
    fn murmur2_matches_the_java_client() {
        for (key, expected) in JAVA_MURMUR2 {
            assert_eq!(murmur2(key.as_bytes()) as i32, *expected, "key {key:?}");
        }
    }

    #[test]
    fn partition_is_the_positive_hash_modulo_the_count() {
        for (key, hash) in JAVA_MURMUR2 {
            for count in [1, 3, 6, 12, 100] {
                let expected = (*hash & 0x7fff_ffff) % count;
                assert_eq!(murmur2_partition(key.as_bytes(), count), expected);
            }
        }
    }

    #[test]
    fn header_hash_groups_by_header_then_key() {
        let partitioner = HeaderHash::new("tenant-id");
        let acme = Record::to("t").key("a").header("tenant-id", "acme");
        let acme_other_key = Record::to("t").key("zzz").header("tenant-id", "acme");
        assert_eq!(
            partitioner.partition(&acme, 12),
            Some(murmur2_partition(b"acme", 12))
        );
        assert_eq!(
            partitioner.partition(&acme, 12),
            partitioner.partition(&acme_other_key, 12)
        );
        let keyed = Record::to("t").key("order-1");
        assert_eq!(
            partitioner.partition(&keyed, 12),
            Some(murmur2_partition(b"order-1", 12))
        );
    }

    #[test]
    fn round_robin_cycles_through_every_partition() {
        let partitioner = RoundRobin::default();
        let record = Record::to("t");
        let picked: Vec<_> = (0..8)
            .map(|_| partitioner.partition(&record, 4).unwrap())
            .collect();
        assert_eq!(picked, [0, 1, 2, 3, 0, 1, 2, 3]);
    }
}
