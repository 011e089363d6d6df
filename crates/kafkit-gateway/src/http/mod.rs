//! HTTP plumbing shared by the API and the console: API keys and grants ([`auth`]), the JSON
//! error body ([`error`]), the host names it answers to ([`hosts`]), the bound on concurrent reads ([`limits`]), request metrics
//! ([`metrics`]), the listening socket with a deadline on every connection state ([`server`])
//! and TLS ([`tls`]).

pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod hosts;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod server;
pub(crate) mod tls;
