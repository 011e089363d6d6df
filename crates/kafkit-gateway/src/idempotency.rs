//! `IdempotencyCache`: remembers the answer given for an idempotency key for a while, so a client
//! retrying a request (or a record) gets the first answer back and nothing is produced twice.
//!
//! A key is first *claimed* by the request that will do the work; a duplicate arriving while
//! the work runs either waits for its outcome ([`IdempotencyCache::claim`]) or is told it is in
//! progress ([`IdempotencyCache::try_claim`], for batches, where waiting on several keys could
//! deadlock two requests). Only successes are stored: a failed attempt releases the key so the
//! retry can try again. Entries expire after a TTL and the cache holds a bounded number.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How long an answer is replayed.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);
/// Most answers kept at once; the oldest are forgotten first.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// What the work ended with, as seen by waiters: `None` while it runs.
type Outcome<T> = Option<Option<T>>;

enum Slot<T> {
    Running {
        generation: u64,
        outcome: watch::Receiver<Outcome<T>>,
    },
    Done(T),
}

struct Entry<T> {
    slot: Slot<T>,
    expires: Instant,
}

struct Inner<T> {
    entries: HashMap<String, Entry<T>>,
    /// Insertion order, for bounded eviction; may name keys already removed.
    order: VecDeque<(String, Instant)>,
    next_generation: u64,
}

/// Answers by idempotency key. Cheap to clone.
pub struct IdempotencyCache<T> {
    inner: Arc<Mutex<Inner<T>>>,
    ttl: Duration,
    capacity: usize,
}

impl<T> Clone for IdempotencyCache<T> {
    fn clone(&self) -> Self {
        IdempotencyCache {
            inner: Arc::clone(&self.inner),
            ttl: self.ttl,
            capacity: self.capacity,
        }
    }
}

impl<T> std::fmt::Debug for IdempotencyCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<T: Clone> Default for IdempotencyCache<T> {
    fn default() -> Self {
        IdempotencyCache::new(DEFAULT_TTL, DEFAULT_CAPACITY)
    }
}

/// The result of claiming a key.
pub enum Claim<T> {
    /// The key was already answered: replay this.
    Done(T),
    /// Another request is working on this key right now.
    InProgress,
    /// The caller owns the key: do the work, then [`Owner::complete`].
    Owner(Owner<T>),
}

impl<T> std::fmt::Debug for Claim<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Claim::Done(_) => "Done",
            Claim::InProgress => "InProgress",
            Claim::Owner(_) => "Owner",
        })
    }
}

impl<T> std::fmt::Debug for Owner<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The right to do the work for a key. Dropped without `complete`, it releases the key.
pub struct Owner<T> {
    cache: IdempotencyCache<T>,
    key: String,
    generation: u64,
    outcome: Option<watch::Sender<Outcome<T>>>,
}

impl<T: Clone> IdempotencyCache<T> {
    /// A cache replaying answers for `ttl`, holding at most `capacity`.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        IdempotencyCache {
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                next_generation: 0,
            })),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Claims `key` without waiting.
    pub fn try_claim(&self, key: &str) -> Claim<T> {
        match self.claim_or_watch(key) {
            Ok(owner) => Claim::Owner(owner),
            Err(Watched::Done(value)) => Claim::Done(value),
            Err(Watched::Running(_)) => Claim::InProgress,
        }
    }

    /// Claims `key`, waiting for a running attempt to finish first: its success is replayed,
    /// its failure hands the key over.
    pub async fn claim(&self, key: &str) -> Claim<T> {
        loop {
            match self.claim_or_watch(key) {
                Ok(owner) => return Claim::Owner(owner),
                Err(Watched::Done(value)) => return Claim::Done(value),
                Err(Watched::Running(mut outcome)) => {
                    if let Ok(seen) = outcome.wait_for(Option::is_some).await
                        && let Some(Some(value)) = seen.clone()
                    {
                        return Claim::Done(value);
                    }
                    // Released without an answer: try to take the key over.
                }
            }
        }
    }

    fn claim_or_watch(&self, key: &str) -> Result<Owner<T>, Watched<T>> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("not poisoned");
        if let Some(entry) = inner.entries.get(key)
            && entry.expires > now
        {
            return Err(match &entry.slot {
                Slot::Done(value) => Watched::Done(value.clone()),
                Slot::Running { outcome, .. } => Watched::Running(outcome.clone()),
            });
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        let (sender, receiver) = watch::channel(None);
        let expires = now + self.ttl;
        inner.entries.insert(
            key.to_owned(),
            Entry {
                slot: Slot::Running {
                    generation,
                    outcome: receiver,
                },
                expires,
            },
        );
        inner.order.push_back((key.to_owned(), expires));
        self.evict(&mut inner, now);
        Ok(Owner {
            cache: self.clone(),
            key: key.to_owned(),
            generation,
            outcome: Some(sender),
        })
    }

    /// Forgets expired entries, then the oldest while over capacity.
    fn evict(&self, inner: &mut Inner<T>, now: Instant) {
        while let Some((key, expires)) = inner.order.front().cloned() {
            let over = inner.entries.len() > self.capacity;
            if expires > now && !over {
                break;
            }
            inner.order.pop_front();
            // Only remove the entry this order slot was written for.
            if inner
                .entries
                .get(&key)
                .is_some_and(|e| e.expires == expires)
            {
                inner.entries.remove(&key);
            }
        }
    }

    /// Entries currently kept (expired ones included until evicted).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().expect("not poisoned").entries.len()
    }
}

