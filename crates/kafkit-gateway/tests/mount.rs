//! The gateway mounted inside a user's own axum app, next to the user's routes, served by the
//! user's own server on a real socket, producing to the test broker.

use std::time::Duration;

use axum::routing::get;
use kafkit::{Kafka, KafkaConfig};
use kafkit_gateway::{AppState, router};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_router_serves_inside_a_users_app() {
    // reqwest is built with rustls and no bundled crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // Given a user's app with a route of its own and the gateway merged in.
    let topic = testkit::topic("mounted", 2).await;
    let kafka = Kafka::connect(&KafkaConfig::new([testkit::brokers()])).unwrap();
    let state = AppState::new(&kafka).unwrap();
    let app = axum::Router::new()
        .route("/app/hello", get(|| async { "hello from the service" }))
        .merge(router(state.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let client = reqwest::Client::new();

    // Then the user's route answers, and so do the gateway's: a send, health, the OpenAPI.
    let hello = client
        .get(format!("{base}/app/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(hello.text().await.unwrap(), "hello from the service");
    let sent: Value = client
        .post(format!("{base}/kafka/send"))
        .json(&json!({"topic": topic, "key": "k1", "value": {"mounted": true}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["topic"], topic.as_str(), "{sent}");
    let live = client
        .get(format!("{base}/health/live"))
        .send()
        .await
        .unwrap();
    assert!(live.status().is_success());
    let document: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["paths"]["/kafka/send"].is_object());

    // And the record is in Kafka once the user's server stops and the producer is flushed.
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    state.producer().shutdown().await.unwrap();
    let records = testkit::read(&topic, 1, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key_str(), Some("k1"));
    assert_eq!(
        records[0].json::<Value>().unwrap(),
        json!({"mounted": true})
    );
}
