//! `IdempotencyCache`: remembers the answer given for an idempotency key for a while, so a client
//! retrying a request (or a record) gets the first answer back and nothing is produced twice.
//!
//! A key is first *claimed* by the request that will do the work; a duplicate arriving while
//! the work runs either waits for its outcome ([`IdempotencyCache::claim`]) or is told it is in
//! progress ([`IdempotencyCache::try_claim`], for batches, where waiting on several keys could
//! deadlock two requests). Only successes are stored: a failed attempt releases the key so the
//! retry can try again.
//!
//! Keys live in *scopes* (one per API key): a caller's keys never collide with another's.
//! Memory is bounded by bytes, not entries: each scope may hold [`DEFAULT_SCOPE_BYTES`] of
//! answers and all scopes together [`DEFAULT_TOTAL_BYTES`]. Over its own budget a scope forgets
//! its oldest answers; over the total budget the scope holding the most pays, so one busy
//! caller cannot push out everyone else's keys. A key whose work is still running is never
//! forgotten and never expires (forgetting it would let a retry produce a second copy: the
//! claim lasts until the send's outcome is known, up to librdkafka's delivery timeout); an
//! answer expires a TTL after it was stored.
//!
//! Shared through an [`AnswerLog`] (several replicas), a key claimed here is then claimed in
//! the log as well, and only the replica holding it there does the work: a duplicate at another
//! replica is told it is in progress (or gets the answer, once written), and a claim that
//! cannot be settled in the log in time is [`Claim::Unavailable`], never worked on.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::produce::answer_log::{AnswerLog, Kind, Learnt, LogClaim, Standing};
use crate::api::produce::answer_store::{Entry, Outcome, Scopes, Slot};

/// How long an answer is replayed.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);
/// Bytes of answers one scope (API key) may keep.
pub const DEFAULT_SCOPE_BYTES: usize = 64 << 20;
/// Bytes of answers all scopes together may keep.
pub const DEFAULT_TOTAL_BYTES: usize = 256 << 20;
/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// What an entry costs beyond its key and answer (maps, order, bookkeeping).
const ENTRY_OVERHEAD: usize = 96;

/// The memory an answer holds, for the cache's byte budget.
pub trait Weigh {
    /// Approximate bytes.
    fn weight(&self) -> usize;
}

/// Writes an answer to the shared log, in a task of its own.
type Publisher<T> = Arc<dyn Fn(&str, &str, &T) -> tokio::task::JoinHandle<()> + Send + Sync>;

/// The answer log every replica shares, once [`IdempotencyCache::share`] set it.
struct Shared<T> {
    log: AnswerLog,
    kind: Kind,
    publish: Publisher<T>,
}

/// Answers by scope and idempotency key. Cheap to clone.
pub struct IdempotencyCache<T> {
    inner: Arc<Mutex<Scopes<T>>>,
    ttl: Duration,
    scope_bytes: usize,
    total_bytes: usize,
    shared: Arc<OnceLock<Shared<T>>>,
    /// Sharing was asked for (it may not be set up yet).
    sharing_wanted: Arc<std::sync::atomic::AtomicBool>,
}

impl<T> Clone for IdempotencyCache<T> {
    fn clone(&self) -> Self {
        IdempotencyCache {
            inner: Arc::clone(&self.inner),
            ttl: self.ttl,
            scope_bytes: self.scope_bytes,
            total_bytes: self.total_bytes,
            shared: Arc::clone(&self.shared),
            sharing_wanted: Arc::clone(&self.sharing_wanted),
        }
    }
}

/// An answer being written to the shared log (nothing when the cache is not shared).
#[derive(Debug)]
pub struct Published(Option<tokio::task::JoinHandle<()>>);

impl Published {
    /// Waits until the broker stored it (or refused it: that is logged).
    pub async fn wait(self) {
        if let Some(task) = self.0 {
            let _ = task.await;
        }
    }
}

