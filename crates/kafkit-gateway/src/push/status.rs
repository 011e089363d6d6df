//! [`SubscriptionStatus`]: what a subscription's deliveries did lately, for `GET /subscriptions`
//! and readiness: counts, consecutive failures and the last few failures (bounded).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use kafkit::Message;
use serde::Serialize;

/// Failures kept per subscription.
pub const RECENT_FAILURES: usize = 20;
/// Consecutive failed requests after which a subscription counts as failing.
pub const FAILING_AFTER: u32 = 5;

/// Counters and recent failures of one subscription.
#[derive(Debug, Default)]
pub struct SubscriptionStatus {
    delivered: AtomicU64,
    failed: AtomicU64,
    consecutive_failures: AtomicU32,
    last_success: Mutex<Option<Instant>>,
    recent: Mutex<VecDeque<RecentFailure>>,
}

/// One failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RecentFailure {
    /// `topic/partition/offset`.
    pub delivery_id: String,
    /// The attempt that failed.
    pub attempt: u32,
    /// Status class: `4xx`, `429`, `5xx`, `timeout`, `connect`, `error`.
    pub class: String,
    /// Status and body excerpt, or the transport error.
    pub message: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// A snapshot for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StatusSnapshot {
    /// Records delivered with a 2xx since start.
    pub delivered: u64,
    /// Failed requests since start.
    pub failed: u64,
    /// Failed requests since the last 2xx.
    pub consecutive_failures: u32,
    /// Milliseconds since the last 2xx.
    pub last_success_ago_ms: Option<u64>,
    /// The last failures, newest last.
    pub recent_failures: Vec<RecentFailure>,
}

impl SubscriptionStatus {
    pub(crate) fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        *self.last_success.lock().expect("not poisoned") = Some(Instant::now());
    }

    pub(crate) fn failed(&self, message: &Message, class: &str, reason: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        let at_unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut recent = self.recent.lock().expect("not poisoned");
        if recent.len() == RECENT_FAILURES {
            recent.pop_front();
        }
        recent.push_back(RecentFailure {
            delivery_id: super::delivery_id::delivery_id(message),
            attempt: message.attempt,
            class: class.to_owned(),
            message: reason.to_owned(),
            at_unix_ms,
        });
    }

    /// Whether the endpoint fails every request lately.
    pub fn is_failing(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) >= FAILING_AFTER
    }

    /// The counters and recent failures now.
    pub fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            last_success_ago_ms: self
                .last_success
                .lock()
                .expect("not poisoned")
                .map(|at| at.elapsed().as_millis() as u64),
            recent_failures: self
                .recent
                .lock()
                .expect("not poisoned")
                .iter()
                .cloned()
                .collect(),
        }
    }
}
