//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers' `utoipa::path`
//! annotations and body types as the routes are registered (see `router`), so the document
//! and the routes cannot drift apart.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// The document's fixed parts; paths and schemas are added by the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kafkit gateway",
        description = "Produce to and read from Kafka over HTTP. Errors are \
            `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "produce", description = "Send records"),
        (name = "topics", description = "Topics and their records"),
        (name = "groups", description = "Consumer groups and lag"),
        (name = "operations", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// Declares the `api_key` bearer scheme that the protected operations reference.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The serialized document, handed to [`openapi_document`] as an extension.
#[derive(Clone, Debug)]
pub struct Document(pub Arc<String>);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_document))
}

/// This document (open, no API key).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub async fn openapi_document(Extension(document): Extension<Document>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.as_str().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::http::StatusCode;

    use super::super::router;
    use super::super::testing::{call, get, state};

    /// Every route the gateway serves, as `METHOD path`.
    const ROUTES: &[&str] = &[
        "POST /kafka/send",
        "POST /kafka/send-batch",
        "GET /topics",
        "GET /topics/{topic}",
        "GET /topics/{topic}/messages",
        "GET /groups",
        "GET /groups/{group}",
        "GET /dlt/{topic}",
        "POST /dlt/{topic}/replay",
        "GET /health/live",
        "GET /health/ready",
        "GET /metrics",
        "GET /openapi.json",
    ];

    #[tokio::test]
    async fn the_document_lists_every_route_with_its_schemas() {
        let app = router(state());
        let answer = call(&app, get("/openapi.json")).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.headers["content-type"], "application/json");
        let document = answer.body;
        let mut listed = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                listed.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        let expected: BTreeSet<String> = ROUTES.iter().map(|r| (*r).to_owned()).collect();
        assert_eq!(listed, expected);
        // Bodies are described by schema, and the bearer scheme is declared.
        let schemas = document["components"]["schemas"].as_object().unwrap();
        for name in [
            "OutboundMessage",
            "BatchRequest",
            "BatchResponse",
            "SendResult",
            "ErrorBody",
            "TopicDetail",
            "BrowseResponse",
            "GroupDetail",
        ] {
            assert!(schemas.contains_key(name), "{name} missing");
        }
        assert_eq!(
            document["components"]["securitySchemes"]["api_key"]["scheme"],
            "bearer"
        );
        // The answers the gateway gives beyond the usual ones are documented with their route.
        let responses =
            |method: &str, path: &str| document["paths"][path][method]["responses"].clone();
        for path in ["/groups", "/groups/{group}"] {
            assert!(responses("get", path)["501"].is_object(), "{path}: 501");
        }
        for path in ["/kafka/send", "/kafka/send-batch"] {
            let answers = responses("post", path);
            for status in ["400", "401", "403", "429"] {
                assert!(answers[status].is_object(), "{path}: {status}");
            }
            assert!(
                answers["429"]["headers"]["Retry-After"].is_object(),
                "{path}"
            );
        }
        assert!(
            document["components"]["schemas"]["BatchResponse"]["properties"]["error"].is_object()
        );
        // Each documented route exists: none answers "no such route".
        for route in ROUTES {
            let (method, path) = route.split_once(' ').unwrap();
            let path = path
                .replace("{topic}", "none-such-topic")
                .replace("{group}", "none-such-group");
            let request = axum::http::Request::builder()
                .method(method)
                .uri(&path)
                .body(axum::body::Body::empty())
                .unwrap();
            let answer = call(&app, request).await;
            assert_ne!(answer.body["error"]["code"], "not_found", "{route}");
            assert_ne!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{route}");
        }
    }
}
