//! The console's page shell (navigation, who is looking, banners) and the small formatting
//! helpers pages share: times, path segments, numbers.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::BASE;
use super::frame::head;
use super::session::Viewer;

/// The navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Topics,
    Groups,
    DeadLetters,
    Subscriptions,
}

impl Nav {
    const ALL: [Nav; 5] = [
        Nav::Overview,
        Nav::Topics,
        Nav::Groups,
        Nav::DeadLetters,
        Nav::Subscriptions,
    ];

    fn label(self) -> &'static str {
        match self {
            Nav::Overview => "Overview",
            Nav::Topics => "Topics",
            Nav::Groups => "Consumer groups",
            Nav::DeadLetters => "Dead letters",
            Nav::Subscriptions => "Push",
        }
    }

    fn href(self) -> String {
        match self {
            Nav::Overview => BASE.to_owned(),
            Nav::Topics => format!("{BASE}/topics"),
            Nav::Groups => format!("{BASE}/groups"),
            Nav::DeadLetters => format!("{BASE}/dead-letters"),
            Nav::Subscriptions => format!("{BASE}/subscriptions"),
        }
    }
}

/// A whole page: navigation, who is logged in, then `body`.
pub fn page(viewer: &Viewer, nav: Nav, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href=(BASE) { "kafkit" }
                    nav {
                        @for entry in Nav::ALL {
                            a href=(entry.href()) aria-current=[(entry == nav).then_some("page")] {
                                (entry.label())
                            }
                        }
                    }
                    span.who {
                        @if viewer.keyed {
                            span.caller { (viewer.caller.name()) }
                            @if !viewer.caller.writes_any() { span.badge { "read-only" } }
                            form.inline method="post" action={(BASE) "/logout"} {
                                (csrf_field(viewer))
                                button.link type="submit" { "Log out" }
                            }
                        } @else {
                            span.caller { "open (no API keys)" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="_csrf" value=(viewer.csrf); }
}

/// A banner for what the broker cannot do.
pub fn unsupported_banner(what: &str) -> Markup {
    html! {
        p.banner.warning role="status" {
            strong { "Not available on this broker. " }
            (what)
        }
    }
}

/// Any other `/console/...` path: 404, in the console's layout (a keyed console without a
/// session sends the browser to the login form first, so unknown paths tell a stranger
/// nothing).
pub async fn not_found(viewer: Viewer, uri: axum::http::Uri) -> Response {
    let body = html! {
        h1 { "Page not found" }
        p.banner.error role="alert" #not-found { "There is no console page at " code { (uri.path()) } "." }
        p { a href=(BASE) { "Go to the overview" } " or pick a page above." }
    };
    let mut response = page(&viewer, Nav::Overview, "Not found", body);
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// `text` as one path segment: everything but unreserved characters percent-encoded (group ids
/// may hold `/`, `?`, `#` or spaces).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
pub fn utc(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `HH:MM:SS` UTC of milliseconds since the epoch.
pub fn clock(millis: i64) -> String {
    let rest = millis.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM[:SS]` (what a `datetime-local` input sends), read as UTC, into
/// milliseconds since the epoch.
pub fn parse_utc(text: &str) -> Option<i64> {
    let (date, time) = text.trim().split_once(['T', ' '])?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min) = (time.next()??, time.next()??);
    let s = time.next().flatten().unwrap_or(0);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 59 {
        return None;
    }
    Some((days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60 + s) * 1000)
}

// Howard Hinnant's civil calendar algorithms.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch, now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_the_calendar() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(parse_utc("2023-11-14T22:13:20"), Some(1_700_000_000_000));
        assert_eq!(parse_utc("2024-02-29T00:00"), Some(1_709_164_800_000));
        assert_eq!(parse_utc("2024-13-01T00:00"), None);
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(clock(1_700_000_000_123), "22:13:20");
    }

    #[test]
    fn segments_encode_everything_but_unreserved_characters() {
        assert_eq!(segment("orders.v1_x-y~"), "orders.v1_x-y~");
        assert_eq!(segment("a/b?c#d e<"), "a%2Fb%3Fc%23d%20e%3C");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
