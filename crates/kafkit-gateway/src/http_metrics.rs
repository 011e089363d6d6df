//! HTTP request metrics by route template, method and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::AppState;

/// Requests served, by `route`, `method` and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "kafkit_http_requests_total";
/// Request duration, by `route` and `method`.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "kafkit_http_request_duration_seconds";

#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(HTTP_REQUESTS_TOTAL, "HTTP requests served."),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(HTTP_REQUEST_DURATION_SECONDS, "HTTP request duration."),
            &["route", "method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(duration.clone()))
            .expect("registered once");
        HttpMetrics { requests, duration }
    }
}

/// Middleware: times each request and counts it under its route template (never the raw
/// path, which would explode label cardinality).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .http
        .requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    state
        .http
        .duration
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    response
}
