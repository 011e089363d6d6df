//! [`ConcurrencyLimit`]: how many requests of one subscription may be in flight at once, toward
//! its one endpoint. With `concurrency = "adaptive"` (the default) the limit follows the
//! endpoint, additive increase and multiplicative decrease (AIMD, as TCP congestion control):
//!
//! - an overload signal (429, 503, a timeout) cuts the limit to [`BACKOFF`] times the requests
//!   that were in flight (not the limit, which may be far above what was used), at most once
//!   per round trip: the answers of requests sent before the last cut do not cut again;
//! - a success, while the limit is in use (at least half of it in flight), grows it by
//!   `1 / limit`: one more request per round trip of the whole window;
//! - it stays between 1 and the subscription's `max_concurrency`.
//!
//! The limit only holds a request back before it is sent: records are still handed to the
//! endpoint in the consumer runtime's order (a key's next record waits for the one before),
//! and an offset still moves only after a 2xx or an acknowledged dead-letter copy.
//! With `concurrency = "fixed"` the limit stays at `max_concurrency`.

use std::sync::Mutex;

use prometheus::IntGauge;
use tokio::sync::Notify;

/// The factor of a cut: the requests in flight at an overload signal, times this.
pub const BACKOFF: f64 = 0.75;

/// What a finished request says about the endpoint's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered without overload (2xx, and any other answer that is no overload signal).
    Ok,
    /// 429, 503 or a timeout: the endpoint has more than it can take.
    Overload,
    /// No signal either way (a connection error: the endpoint is down, not loaded).
    Ignore,
}

/// The limit of one subscription and the requests it lets through.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    adaptive: bool,
    max: usize,
    state: Mutex<State>,
    released: Notify,
    gauge: IntGauge,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    /// Incremented by every cut: a request remembers the epoch it was sent in.
    epoch: u64,
}

impl State {
    fn allowed(&self) -> usize {
        (self.limit.floor() as usize).max(1)
    }
}

/// A request let through: [`Permit::finish`] gives it back with what its answer said; a
/// permit dropped unfinished (a request cancelled) is given back as [`Signal::Ignore`].
#[derive(Debug)]
#[must_use]
pub struct Permit<'a> {
    limit: &'a ConcurrencyLimit,
    epoch: u64,
    signal: Signal,
}

impl Permit<'_> {
    /// Gives the slot back, moving the limit by `signal`.
    pub fn finish(mut self, signal: Signal) {
        self.signal = signal;
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limit.release(self.epoch, self.signal);
    }
}

impl ConcurrencyLimit {
    /// A limit between 1 and `max`, starting at `max`; `adaptive: false` keeps it there.
    /// `gauge` shows the current limit.
    pub fn new(adaptive: bool, max: usize, gauge: IntGauge) -> Self {
        let max = max.max(1);
        gauge.set(max as i64);
        ConcurrencyLimit {
            adaptive,
            max,
            state: Mutex::new(State {
                limit: max as f64,
                in_flight: 0,
                epoch: 0,
            }),
            released: Notify::new(),
            gauge,
        }
    }

    /// Whether it adapts.
    pub fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    /// The requests allowed in flight now.
    pub fn limit(&self) -> usize {
        self.state.lock().expect("not poisoned").allowed()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("not poisoned").in_flight
    }

    /// Waits until one more request may be sent.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before the check: a release between the check and the await wakes it.
            released.as_mut().enable();
            {
                let mut state = self.state.lock().expect("not poisoned");
                if state.in_flight < state.allowed() {
                    state.in_flight += 1;
                    return Permit {
                        limit: self,
                        epoch: state.epoch,
                        signal: Signal::Ignore,
                    };
                }
            }
            released.await;
        }
    }

    fn release(&self, epoch: u64, signal: Signal) {
        let mut state = self.state.lock().expect("not poisoned");
        let before = state.allowed();
        let in_flight = state.in_flight;
        state.in_flight -= 1;
        if self.adaptive {
            match signal {
                Signal::Overload if epoch == state.epoch => {
                    let used = (in_flight as f64).min(state.limit);
                    state.limit = (used * BACKOFF).max(1.0);
                    state.epoch += 1;
                }
                Signal::Ok if in_flight as f64 * 2.0 >= state.limit => {
                    state.limit = (state.limit + 1.0 / state.limit).min(self.max as f64);
                }
                _ => {}
            }
        }
        let after = state.allowed();
        drop(state);
        self.gauge.set(after as i64);
        // The slot given back, and any the limit grew by.
        for _ in 0..(1 + after.saturating_sub(before)) {
            self.released.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(adaptive: bool, max: usize) -> ConcurrencyLimit {
        ConcurrencyLimit::new(adaptive, max, IntGauge::new("limit", "limit").unwrap())
    }

    /// `n` requests sent at once, answered with `signal`.
    async fn round(l: &ConcurrencyLimit, n: usize, signal: impl Fn(usize) -> Signal) {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(l.acquire().await);
        }
        for (i, p) in permits.into_iter().enumerate() {
            p.finish(signal(i));
        }
    }

    #[tokio::test]
    async fn an_overload_cuts_the_used_window_once_per_round_trip() {
        let l = limit(true, 64);
        assert_eq!(l.limit(), 64);
        // 20 in flight, 5 answered 503: one cut, from the 20 used, not from 64.
        round(
            &l,
            20,
            |i| if i < 5 { Signal::Overload } else { Signal::Ok },
        )
        .await;
        assert_eq!(l.limit(), 15);
        assert_eq!(l.gauge.get(), 15);
        // Never below 1.
        for _ in 0..20 {
            round(&l, l.limit(), |_| Signal::Overload).await;
        }
        assert_eq!(l.limit(), 1);
    }

    #[tokio::test]
    async fn successes_grow_it_by_about_one_per_window_up_to_the_max() {
        let l = limit(true, 12);
        round(&l, 10, |_| Signal::Overload).await; // 7.5
        assert_eq!(l.limit(), 7);
        round(&l, 7, |_| Signal::Ok).await;
        assert_eq!(l.limit(), 8, "one window of successes adds about one");
        for _ in 0..100 {
            round(&l, l.limit(), |_| Signal::Ok).await;
        }
        assert_eq!(l.limit(), 12);
        // An idle limit does not grow: one request at a time says nothing about more.
        round(&l, 10, |_| Signal::Overload).await;
        let cut = l.limit();
        for _ in 0..50 {
            round(&l, 1, |_| Signal::Ok).await;
        }
        assert_eq!(l.limit(), cut);
    }

    #[tokio::test]
    async fn fixed_never_moves_and_a_full_limit_holds_requests_back() {
        let l = std::sync::Arc::new(limit(false, 2));
        round(&l, 2, |_| Signal::Overload).await;
        assert_eq!(l.limit(), 2);
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let waiting = tokio::spawn({
            let l = l.clone();
            async move {
                let _c = l.acquire().await;
                l.in_flight()
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        a.finish(Signal::Ok);
        let in_flight = tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("let through when a slot is given back")
            .unwrap();
        assert_eq!(in_flight, 2);
        assert_eq!(l.in_flight(), 1, "a dropped permit is given back");
    }
}
