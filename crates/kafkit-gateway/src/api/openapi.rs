//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers' `utoipa::path`
//! annotations and body types as the routes are registered (see `router`), so the document
//! and the routes cannot drift apart.
//!
//! The document is meant to be true: every status a route can answer is listed with the body it
//! then has, and every request it allows is accepted (no bound, name rule or encoding rule is
//! left for the server alone to know). `scripts/schemathesis` holds a running gateway to that.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::api::produce::{IdempotencyKey, OutboundMessage};
use crate::api::topic_name::{DeadLetterTopicName, TopicName};

/// The document's fixed parts; paths and schemas are added by the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kafkit gateway",
        description = "Produce to and read from Kafka over HTTP. Errors are \
            `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerAuth),
    // Schemas only parameters use: utoipa registers those of bodies alone.
    components(schemas(TopicName, DeadLetterTopicName, IdempotencyKey)),
    tags(
        (name = "produce", description = "Send records"),
        (name = "topics", description = "Topics and their records"),
        (name = "groups", description = "Consumer groups and lag"),
        (name = "dead letters", description = "Dead-lettered records and their replay"),
        (name = "push", description = "Push subscriptions: topics delivered to HTTP endpoints"),
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

impl Document {
    /// The document of a gateway whose routes gave `openapi`, with what utoipa cannot say
    /// added (see [`with_message_rules`], [`with_camel_case_links`]); on a gateway without API
    /// keys (`keyed` false), the operations need none.
    pub fn new(openapi: &utoipa::openapi::OpenApi, keyed: bool) -> Self {
        let mut document = serde_json::to_value(openapi).expect("the OpenAPI document serializes");
        with_message_rules(&mut document["components"]["schemas"]);
        with_camel_case_links(&mut document["paths"]);
        with_auth_throttle(&mut document["paths"]);
        if !keyed {
            for operation in operations(&mut document["paths"]) {
                operation.remove("security");
            }
        }
        Document(Arc::new(document.to_string()))
    }
}

/// The operations of `paths`, whichever their method.
fn operations(paths: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    paths.as_object_mut().into_iter().flat_map(|paths| {
        paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut().filter_map(Value::as_object_mut))
    })
}

/// Every operation that checks an API key (it documents 401) may also answer 429
/// `too_many_failures`: failed authentications are throttled per client network on every
/// route ([`crate::http::auth`]), the right key included. Operations that document a 429 of
/// their own (a full producer queue) keep it: its body is an `ErrorBody` too.
fn with_auth_throttle(paths: &mut Value) {
    for operation in operations(paths) {
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if !responses.contains_key("401") || responses.contains_key("429") {
            continue;
        }
        responses.insert(
            "429".to_owned(),
            json!({
                "description": "Too many failed authentications from this client's network: \
                    refused, the right key included, until `Retry-After` seconds have passed",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorBody"}
                }},
            }),
        );
    }
}

/// utoipa 5.5 writes a response link's fields in snake case (`operation_id`), which no tool
/// reads: they are renamed to the specification's `operationId`, `operationRef` and
/// `requestBody`.
fn with_camel_case_links(paths: &mut Value) {
    for operation in operations(paths) {
        let responses = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut);
        for response in responses.into_iter().flat_map(|r| r.values_mut()) {
            let links = response.get_mut("links").and_then(Value::as_object_mut);
            for link in links.into_iter().flat_map(|l| l.values_mut()) {
                let Some(link) = link.as_object_mut() else {
                    continue;
                };
                for (snake, camel) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(value) = link.remove(snake) {
                        link.insert(camel.to_owned(), value);
                    }
                }
            }
        }
    }
}

