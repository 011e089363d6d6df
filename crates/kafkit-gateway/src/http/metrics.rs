//! HTTP request metrics by route template, method and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::AppState;

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
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .http_metrics()
        .requests
        .with_label_values(&[&route, method, response.status().as_str()])
        .inc();
    state
        .http_metrics()
        .duration
        .with_label_values(&[&route, method])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: the standard methods by name, any other token as `other`, so a
/// client inventing methods cannot create metric series (this runs before authentication).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;

    use crate::testing::{call, get, state};

    #[tokio::test]
    async fn invented_methods_and_unknown_paths_share_one_series_each() {
        let state = state();
        let app = crate::router(state.clone());
        for i in 0..50 {
            let request = Request::builder()
                .method(format!("BREW{i}").as_str())
                .uri(format!("/no/such/path/{i}"))
                .body(Body::empty())
                .unwrap();
            call(&app, request).await;
            call(&app, get(&format!("/another/{i}"))).await;
        }
        let text = state.metrics().render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kafkit_http_requests_total{"))
            .collect();
        assert!(series.len() <= 2, "{series:#?}");
        assert!(text.contains("method=\"other\""), "{text}");
        assert!(text.contains("route=\"unmatched\""), "{text}");
        assert!(!text.contains("BREW"), "{text}");
    }
}
