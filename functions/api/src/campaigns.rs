//! `/v1/campaigns`: drafts, the operator's state transitions, and delivery stats.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use shared::domain::{CampaignAction, CampaignState, QuietHours, QuietHoursError, Topic};
use shared::http::ApiError;
use shared::http::pagination::{Page, PageParams};
use shared::segment::Segment;
use shared::store::campaigns::{self as store, Campaign, CampaignFields, CampaignStats};
use shared::store::{segments, templates};
use shared::template::Template;
use shared::trigger::{Trigger, TriggerError};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::db::{Known, OrDb};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::extract::{check_name, nullable};
use crate::openapi::{ErrorBody, StateValue};

const REFERENCES: &[Known] = &[
    Known::invalid(
        "campaigns_segment_id_fkey",
        "segment_id",
        "no segment with this id",
    ),
    Known::invalid(
        "campaigns_template_id_fkey",
        "template_id",
        "no template with this id",
    ),
];

pub const MAX_RATE_PER_SECOND: i32 = 1000;
pub const MAX_ATTEMPTS: i32 = 20;

/// A trigger's problem, as a 422 on the field it names (`trigger.delay_seconds`).
fn invalid_trigger(e: TriggerError) -> ApiError {
    ApiError::unprocessable(e.field, e.message)
}

/// A campaign's settings as written, before validation.
#[derive(Debug, Clone)]
struct Draft {
    name: String,
    segment_id: Option<Uuid>,
    template_id: Uuid,
    trigger: Option<Trigger>,
    starts_at: Option<DateTime<Utc>>,
    rate_per_second: i32,
    quiet_hours_start: Option<String>,
    quiet_hours_end: Option<String>,
    default_timezone: String,
    frequency_cap: Option<i32>,
    max_attempts: i32,
    topic: Option<String>,
}