impl<T> std::fmt::Debug for IdempotencyCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyCache")
            .field("ttl", &self.ttl)
            .field("scope_bytes", &self.scope_bytes)
            .field("total_bytes", &self.total_bytes)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Weigh> Default for IdempotencyCache<T> {
    fn default() -> Self {
        IdempotencyCache::new(DEFAULT_TTL, DEFAULT_SCOPE_BYTES, DEFAULT_TOTAL_BYTES)
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
    /// The replicas' shared log could not say whether another replica works on the key: do
    /// nothing, the client retries later.
    Unavailable,
}

impl<T> std::fmt::Debug for Claim<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Claim::Done(_) => "Done",
            Claim::InProgress => "InProgress",
            Claim::Owner(_) => "Owner",
            Claim::Unavailable => "Unavailable",
        })
    }
}

impl<T> std::fmt::Debug for Owner<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("scope", &self.scope)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The right to do the work for a key. Dropped without `complete`, it releases the key.
pub struct Owner<T> {
    cache: IdempotencyCache<T>,
    scope: String,
    key: String,
    generation: u64,
    outcome: Option<watch::Sender<Outcome<T>>>,
    /// The key's claim in the shared log, when shared: released if dropped unanswered.
    /// (Boxed: rarely set, and every claim moves an `Owner`.)
    log_claim: Option<Box<LogClaim>>,
}

enum Watched<T> {
    Done(T),
    Running(watch::Receiver<Outcome<T>>),
}

impl<T: Clone + Weigh> IdempotencyCache<T> {
    /// A cache replaying answers for `ttl`, keeping at most `scope_bytes` per scope and
    /// `total_bytes` in all.
    pub fn new(ttl: Duration, scope_bytes: usize, total_bytes: usize) -> Self {
        IdempotencyCache {
            inner: Arc::new(Mutex::new(Scopes::default())),
            ttl,
            scope_bytes,
            total_bytes: total_bytes.max(scope_bytes),
            shared: Arc::default(),
            sharing_wanted: Arc::default(),
        }
    }

