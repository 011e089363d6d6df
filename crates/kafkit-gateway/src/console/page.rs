//! The console's page shell (navigation, who is looking, banners) and the small formatting
//! helpers pages share: times, path segments, numbers.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

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
    const FORMAT: &[BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");
    format_millis(millis, FORMAT)
}

/// `HH:MM:SS` UTC of milliseconds since the epoch.
pub fn clock(millis: i64) -> String {
    const FORMAT: &[BorrowedFormatItem<'static>] = format_description!("[hour]:[minute]:[second]");
    format_millis(millis, FORMAT)
}

/// `millis` since the epoch in `format`, UTC; out of `time`'s range (beyond year 9999) as the
/// number itself.
fn format_millis(millis: i64, format: &[BorrowedFormatItem<'_>]) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|at| at.format(format).ok())
        .unwrap_or_else(|| millis.to_string())
}

/// Parses `YYYY-MM-DDTHH:MM[:SS]` (what a `datetime-local` input sends), read as UTC, into
/// milliseconds since the epoch; a day the calendar does not have is `None`.
pub fn parse_utc(text: &str) -> Option<i64> {
    let (date, clock) = text.trim().split_once(['T', ' '])?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let mut clock = clock.split(':').map(|p| p.parse::<u8>().ok());
    let (h, min) = (clock.next()??, clock.next()??);
    let s = clock.next().flatten().unwrap_or(0);
    let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?).ok()?;
    let at = PrimitiveDateTime::new(date, Time::from_hms(h, min, s).ok()?).assume_utc();
    Some(at.unix_timestamp() * 1000)
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
        assert_eq!(parse_utc("2023-02-29T00:00"), None);
        assert_eq!(utc(-1), "1969-12-31 23:59:59.999");
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
