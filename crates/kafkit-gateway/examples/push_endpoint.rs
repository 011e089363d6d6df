//! A push-delivery endpoint in axum: what a Rust service exposes instead of running a consumer
//! once `kafkit serve --subscriptions push.toml` delivers its records. It checks the Standard
//! Webhooks signature (with kafkit's own [`Signer`], recomputed and compared), drops duplicates
//! by `kafkit-delivery-id`, and answers with the status that tells kafkit what to do: 2xx done,
//! 422 dead-letter now, 500 retry with backoff, 429 with `Retry-After` to slow that key down.
//!
//! ```sh
//! BILLING_SECRET=whsec_c2VjcmV0 cargo run -p kafkit-gateway --example push_endpoint
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kafkit::secret::Secret;
use kafkit_gateway::push::Signer;

#[derive(Clone)]
struct App {
    signer: Arc<Signer>,
    /// Delivery ids already handled; a real service keeps them in its database.
    seen: Arc<Mutex<HashSet<String>>>,
}

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
    amount: f64,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn orders(State(app): State<App>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    // The signature covers "{webhook-id}.{webhook-timestamp}.{body}"; one of the listed
    // signatures must match (kafkit sends one per secret while secrets rotate).
    let id = header(&headers, "webhook-id");
    let Ok(timestamp) = header(&headers, "webhook-timestamp").parse::<u64>() else {
        return (StatusCode::UNAUTHORIZED, "no timestamp".into());
    };
    let expected = app.signer.sign(id, timestamp, &body);
    let presented = header(&headers, "webhook-signature");
    if !presented.split(' ').any(|s| s == expected) {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let delivery = header(&headers, "kafkit-delivery-id").to_owned();
    if app.seen.lock().unwrap().contains(&delivery) {
        return (StatusCode::OK, "duplicate".into());
    }
    let order: Order = match serde_json::from_slice(&body) {
        Ok(order) => order,
        // Will never succeed: kafkit dead-letters it with this status and body.
        Err(error) => return (StatusCode::UNPROCESSABLE_ENTITY, error.to_string()),
    };
    println!(
        "charging order {} for {} (key {}, attempt {})",
        order.id,
        order.amount,
        header(&headers, "kafka-key"),
        header(&headers, "kafkit-attempt")
    );
    app.seen.lock().unwrap().insert(delivery);
    (StatusCode::OK, "charged".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("BILLING_SECRET").unwrap_or_else(|_| "whsec_c2VjcmV0".into());
    let signer = Signer::new(&[Secret::new(secret)]).map_err(|(_, reason)| reason)?;
    let app = Router::new()
        .route("/orders", post(orders))
        .with_state(App {
            signer: Arc::new(signer),
            seen: Arc::default(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("billing endpoint on http://127.0.0.1:3000/orders");
    axum::serve(listener, app).await?;
    Ok(())
}