enum Watched<T> {
    Done(T),
    Running(watch::Receiver<Outcome<T>>),
}

impl<T: Clone> Owner<T> {
    /// Stores `value` as the key's answer and hands it to anyone waiting.
    pub fn complete(mut self, value: T) {
        let mut inner = self.cache.inner.lock().expect("not poisoned");
        if let Some(entry) = inner.entries.get_mut(&self.key)
            && matches!(entry.slot, Slot::Running { generation, .. } if generation == self.generation)
        {
            entry.slot = Slot::Done(value.clone());
        }
        drop(inner);
        if let Some(sender) = self.outcome.take() {
            sender.send_replace(Some(Some(value)));
        }
    }
}

impl<T> Drop for Owner<T> {
    fn drop(&mut self) {
        let Some(sender) = self.outcome.take() else {
            return;
        };
        // Not completed: release the key so a retry may do the work.
        if let Ok(mut inner) = self.cache.inner.lock()
            && inner.entries.get(&self.key).is_some_and(|e| {
                matches!(e.slot, Slot::Running { generation, .. } if generation == self.generation)
            })
        {
            inner.entries.remove(&self.key);
        }
        sender.send_replace(Some(None));
    }
}

/// Checks a client-supplied idempotency key: 1 to 255 visible ASCII characters.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "an idempotency key has 1 to {MAX_KEY_LEN} characters, got {}",
            key.len()
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an idempotency key is visible ASCII only".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(claim: Claim<u32>) -> Owner<u32> {
        match claim {
            Claim::Owner(owner) => owner,
            Claim::Done(v) => panic!("expected ownership, got Done({v})"),
            Claim::InProgress => panic!("expected ownership, got InProgress"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_key_is_replayed_until_its_ttl() {
        let cache = IdempotencyCache::new(Duration::from_secs(600), 10);
        // First claim owns the key; a concurrent one is told it is in progress.
        let first = owner(cache.try_claim("k"));
        assert!(matches!(cache.try_claim("k"), Claim::InProgress));
        first.complete(7);
        // Retries within the TTL replay the answer.
        assert!(matches!(cache.try_claim("k"), Claim::Done(7)));
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(matches!(cache.claim("k").await, Claim::Done(7)));
        // After the TTL the key is new again.
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(owner(cache.try_claim("k")));
    }

    #[tokio::test]
    async fn a_failed_attempt_releases_the_key_to_a_waiting_retry() {
        let cache = IdempotencyCache::<u32>::new(Duration::from_secs(60), 10);
        let first = owner(cache.try_claim("k"));
        // A duplicate waits for the first attempt...
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move {
                let retry = owner(cache.claim("k").await);
                retry.complete(9);
            }
        });
        tokio::task::yield_now().await;
        // ...which fails (dropped without an answer): the duplicate takes the key over.
        drop(first);
        waiter.await.unwrap();
        assert!(matches!(cache.try_claim("k"), Claim::Done(9)));
    }

    #[tokio::test]
    async fn a_waiter_gets_the_answer_of_the_running_attempt() {
        let cache = IdempotencyCache::<u32>::new(Duration::from_secs(60), 10);
        let first = owner(cache.try_claim("k"));
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move { cache.claim("k").await }
        });
        tokio::task::yield_now().await;
        first.complete(3);
        assert!(matches!(waiter.await.unwrap(), Claim::Done(3)));
    }

    #[tokio::test]
    async fn holds_at_most_its_capacity_oldest_first() {
        let cache = IdempotencyCache::<u32>::new(Duration::from_secs(60), 3);
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            owner(cache.try_claim(key)).complete(i as u32);
        }
        assert_eq!(cache.len(), 3);
        // "a" was forgotten; the others are replayed.
        drop(owner(cache.try_claim("a")));
        assert!(matches!(cache.try_claim("d"), Claim::Done(3)));
    }

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(validate_key("order-1:retry").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("has space").is_err());
        assert!(validate_key(&"x".repeat(256)).is_err());
    }
}