    /// Marks this cache as to be shared: until [`IdempotencyCache::share`] ran,
    /// [`IdempotencyCache::sharing_pending`] is true (readiness waits for it).
    pub fn expect_sharing(&self) {
        self.sharing_wanted
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// True while sharing was asked for and is not set up yet.
    pub fn sharing_pending(&self) -> bool {
        self.sharing_wanted
            .load(std::sync::atomic::Ordering::SeqCst)
            && self.shared.get().is_none()
    }

    /// Shares this cache's answers with every replica through `log`: answers stored here are
    /// Stores an answer another replica wrote to the shared log, unless it expired or does
    /// not parse.
    fn learn_answer(&self, learnt: &Learnt<'_>)
    where
        T: Clone + Weigh + DeserializeOwned,
    {
        if let Some((answer, ttl)) = learnt.answer::<T>() {
            self.learn(learnt.scope, learnt.key, answer, ttl);
        }
    }

    /// written to it, and a claim of a key not known here first reads it up to its end.
    pub fn share(&self, log: AnswerLog, kind: Kind)
    where
        T: Serialize + Send + Sync + 'static,
    {
        let ttl = self.ttl;
        let writer = log.clone();
        let publish: Publisher<T> = Arc::new(move |scope: &str, key: &str, value: &T| {
            let (log, scope, key, value) = (
                writer.clone(),
                scope.to_owned(),
                key.to_owned(),
                value.clone(),
            );
            tokio::spawn(async move {
                if let Err(error) = log.publish(kind, &scope, &key, &value, ttl).await {
                    tracing::warn!(%error, "writing an idempotency answer to the shared log");
                }
            })
        });
        let _ = self.shared.set(Shared { log, kind, publish });
    }

    /// Stores `value` as the answer of `key` of `scope`, learnt from another replica, for
    /// `ttl`; an answer already here is kept. A claim here is replaced: it is being settled
    /// in the log, where the answer came first (the owner's `complete` or drop then leaves the
    /// learnt answer alone, and its waiters find it).
    pub fn learn(&self, scope_name: &str, key: &str, value: T, ttl: Duration) {
        let now = Instant::now();
        let mut guard = self.inner.lock().expect("not poisoned");
        let inner = &mut *guard;
        let scope = inner.scopes.entry(scope_name.to_owned()).or_default();
        if scope
            .entries
            .get(key)
            .is_some_and(|e| matches!(e.slot, Slot::Done(_)) && e.expires > now)
        {
            return;
        }
        inner.bytes -= scope.remove(key);
        let generation = inner.next_generation;
        inner.next_generation += 1;
        let weight = key.len() + ENTRY_OVERHEAD + value.weight();
        scope.entries.insert(
            key.to_owned(),
            Entry {
                slot: Slot::Done(value),
                generation,
                expires: now + ttl,
                weight,
            },
        );
        scope.order.insert(generation, key.to_owned());
        scope.bytes += weight;
        inner.bytes += weight;
        inner.evict(scope_name, self.scope_bytes, self.total_bytes);
    }

    /// The answer of `key` of `scope` kept here, if any.
    fn answered(&self, scope: &str, key: &str) -> Option<T> {
        let now = Instant::now();
        let inner = self.inner.lock().expect("not poisoned");
        match inner.scopes.get(scope).and_then(|s| s.entries.get(key)) {
            Some(Entry {
                slot: Slot::Done(value),
                expires,
                ..
            }) if *expires > now => Some(value.clone()),
            _ => None,
        }
    }

    /// Settles a key owned here in the shared log, if shared: the owner when this replica
    /// holds it there, the answer if one was written before, in progress when another replica
    /// holds it, unavailable when the log did not say in time.
    async fn confirm(&self, mut owner: Owner<T>) -> Claim<T> {
        let Some(shared) = self.shared.get() else {
            return Claim::Owner(owner);
        };
        let standing = shared
            .log
            .claim(shared.kind, &owner.scope, &owner.key)
            .await;
        // Every answer written before the claim has been read (and learnt) by now.
        if let Some(value) = self.answered(&owner.scope, &owner.key) {
            return Claim::Done(value);
        }
        match standing {
            Standing::Held(claim) => {
                owner.log_claim = Some(Box::new(claim));
                Claim::Owner(owner)
            }
            Standing::Taken => Claim::InProgress,
            Standing::Unknown => Claim::Unavailable,
        }
    }

    /// A cache replaying answers for `ttl`, with the default byte budgets.
    pub fn replaying_for(ttl: Duration) -> Self {
        IdempotencyCache::new(ttl, DEFAULT_SCOPE_BYTES, DEFAULT_TOTAL_BYTES)
    }

    /// Claims `key` of `scope` without waiting for a running attempt, here or at another
    /// replica.
    pub async fn try_claim(&self, scope: &str, key: &str) -> Claim<T> {
        match self.claim_or_watch(scope, key) {
            Ok(owner) => self.confirm(owner).await,
            Err(Watched::Done(value)) => Claim::Done(value),
            Err(Watched::Running(_)) => Claim::InProgress,
        }
    }

    /// Claims `key` of `scope`, waiting for a running attempt here to finish first: its
    /// success is replayed, its failure hands the key over. An attempt running at another
    /// replica is not waited for: that is [`Claim::InProgress`].
    pub async fn claim(&self, scope: &str, key: &str) -> Claim<T> {
        loop {
            match self.claim_or_watch(scope, key) {
                Ok(owner) => return self.confirm(owner).await,
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

    fn claim_or_watch(&self, scope_name: &str, key: &str) -> Result<Owner<T>, Watched<T>> {
        let now = Instant::now();
        let mut guard = self.inner.lock().expect("not poisoned");
        let inner = &mut *guard;
        let scope = inner.scopes.entry(scope_name.to_owned()).or_default();
        inner.bytes -= scope.expire(now);
        // Running work holds its key however long it takes (up to librdkafka's delivery
        // timeout): a retry meanwhile must not produce a second copy.
        if let Some(entry) = scope.entries.get(key)
            && (matches!(entry.slot, Slot::Running(_)) || entry.expires > now)
        {
            return Err(match &entry.slot {
                Slot::Done(value) => Watched::Done(value.clone()),
                Slot::Running(outcome) => Watched::Running(outcome.clone()),
            });
        }
        inner.bytes -= scope.remove(key);
        let generation = inner.next_generation;
        inner.next_generation += 1;
        let (sender, receiver) = watch::channel(None);
        let weight = key.len() + ENTRY_OVERHEAD;
        scope.entries.insert(
            key.to_owned(),
            Entry {
                slot: Slot::Running(receiver),
                generation,
                expires: now + self.ttl,
                weight,
            },
        );
        scope.order.insert(generation, key.to_owned());
        scope.bytes += weight;
        inner.bytes += weight;
        inner.evict(scope_name, self.scope_bytes, self.total_bytes);
        Ok(Owner {
            cache: self.clone(),
            scope: scope_name.to_owned(),
            key: key.to_owned(),
            generation,
            outcome: Some(sender),
            log_claim: None,
        })
    }

    /// Bytes kept for `scope`, and in all.
    #[cfg(test)]
    fn bytes(&self, scope: &str) -> (usize, usize) {
        let inner = self.inner.lock().expect("not poisoned");
        (inner.scopes.get(scope).map_or(0, |s| s.bytes), inner.bytes)
    }
}

impl<T: Clone + Weigh> Owner<T> {
    /// Stores `value` as the key's answer and hands it to anyone waiting; a shared cache also
    /// writes it to the answer log (await the result to know it is there).
    pub fn complete(mut self, value: T) -> Published {
        let published = self
            .cache
            .shared
            .get()
            .map(|shared| (shared.publish)(&self.scope, &self.key, &value));
        let now = Instant::now();
        let mut guard = self.cache.inner.lock().expect("not poisoned");
        let inner = &mut *guard;
        if let Some(scope) = inner.scopes.get_mut(&self.scope)
            && let Some(entry) = scope.entries.get_mut(&self.key)
            && entry.generation == self.generation
        {
            let weight = self.key.len() + ENTRY_OVERHEAD + value.weight();
            scope.bytes = scope.bytes - entry.weight + weight;
            inner.bytes = inner.bytes - entry.weight + weight;
            entry.weight = weight;
            entry.slot = Slot::Done(value.clone());
            // The answer is replayed for a whole TTL from now, and takes its place in the
            // order by when it was stored (the order expiry and eviction follow).
            entry.expires = now + self.cache.ttl;
            let generation = inner.next_generation;
            inner.next_generation += 1;
            scope.order.remove(&entry.generation);
            entry.generation = generation;
            scope.order.insert(generation, self.key.clone());
            inner.evict(&self.scope, self.cache.scope_bytes, self.cache.total_bytes);
        }
        drop(guard);
        if let Some(sender) = self.outcome.take() {
            sender.send_replace(Some(Some(value)));
        }
        // The answer written to the log supersedes the claim there.
        if let Some(claim) = self.log_claim.take() {
            claim.answered();
        }
        Published(published)
    }
}

impl<T> Drop for Owner<T> {
    fn drop(&mut self) {
        let Some(sender) = self.outcome.take() else {
            return;
        };
        // Not completed: release the key so a retry may do the work.
        if let Ok(mut guard) = self.cache.inner.lock() {
            let inner = &mut *guard;
            if let Some(scope) = inner.scopes.get_mut(&self.scope)
                && scope
                    .entries
                    .get(&self.key)
                    .is_some_and(|e| e.generation == self.generation)
            {
                inner.bytes -= scope.remove(&self.key);
                if scope.entries.is_empty() {
                    inner.scopes.remove(&self.scope);
                }
            }
        }
        sender.send_replace(Some(None));
    }
}

/// Shares `requests` and `records` with every replica through the compacted topic `topic`
/// ([`AnswerLog`]): every answer in it is learnt now and as it comes, and each cache writes its
/// own answers to it.
pub async fn share_through<R, C>(
    kafka: &kafkit::Kafka,
    topic: &str,
    producer: kafkit::Producer,
    requests: &IdempotencyCache<R>,
    records: &IdempotencyCache<C>,
) -> kafkit::Result<AnswerLog>
where
    R: Clone + Weigh + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Clone + Weigh + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let learn = {
        let (requests, records) = (requests.clone(), records.clone());
        move |learnt: &Learnt<'_>| match learnt.kind {
            Kind::Request => requests.learn_answer(learnt),
            Kind::Record => records.learn_answer(learnt),
        }
    };
    let log = AnswerLog::start(kafka, topic, producer, learn).await?;
    requests.share(log.clone(), Kind::Request);
    records.share(log.clone(), Kind::Record);
    Ok(log)
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

    impl Weigh for u32 {
        fn weight(&self) -> usize {
            // Each answer weighs a kibibyte in these tests.
            1024
        }
    }

    const SCOPE: &str = "key#1";

    fn owner(claim: Claim<u32>) -> Owner<u32> {
        match claim {
            Claim::Owner(owner) => owner,
            Claim::Done(v) => panic!("expected ownership, got Done({v})"),
            Claim::InProgress => panic!("expected ownership, got InProgress"),
            Claim::Unavailable => panic!("expected ownership, got Unavailable"),
        }
    }

    fn cache(scope_bytes: usize, total_bytes: usize) -> IdempotencyCache<u32> {
        IdempotencyCache::new(Duration::from_secs(600), scope_bytes, total_bytes)
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_key_is_replayed_until_its_ttl() {
        let cache = cache(1 << 20, 1 << 20);
        // First claim owns the key; a concurrent one is told it is in progress.
        let first = owner(cache.try_claim(SCOPE, "k").await);
        assert!(matches!(
            cache.try_claim(SCOPE, "k").await,
            Claim::InProgress
        ));
        first.complete(7);
        // Retries within the TTL replay the answer.
        assert!(matches!(cache.try_claim(SCOPE, "k").await, Claim::Done(7)));
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(matches!(cache.claim(SCOPE, "k").await, Claim::Done(7)));
        // After the TTL the key is new again.
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(owner(cache.try_claim(SCOPE, "k").await));
    }

    #[tokio::test(start_paused = true)]
    async fn running_work_outlives_the_ttl_and_its_answer_is_kept_a_ttl_from_completion() {
        let cache = cache(1 << 20, 1 << 20);
        let slow = owner(cache.try_claim(SCOPE, "k").await);
        // The send outlives the TTL (a delivery timeout above it): the key stays claimed.
        tokio::time::advance(Duration::from_secs(900)).await;
        assert!(matches!(
            cache.try_claim(SCOPE, "k").await,
            Claim::InProgress
        ));
        // Its answer, once known, is replayed for a whole TTL from then.
        slow.complete(5);
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(matches!(cache.try_claim(SCOPE, "k").await, Claim::Done(5)));
    }

    #[tokio::test]
    async fn a_failed_attempt_releases_the_key_to_a_waiting_retry() {
        let cache = cache(1 << 20, 1 << 20);
        let first = owner(cache.try_claim(SCOPE, "k").await);
        // A duplicate waits for the first attempt...
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move {
                let retry = owner(cache.claim(SCOPE, "k").await);
                retry.complete(9);
            }
        });
        tokio::task::yield_now().await;
        // ...which fails (dropped without an answer): the duplicate takes the key over.
        drop(first);
        waiter.await.unwrap();
        assert!(matches!(cache.try_claim(SCOPE, "k").await, Claim::Done(9)));
    }

    #[tokio::test]
    async fn a_waiter_gets_the_answer_of_the_running_attempt() {
        let cache = cache(1 << 20, 1 << 20);
        let first = owner(cache.try_claim(SCOPE, "k").await);
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move { cache.claim(SCOPE, "k").await }
        });
        tokio::task::yield_now().await;
        first.complete(3);
        assert!(matches!(waiter.await.unwrap(), Claim::Done(3)));
    }

