//! `GET /subscriptions`: the push subscriptions this process runs, each with its settings,
//! delivery counters, recent failures and its consumer's state. A key sees the subscriptions
//! whose topics it may all read.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::http::auth::Caller;
use crate::http::error::ErrorBody;
use crate::push::SubscriptionView;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(subscriptions_list))
}

/// List push subscriptions (empty when `kafkit serve` runs none).
#[utoipa::path(
    get,
    path = "/subscriptions",
    tag = "push",
    responses(
        (status = 200, description = "Subscriptions, in file order", body = Vec<SubscriptionView>),
        (status = 401, description = "No valid API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn subscriptions_list(
    State(state): State<AppState>,
    caller: Caller,
) -> Json<Vec<SubscriptionView>> {
    let views = state.push().as_ref().map(|p| p.views()).unwrap_or_default();
    Json(
        views
            .into_iter()
            .filter(|v| v.topics.iter().all(|t| caller.may_read(t)))
            .collect(),
    )
}
