//! [`RetryPolicy`]: bounded attempts with exponential backoff and jitter.
//!
//! Hand-written rather than taken from a backoff crate: the whole policy is one formula, and the
//! runtime needs the delay per attempt number (it sleeps while the partition is paused), not an
//! iterator or a retry loop.

use std::time::Duration;

use rand::Rng;

/// Default handler attempts before a record is dead-lettered (the first try included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default delay before the second attempt.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(200);
/// Default cap on one delay.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

/// How often and how patiently a failing record is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Handler attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Factor applied to the delay after each attempt.
    pub multiplier: f64,
    /// Upper bound of one delay.
    pub max_delay: Duration,
    /// Fraction of each delay randomised (0.0 none, 0.2 = ±20%), so that many consumers failing
    /// together do not retry in lockstep.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_delay: DEFAULT_INITIAL_DELAY,
            multiplier: 2.0,
            max_delay: DEFAULT_MAX_DELAY,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff from `initial_delay`, doubling, up to `max_attempts` attempts.
    pub fn exponential(max_attempts: u32, initial_delay: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            initial_delay,
            ..RetryPolicy::default()
        }
    }

    /// One attempt only: failures go straight to the dead-letter topic.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Caps each delay.
    #[must_use]
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Sets the randomised fraction of each delay (clamped to 0..=1).
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Whether a record that failed `attempts` times may be tried again.
    pub fn should_retry(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }

    /// The delay after the `attempt`-th failed attempt (1-based), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let spread = base * self.jitter;
        let jittered = if spread > 0.0 {
            rand::rng().random_range((base - spread)..=(base + spread))
        } else {
            base
        };
        Duration::from_secs_f64(jittered.max(0.0)).min(self.max_delay)
    }

    /// The delay without jitter: `initial * multiplier^(attempt-1)`, capped.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        if secs.is_finite() {
            Duration::from_secs_f64(secs).min(self.max_delay)
        } else {
            self.max_delay
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let policy = RetryPolicy::exponential(5, Duration::from_millis(100))
            .max_delay(Duration::from_millis(500))
            .jitter(0.0);
        let delays: Vec<u128> = (1..=5).map(|a| policy.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert!(policy.should_retry(4));
        assert!(!policy.should_retry(5));
        assert!(!RetryPolicy::none().should_retry(1));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let policy = RetryPolicy::exponential(3, Duration::from_millis(1000)).jitter(0.2);
        for _ in 0..200 {
            let delay = policy.delay(1).as_millis();
            assert!((800..=1200).contains(&delay), "{delay}");
        }
    }
}
