//! Push delivery: `kafkit serve --subscriptions FILE` consumes topics and POSTs each record to
//! an HTTP endpoint, with the consumer runtime's guarantees (at-least-once: an offset moves
//! only after a 2xx or an acknowledged dead-letter copy).
//!
//! - [`subscription`]: the subscriptions file ([`Subscription`]).
//! - [`validation`]: what it must hold to run, checked at start ([`parse`], [`Validated`]).
//! - [`delivery`]: the consumer [`Handler`](kafkit::Handler) that makes the request
//!   ([`Delivery`]).
//! - [`verdict`](mod@verdict): the response contract, a pure function ([`verdict()`]).
//! - [`batch`]: several records per request with per-record results ([`Batcher`]).
//! - [`cloud_event`]: the CloudEvents binary content mode ([`CloudEvent`]).
//! - [`concurrency`]: the requests in flight toward the endpoint ([`ConcurrencyLimit`]).
//! - [`signature`]: Standard Webhooks signing ([`Signer`]).
//! - [`runner`]: one consumer per subscription, run and stopped together ([`Runner`]).
//! - [`metrics`] and [`status`]: what operators see.

pub mod batch;
pub mod cloud_event;
pub mod concurrency;
pub mod delivery;
pub mod delivery_id;
#[cfg(test)]
mod fixtures;
pub mod metrics;
pub mod runner;
pub mod signature;
pub mod status;
pub mod subscription;
pub mod validation;
pub mod verdict;

pub use batch::Batcher;
pub use cloud_event::CloudEvent;
pub use concurrency::ConcurrencyLimit;
pub use delivery::Delivery;
pub use runner::{Runner, RunnerError, SubscriptionView};
pub use signature::Signer;
pub use subscription::{BatchConfig, Subscription};
pub use validation::{ConfigError, Validated, parse};
pub use verdict::{Verdict, verdict};
