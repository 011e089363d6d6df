//! `/health/live` (the process answers) and `/health/ready` (brokers reachable, producer open).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;

/// How long readiness waits for the cluster before calling it unreachable.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(health_live))
        .route("/health/ready", get(health_ready))
        .route("/metrics", get(metrics_render))
}

async fn health_live() -> Json<serde_json::Value> {
    Json(json!({"status": "up"}))
}

async fn health_ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let cluster = tokio::time::timeout(READY_TIMEOUT, state.admin.describe_cluster()).await;
    let brokers = match &cluster {
        Ok(Ok(info)) if !info.brokers.is_empty() => {
            json!({"status": "up", "brokers": info.brokers.len(), "cluster_id": info.cluster_id})
        }
        Ok(Ok(_)) => json!({"status": "down", "error": "no brokers in metadata"}),
        Ok(Err(error)) => json!({"status": "down", "error": error.to_string()}),
        Err(_) => json!({"status": "down", "error": "timed out"}),
    };
    let producer_open = !state.producer.is_closed();
    let ready = brokers["status"] == "up" && producer_open;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {
                "brokers": brokers,
                "producer": {
                    "status": if producer_open { "up" } else { "closed" },
                    "queue_depth": state.producer.queue_depth(),
                },
            },
        })),
    )
}

async fn metrics_render(
    State(state): State<AppState>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
