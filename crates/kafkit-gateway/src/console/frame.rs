//! The frame every console page is drawn in (the document head), the bare page without
//! navigation (the login form, errors before a viewer is known) and the error page
//! ([`Failure`]). Below the session and the page shell, which both use it.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::BASE;
use crate::http::error::ApiError;

/// The document head: title, stylesheet, script.
pub(super) fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · kafkit console" }
            link rel="stylesheet" href={(BASE) "/assets/console.css"};
            script src={(BASE) "/assets/console.js"} defer {}
        }
    }
}

/// A page without navigation (login, errors before a viewer is known).
pub fn bare_page(title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href=(BASE) { "kafkit" } }
                main { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// An error answered as a page: its status, and a message safe to show.
#[derive(Debug, Clone)]
pub struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure::new(error.status, error.message)
    }
}

impl From<kafkit::Error> for Failure {
    fn from(error: kafkit::Error) -> Self {
        Failure::from(ApiError::from(error))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let class = if self.status == StatusCode::NOT_IMPLEMENTED {
            "banner warning"
        } else {
            "banner error"
        };
        let body = html! {
            h1 { (self.status.as_u16()) " " (title) }
            p class=(class) role="alert" { (self.message) }
            p { a href=(BASE) { "Back to the overview" } }
        };
        (self.status, bare_page(title, body)).into_response()
    }
}

/// What a page handler answers.
pub type PageResult = Result<Response, Failure>;
