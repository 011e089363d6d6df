//! [`browse`]: records of one partition, read for the API's `GET /topics/{topic}/messages` and
//! the console's message browser. A [`Browse`] says what to read; a [`BrowsePage`] is what was
//! read, with the partition's watermarks and how far reading went.

use std::collections::VecDeque;

use kafkit::Message;
use kafkit::reader::{Limits, Start};

use crate::AppState;
use crate::http::error::ApiError;
use crate::reads::known_topics::lookup_error;

/// Records one browse request returns by default.
pub const DEFAULT_BROWSE_LIMIT: usize = 100;
/// Most records one browse request may return.
pub const MAX_BROWSE_LIMIT: usize = 500;
/// About the most bytes of keys, values and headers one browse reads (the record crossing it
/// is the last one returned).
pub const MAX_BROWSE_BYTES: usize = 8 << 20;
/// Most records a filtered browse reads to find its matches.
pub const MAX_FILTER_SCAN: usize = 10_000;

/// Which records to read: one partition of `topic` from `start`, up to `limit` of them.
pub struct Browse<'a> {
    topic: &'a str,
    partition: i32,
    start: Start,
    limit: usize,
    scan: usize,
    keeps: &'a (dyn Fn(&Message) -> bool + Sync),
    newest: bool,
}

impl<'a> Browse<'a> {
    /// The first `limit` records of `partition` of `topic` from `start`.
    pub fn new(topic: &'a str, partition: i32, start: Start, limit: usize) -> Self {
        Browse {
            topic,
            partition,
            start,
            limit,
            scan: limit,
            keeps: &|_| true,
            newest: false,
        }
    }

    /// Reads up to `scan` records and keeps only those `keeps` accepts.
    #[must_use]
    pub fn matching(mut self, scan: usize, keeps: &'a (dyn Fn(&Message) -> bool + Sync)) -> Self {
        self.scan = scan.max(self.limit);
        self.keeps = keeps;
        self
    }

    /// Keeps the last `limit` matches read rather than the first.
    #[must_use]
    pub fn newest(mut self) -> Self {
        self.newest = true;
        self
    }
}

/// What a [`browse`] read.
#[derive(Debug)]
pub struct BrowsePage {
    /// Partition read.
    pub partition: i32,
    /// Oldest offset kept.
    pub low_watermark: i64,
    /// Offset the next record will get.
    pub high_watermark: i64,
    /// The records kept, in offset order.
    pub messages: Vec<Message>,
    /// How many records were read (kept or not).
    pub scanned: usize,
    /// The offset after the last record read (where reading on would start), if any was read.
    pub read_to: Option<i64>,
}

/// Reads what `request` asks (and about [`MAX_BROWSE_BYTES`] at most), stopping at the
/// partition's end as of opening or at the broker time limit. The caller checked the grants;
/// an unknown topic or partition is 404.
pub async fn browse(state: &AppState, request: Browse<'_>) -> Result<BrowsePage, ApiError> {
    let Browse {
        topic,
        partition,
        start,
        limit,
        scan,
        keeps,
        newest,
    } = request;
    // The reader looks the topic and partition up and reads their watermarks once: an unknown
    // topic or partition is its error, answered 404.
    let mut reading = state
        .kafka()
        .reader()?
        .open(topic, Some(&[partition]), start)
        .await
        .map_err(|e| lookup_error(topic, e))?;
    let (low, high) = reading
        .watermarks(partition)
        .expect("the reader was opened on this partition");
    let limits = Limits::to_end(scan).timeout(state.timeouts().broker_timeout);
    let mut messages = VecDeque::new();
    let (mut scanned, mut bytes, mut read_to) = (0, 0, None);
    while scanned < scan && (newest || messages.len() < limit) {
        let Some(message) = reading.next(&limits).await? else {
            break;
        };
        scanned += 1;
        read_to = Some(message.offset + 1);
        if !keeps(&message) {
            continue;
        }
        bytes += kafkit::reader::message_size(&message);
        messages.push_back(message);
        // Past a bound, the oldest match goes (newest first) or reading stops.
        while newest && (messages.len() > limit || bytes > MAX_BROWSE_BYTES) && messages.len() > 1 {
            if let Some(dropped) = messages.pop_front() {
                bytes -= kafkit::reader::message_size(&dropped);
            }
        }
        if !newest && bytes >= MAX_BROWSE_BYTES {
            break;
        }
    }
    Ok(BrowsePage {
        partition,
        low_watermark: low,
        high_watermark: high,
        messages: messages.into(),
        scanned,
        read_to,
    })
}
