//! `/v1/inbound-messages`: what people wrote to us, newest first.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use shared::http::ApiError;
use shared::http::pagination::{Page, PageParams};
use shared::store::inbound_messages::{self as store, InboundFilter, InboundRecord};
use utoipa::IntoParams;

use crate::AppState;
use crate::extract::ApiQuery;
use crate::openapi::ErrorBody;
use crate::users::parse_phone;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboundQuery {
    /// Who wrote (E.164; encode `+` as `%2B`).
    pub from_number: Option<String>,
    /// Only messages received at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
}

/// List inbound messages, newest first, by sender and time.
#[utoipa::path(
    get, path = "/v1/inbound-messages", tag = "inbound",
    params(PageParams, InboundQuery),
    responses(
        (status = 200, body = Page<InboundRecord>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(q): ApiQuery<InboundQuery>,
) -> Result<Json<Page<InboundRecord>>, ApiError> {
    let limit = page.limit()?;
    let from = q
        .from_number
        .as_deref()
        .map(|p| parse_phone(p, state.default_region, "from_number"))
        .transpose()?;
    let filter = InboundFilter {
        from_number: from.as_ref().map(|p| p.as_str()),
        since: q.since,
    };
    let rows = store::list(&state.db, filter, page.after()?, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |m| m.id)))
}