impl Draft {
    fn validate(self) -> Result<CampaignFields, ApiError> {
        check_name(&self.name)?;
        match &self.trigger {
            Some(t) => {
                t.validate().map_err(invalid_trigger)?;
            }
            None if self.segment_id.is_none() => {
                return Err(ApiError::unprocessable(
                    "segment_id",
                    "a batch campaign needs a segment_id (only a triggered campaign may go without)",
                ));
            }
            None => {}
        }
        if !(1..=MAX_RATE_PER_SECOND).contains(&self.rate_per_second) {
            return Err(ApiError::unprocessable(
                "rate_per_second",
                format!("rate_per_second must be between 1 and {MAX_RATE_PER_SECOND}"),
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ApiError::unprocessable(
                "max_attempts",
                format!("max_attempts must be between 1 and {MAX_ATTEMPTS}"),
            ));
        }
        if self.frequency_cap.is_some_and(|c| c < 1) {
            return Err(ApiError::unprocessable(
                "frequency_cap",
                "frequency_cap must be at least 1",
            ));
        }
        if self.default_timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(ApiError::unprocessable(
                "default_timezone",
                "default_timezone must be an IANA time zone name such as Europe/Paris",
            ));
        }
        let quiet_hours = match (&self.quiet_hours_start, &self.quiet_hours_end) {
            (None, None) => None,
            (Some(start), Some(end)) => Some(QuietHours::parse(start, end).map_err(|e| {
                let field = match e {
                    QuietHoursError::Start(_) => "quiet_hours_start",
                    QuietHoursError::End(_) | QuietHoursError::Empty(_) => "quiet_hours_end",
                };
                ApiError::unprocessable(field, e.to_string())
            })?),
            (Some(_), None) => {
                return Err(ApiError::unprocessable(
                    "quiet_hours_end",
                    "quiet hours need both a start and an end",
                ));
            }
            (None, Some(_)) => {
                return Err(ApiError::unprocessable(
                    "quiet_hours_start",
                    "quiet hours need both a start and an end",
                ));
            }
        };
        Ok(CampaignFields {
            name: self.name,
            segment_id: self.segment_id,
            template_id: self.template_id,
            trigger: self.trigger,
            starts_at: self.starts_at,
            rate_per_second: self.rate_per_second,
            quiet_hours,
            default_timezone: self.default_timezone,
            frequency_cap: self.frequency_cap,
            max_attempts: self.max_attempts,
            topic: self
                .topic
                .as_deref()
                .map(Topic::parse)
                .transpose()
                .map_err(|e| ApiError::unprocessable("topic", e))?,
        })
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignFilter {
    /// Only campaigns in this state.
    #[param(value_type = Option<StateValue>)]
    pub state: Option<CampaignState>,
}

/// List campaigns, newest first.
#[utoipa::path(
    get, path = "/v1/campaigns", tag = "campaigns",
    params(PageParams, CampaignFilter),
    responses(
        (status = 200, body = Page<Campaign>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(filter): ApiQuery<CampaignFilter>,
) -> Result<Json<Page<Campaign>>, ApiError> {
    let limit = page.limit()?;
    let rows = store::list(&state.db, filter.state, page.after()?, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |c| (c.created_at, c.id))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    /// 1 to 200 characters, not blank.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    /// Who: required for a batch campaign; a triggered campaign's optional audience.
    pub segment_id: Option<Uuid>,
    pub template_id: Uuid,
    /// Makes the campaign triggered: it sends when a matching event arrives
    /// (docs/events.md), from launch until paused or cancelled.
    pub trigger: Option<Trigger>,
    /// When sending may start; launch sets it to the launch time when empty.
    pub starts_at: Option<DateTime<Utc>>,
    /// 1 to 1000, default 10.
    #[schema(minimum = 1, maximum = 1000)]
    pub rate_per_second: Option<i32>,
    /// `HH:MM` local to the recipient; needs `quiet_hours_end`.
    #[schema(example = "22:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub quiet_hours_start: Option<String>,
    #[schema(example = "08:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub quiet_hours_end: Option<String>,
    /// IANA zone for recipients without a `timezone` attribute; default `UTC`.
    #[schema(example = "Europe/Paris")]
    pub default_timezone: Option<String>,
    /// At most this many messages to one person in any 24 hours, across campaigns.
    #[schema(minimum = 1)]
    pub frequency_cap: Option<i32>,
    /// 1 to 20, default 5.
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<i32>,
    /// What the campaign is about (`promotions`): people who left the topic are skipped.
    #[schema(example = "promotions", pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub topic: Option<String>,
}

/// Create a draft campaign.
#[utoipa::path(
    post, path = "/v1/campaigns", tag = "campaigns",
    request_body = CreateCampaign,
    responses(
        (status = 201, body = Campaign),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateCampaign>,
) -> Result<(StatusCode, Json<Campaign>), ApiError> {
    let fields = Draft {
        name: req.name,
        segment_id: req.segment_id,
        template_id: req.template_id,
        trigger: req.trigger,
        starts_at: req.starts_at,
        rate_per_second: req.rate_per_second.unwrap_or(10),
        quiet_hours_start: req.quiet_hours_start,
        quiet_hours_end: req.quiet_hours_end,
        default_timezone: req.default_timezone.unwrap_or_else(|| "UTC".to_owned()),
        frequency_cap: req.frequency_cap,
        max_attempts: req.max_attempts.unwrap_or(5),
        topic: req.topic,
    }
    .validate()?;
    let campaign = store::insert(&state.db, &fields).await.or_db(REFERENCES)?;
    Ok((StatusCode::CREATED, Json(campaign)))
}

async fn find(state: &AppState, id: Uuid) -> Result<Campaign, ApiError> {
    store::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no campaign with this id"))
}

/// Get a campaign.
#[utoipa::path(
    get, path = "/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = Campaign),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Campaign>, ApiError> {
    Ok(Json(find(&state, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCampaign {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// `null` removes a triggered campaign's audience.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub segment_id: Option<Option<Uuid>>,
    pub template_id: Option<Uuid>,
    /// `null` makes the campaign a batch campaign again.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Trigger>)]
    pub trigger: Option<Option<Trigger>>,
    /// `null` clears it (launch then starts at once).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub starts_at: Option<Option<DateTime<Utc>>>,
    #[schema(minimum = 1, maximum = 1000)]
    pub rate_per_second: Option<i32>,
    /// `null` (with `quiet_hours_end`) removes quiet hours.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub quiet_hours_start: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub quiet_hours_end: Option<Option<String>>,
    pub default_timezone: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>, minimum = 1)]
    pub frequency_cap: Option<Option<i32>>,
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: Option<i32>,
    /// `null` removes the topic.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub topic: Option<Option<String>>,
}

fn not_draft(state: CampaignState) -> ApiError {
    ApiError::conflict(format!(
        "only a draft campaign can be edited; this one is {state}"
    ))
    .with_field("state")
}

/// Change a campaign while it is a draft.
#[utoipa::path(
    patch, path = "/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = Uuid, Path)),
    request_body = PatchCampaign,
    responses(
        (status = 200, body = Campaign),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Not a draft", body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn patch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PatchCampaign>,
) -> Result<Json<Campaign>, ApiError> {
    let c = find(&state, id).await?;
    if c.state() != CampaignState::Draft {
        return Err(not_draft(c.state()));
    }
    let fields = Draft {
        name: req.name.unwrap_or(c.name),
        segment_id: req.segment_id.unwrap_or(c.segment_id),
        template_id: req.template_id.unwrap_or(c.template_id),
        trigger: req.trigger.unwrap_or(c.trigger.map(|t| t.0)),
        starts_at: req.starts_at.unwrap_or(c.starts_at),
        rate_per_second: req.rate_per_second.unwrap_or(c.rate_per_second),
        quiet_hours_start: req.quiet_hours_start.unwrap_or(c.quiet_hours_start),
        quiet_hours_end: req.quiet_hours_end.unwrap_or(c.quiet_hours_end),
        default_timezone: req.default_timezone.unwrap_or(c.default_timezone),
        frequency_cap: req.frequency_cap.unwrap_or(c.frequency_cap),
        max_attempts: req.max_attempts.unwrap_or(c.max_attempts),
        topic: req.topic.unwrap_or(c.topic),
    }
    .validate()?;
    match store::update_draft(&state.db, id, &fields)
        .await
        .or_db(REFERENCES)?
    {
        Some(updated) => Ok(Json(updated)),
        // Launched (or cancelled) between the read and the update.
        None => Err(not_draft(find(&state, id).await?.state())),
    }
}

/// Applies an operator's action with a conditional update, so a concurrent
/// move (another operator, the fan-out) is never overwritten.
async fn act(
    state: &AppState,
    id: Uuid,
    action: CampaignAction,
) -> Result<Json<Campaign>, ApiError> {
    for _ in 0..3 {
        let current = find(state, id).await?;
        let from = current.state();
        let to = from
            .transition(action)
            .map_err(|e| ApiError::conflict(e.to_string()).with_field("state"))?;
        if action == CampaignAction::Launch {
            check_launchable(state, &current).await?;
        }
        if let Some(moved) = store::set_state(&state.db, id, from, to).await? {
            tracing::info!(campaign = %id, from = %from, to = %to, "campaign state changed");
            return Ok(Json(moved));
        }
    }
    Err(ApiError::conflict(
        "the campaign kept changing state; retry",
    ))
}

/// A campaign launches only if the sender will be able to read its segment,
/// trigger and template.
async fn check_launchable(state: &AppState, c: &Campaign) -> Result<(), ApiError> {
    if let Some(id) = c.segment_id {
        let segment = segments::get(&state.db, id)
            .await?
            .ok_or_else(|| ApiError::unprocessable("segment_id", "no segment with this id"))?;
        Segment::parse(&segment.definition).map_err(|e| {
            ApiError::unprocessable("segment_id", format!("the segment does not parse: {e}"))
        })?;
    }
    if let Some(t) = &c.trigger {
        t.validate().map_err(invalid_trigger)?;
    }
    let template = templates::get(&state.db, c.template_id)
        .await?
        .ok_or_else(|| ApiError::unprocessable("template_id", "no template with this id"))?;
    Template::new(
        template.body.as_deref(),
        template.content_sid.as_deref(),
        template.content_variables.as_ref(),
    )
    .map_err(|e| {
        ApiError::unprocessable("template_id", format!("the template does not parse: {e}"))
    })?;
    Ok(())
}

macro_rules! action {
    ($name:ident, $action:expr, $path:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(
            post, path = $path, tag = "campaigns",
            params(("id" = Uuid, Path)),
            responses(
                (status = 200, body = Campaign),
                (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
                (status = 409, description = "Not allowed in the current state, which the message names", body = ErrorBody),
                (status = 422, body = ErrorBody),
            ),
        )]
        pub async fn $name(
            State(state): State<AppState>,
            ApiPath(id): ApiPath<Uuid>,
        ) -> Result<Json<Campaign>, ApiError> {
            act(&state, id, $action).await
        }
    };
}

action!(
    launch,
    CampaignAction::Launch,
    "/v1/campaigns/{id}/launch",
    "Launch a draft: it becomes `scheduled` and starts at `starts_at` (now when empty)."
);
action!(
    pause,
    CampaignAction::Pause,
    "/v1/campaigns/{id}/pause",
    "Pause a scheduled or running campaign."
);
action!(
    resume,
    CampaignAction::Resume,
    "/v1/campaigns/{id}/resume",
    "Resume a paused campaign: it is scheduled again and the fan-out picks it up."
);
action!(
    cancel,
    CampaignAction::Cancel,
    "/v1/campaigns/{id}/cancel",
    "Cancel a campaign that has not finished."
);

/// A campaign's counts by status, decision and error code, with delivery and read rates.
#[utoipa::path(
    get, path = "/v1/campaigns/{id}/stats", tag = "campaigns",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = CampaignStats),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
)]
pub async fn stats(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<CampaignStats>, ApiError> {
    find(&state, id).await?;
    Ok(Json(store::stats(&state.db, id).await?))
}
