//! The cluster: its id, controller and brokers.

use std::sync::Arc;

use rdkafka::consumer::Consumer as _;
use serde::Serialize;

use super::{Admin, blocking};
use crate::error::Result;

/// One broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerInfo {
    /// Node id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
}

/// What the cluster says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterInfo {
    /// Cluster id, when the broker reports one.
    pub cluster_id: Option<String>,
    /// Node id of the controller, when known.
    pub controller_id: Option<i32>,
    /// The brokers.
    pub brokers: Vec<BrokerInfo>,
}

impl Admin {
    /// Cluster id, controller and brokers.
    pub async fn describe_cluster(&self) -> Result<ClusterInfo> {
        let client = Arc::clone(&self.metadata);
        let timeout = self.timeout;
        blocking("describe cluster", move || {
            let metadata = client.fetch_metadata(None, timeout)?;
            let cluster_id = client.client().fetch_cluster_id(timeout);
            // SAFETY: the pointer is a live client owned by `client` for the whole call, and
            // rd_kafka_controllerid only reads its metadata cache.
            let controller = unsafe {
                rdkafka::bindings::rd_kafka_controllerid(
                    client.client().native_ptr(),
                    timeout.as_millis() as i32,
                )
            };
            Ok(ClusterInfo {
                cluster_id,
                controller_id: (controller >= 0).then_some(controller),
                brokers: metadata
                    .brokers()
                    .iter()
                    .map(|b| BrokerInfo {
                        id: b.id(),
                        host: b.host().to_owned(),
                        port: b.port(),
                    })
                    .collect(),
            })
        })
        .await
    }
}
