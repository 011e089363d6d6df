//! [`LagHistory`]: every consumer group's lag, sampled by the server while the console is in
//! use, kept in memory and bounded, and the SVG chart of one group's lag over time.
//!
//! A background task, started by the first console page, samples every group every
//! [`SAMPLE_EVERY`] (at most [`MAX_GROUPS`] groups, [`KEEP`] samples each: the last hour,
//! [`MAX_TOPICS`] topics a group, [`MAX_BYTES`] in all) and
//! stops sampling after [`IDLE_AFTER`] without a visit. A group page adds a sample of its own
//! each time it computes the group's lag.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kafkit::admin::PartitionLag;
use maud::{Markup, html};

use super::page::{clock, now_millis};
use crate::AppState;

/// How often groups are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept per group: an hour at [`SAMPLE_EVERY`].
pub const KEEP: usize = 360;
/// Groups tracked; others are listed without lag.
pub const MAX_GROUPS: usize = 200;
/// Topics tracked per group; the lag of others is not counted.
pub const MAX_TOPICS: usize = 100;
/// Most bytes the history keeps, all groups together (8 bytes a lag and a time, topic names
/// once per group): past it the oldest samples of the group holding the most go first.
pub const MAX_BYTES: usize = 16 << 20;
/// Sampling pauses when no console page was shown for this long.
pub const IDLE_AFTER: Duration = Duration::from_secs(3600);
/// Groups sampled at once.
const CONCURRENT_SAMPLES: usize = 4;
/// Longest a page waits for a fresh sample of every group.
pub const PAGE_WAIT: Duration = Duration::from_secs(2);
/// Two samples closer than this replace each other.
const MIN_GAP_MILLIS: i64 = 1_000;

/// One sample of a group: when, and its lag in each topic of its table.
#[derive(Debug, Clone)]
struct Sample {
    at: i64,
    lags: Vec<i64>,
}

impl Sample {
    fn bytes(&self) -> usize {
        8 + 8 * self.lags.len()
    }
}

/// A group's samples, the lags indexed by its topic table.
#[derive(Debug, Default)]
struct GroupHistory {
    topics: Vec<String>,
    samples: VecDeque<Sample>,
}

impl GroupHistory {
    fn bytes(&self) -> usize {
        self.topics.iter().map(String::len).sum::<usize>()
            + self.samples.iter().map(Sample::bytes).sum::<usize>()
    }

    /// The last sample's lag over the topics `readable` accepts.
    fn total(&self, sample: &Sample, readable: &impl Fn(&str) -> bool) -> i64 {
        self.topics
            .iter()
            .zip(&sample.lags)
            .filter(|(topic, _)| readable(topic))
            .map(|(_, lag)| lag)
            .sum()
    }
}

#[derive(Debug)]
struct Inner {
    groups: BTreeMap<String, GroupHistory>,
    /// What `groups` holds, as [`GroupHistory::bytes`] counts it.
    bytes: usize,
    /// The budget for `bytes`.
    max_bytes: usize,
    /// When all groups were last sampled.
    sampled: Option<Instant>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            groups: BTreeMap::new(),
            bytes: 0,
            max_bytes: MAX_BYTES,
            sampled: None,
        }
    }
}

/// The sampled lag of every group.
#[derive(Debug, Default)]
pub struct LagHistory {
    inner: Mutex<Inner>,
    last_visit: Mutex<Option<Instant>>,
    started: AtomicBool,
    /// One full sampling at a time.
    sampling: tokio::sync::Mutex<()>,
}

impl LagHistory {
    /// Notes a console visit, and starts the sampler on the first one (not on the embedded
    /// development broker, which has no group API).
    pub fn visited(self: &Arc<Self>, state: &AppState) {
        *self.last_visit.lock().expect("not poisoned") = Some(Instant::now());
        if state.on_embedded_broker() || self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let history = Arc::downgrade(self);
        let state = state.clone();
        tokio::spawn(async move { sample_forever(history, state).await });
    }

