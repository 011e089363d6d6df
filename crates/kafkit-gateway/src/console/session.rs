//! Console sessions: the login form, the session cookie, the CSRF token, and [`Viewer`], the
//! extractor every page takes.
//!
//! A session is a random id in an `HttpOnly`, `SameSite=Strict` cookie, mapped in memory to the
//! API key it logged in with and a CSRF token of its own. Over HTTPS the cookie is
//! `__Host-kafkit_console` (`Secure`, `Path=/`): a browser then keeps it only as set by this
//! origin over TLS, so neither plain HTTP nor a sibling subdomain can plant one. The store is
//! bounded (the oldest session goes first) and sessions expire, 12 hours after login or 30
//! minutes after their last page. The login form carries a token of its own, matched against
//! a cookie set with the form (a login another site's page posts has neither). Without API
//! keys everyone is the open caller, and the forms carry one random token of the process,
//! which a page of another site cannot read.

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

/// Name of the session cookie over plain HTTP.
pub const COOKIE: &str = "kafkit_console";
/// Name of the session cookie over HTTPS: the `__Host-` prefix binds it to this origin.
pub const HOST_COOKIE: &str = "__Host-kafkit_console";
/// Name of the login form's token cookie over plain HTTP, and over HTTPS.
const LOGIN_COOKIE: &str = "kafkit_login";
const HOST_LOGIN_COOKIE: &str = "__Host-kafkit_login";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a session lasts without a page shown.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Largest login form accepted: a key and a token.
pub const MAX_LOGIN_BODY: usize = 4 * 1024;
/// Most sessions kept; past it the oldest is forgotten.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
struct Session {
    caller: Caller,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

impl Session {
    fn live_at(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < SESSION_TTL
            && now.saturating_duration_since(self.last_seen) < SESSION_IDLE
    }
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
        let now = Instant::now();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.live_at(now));
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
                created: now,
                last_seen: now,
            },
        );
        id
    }

    fn find(&self, id: &str) -> Option<Session> {
        self.find_at(id, Instant::now())
    }

    /// The session `id` if it is live at `now`, which becomes its last use; an expired one
    /// is forgotten.
    fn find_at(&self, id: &str, now: Instant) -> Option<Session> {
        let mut sessions = self.sessions.lock().expect("not poisoned");
        let session = sessions.get_mut(id)?;
        if !session.live_at(now) {
            sessions.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
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

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// The session cookie's name: `__Host-` prefixed over HTTPS.
fn session_cookie(https: bool) -> &'static str {
    if https { HOST_COOKIE } else { COOKIE }
}

/// A cookie setting `name` to `value` for `max_age` seconds: over HTTPS `Secure` and for the
/// whole origin (what `__Host-` requires), else for `path`.
fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, https: bool) -> HeaderValue {
    let (path, secure) = if https { ("/", "; Secure") } else { (path, "") };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("an ASCII cookie")
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
        if state.api_keys().is_none() {
            // Someone is looking: keep the lag sampler running.
            console.lag.visited(state);
            return Ok(Viewer {
                caller: Caller::Open,
                csrf: console.sessions.open_csrf.clone(),
                keyed: false,
            });
        }
        let https = parts.extensions.get::<Https>().is_some();
        let session =
            cookie(&parts.headers, session_cookie(https)).and_then(|id| console.sessions.find(id));
        match session {
            Some(session) => {
                tracing::Span::current().record("caller", session.caller.name());
                // Only a logged-in viewer starts the sampler: a request without a session
                // costs the cluster nothing.
                console.lag.visited(state);
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
pub async fn login_show(
    State(state): State<AppState>,
    https: Option<Extension<Https>>,
) -> Response {
    if state.api_keys().is_none() {
        return Redirect::to(BASE).into_response();
    }
    login_page(StatusCode::OK, None, https.is_some())
}

/// The login form with a fresh token, set in a cookie too: the post must carry both.
fn login_page(status: StatusCode, error: Option<&str>, https: bool) -> Response {
    let token = random_token();
    let body = html! {
        section.login {
            h1 { "kafkit console" }
            p { "Log in with one of the gateway's API keys. Its grants decide what you can see and change." }
            @if let Some(error) = error {
                p.banner.error role="alert" { (error) }
            }
            form method="post" action={(BASE) "/login"} {
                input type="hidden" name="_csrf" value=(token);
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
        }
    };
    let mut response = (status, bare_page("Log in", body)).into_response();
    let name = if https {
        HOST_LOGIN_COOKIE
    } else {
        LOGIN_COOKIE
    };
    let path = format!("{BASE}/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(name, &token, &path, 3600, https),
    );
    response
}

/// What the login form posts.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    key: String,
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

/// Marks requests that came over HTTPS ([`crate::serve_tls`] adds it): the session cookie is
/// then `__Host-` prefixed and `Secure`, never sent over plain HTTP.
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// Middleware of the login post: a client address over the failed-login limit is refused
/// before its body is read (the handler's form is then at most [`MAX_LOGIN_BODY`]).
pub async fn login_throttle(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    // Checked before the key is looked at: a right guess after too many wrong ones is refused
    // too, so guessing gains nothing.
    let Some(wait) = state.auth_throttle().wait(client, Instant::now()) else {
        return next.run(request).await;
    };
    tracing::warn!(?client, "console login refused: too many failures");
    let seconds = wait.as_secs().max(1);
    let https = request.extensions().get::<Https>().is_some();
    let mut response = login_page(
        StatusCode::TOO_MANY_REQUESTS,
        Some(&format!(
            "Too many failed logins from your address ({MAX_AUTH_FAILURES} a minute). Try \
             again in {seconds} seconds."
        )),
        https,
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&seconds.to_string()).expect("digits"),
    );
    response
}

/// Checks the form's token and the key, and opens a session.
pub async fn login_submit(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    https: Option<Extension<Https>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(keys) = &state.api_keys() else {
        return Redirect::to(BASE).into_response();
    };
    let https = https.is_some();
    let token = cookie(
        &headers,
        if https {
            HOST_LOGIN_COOKIE
        } else {
            LOGIN_COOKIE
        },
    );
    if !token.is_some_and(|t| constant_time_eq(t.as_bytes(), form.csrf.as_bytes())) {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("The form's security token is missing or out of date: log in again."),
            https,
        );
    }
    let client = peer.map(|Extension(ConnectInfo(a))| a.ip());
    let Some(key) = keys.find(form.key.trim()) else {
        state.auth_throttle().failed(client, Instant::now());
        return login_page(StatusCode::UNAUTHORIZED, Some("Unknown API key."), https);
    };
    state.auth_throttle().succeeded(client);
    tracing::info!(caller = %key.name, "console login");
    let id = console.sessions.open(Caller::Key(key));
    let mut response = Redirect::to(BASE).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(
            session_cookie(https),
            &id,
            BASE,
            SESSION_TTL.as_secs(),
            https,
        ),
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
    https: Option<Extension<Https>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Failure> {
    viewer.check_csrf(&form.csrf)?;
    let https = https.is_some();
    if let Some(id) = cookie(&headers, session_cookie(https)) {
        console.sessions.close(id);
    }
    let mut response = Redirect::to(&format!("{BASE}/login")).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(session_cookie(https), "", BASE, 0, https),
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
        assert_eq!(cookie(&headers, session_cookie(false)), Some("abc"));
        // Over HTTPS only the __Host- cookie counts.
        assert_eq!(cookie(&headers, session_cookie(true)), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("kafkit_consolex=abc; __Host-kafkit_console=def"),
        );
        assert_eq!(cookie(&headers, session_cookie(false)), None);
        assert_eq!(cookie(&headers, session_cookie(true)), Some("def"));
    }

    #[test]
    fn a_session_expires_after_its_idle_time_and_each_use_extends_it() {
        let sessions = Sessions::default();
        let id = sessions.open(Caller::Open);
        let start = Instant::now();
        // Used just before its idle time ends, it lives on from there...
        let used = start + SESSION_IDLE - Duration::from_secs(1);
        assert!(sessions.find_at(&id, used).is_some());
        assert!(
            sessions
                .find_at(&id, used + SESSION_IDLE - Duration::from_secs(1))
                .is_some()
        );
        // ...and once left idle longer, it is gone for good.
        let idle = used + 2 * SESSION_IDLE;
        assert!(sessions.find_at(&id, idle).is_none());
        assert!(sessions.find(&id).is_none());
        // However often it is used, it ends SESSION_TTL after it was opened.
        let id = sessions.open(Caller::Open);
        let opened = Instant::now();
        let mut at = opened;
        while at < opened + SESSION_TTL - SESSION_IDLE / 2 {
            at += SESSION_IDLE / 3;
            assert!(sessions.find_at(&id, at).is_some());
        }
        let end = opened + SESSION_TTL + Duration::from_secs(1);
        assert!(
            end - at < SESSION_IDLE,
            "used recently: only its age ends it"
        );
        assert!(sessions.find_at(&id, end).is_none());
    }
}