    #[tokio::test]
    async fn scopes_never_share_keys() {
        let cache = cache(1 << 20, 1 << 20);
        owner(cache.try_claim("key#1", "order-1").await).complete(1);
        // The same key under another API key is another key.
        owner(cache.try_claim("key#2", "order-1").await).complete(2);
        assert!(matches!(
            cache.try_claim("key#1", "order-1").await,
            Claim::Done(1)
        ));
        assert!(matches!(
            cache.try_claim("key#2", "order-1").await,
            Claim::Done(2)
        ));
    }

    #[tokio::test]
    async fn a_scope_over_its_byte_budget_forgets_its_own_oldest_answers() {
        // Room for about three answers per scope.
        let cache = cache(3 * 1200, 1 << 20);
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            owner(cache.try_claim(SCOPE, key).await).complete(i as u32);
        }
        let (scope, _) = cache.bytes(SCOPE);
        assert!(scope <= 3 * 1200, "{scope} bytes kept");
        // "a" was forgotten; the newest is replayed.
        assert!(matches!(cache.try_claim(SCOPE, "d").await, Claim::Done(3)));
        drop(owner(cache.try_claim(SCOPE, "a").await));
    }

    #[tokio::test]
    async fn over_the_total_budget_the_largest_scope_pays() {
        // Each scope may hold 10 answers, all together 12.
        let cache = cache(10 * 1200, 12 * 1200);
        owner(cache.try_claim("quiet", "q1").await).complete(1);
        owner(cache.try_claim("quiet", "q2").await).complete(2);
        for i in 0..30 {
            owner(cache.try_claim("busy", &format!("b{i}")).await).complete(i);
        }
        // The quiet caller's keys survive the busy caller's flood.
        assert!(matches!(
            cache.try_claim("quiet", "q1").await,
            Claim::Done(1)
        ));
        assert!(matches!(
            cache.try_claim("quiet", "q2").await,
            Claim::Done(2)
        ));
        let (busy, total) = cache.bytes("busy");
        assert!(total <= 12 * 1200 && busy <= 10 * 1200, "{busy} of {total}");
        assert!(matches!(
            cache.try_claim("busy", "b29").await,
            Claim::Done(29)
        ));
    }

    #[tokio::test]
    async fn running_work_is_never_forgotten_and_failed_claims_leave_nothing_behind() {
        // A budget smaller than one answer.
        let cache = cache(10, 10);
        let running = owner(cache.try_claim(SCOPE, "slow").await);
        for i in 0..100 {
            owner(cache.try_claim(SCOPE, &format!("k{i}")).await).complete(i);
        }
        // However full, the key whose work runs is still claimed: no second attempt starts.
        assert!(matches!(
            cache.try_claim(SCOPE, "slow").await,
            Claim::InProgress
        ));
        drop(running);
        // Claims that fail (dropped owners) leave no bytes and no order entries.
        for i in 0..1000 {
            drop(owner(cache.try_claim(SCOPE, &format!("failed{i}")).await));
        }
        let inner = cache.inner.lock().unwrap();
        let kept: usize = inner.scopes.values().map(|s| s.order.len()).sum();
        assert!(kept <= 1, "{kept} order entries kept");
    }

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(validate_key("order-1:retry").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("has space").is_err());
        assert!(validate_key(&"x".repeat(256)).is_err());
    }
}
