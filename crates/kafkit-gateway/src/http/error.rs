//! `ApiError`: the one error body of the gateway, `{"error": {"code", "message"}}`, the JSON
//! extractor whose rejections use it, and the middleware that gives the same body to the
//! errors tower layers answer on their own (timeouts, body limits, unknown routes).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// `Retry-After` of an answer refused for a full producer queue, in seconds.
pub const RETRY_AFTER_SECONDS: &str = "1";

/// An HTTP error with a stable code and a message safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation naming what was wrong.
    pub message: String,
    /// Seconds the client is asked to wait (`Retry-After`): 1 for a 429 unless set, none
    /// for other statuses unless set.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// The same error, asking the client to wait `seconds` before retrying.
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A 400 with `code` and `message`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A 404 with `code` and `message`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The HTTP status a kafkit error deserves.
    pub fn status_of(error: &kafkit::Error) -> StatusCode {
        use kafkit::error::ErrorCode;
        match error.code() {
            ErrorCode::InvalidRecord
            | ErrorCode::InvalidTopicSpec
            | ErrorCode::InvalidSelection
            | ErrorCode::Encode
            | ErrorCode::Decode => StatusCode::BAD_REQUEST,
            ErrorCode::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ReplayRefused | ErrorCode::ReplayInProgress => StatusCode::CONFLICT,
            ErrorCode::UnknownTopic | ErrorCode::UnknownPartition => StatusCode::NOT_FOUND,
            ErrorCode::NotAuthorized => StatusCode::FORBIDDEN,
            ErrorCode::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::Disabled
            | ErrorCode::ProducerClosed
            | ErrorCode::TimedOut
            | ErrorCode::KafkaRetriable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

impl From<kafkit::Error> for ApiError {
    fn from(error: kafkit::Error) -> Self {
        ApiError {
            status: ApiError::status_of(&error),
            code: error.code().as_str(),
            message: error.to_string(),
            retry_after: None,
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The failures every read route can answer, documented once for all of them. Documentation
/// only: the answers themselves are [`ApiError`]s.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ReadFailures {
    /// 401.
    #[response(status = 401, description = "Missing or unknown API key")]
    Unauthorized(ErrorBody),
    /// 502.
    #[response(status = 502, description = "The broker failed the request")]
    BrokerFailed(ErrorBody),
    /// 503.
    #[response(
        status = 503,
        description = "Broker unreachable or slow, too many reads at once (`busy`), or the \
            request over the gateway's time limit",
        headers(("Retry-After" = u32, description = "Seconds to wait, when `busy`"))
    )]
    Unavailable(ErrorBody),
}

/// A stable code and a message naming the problem.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `unknown_topic`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl From<ApiError> for ErrorDetail {
    fn from(error: ApiError) -> Self {
        ErrorDetail {
            code: error.code.to_owned(),
            message: error.message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after;
        let body = ErrorBody { error: self.into() };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS || retry_after.is_some() {
            let seconds = retry_after.map_or(HeaderValue::from_static(RETRY_AFTER_SECONDS), |s| {
                HeaderValue::from(s)
            });
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}

/// `axum::Json`, with rejections reported as [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| ApiJson(value))
            .map_err(json_rejection)
    }
}

/// An optional JSON body: none without a `Content-Type`, else as [`ApiJson`].
impl<S, T> OptionalFromRequest<S> for ApiJson<T>
where
    axum::Json<T>: OptionalFromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        <axum::Json<T> as OptionalFromRequest<S>>::from_request(request, state)
            .await
            .map(|body| body.map(|axum::Json(value)| ApiJson(value)))
            .map_err(json_rejection)
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let (status, code) = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        // Over the body limit is 413; any other failure to read the body (a broken chunked
        // encoding, a connection cut short) is the client's 400.
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        }
        JsonRejection::BytesRejection(_) => (StatusCode::BAD_REQUEST, "body_read_failed"),
        _ => (StatusCode::BAD_REQUEST, "malformed_json"),
    };
    ApiError {
        status,
        code,
        message: rejection.body_text(),
        retry_after: None,
    }
}

/// `axum::extract::Query`, with rejections reported as [`ApiError`] (`400 invalid_query`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}

/// Middleware: an error answered without a JSON body (by the timeout or body-limit layers, or
/// axum's own 404 and 405) gets the gateway's error body, so clients parse one shape only.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    // JSON errors, and the web console's HTML error pages, are already what their clients read.
    let is_answer = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_answer {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed here"),
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the request body is too large"),
        // Only the timeout layer answers 503 without a body.
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            "the request did not complete in time; it may still take effect",
        ),
        _ if status.is_client_error() => ("bad_request", "the request was refused"),
        _ => ("internal", "the gateway failed to answer"),
    };
    let mut answer = ApiError::new(status, code, message).into_response();
    // Keep what outer layers set (e.g. `allow` on a 405).
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::testing::{call, state};
    use crate::{MAX_BODY_BYTES, router};

    #[test]
    fn a_broker_authorization_failure_is_403() {
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
        ] {
            let error = ApiError::from(kafkit::Error::Produce {
                topic: "orders".to_owned(),
                source: KafkaError::MessageProduction(code),
            });
            assert_eq!(error.status, StatusCode::FORBIDDEN, "{code:?}");
            assert_eq!(error.code, "not_authorized", "{code:?}");
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_without_a_length_is_413() {
        // No content-length: the limit is found while reading.
        let request = Request::post("/kafka/send")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(vec![b' '; MAX_BODY_BYTES + 1]))
            .unwrap();
        let answer = call(&router(state()), request).await;
        assert_eq!(
            answer.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            answer.text
        );
        assert_eq!(answer.body["error"]["code"], "body_too_large");
    }

    #[tokio::test]
    async fn a_body_that_cannot_be_read_is_400() {
        // A chunked body whose second chunk size is not hexadecimal: the body fails to read,
        // and that is the client's fault, not a size problem.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(axum::serve(listener, router(state())).into_future());
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(
                b"POST /kafka/send HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
                  transfer-encoding: chunked\r\n\r\n2\r\n{\"\r\nzz\r\n",
            )
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("answered")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("\"code\":\"body_read_failed\""), "{answer}");
        server.abort();
    }
}
