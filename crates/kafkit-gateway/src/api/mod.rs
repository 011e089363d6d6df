//! The JSON API: sending records ([`produce`]), topic, group and dead-letter routes, push
//! subscriptions, health and metrics, and the OpenAPI document that describes them all.

pub(crate) mod dead_letters;
pub(crate) mod groups;
pub(crate) mod health;
pub(crate) mod openapi;
pub(crate) mod produce;
pub(crate) mod subscriptions;
pub(crate) mod topic_name;
pub(crate) mod topics;
