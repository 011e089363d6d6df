//! [`topic_configs`]: a topic's configs, or why there are none, for the API's topic detail and
//! the console's topic page.

use std::collections::BTreeMap;

use crate::AppState;

/// A topic's configs (sensitive ones left out), or why the broker did not tell.
#[derive(Debug)]
pub enum TopicConfigs {
    /// The configs, by name.
    Known(BTreeMap<String, String>),
    /// Why there are none.
    Unknown(String),
}

/// The configs of `topic`. Configs are a nicety: brokers without DescribeConfigs (the embedded
/// one) still get an answer, with the reason configs are missing.
pub async fn topic_configs(state: &AppState, topic: &str) -> TopicConfigs {
    let configs = tokio::time::timeout(
        state.timeouts().broker_timeout,
        state.admin().topic_configs(topic),
    )
    .await;
    match configs {
        Ok(Ok(configs)) => TopicConfigs::Known(configs),
        Ok(Err(error)) => TopicConfigs::Unknown(error.to_string()),
        Err(_) => TopicConfigs::Unknown("the broker did not answer in time".to_owned()),
    }
}
