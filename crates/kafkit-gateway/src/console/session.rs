//! Console sessions: the login form, the session cookie, the CSRF token, and [`Viewer`], the
//! extractor every page takes.
//!
//! A session is a random id in an `HttpOnly`, `SameSite=Strict` cookie, mapped in memory to the
//! API key it logged in with and a CSRF token of its own. The store is bounded (the oldest
//! session goes first) and sessions expire. Without API keys everyone is the open caller, and
//! the forms carry one random token of the process, which a page of another site cannot read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{ConnectInfo, Extension, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::frame::{Failure, bare_page};
use super::{BASE, Console};
use crate::AppState;
use crate::http::auth::Caller;
use crate::http::auth::throttle::MAX_AUTH_FAILURES;

/// Name of the session cookie.
pub const COOKIE: &str = "kafkit_console";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; past it the oldest is forgotten.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
struct Session {
    caller: Caller,
    csrf: String,
    created: Instant,
}

/// Logged-in sessions, by id.
#[derive(Debug)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    /// The CSRF token of the open console (no API keys).
    open_csrf: String,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            sessions: Mutex::default(),
            open_csrf: random_token(),
        }
    }
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// A new session for `caller`: its id.
    fn open(&self, caller: Caller) -> String {
        let id = random_token();
        let mut sessions = self.sessions.lock().expect("not poisoned");
        // Full: forget the expired sessions, then the oldest if that was not enough.
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        }
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                caller,
                csrf: random_token(),
                created: Instant::now(),
            },
        );
        id
    }

    fn find(&self, id: &str) -> Option<Session> {
        let sessions = self.sessions.lock().expect("not poisoned");
        sessions
            .get(id)
            .filter(|s| s.created.elapsed() < SESSION_TTL)
            .cloned()
    }

    fn close(&self, id: &str) {
        self.sessions.lock().expect("not poisoned").remove(id);
    }

    /// Sessions kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions.lock().expect("not poisoned").len()
    }
}

/// Who is looking at the console: the caller whose grants apply, and the CSRF token its forms
/// carry. Pages of a keyed console without a session redirect to the login form.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The API key's grants, or the open caller.
    pub caller: Caller,
    /// The token state-changing forms must carry.
    pub csrf: String,
    /// Whether the console has API keys (a logout button then).
    pub keyed: bool,
}

impl Viewer {
    /// 403 unless `presented` is this viewer's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), Failure> {
        if constant_time_eq(self.csrf.as_bytes(), presented.as_bytes()) {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::FORBIDDEN,
                "The form's security token is missing or out of date: reload the page and try again.",
            ))
        }
    }

    /// 403 unless the viewer may write `topic`.
    pub fn require_write(&self, topic: &str) -> Result<(), Failure> {
        self.caller.require_write(topic).map_err(Failure::from)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

pub fn console(parts: &Parts) -> Arc<Console> {
    parts
        .extensions
        .get::<Arc<Console>>()
        .cloned()
        .expect("console routes carry the console")
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let console = console(parts);
        // Someone is looking: keep the lag sampler running.
        console.lag.visited(state);
        if state.api_keys().is_none() {
            return Ok(Viewer {
                caller: Caller::Open,
                csrf: console.sessions.open_csrf.clone(),
                keyed: false,
            });
        }
        let session = session_id(&parts.headers).and_then(|id| console.sessions.find(id));
        match session {
            Some(session) => {
                tracing::Span::current().record("caller", session.caller.name());
                Ok(Viewer {
                    caller: session.caller,
                    csrf: session.csrf,
                    keyed: true,
                })
            }
            None if parts.method == axum::http::Method::GET => {
                Err(Redirect::to(&format!("{BASE}/login")).into_response())
            }
            None => Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "Not logged in: log in with an API key first.",
            )
            .into_response()),
        }
    }
}

/// The login form.
pub async fn login_show(State(state): State<AppState>) -> Response {
    if state.api_keys().is_none() {
        return Redirect::to(BASE).into_response();
    }
    login_page(StatusCode::OK, None)
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        section.login {
            h1 { "kafkit console" }
            p { "Log in with one of the gateway's API keys. Its grants decide what you can see and change." }
            @if let Some(error) = error {
                p.banner.error role="alert" { (error) }
            }
            form method="post" action={(BASE) "/login"} {
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
        }
    };
    (status, bare_page("Log in", body)).into_response()
}

/// What the login form posts.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    key: String,
}

/// Marks requests that came over HTTPS ([`crate::serve_tls`] adds it): the session cookie is
/// then `Secure`, never sent over plain HTTP.
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// Checks the key and opens a session.
pub async fn login_submit(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    https: Option<Extension<Https>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(keys) = &state.api_keys() else {
        return Redirect::to(BASE).into_response();
    };
    let client = peer.map(|Extension(ConnectInfo(a))| a.ip());
    let now = Instant::now();
    // Checked before the key is looked at: a right guess after too many wrong ones is refused
    // too, so guessing gains nothing.
    if let Some(wait) = state.auth_throttle().wait(client, now) {
        tracing::warn!(?client, "console login refused: too many failures");
        let seconds = wait.as_secs().max(1);
        let mut response = login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed logins from your address ({MAX_AUTH_FAILURES} a minute). Try \
                 again in {seconds} seconds."
            )),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&seconds.to_string()).expect("digits"),
        );
        return response;
    }
    let Some(key) = keys.find(form.key.trim()) else {
        state.auth_throttle().failed(client, now);
        return login_page(StatusCode::UNAUTHORIZED, Some("Unknown API key."));
    };
    state.auth_throttle().succeeded(client);
    tracing::info!(caller = %key.name, "console login");
    let id = console.sessions.open(Caller::Key(key));
    let cookie = format!(
        "{COOKIE}={id}; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if https.is_some() { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(BASE).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("an ASCII cookie"),
    );
    response
}

/// What the logout form posts.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

/// Forgets the session and clears its cookie.
pub async fn logout(
    Extension(console): Extension<Arc<Console>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Failure> {
    viewer.check_csrf(&form.csrf)?;
    if let Some(id) = session_id(&headers) {
        console.sessions.close(id);
    }
    let mut response = Redirect::to(&format!("{BASE}/login")).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age=0"
        ))
        .expect("an ASCII cookie"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keeps_at_most_max_sessions_dropping_the_oldest() {
        let sessions = Sessions::default();
        let first = sessions.open(Caller::Open);
        for _ in 0..MAX_SESSIONS {
            sessions.open(Caller::Open);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.find(&first).is_none(), "the oldest went first");
        let last = sessions.open(Caller::Open);
        assert!(sessions.find(&last).is_some());
        sessions.close(&last);
        assert!(sessions.find(&last).is_none());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; kafkit_console=abc; b=2"),
        );
        assert_eq!(session_id(&headers), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("kafkit_consolex=abc"),
        );
        assert_eq!(session_id(&headers), None);
    }
}