    /// Whether the sampler was started.
    #[cfg(test)]
    pub fn sampling(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Adds `partitions` as the group's lag now.
    pub fn record(&self, group: &str, partitions: &[PartitionLag]) {
        self.record_at(group, partitions, now_millis());
    }

    fn record_at(&self, group: &str, partitions: &[PartitionLag], at: i64) {
        let mut inner = self.inner.lock().expect("not poisoned");
        if !inner.groups.contains_key(group) && inner.groups.len() >= MAX_GROUPS {
            return;
        }
        let history = inner.groups.entry(group.to_owned()).or_default();
        let before = history.bytes();
        for p in partitions {
            if history.topics.len() < MAX_TOPICS && !history.topics.contains(&p.topic) {
                history.topics.push(p.topic.clone());
            }
        }
        let mut lags = vec![0; history.topics.len()];
        for p in partitions {
            if let Some(i) = history.topics.iter().position(|t| *t == p.topic) {
                lags[i] += p.lag;
            }
        }
        if history
            .samples
            .back()
            .is_some_and(|s| at - s.at < MIN_GAP_MILLIS)
        {
            history.samples.pop_back();
        }
        history.samples.push_back(Sample { at, lags });
        while history.samples.len() > KEEP {
            history.samples.pop_front();
        }
        let after = history.bytes();
        inner.bytes = inner.bytes + after - before;
        // Over the budget: the group holding the most samples gives up its oldest.
        while inner.bytes > inner.max_bytes {
            let Some(largest) = inner
                .groups
                .values_mut()
                .filter(|h| h.samples.len() > 1)
                .max_by_key(|h| h.samples.len())
            else {
                break;
            };
            let freed = largest.samples.pop_front().map_or(0, |s| s.bytes());
            inner.bytes -= freed;
        }
    }

    /// Samples every group now unless that was done less than `fresh` ago.
    pub async fn refresh(&self, state: &AppState, fresh: Duration) {
        let _one = self.sampling.lock().await;
        let sampled = self.inner.lock().expect("not poisoned").sampled;
        if sampled.is_some_and(|at| at.elapsed() < fresh) {
            return;
        }
        if let Err(error) = self.sample(state).await {
            tracing::debug!(%error, "lag sampling failed");
        }
    }

    /// Like [`LagHistory::refresh`], waiting at most `wait` for it: a page shows the samples
    /// there are rather than wait for a slow cluster, and the sampling goes on behind it.
    pub async fn refresh_within(
        self: &Arc<Self>,
        state: &AppState,
        fresh: Duration,
        wait: Duration,
    ) {
        let history = Arc::clone(self);
        let state = state.clone();
        let sampling = tokio::spawn(async move { history.refresh(&state, fresh).await });
        let _ = tokio::time::timeout(wait, sampling).await;
    }

    async fn sample(&self, state: &AppState) -> kafkit::Result<()> {
        let groups = state.admin().list_groups().await?;
        let listed: Vec<String> = groups
            .into_iter()
            .map(|g| g.name)
            .take(MAX_GROUPS)
            .collect();
        // A few groups at a time: each is a committed-offsets and a watermarks round trip.
        for chunk in listed.chunks(CONCURRENT_SAMPLES) {
            let mut tasks = tokio::task::JoinSet::new();
            for group in chunk {
                let (admin, group) = (Arc::clone(state.admin()), group.clone());
                tasks.spawn(async move {
                    let lags = admin.group_lag(&group, &[]).await;
                    (group, lags)
                });
            }
            while let Some(Ok((group, lags))) = tasks.join_next().await {
                match lags {
                    Ok(lags) => self.record(&group, &lags),
                    Err(error) => tracing::debug!(%group, %error, "lag sample failed"),
                }
            }
        }
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.groups.retain(|name, _| listed.contains(name));
        inner.bytes = inner.groups.values().map(GroupHistory::bytes).sum();
        inner.sampled = Some(Instant::now());
        Ok(())
    }

    /// The group's latest lag in the topics `readable` accepts, when sampled.
    pub fn latest(&self, group: &str, readable: impl Fn(&str) -> bool) -> Option<i64> {
        let inner = self.inner.lock().expect("not poisoned");
        let history = inner.groups.get(group)?;
        Some(history.total(history.samples.back()?, &readable))
    }

    /// Groups whose latest sample has committed offsets in `topic`, with their lag there.
    pub fn readers_of(&self, topic: &str) -> Vec<(String, i64)> {
        let inner = self.inner.lock().expect("not poisoned");
        inner
            .groups
            .iter()
            .filter_map(|(group, history)| {
                let i = history.topics.iter().position(|t| t == topic)?;
                let lag = *history.samples.back()?.lags.get(i)?;
                Some((group.clone(), lag))
            })
            .collect()
    }

    /// The group's total lag over time in the topics `readable` accepts: `(millis, lag)`.
    pub fn series(&self, group: &str, readable: impl Fn(&str) -> bool) -> Vec<(i64, i64)> {
        let inner = self.inner.lock().expect("not poisoned");
        inner.groups.get(group).map_or_else(Vec::new, |history| {
            history
                .samples
                .iter()
                .map(|s| (s.at, history.total(s, &readable)))
                .collect()
        })
    }

    fn idle(&self) -> bool {
        self.last_visit
            .lock()
            .expect("not poisoned")
            .is_none_or(|at| at.elapsed() > IDLE_AFTER)
    }
}

/// Samples every [`SAMPLE_EVERY`] while the console is in use, until the history is dropped.
async fn sample_forever(history: Weak<LagHistory>, state: AppState) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(history) = history.upgrade() else {
            return;
        };
        if !history.idle() {
            history.refresh(&state, SAMPLE_EVERY / 2).await;
        }
    }
}

/// Chart size, in SVG units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 12.0;
const RIGHT: f64 = 12.0;

