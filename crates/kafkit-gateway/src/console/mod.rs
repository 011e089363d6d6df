//! The web console at `/console`: server-rendered HTML pages over the same state, API keys and
//! library calls as the JSON API.
//!
//! - Pages: overview, topics (list, topic with partitions, configs, groups reading it, message
//!   browser, produce form), consumer groups (list with lag, group with per-partition lag, a
//!   lag-over-time chart and offset reset), dead letters (records with their failure headers,
//!   safe replay), push subscriptions (list; one with its endpoint's state, in flight, lag,
//!   recent failures and dead-letter topics).
//! - HTML comes from [`maud`] templates, which escape every value they insert: keys, headers
//!   and values of records are attacker-controlled. A strict Content-Security-Policy (scripts
//!   and styles from `/console/assets` only) is the second line.
//! - Read pages work without JavaScript; the one vendored script only refreshes the live lag
//!   of a group page. CSS and script are compiled into the binary.
//! - With API keys, a login form takes a key and sets an `HttpOnly`, `SameSite=Strict` session
//!   cookie; every state-changing form carries the session's CSRF token; a key's grants decide
//!   which controls are shown, and the server checks them again on every write. Without keys
//!   the console is open, like the API (loopback only unless the operator said otherwise).
//! - A login form refuses a client address after
//!   [`crate::http::auth::throttle::MAX_AUTH_FAILURES`] wrong keys a minute (429), before its
//!   body (at most [`session::MAX_LOGIN_BODY`]) is read, so keys cannot be guessed at speed.
//! - Unknown console paths get a 404 page in the console's layout.
//! - The routes are not API routes: they are not in the OpenAPI document.

mod dead_letters;
mod frame;
mod groups;
mod lag_history;
mod messages;
mod overview;
mod page;
mod render_budget;
mod request;
mod session;
mod subscriptions;
mod topics;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};

use crate::AppState;
use crate::http::limits;

pub use lag_history::LagHistory;
pub use session::{Https, Sessions};

/// Where the console is mounted.
pub const BASE: &str = "/console";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// What the console keeps between requests: sessions and the lag history.
#[derive(Debug, Default)]
pub struct Console {
    /// Logged-in sessions and the open console's CSRF token.
    pub sessions: Sessions,
    /// Sampled lag of every consumer group.
    pub lag: Arc<LagHistory>,
    /// Topics created from the console, per caller, over the last minute.
    pub creations: topics::Creations,
}

/// The console's routes, to merge into the gateway's router.
pub fn routes(state: &AppState) -> Router<AppState> {
    routes_with(state, Arc::new(Console::default()))
}

/// The console's routes over `console`.
fn routes_with(state: &AppState, console: Arc<Console>) -> Router<AppState> {
    // Pages do broker work: they share the read endpoints' places.
    let pages = Router::new()
        .route("/console", get(overview::overview_show))
        .route(
            "/console/topics",
            get(topics::topics_list).post(topics::topics_create),
        )
        .route("/console/topics/{topic}", get(topics::topics_show))
        .route(
            "/console/topics/{topic}/produce",
            post(topics::topics_produce),
        )
        .route("/console/groups", get(groups::groups_list))
        .route("/console/groups/{group}", get(groups::groups_show))
        .route("/console/groups/{group}/live", get(groups::groups_live))
        .route("/console/groups/{group}/reset", post(groups::groups_reset))
        .route(
            "/console/dead-letters",
            get(dead_letters::dead_letters_list),
        )
        .route(
            "/console/subscriptions",
            get(subscriptions::subscriptions_list),
        )
        .route(
            "/console/subscriptions/{name}",
            get(subscriptions::subscriptions_show),
        )
        .route(
            "/console/subscriptions/{name}/live",
            get(subscriptions::subscriptions_live),
        )
        .route(
            "/console/dead-letters/{topic}",
            get(dead_letters::dead_letters_show),
        )
        .route(
            "/console/dead-letters/{topic}/replay",
            post(dead_letters::dead_letters_redrive),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.read_limit().clone(),
            limits::limit,
        ));
    Router::new()
        .merge(pages)
        .route(
            "/console/login",
            // The limiter looks at the address before the body is read, which is small.
            post(session::login_submit)
                .layer(axum::extract::DefaultBodyLimit::max(
                    session::MAX_LOGIN_BODY,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    session::login_throttle,
                ))
                .get(session::login_show),
        )
        .route("/console/logout", post(session::logout))
        // Any other console path: a page saying so, not the API's JSON 404.
        .route("/console/{*rest}", any(page::not_found))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(Extension(console))
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The Content-Security-Policy of every console answer: nothing but the console's own script
/// and stylesheet runs or loads, no inline script, no framing, forms post to the console only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Middleware: security headers on every console answer; pages are never cached.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Never a console URL to another site; `same-origin` rather than `no-referrer`, which
        // makes a browser send `Origin: null` with the console's own forms, refused as
        // cross-site (crate::http::hosts).
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests;
