//! `kafkit serve`: the HTTP gateway. `router(state)` builds the whole app so tests can call it
//! without a socket; `run` wires configuration, the cluster, signals and graceful shutdown.

mod error;
mod health;
mod http_metrics;
mod produce;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use kafkit::{Admin, Cluster, Metrics, Producer};
use tower_http::limit::RequestBodyLimitLayer;

use crate::cli::ServeArgs;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most records one `/kafka/send-batch` request may carry.
pub const MAX_BATCH_RECORDS: usize = 1_000;
/// How long a send waits for room in a full producer queue before answering 429.
const ENQUEUE_TIMEOUT: Duration = Duration::from_millis(100);

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The shared producer.
    pub producer: Producer,
    /// Admin client, for readiness and read endpoints.
    pub admin: Arc<Admin>,
    /// The process's metrics registry.
    pub metrics: Metrics,
    /// HTTP request metrics, registered in `metrics`.
    pub http: http_metrics::HttpMetrics,
}

impl AppState {
    /// State for a cluster reachable with `config`.
    pub fn new(config: &kafkit::KafkaConfig, cluster: &Cluster) -> anyhow::Result<Self> {
        let metrics = Metrics::default();
        let producer = Producer::builder(config)
            .enqueue_timeout(ENQUEUE_TIMEOUT)
            .metrics(metrics.clone())
            .build()?;
        let mut admin = Admin::new(config)?;
        if let Some(embedded) = cluster.embedded() {
            admin = admin.with_embedded(embedded.clone());
        }
        let http = http_metrics::HttpMetrics::new(metrics.registry());
        Ok(AppState {
            producer,
            admin: Arc::new(admin),
            metrics,
            http,
        })
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(produce::routes())
        .merge(health::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http_metrics::track,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .with_state(state)
}

/// Runs the gateway until SIGINT/SIGTERM, then stops accepting, finishes in-flight requests and
/// flushes the producer.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = crate::commands::config(&args.connection)?;
    if !config.enabled {
        tracing::warn!("KAFKA_ENABLED=false: the gateway has nothing to serve; exiting");
        return Ok(());
    }
    let cluster = Cluster::from_config(&config)?;
    let config = cluster.configure(&config);
    let state = AppState::new(&config, &cluster)?;
    if !args.topics.is_empty() {
        let specs = args
            .topics
            .iter()
            .map(|t| crate::cli::parse_topic_spec(t))
            .collect::<anyhow::Result<Vec<_>>>()?;
        state
            .admin
            .ensure_topics(&specs)
            .await
            .context("creating --topics")?;
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        brokers = %cluster.bootstrap_servers(),
        embedded = cluster.embedded().is_some(),
        "kafkit gateway ready"
    );
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(kafkit::shutdown::signal())
        .await?;
    state.producer.shutdown().await?;
    tracing::info!("gateway stopped cleanly");
    drop(cluster);
    Ok(())
}
