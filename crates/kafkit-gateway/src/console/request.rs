//! [`Asked`]: what a console page handler starts from, extracted once instead of three
//! extractor arguments in every handler.

use std::sync::Arc;

use axum::extract::{Extension, FromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::Console;
use super::session::Viewer;
use crate::AppState;

/// The gateway's state, the console, and who is looking (a page asked for without a session
/// is answered as [`Viewer`] answers it: the login page, or 401).
pub struct Asked {
    pub state: AppState,
    pub console: Arc<Console>,
    pub viewer: Viewer,
}

impl FromRequestParts<AppState> for Asked {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        let Extension(console) = Extension::<Arc<Console>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Asked {
            state: state.clone(),
            console,
            viewer,
        })
    }
}
