//! [`ExactlyOnce::health`]: whether the pipeline is really transforming — running, its loop
//! turning, its transactions committing — and, once it stopped on an error, which.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::ExactlyOnce;
use crate::consumer::context::CommitHistory;
use crate::error::Error;
use crate::health::{CommitStatus, HealthReport};

/// What the run loop tells [`ExactlyOnce::health`].
#[derive(Debug)]
pub(super) struct Vitals {
    running: AtomicBool,
    /// When the loop last turned: read a record, or finished a batch.
    turned: Mutex<Instant>,
    transactions: Mutex<CommitHistory>,
    /// The error `run` stopped with.
    stopped_by: Mutex<Option<String>>,
}

impl Default for Vitals {
    fn default() -> Self {
        Vitals {
            running: AtomicBool::new(false),
            turned: Mutex::new(Instant::now()),
            transactions: Mutex::new(CommitHistory::default()),
            stopped_by: Mutex::new(None),
        }
    }
}

impl Vitals {
    pub(super) fn started(&self) {
        *lock(&self.stopped_by) = None;
        self.turned();
        self.running.store(true, Ordering::SeqCst);
    }

    pub(super) fn turned(&self) {
        *lock(&self.turned) = Instant::now();
    }

    /// A transaction committed (`true`) or failed.
    pub(super) fn transaction(&self, committed: bool) {
        lock(&self.transactions).record(Instant::now(), committed);
    }

    pub(super) fn stopped(&self, error: Option<&Error>) {
        self.running.store(false, Ordering::SeqCst);
        *lock(&self.stopped_by) = error.map(|e| format!("stopped: {e}"));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ExactlyOnce {
    /// The pipeline's health: running, its loop turning within
    /// [`ExactlyOnceOptions::stall_timeout`](super::ExactlyOnceOptions::stall_timeout), its
    /// transactions not failing for longer than that; once `run` stopped on an error, that
    /// error first. Its partitions are not listed (a batch holds them all at once).
    pub fn health(&self) -> HealthReport {
        let vitals = &self.vitals;
        let history = *lock(&vitals.transactions);
        let commits = CommitStatus {
            last: history.last.map(|(at, ok)| (at.elapsed(), ok)),
            failing_for: history.failing_since.map(|since| since.elapsed()),
        };
        HealthReport::new(
            &self.group,
            vitals.running.load(Ordering::SeqCst),
            lock(&vitals.turned).elapsed(),
            commits,
            Vec::new(),
            BTreeMap::new(),
            self.options.stall_timeout,
        )
        .with_stop(lock(&vitals.stopped_by).as_deref())
    }
}