/// A line chart of `series` (`(millis, lag)`), drawn on the server.
pub fn chart(series: &[(i64, i64)]) -> Markup {
    let max_lag = series.iter().map(|(_, lag)| *lag).max().unwrap_or(0).max(1);
    let first = series.first().map_or(0, |(at, _)| *at);
    let last = series.last().map_or(0, |(at, _)| *at);
    let span = (last - first).max(1) as f64;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |at: i64| LEFT + (at - first) as f64 / span * plot_w;
    let y = |lag: i64| TOP + plot_h - lag as f64 / max_lag as f64 * plot_h;
    let points: Vec<String> = series
        .iter()
        .map(|(at, lag)| format!("{:.1},{:.1}", x(*at), y(*lag)))
        .collect();
    let latest = series.last().map_or(0, |(_, lag)| *lag);
    html! {
        svg.chart viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img"
            aria-label={"Lag over time: " (series.len()) " samples, latest " (latest)} {
            title { "Lag over time (" (series.len()) " samples)" }
            line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h) {}
            line.axis x1=(LEFT) y1=(TOP + plot_h) x2=(WIDTH - RIGHT) y2=(TOP + plot_h) {}
            line.grid x1=(LEFT) y1=(TOP) x2=(WIDTH - RIGHT) y2=(TOP) {}
            text.label x=(LEFT - 6.0) y=(TOP + 4.0) text-anchor="end" { (max_lag) }
            text.label x=(LEFT - 6.0) y=(TOP + plot_h) text-anchor="end" { "0" }
            @if let (Some((from, _)), Some((to, _))) = (series.first(), series.last()) {
                text.label x=(LEFT) y=(HEIGHT - 6.0) { (clock(*from)) " UTC" }
                text.label x=(WIDTH - RIGHT) y=(HEIGHT - 6.0) text-anchor="end" { (clock(*to)) " UTC" }
            }
            @if points.len() == 1 {
                circle.point cx=(x(series[0].0)) cy=(y(series[0].1)) r="3" {}
            } @else if !points.is_empty() {
                polyline.series points=(points.join(" ")) {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(topic: &str, lag: i64) -> PartitionLag {
        PartitionLag {
            topic: topic.to_owned(),
            partition: 0,
            committed: Some(0),
            high_watermark: lag,
            lag,
        }
    }

    #[test]
    fn samples_are_bounded_and_filtered_by_topic() {
        let history = LagHistory::default();
        for i in 0..(KEEP + 10) {
            let i = i as i64;
            history.record_at("g", &[lag("a", i), lag("b", 1), lag("a", 1)], i * 10_000);
        }
        let series = history.series("g", |_| true);
        assert_eq!(series.len(), KEEP);
        let last = KEEP as i64 + 9;
        assert_eq!(series.last(), Some(&(last * 10_000, last + 2)));
        assert_eq!(series[0].0, 10 * 10_000, "the oldest went first");
        assert_eq!(history.latest("g", |t| t == "b"), Some(1));
        assert_eq!(history.readers_of("a"), vec![("g".to_owned(), last + 1)]);
        assert!(history.readers_of("c").is_empty());
        // Samples closer than a second replace each other.
        history.record_at("h", &[lag("a", 5)], 0);
        history.record_at("h", &[lag("a", 4)], 500);
        assert_eq!(history.series("h", |_| true), vec![(500, 4)]);
        // No more than MAX_GROUPS groups.
        for i in 0..MAX_GROUPS + 5 {
            history.record(&format!("g{i}"), &[]);
        }
        assert_eq!(history.inner.lock().unwrap().groups.len(), MAX_GROUPS);
    }

    #[test]
    fn the_history_stays_within_its_byte_budget() {
        let history = LagHistory::default();
        history.inner.lock().unwrap().max_bytes = 64 << 10;
        // Ten groups of MAX_TOPICS + 20 topics each, sampled far more than the budget holds.
        let partitions: Vec<PartitionLag> = (0..MAX_TOPICS + 20)
            .map(|t| lag(&format!("topic-{t:03}"), 1))
            .collect();
        for round in 0..200 {
            for group in 0..10 {
                history.record_at(&format!("g{group}"), &partitions, round * 10_000);
            }
        }
        let inner = history.inner.lock().unwrap();
        let counted: usize = inner.groups.values().map(GroupHistory::bytes).sum();
        assert_eq!(inner.bytes, counted);
        assert!(inner.bytes <= 64 << 10, "{} bytes", inner.bytes);
        // Topics past MAX_TOPICS are not tracked; every group kept recent samples.
        for history in inner.groups.values() {
            assert_eq!(history.topics.len(), MAX_TOPICS);
            assert!(history.samples.len() >= 5, "{}", history.samples.len());
            assert_eq!(history.samples.back().unwrap().at, 199 * 10_000);
        }
    }

    #[test]
    fn the_chart_draws_one_point_per_sample() {
        let svg = chart(&[(0, 10), (10_000, 5), (20_000, 0)]).into_string();
        assert!(svg.contains("<polyline"), "{svg}");
        assert!(
            svg.contains("points=\"56.0,12.0 382.0,94.0 708.0,176.0\""),
            "{svg}"
        );
        let svg = chart(&[(0, 3)]).into_string();
        assert!(svg.contains("<circle"), "{svg}");
        assert!(chart(&[]).into_string().contains("0 samples"));
    }
}