/// A message's JSON shape (what the body must parse as, derived from `OutboundMessage`) and
/// its rules (what makes it a record, [`OutboundMessage::rules`]) are told apart: the derived
/// schema becomes `MessageShape`, and `OutboundMessage` is the shape with the rules. A single
/// send takes an `OutboundMessage`; a batch takes messages of the right shape of which at
/// least one follows the rules (`contains`), and answers the others in place. `contains` is a
/// keyword utoipa's model lacks, hence JSON.
fn with_message_rules(schemas: &mut Value) {
    let reference = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let mut shape = schemas["OutboundMessage"].take();
    shape["description"] = json!(
        "A message as a batch may hold it: the fields of an `OutboundMessage`, whose rules it \
         may break (it is then answered in place with its error)"
    );
    schemas["MessageShape"] = shape;
    schemas["OutboundMessage"] = json!({
        "description": "One record to produce",
        "allOf": [reference("MessageShape"), OutboundMessage::rules()],
    });
    let messages = &mut schemas["BatchRequest"]["properties"]["messages"];
    messages["items"] = reference("MessageShape");
    messages["contains"] = reference("OutboundMessage");
    // A transactional batch is refused whole when one message breaks the rules: there, every
    // message must follow them.
    schemas["BatchRequest"]["anyOf"] = json!([
        {"properties": {"transactional": {"const": false}}},
        {"properties": {"messages": {"items": reference("OutboundMessage")}}},
    ]);
}

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

    use axum::Router;
    use axum::http::StatusCode;
    use serde_json::{Value, json};

    use crate::api::{dead_letters, groups};
    use crate::testing::{call, get, state, state_with_keys};
    use crate::{MAX_BATCH_RECORDS, router};

    /// Every route the gateway serves, as `METHOD path`, with every status it can answer.
    const ROUTES: &[(&str, &[u16])] = &[
        (
            "POST /kafka/send",
            &[200, 400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503],
        ),
        (
            "POST /kafka/send-batch",
            &[
                200, 207, 400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503,
            ],
        ),
        ("GET /topics", &[200, 401, 403, 429, 502, 503]),
        (
            "GET /topics/{topic}",
            &[200, 400, 401, 403, 404, 429, 502, 503],
        ),
        (
            "GET /topics/{topic}/messages",
            &[200, 400, 401, 403, 404, 429, 502, 503],
        ),
        ("GET /groups", &[200, 401, 403, 429, 501, 502, 503]),
        (
            "GET /groups/{group}",
            &[200, 400, 401, 403, 404, 429, 501, 502, 503],
        ),
        (
            "GET /dlt/{topic}",
            &[200, 400, 401, 403, 404, 429, 502, 503],
        ),
        (
            "POST /dlt/{topic}/replay",
            &[200, 400, 401, 403, 404, 409, 415, 422, 429, 502, 503],
        ),
        ("GET /subscriptions", &[200, 401, 429]),
        ("GET /health/live", &[200]),
        ("GET /health/ready", &[200, 503]),
        ("GET /metrics", &[200, 401, 429]),
        ("GET /openapi.json", &[200]),
    ];

    async fn document(app: &Router) -> Value {
        let answer = call(app, get("/openapi.json")).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.headers["content-type"], "application/json");
        answer.body
    }

    /// The operation of `route` (`METHOD path`).
    fn operation<'a>(document: &'a Value, route: &str) -> &'a Value {
        let (method, path) = route.split_once(' ').unwrap();
        &document["paths"][path][method.to_lowercase()]
    }

    /// The schema of parameter `name` of `route`, references followed.
    fn parameter<'a>(document: &'a Value, route: &str, name: &str) -> &'a Value {
        let schema = &operation(document, route)["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{route}: no parameter {name}"))["schema"];
        resolve(document, schema)
    }

    fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference.strip_prefix("#/components/schemas/").unwrap();
                &document["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    #[tokio::test]
    async fn the_document_lists_every_route_with_its_schemas() {
        let app = router(state());
        let document = document(&app).await;
        let mut listed = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                listed.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        let expected: BTreeSet<String> = ROUTES.iter().map(|(r, _)| (*r).to_owned()).collect();
        assert_eq!(listed, expected);
        // Bodies are described by schema, and the bearer scheme is declared.
        let schemas = document["components"]["schemas"].as_object().unwrap();
        for name in [
            "OutboundMessage",
            "MessageShape",
            "BatchRequest",
            "BatchResponse",
            "BatchFailure",
            "SendResult",
            "ErrorBody",
            "TopicDetail",
            "BrowseResponse",
            "GroupDetail",
            "TopicName",
            "DeadLetterTopicName",
            "IdempotencyKey",
        ] {
            assert!(schemas.contains_key(name), "{name} missing");
        }
        assert_eq!(
            document["components"]["securitySchemes"]["api_key"]["scheme"],
            "bearer"
        );
        // Every reference names a schema of the document.
        let text = document.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let name = reference.split('"').next().unwrap();
            let name = name.strip_prefix("#/components/schemas/").unwrap();
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
        // Each documented route exists: none answers "no such route".
        for (route, _) in ROUTES {
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

    #[tokio::test]
    async fn each_route_documents_every_status_it_answers_with_its_body() {
        let document = document(&router(state())).await;
        for (route, statuses) in ROUTES {
            let responses = operation(&document, route)["responses"]
                .as_object()
                .unwrap();
            let documented: Vec<u16> = responses.keys().map(|s| s.parse().unwrap()).collect();
            assert_eq!(documented, *statuses, "{route}");
            // Every error is an `ErrorBody`, or for a batch, one that may carry its results.
            for (status, response) in responses.iter().filter(|(s, _)| s.as_str() >= "400") {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                let expected = match (*route, status.as_str()) {
                    ("GET /health/ready", _) => continue,
                    ("POST /kafka/send-batch", "401" | "415") => "ErrorBody",
                    ("POST /kafka/send-batch", _) => "BatchFailure",
                    _ => "ErrorBody",
                };
                assert_eq!(
                    *schema,
                    format!("#/components/schemas/{expected}"),
                    "{route} {status}"
                );
            }
        }
        // Refusals for a full queue say when to retry.
        for route in ["POST /kafka/send", "POST /kafka/send-batch"] {
            let responses = &operation(&document, route)["responses"];
            assert!(
                responses["429"]["headers"]["Retry-After"].is_object(),
                "{route}"
            );
        }
        assert!(
            document["components"]["schemas"]["BatchResponse"]["properties"]["error"].is_object()
        );
        // The group list links to a group's lag, in the specification's spelling.
        let link = &operation(&document, "GET /groups")["responses"]["200"]["links"]["describe"];
        assert_eq!(link["operationId"], "groups_describe");
        assert_eq!(link["parameters"]["group"], "$response.body#/0/name");
        assert_eq!(
            operation(&document, "GET /groups/{group}")["operationId"],
            "groups_describe"
        );
    }

    #[tokio::test]
    async fn every_bound_the_gateway_checks_is_in_the_document() {
        let document = document(&router(state())).await;
        let schemas = &document["components"]["schemas"];
        // Query limits, offsets and partitions.
        let bounds = |route: &str, name: &str| {
            let schema = parameter(&document, route, name);
            (schema["minimum"].as_u64(), schema["maximum"].as_u64())
        };
        let browse = "GET /topics/{topic}/messages";
        let most = |n: usize| Some(n as u64);
        assert_eq!(
            bounds(browse, "limit"),
            (Some(1), most(crate::reads::browse::MAX_BROWSE_LIMIT))
        );
        assert_eq!(bounds(browse, "offset"), (Some(0), None));
        assert_eq!(bounds(browse, "partition"), (Some(0), None));
        assert_eq!(
            bounds("GET /dlt/{topic}", "limit"),
            (Some(1), most(dead_letters::MAX_LIST))
        );
        assert_eq!(
            bounds("POST /dlt/{topic}/replay", "limit"),
            (Some(1), most(dead_letters::MAX_REDRIVE))
        );
        // Names: topics everywhere, dead-letter topics named after their source for a replay,
        // group ids by length.
        for route in [
            "GET /topics/{topic}",
            "GET /topics/{topic}/messages",
            "GET /dlt/{topic}",
        ] {
            assert_eq!(
                *parameter(&document, route, "topic"),
                schemas["TopicName"],
                "{route}"
            );
        }
        assert_eq!(
            schemas["TopicName"]["pattern"],
            crate::api::topic_name::TOPIC_NAME_PATTERN
        );
        assert_eq!(
            schemas["TopicName"]["maxLength"],
            kafkit::record::MAX_TOPIC_NAME_LEN
        );
        let replayable = parameter(&document, "POST /dlt/{topic}/replay", "topic");
        assert_eq!(
            replayable["pattern"],
            r"^([a-zA-Z0-9._-]+\.dlq|[a-zA-Z0-9._-]+_dlt|[a-zA-Z0-9._-]+-dlt|[a-zA-Z0-9._-]+\.DLT)$"
        );
        let group = parameter(&document, "GET /groups/{group}", "group");
        assert_eq!(
            (group["minLength"].as_u64(), group["maxLength"].as_u64()),
            (Some(1), most(groups::MAX_GROUP_LEN))
        );
        assert_eq!(group["pattern"], groups::GROUP_ID_PATTERN);
        // Idempotency keys, in the header and in records.
        let key = parameter(&document, "POST /kafka/send", "Idempotency-Key");
        assert_eq!(*key, schemas["IdempotencyKey"]);
        assert_eq!(
            key["maxLength"],
            crate::api::produce::idempotency::MAX_KEY_LEN
        );
        // A batch: 1 to 1000 messages of the right shape, one at least a valid record.
        let messages = &schemas["BatchRequest"]["properties"]["messages"];
        assert_eq!(messages["minItems"], 1);
        assert_eq!(messages["maxItems"], MAX_BATCH_RECORDS);
        assert_eq!(
            messages["items"]["$ref"],
            "#/components/schemas/MessageShape"
        );
        assert_eq!(
            messages["contains"]["$ref"],
            "#/components/schemas/OutboundMessage"
        );
        // A transactional one: every message a valid record.
        let transactional = &schemas["BatchRequest"]["anyOf"];
        assert_eq!(
            transactional[0]["properties"]["transactional"]["const"],
            false
        );
        assert_eq!(
            transactional[1]["properties"]["messages"]["items"]["$ref"],
            "#/components/schemas/OutboundMessage"
        );
        assert_eq!(
            schemas["BatchRequest"]["properties"]["transactional"]["type"],
            "boolean"
        );
        // A single send takes a valid record: the shape and the rules.
        let message = &schemas["OutboundMessage"]["allOf"];
        assert_eq!(message[0]["$ref"], "#/components/schemas/MessageShape");
        assert_eq!(
            message[1]["properties"]["topic"]["$ref"],
            "#/components/schemas/TopicName"
        );
        assert_eq!(message[1]["properties"]["partition"]["minimum"], 0);
        assert_eq!(schemas["MessageShape"]["additionalProperties"], false);
        assert_eq!(
            document["paths"]["/kafka/send"]["post"]["requestBody"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/OutboundMessage"
        );
    }

    #[tokio::test]
    async fn operations_need_a_key_exactly_when_the_gateway_has_keys() {
        let keyed = document(&router(state_with_keys("k:read=*"))).await;
        let open = document(&router(state())).await;
        for (route, _) in ROUTES {
            let public = route.contains("/health/") || route.contains("/openapi");
            let expected = if public {
                Value::Null
            } else {
                json!([{"api_key": []}])
            };
            assert_eq!(operation(&keyed, route)["security"], expected, "{route}");
            assert_eq!(operation(&open, route)["security"], Value::Null, "{route}");
        }
    }
}
