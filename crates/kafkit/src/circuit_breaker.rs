//! [`CircuitBreaker`]: Closed → Open after consecutive failures → HalfOpen after a pause →
//! Closed after enough successful probes (the `opossum` breaker KafkaJS services wrap handlers in). While open, the runtime pauses the handler's
//! partitions instead of burning retries on a dependency that is down.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When a breaker opens and closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before a probe is let through.
    pub open_duration: Duration,
    /// Successful probes in half-open state that close the circuit.
    pub success_threshold: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            open_duration: Duration::from_secs(30),
            success_threshold: 1,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls are held back until the open duration passes.
    Open,
    /// One probe at a time is let through.
    HalfOpen,
}

impl CircuitState {
    /// The state as a number for metrics: 0 closed, 1 half-open, 2 open.
    pub fn as_gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Call the handler.
    Allowed,
    /// Call the handler as the half-open circuit's one probe. The caller must settle the probe:
    /// [`CircuitBreaker::on_success`], [`CircuitBreaker::on_failure`], or, when the call said
    /// nothing about the dependency (the record was invalid or skipped, the call was cancelled),
    /// [`CircuitBreaker::release_probe`] with this id. Until then no other call is let through.
    Probe(u64),
    /// Do not call; ask again at this instant.
    WaitUntil(Instant),
}

#[derive(Debug)]
struct State {
    state: CircuitState,
    failures: u32,
    successes: u32,
    open_until: Instant,
    probing: bool,
    /// Id of the last probe let through, so a late release cannot end a newer probe.
    probe_id: u64,
}

/// A circuit breaker shared by every partition of one handler.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    state: Mutex<State>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: Mutex::new(State {
                state: CircuitState::Closed,
                failures: 0,
                successes: 0,
                open_until: Instant::now(),
                probing: false,
                probe_id: 0,
            }),
        }
    }

    /// The current state (an open breaker whose time is up reports half-open).
    pub fn state(&self) -> CircuitState {
        let state = self.state.lock().expect("not poisoned");
        match state.state {
            CircuitState::Open if Instant::now() >= state.open_until => CircuitState::HalfOpen,
            other => other,
        }
    }

    /// Asks to call the handler. In half-open state only one probe is out at a time.
    pub fn acquire(&self) -> Permit {
        let mut state = self.state.lock().expect("not poisoned");
        let now = Instant::now();
        match state.state {
            CircuitState::Closed => Permit::Allowed,
            CircuitState::Open if now < state.open_until => Permit::WaitUntil(state.open_until),
            CircuitState::Open | CircuitState::HalfOpen => {
                if state.probing {
                    // Another partition is probing; check back shortly.
                    Permit::WaitUntil(
                        now + self.config.open_duration.min(Duration::from_millis(100)),
                    )
                } else {
                    state.state = CircuitState::HalfOpen;
                    state.probing = true;
                    state.probe_id += 1;
                    Permit::Probe(state.probe_id)
                }
            }
        }
    }

    /// Reports a successful call.
    pub fn on_success(&self) {
        let mut state = self.state.lock().expect("not poisoned");
        state.failures = 0;
        if state.state == CircuitState::HalfOpen {
            state.probing = false;
            state.successes += 1;
            if state.successes >= self.config.success_threshold {
                state.state = CircuitState::Closed;
                state.successes = 0;
                tracing::info!("circuit closed");
            }
        }
    }

    /// Ends probe `id` without a verdict (the record was invalid or skipped, or the call was
    /// cancelled or panicked before reporting): the next caller may probe. A no-op when the
    /// probe was already settled or a newer one is out.
    pub fn release_probe(&self, id: u64) {
        let mut state = self.state.lock().expect("not poisoned");
        if state.probing && state.probe_id == id {
            state.probing = false;
        }
    }

    /// Reports a failed call (a dependency failure, not invalid input).
    pub fn on_failure(&self) {
        let mut state = self.state.lock().expect("not poisoned");
        state.probing = false;
        state.successes = 0;
        state.failures += 1;
        let trips = match state.state {
            CircuitState::HalfOpen => true,
            CircuitState::Closed => state.failures >= self.config.failure_threshold,
            CircuitState::Open => false,
        };
        if trips {
            state.state = CircuitState::Open;
            state.open_until = Instant::now() + self.config.open_duration;
            tracing::warn!(
                failures = state.failures,
                open_for_ms = self.config.open_duration.as_millis() as u64,
                "circuit opened"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 3,
            open_duration: Duration::from_secs(10),
            success_threshold: 2,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_probes_and_closes() {
        let breaker = breaker();
        // Two failures: still closed.
        breaker.on_failure();
        breaker.on_failure();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(breaker.acquire(), Permit::Allowed);
        // The third opens it: calls are held back for the open duration.
        breaker.on_failure();
        assert_eq!(breaker.state(), CircuitState::Open);
        let Permit::WaitUntil(until) = breaker.acquire() else {
            panic!("open breaker allowed a call")
        };
        assert_eq!(until - Instant::now(), Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(matches!(breaker.acquire(), Permit::WaitUntil(_)));
        // After the duration one probe goes through, a second caller waits.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(matches!(breaker.acquire(), Permit::Probe(_)));
        assert!(matches!(breaker.acquire(), Permit::WaitUntil(_)));
        // Two successful probes close it.
        breaker.on_success();
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(matches!(breaker.acquire(), Permit::Probe(_)));
        breaker.on_success();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let breaker = breaker();
        for _ in 0..3 {
            breaker.on_failure();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(breaker.acquire(), Permit::Probe(_)));
        breaker.on_failure();
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(matches!(breaker.acquire(), Permit::WaitUntil(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_lets_the_next_probe_through() {
        let breaker = breaker();
        for _ in 0..3 {
            breaker.on_failure();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let Permit::Probe(first) = breaker.acquire() else {
            panic!("no probe after the open duration")
        };
        assert!(matches!(breaker.acquire(), Permit::WaitUntil(_)));
        // The probe's record was skipped: no verdict, the next caller probes.
        breaker.release_probe(first);
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        let Permit::Probe(second) = breaker.acquire() else {
            panic!("the released probe still blocks the circuit")
        };
        // A late release of the first probe does not end the second.
        breaker.release_probe(first);
        assert!(matches!(breaker.acquire(), Permit::WaitUntil(_)));
        breaker.on_success();
        breaker.on_success();
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.release_probe(second);
        assert_eq!(breaker.acquire(), Permit::Allowed);
    }

    #[test]
    fn successes_reset_the_failure_count() {
        let breaker = breaker();
        breaker.on_failure();
        breaker.on_failure();
        breaker.on_success();
        breaker.on_failure();
        breaker.on_failure();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
