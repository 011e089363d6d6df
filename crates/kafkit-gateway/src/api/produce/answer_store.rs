//! The answers an [`IdempotencyCache`](super::idempotency::IdempotencyCache) keeps: per
//! scope (API key), in claim order, and the byte budgets that bound them (a scope forgets its
//! own oldest answers; over the total, the scope holding the most pays). Running work is never
//! forgotten.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::watch;
use tokio::time::Instant;

/// What the work ended with, as seen by waiters: `None` while it runs.
pub(super) type Outcome<T> = Option<Option<T>>;

pub(super) enum Slot<T> {
    Running(watch::Receiver<Outcome<T>>),
    Done(T),
}

pub(super) struct Entry<T> {
    pub(super) slot: Slot<T>,
    pub(super) generation: u64,
    pub(super) expires: Instant,
    pub(super) weight: usize,
}

pub(super) struct Scope<T> {
    pub(super) entries: HashMap<String, Entry<T>>,
    /// Keys by generation (claim order), oldest first.
    pub(super) order: BTreeMap<u64, String>,
    pub(super) bytes: usize,
}

impl<T> Default for Scope<T> {
    fn default() -> Self {
        Scope {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
        }
    }
}

impl<T> Scope<T> {
    pub(super) fn remove(&mut self, key: &str) -> usize {
        let Some(entry) = self.entries.remove(key) else {
            return 0;
        };
        self.order.remove(&entry.generation);
        self.bytes -= entry.weight;
        entry.weight
    }

    /// Forgets the oldest finished answer; the bytes freed, 0 if none.
    pub(super) fn forget_oldest(&mut self) -> usize {
        let oldest = self.order.values().find(|key| {
            self.entries
                .get(*key)
                .is_some_and(|e| matches!(e.slot, Slot::Done(_)))
        });
        match oldest.cloned() {
            Some(key) => self.remove(&key),
            None => 0,
        }
    }

    /// Forgets expired answers at the front of the order (answers are ordered by when they
    /// were stored, so by expiry); running work is passed over, it never expires.
    pub(super) fn expire(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .order
            .values()
            .filter_map(|key| self.entries.get(key).map(|e| (key, e)))
            .filter(|(_, e)| matches!(e.slot, Slot::Done(_)))
            .take_while(|(_, e)| e.expires <= now)
            .map(|(key, _)| key.clone())
            .collect();
        expired.iter().map(|key| self.remove(key)).sum()
    }
}

/// Every scope's answers, and their bytes in all.
pub(super) struct Scopes<T> {
    pub(super) scopes: HashMap<String, Scope<T>>,
    pub(super) bytes: usize,
    pub(super) next_generation: u64,
}

impl<T> Default for Scopes<T> {
    fn default() -> Self {
        Scopes {
            scopes: HashMap::new(),
            bytes: 0,
            next_generation: 0,
        }
    }
}

impl<T> Scopes<T> {
    /// Brings `scope_name` under `scope_bytes` (its own oldest answers go), then everyone under
    /// `total_bytes` (the scope holding the most pays first).
    pub(super) fn evict(&mut self, scope_name: &str, scope_bytes: usize, total_bytes: usize) {
        let mut forgot = false;
        if let Some(scope) = self.scopes.get_mut(scope_name) {
            while scope.bytes > scope_bytes {
                let freed = scope.forget_oldest();
                if freed == 0 {
                    break;
                }
                self.bytes -= freed;
                forgot = true;
            }
        }
        while self.bytes > total_bytes {
            let Some(largest) = self
                .scopes
                .values_mut()
                .filter(|s| s.bytes > 0)
                .max_by_key(|s| s.bytes)
            else {
                break;
            };
            let freed = largest.forget_oldest();
            if freed == 0 {
                // Only running work is left in the largest scope: nothing may be forgotten.
                break;
            }
            self.bytes -= freed;
            forgot = true;
        }
        // Only forgetting can leave a scope empty; a claim that forgot nothing skips the sweep.
        if forgot {
            self.scopes.retain(|_, s| !s.entries.is_empty());
        }
    }
}
