//! `/v1/messages`: the outbox and delivery record, with each message's
//! status-callback timeline and decisions.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use shared::domain::MessageStatus;
use shared::http::ApiError;
use shared::http::pagination::{Page, PageParams};
use shared::store::messages::{
    self as store, DecisionRecord, MessageFilter, MessageRecord, StatusEvent,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery};
use crate::openapi::ErrorBody;
use crate::users::parse_phone;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageQuery {
    pub campaign_id: Option<Uuid>,
    /// E.164; encode `+` as `%2B`.
    pub phone_number: Option<String>,
    /// `pending`, `skipped`, `queued`, `sending`, `sent`, `delivered`, `read`, `undelivered`, `failed`, …
    pub status: Option<String>,
}

/// List messages, newest first, by campaign, phone number or status.
#[utoipa::path(
    get, path = "/v1/messages", tag = "messages",
    params(PageParams, MessageQuery),
    responses(
        (status = 200, body = Page<MessageRecord>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(q): ApiQuery<MessageQuery>,
) -> Result<Json<Page<MessageRecord>>, ApiError> {
    let limit = page.limit()?;
    let phone = q
        .phone_number
        .as_deref()
        .map(|p| parse_phone(p, state.default_region, "phone_number"))
        .transpose()?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            s.parse::<MessageStatus>()
                .map_err(|e| ApiError::bad_request("status", e.to_string()))
        })
        .transpose()?;
    let filter = MessageFilter {
        campaign_id: q.campaign_id,
        phone_number: phone.as_ref().map(|p| p.as_str()),
        status,
    };
    let rows = store::list_records(&state.db, filter, page.after()?, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |m| (m.created_at, m.id))))
}

/// A message with everything that happened to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    pub message: MessageRecord,
    /// Twilio's status callbacks for its MessageSid, in the order received.
    pub status_events: Vec<StatusEvent>,
    /// The engine's decisions about it, oldest first.
    pub decisions: Vec<DecisionRecord>,
}

/// Get a message with its status-callback timeline and decisions.
#[utoipa::path(
    get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = MessageDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<MessageDetail>, ApiError> {
    let message = store::get_record(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no message with this id"))?;
    let status_events = match &message.twilio_sid {
        Some(sid) => store::status_timeline(&state.db, sid).await?,
        None => vec![],
    };
    let decisions = store::decisions(&state.db, id).await?;
    Ok(Json(MessageDetail {
        message,
        status_events,
        decisions,
    }))
}
