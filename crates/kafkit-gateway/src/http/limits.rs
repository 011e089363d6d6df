//! Bounded concurrency for the read endpoints (topics, groups, dead letters): each of them
//! does broker work per request (metadata, watermarks, a reader), so only so many run at once.
//! A request waits a moment for a place, then is answered 503 `busy` with `Retry-After`. Work
//! a request hands to a task of its own (a dead-letter replay, which runs on when its request
//! is cancelled) takes the place along ([`ReadPlace`]): it is free again only when that ends.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::error::{ApiError, RETRY_AFTER_SECONDS};

/// Read requests served at once by default.
pub const DEFAULT_CONCURRENT_READS: usize = 8;
/// How long a read request waits for a place before it is answered `busy`.
const WAIT: Duration = Duration::from_secs(1);

/// The places of the read endpoints. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReadLimit(Arc<Semaphore>);

impl ReadLimit {
    /// `concurrent` read requests at once.
    pub fn new(concurrent: usize) -> Self {
        ReadLimit(Arc::new(Semaphore::new(concurrent.max(1))))
    }
}

impl ReadLimit {
    /// Places free now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// A request's place, in its extensions: freed once the request and every task it was handed
/// to are done.
#[derive(Clone, Debug)]
pub struct ReadPlace(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

impl Default for ReadLimit {
    fn default() -> Self {
        ReadLimit::new(DEFAULT_CONCURRENT_READS)
    }
}

/// Middleware: runs the request holding a place, or answers 503 `busy`.
pub async fn limit(State(limit): State<ReadLimit>, mut request: Request, next: Next) -> Response {
    let Ok(Ok(place)) = tokio::time::timeout(WAIT, limit.0.clone().acquire_owned()).await else {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many read requests at once; retry in a second",
        )
        .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
        return response;
    };
    let place = ReadPlace(Arc::new(place));
    request.extensions_mut().insert(place.clone());
    let response = next.run(request).await;
    drop(place);
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn reads_beyond_the_limit_are_answered_busy_and_a_freed_place_is_reused() {
        let release = Arc::new(tokio::sync::Notify::new());
        let limit = ReadLimit::new(1);
        let app = Router::new()
            .route(
                "/slow",
                get({
                    let release = release.clone();
                    move || async move {
                        release.notified().await;
                        "slow"
                    }
                }),
            )
            .route("/fast", get(|| async { "fast" }))
            .layer(axum::middleware::from_fn_with_state(limit, super::limit));
        let call = |path: &'static str| {
            let app = app.clone();
            async move {
                app.oneshot(Request::get(path).body(Body::empty()).unwrap())
                    .await
                    .unwrap()
            }
        };
        // One slow read holds the only place...
        let slow = tokio::spawn(call("/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ...so another read is answered busy, with when to retry.
        let busy = call("/fast").await;
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], RETRY_AFTER_SECONDS);
        // Once it is done, the place serves the next read.
        release.notify_one();
        assert_eq!(slow.await.unwrap().status(), StatusCode::OK);
        assert_eq!(call("/fast").await.status(), StatusCode::OK);
    }
}
