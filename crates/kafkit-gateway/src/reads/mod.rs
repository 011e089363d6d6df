//! Typed reads shared by the JSON API and the console: what both show of topics, groups and
//! dead letters, read once, with typed inputs and outputs.

pub(crate) mod browse;
pub(crate) mod known_topics;
pub(crate) mod topic_configs;
