//! `LogClaims`: which replica holds each idempotency key, as decided by the order of the shared
//! answer log ([`AnswerLog`](super::answer_log::AnswerLog)).
//!
//! A replica about to produce for a key appends a *claim* to the log, then reads the log up
//! to it. Every replica applies the log in the same order, so all agree: the first claim of a
//! key that finds no live holder holds it; a later one loses (its replica does not produce).
//! The holder's *answer* or *release* frees the key, and so does its claim's expiry (a crashed
//! holder). A pure table, fed by the log's follower and tested without a broker.

use std::collections::HashMap;

/// What a claim entry of the log says, beside the answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Mark {
    /// `by` is about to produce for the key, and will answer or release it before
    /// `expires_ms` (milliseconds since the epoch, by the claiming replica's clock).
    Claimed { by: String, expires_ms: u64 },
    /// `by` gave its claim up without an answer: the key may be claimed again.
    Released { by: String },
}

/// The live claim of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    by: String,
    expires_ms: u64,
}

/// Holders of the keys being worked on, by log key. Only holders are kept (a losing claim is
/// dropped when read), and a holder goes with its key's answer or release; expired holders
/// (crashed replicas) are swept once the table doubles.
#[derive(Debug)]
pub(super) struct LogClaims {
    holders: HashMap<String, Holder>,
    sweep_at: usize,
}

/// Holders kept before the first sweep of expired ones.
const FIRST_SWEEP: usize = 1024;

impl Default for LogClaims {
    fn default() -> Self {
        LogClaims {
            holders: HashMap::new(),
            sweep_at: FIRST_SWEEP,
        }
    }
}

impl LogClaims {
    /// Applies a claim or release of `key` read from the log at `now_ms`.
    pub(super) fn mark(&mut self, key: &str, mark: Mark, now_ms: u64) {
        match mark {
            Mark::Claimed { by, expires_ms } => {
                let live = self
                    .holders
                    .get(key)
                    .is_some_and(|holder| holder.expires_ms > now_ms);
                if !live && expires_ms > now_ms {
                    self.holders
                        .insert(key.to_owned(), Holder { by, expires_ms });
                    self.sweep(now_ms);
                }
            }
            Mark::Released { by } => {
                if self.holders.get(key).is_some_and(|holder| holder.by == by) {
                    self.holders.remove(key);
                }
            }
        }
    }

    /// An answer of `key` was read: whoever held it is done.
    pub(super) fn answered(&mut self, key: &str) {
        self.holders.remove(key);
    }

    /// Whether the claim `by` holds `key`.
    pub(super) fn holds(&self, key: &str, by: &str) -> bool {
        self.holders.get(key).is_some_and(|holder| holder.by == by)
    }

    fn sweep(&mut self, now_ms: u64) {
        if self.holders.len() >= self.sweep_at {
            self.holders.retain(|_, holder| holder.expires_ms > now_ms);
            self.sweep_at = (self.holders.len() * 2).max(FIRST_SWEEP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(by: &str, expires_ms: u64) -> Mark {
        Mark::Claimed {
            by: by.to_owned(),
            expires_ms,
        }
    }

    #[test]
    fn the_first_live_claim_holds_until_its_answer_or_release() {
        let mut claims = LogClaims::default();
        // Two replicas claim one key: the first in log order holds it.
        claims.mark("k", claimed("a", 100), 10);
        claims.mark("k", claimed("b", 100), 10);
        assert!(claims.holds("k", "a") && !claims.holds("k", "b"));
        // The loser's release changes nothing; the holder's frees the key.
        claims.mark("k", Mark::Released { by: "b".into() }, 20);
        assert!(claims.holds("k", "a"));
        claims.mark("k", Mark::Released { by: "a".into() }, 20);
        claims.mark("k", claimed("b", 100), 30);
        assert!(claims.holds("k", "b"));
        // An answer frees it too.
        claims.answered("k");
        claims.mark("k", claimed("c", 100), 40);
        assert!(claims.holds("k", "c"));
    }

    #[test]
    fn an_expired_claim_gives_way() {
        let mut claims = LogClaims::default();
        claims.mark("k", claimed("crashed", 50), 10);
        // Read after it expired, a new claim takes the key; an expired claim never holds.
        claims.mark("k", claimed("b", 200), 60);
        assert!(claims.holds("k", "b"));
        claims.mark("j", claimed("late", 50), 60);
        assert!(!claims.holds("j", "late"));
    }

    #[test]
    fn expired_holders_are_swept() {
        let mut claims = LogClaims::default();
        for i in 0..10_000 {
            claims.mark(&format!("k{i}"), claimed("crashed", 100), 10);
        }
        // Once they expired, new claims sweep them away.
        for i in 0..FIRST_SWEEP * 8 {
            claims.mark(&format!("n{i}"), claimed("b", 1_000), 500);
        }
        assert!(
            claims.holders.len() <= FIRST_SWEEP * 8 + 1,
            "{}",
            claims.holders.len()
        );
    }
}
