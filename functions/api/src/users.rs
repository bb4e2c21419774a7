//! `/v1/users`: list (by consent, by segment), get, create or update, patch, erase.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use shared::domain::{Consent, ConsentSource, PhoneNumber, Region, Topic};
use shared::http::ApiError;
use shared::http::pagination::{Page, PageParams};
use shared::segment::Segment;
use shared::store::{segments as segment_store, users as store};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::db::OrDb;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorBody;

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// E.164.
    pub phone_number: String,
    #[schema(value_type = Object)]
    pub attributes: Value,
    /// `unknown`, `opted_in` or `opted_out`.
    pub consent: String,
    pub consent_changed_at: Option<DateTime<Utc>>,
    /// What last changed the consent: `keyword`, `button` or `twilio` (the person), `import` or `api`.
    pub consent_source: Option<String>,
    pub wa_id: Option<String>,
    pub profile_name: Option<String>,
    /// The last message the user sent us; sessions are open for 24 hours after it.
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<store::User> for UserView {
    fn from(u: store::User) -> Self {
        Self {
            phone_number: u.phone_number,
            attributes: u.attributes,
            consent: u.consent.as_str().to_owned(),
            consent_changed_at: u.consent_changed_at,
            consent_source: u.consent_source.map(|s| s.as_str().to_owned()),
            wa_id: u.wa_id,
            profile_name: u.profile_name,
            last_inbound_at: u.last_inbound_at,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// Consent as requests write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentValue {
    Unknown,
    OptedIn,
    OptedOut,
}

impl From<ConsentValue> for Consent {
    fn from(c: ConsentValue) -> Self {
        match c {
            ConsentValue::Unknown => Consent::Unknown,
            ConsentValue::OptedIn => Consent::OptedIn,
            ConsentValue::OptedOut => Consent::OptedOut,
        }
    }
}

/// Reads a phone number from a request: E.164, `whatsapp:` prefixed, or
/// national in `DEFAULT_REGION`; 422 naming `field` otherwise.
pub fn parse_phone(
    raw: &str,
    region: Option<Region>,
    field: &str,
) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(raw, region).map_err(|e| ApiError::unprocessable(field, e.to_string()))
}

/// Attributes are free-form, but a `timezone` must be one quiet hours can use.
fn check_attributes(attributes: &Map<String, Value>, field: &str) -> Result<(), ApiError> {
    match attributes.get("timezone") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(tz)) if tz.parse::<chrono_tz::Tz>().is_ok() => Ok(()),
        Some(_) => Err(ApiError::unprocessable(
            &format!("{field}.timezone"),
            "timezone must be an IANA time zone name such as Europe/Paris",
        )),
    }
}

/// Applies a JSON merge patch (RFC 7396): `null` removes a key, objects merge, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Only users with this consent.
    pub consent: Option<ConsentValue>,
    /// Only users in this stored segment.
    pub segment_id: Option<uuid::Uuid>,
    /// Only users in this inline segment definition (JSON, URL-encoded).
    pub segment: Option<String>,
}

/// List users, by phone number.
#[utoipa::path(
    get, path = "/v1/users", tag = "users",
    params(PageParams, UserFilter),
    responses(
        (status = 200, body = Page<UserView>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(filter): ApiQuery<UserFilter>,
) -> Result<Json<Page<UserView>>, ApiError> {
    let limit = page.limit()?;
    let after: Option<store::ListKey> = page.after()?;
    let segment = match (filter.segment_id, filter.segment.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "segment",
                "give segment_id or segment, not both",
            ));
        }
        (Some(id), None) => {
            let stored = segment_store::get(&state.db, id)
                .await?
                .ok_or_else(|| ApiError::unprocessable("segment_id", "no segment with this id"))?;
            Some(
                Segment::parse(&stored.definition)
                    .map_err(|e| ApiError::unprocessable("segment_id", e.to_string()))?,
            )
        }
        (None, Some(raw)) => {
            let definition: Value = serde_json::from_str(raw).map_err(|e| {
                ApiError::bad_request("segment", format!("segment is not valid JSON: {e}"))
            })?;
            Some(
                Segment::parse(&definition)
                    .map_err(|e| ApiError::unprocessable("segment", e.to_string()))?,
            )
        }
        (None, None) => None,
    };
    let rows = store::list_page(
        &state.db,
        filter.consent.map(Consent::from),
        segment.as_ref(),
        after.as_deref(),
        limit + 1,
    )
    .await
    .or_db(&[])?;
    Ok(Json(
        Page::from_rows(rows, limit, |u| u.phone_number.clone()).map(UserView::from),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertUser {
    /// E.164 (`+14155552671`), `whatsapp:+…`, or national in the default region.
    #[schema(example = "+14155550123")]
    pub phone_number: String,
    /// Replaces the stored attributes when given.
    #[schema(value_type = Option<Object>, example = json!({"first_name": "Ada", "timezone": "Europe/Paris"}))]
    pub attributes: Option<Map<String, Value>>,
    /// Changes the consent when given (recorded as a consent event from `api`).
    pub consent: Option<ConsentValue>,
    /// Subscribes (`true`) or unsubscribes (`false`) per topic.
    #[schema(value_type = Option<Object>, example = json!({"promotions": false}))]
    pub topics: Option<BTreeMap<String, bool>>,
}

/// Create a user, or update an existing one.
#[utoipa::path(
    post, path = "/v1/users", tag = "users",
    request_body = UpsertUser,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 200, description = "Updated", body = UserView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, description = "The person opted out themselves; only they can opt back in (`consent_kept`)", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn upsert(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<UpsertUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let phone = parse_phone(&req.phone_number, state.default_region, "phone_number")?;
    if let Some(a) = &req.attributes {
        check_attributes(a, "attributes")?;
    }
    let attributes = req.attributes.map(Value::Object);
    let mut tx = state.db.begin().await?;
    let upserted = store::upsert(&mut *tx, &phone, attributes.as_ref())
        .await
        .or_db(&[])?;
    let mut user = upserted.user;
    if let Some(c) = req.consent {
        tx = set_consent(&state.db, tx, phone.as_str(), c.into()).await?;
        user = store::get(&mut *tx, phone.as_str())
            .await?
            .expect("upserted in this transaction");
    }
    if let Some(topics) = &req.topics {
        tx = set_topics(&state.db, tx, phone.as_str(), topics).await?;
    }
    tx.commit().await?;
    let status = if upserted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(user.into())))
}

/// Sets topic subscriptions in the request's transaction, under the same
/// precedence as consent (a topic the person left is rejoined only by them).
async fn set_topics(
    db: &sqlx::PgPool,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    phone: &str,
    topics: &BTreeMap<String, bool>,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ApiError> {
    let mut parsed = vec![];
    for (name, subscribed) in topics {
        let topic = Topic::parse(name)
            .map_err(|e| ApiError::unprocessable(&format!("topics.{name}"), e))?;
        parsed.push((topic, *subscribed));
    }
    for (topic, subscribed) in &parsed {
        let outcome = store::set_topic(
            &mut *tx,
            phone,
            topic,
            *subscribed,
            ConsentSource::Api,
            None,
        )
        .await?;
        if let store::ConsentOutcome::Refused(_) = outcome {
            tx.rollback().await?;
            store::set_topic(db, phone, topic, *subscribed, ConsentSource::Api, None).await?;
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "consent_kept",
                format!(
                    "the person left topic {} themselves; only they can rejoin it",
                    topic.as_str()
                ),
            )
            .with_field(format!("topics.{}", topic.as_str())));
        }
    }
    Ok(tx)
}

fn api_change(to: Consent) -> store::ConsentChange<'static> {
    store::ConsentChange {
        to,
        source: ConsentSource::Api,
        webhook_event_id: None,
        import_id: None,
        detail: None,
    }
}

/// Sets the consent in the request's transaction. When the person's own
/// opt-out refuses it, the whole request is undone, the refused change is
/// recorded (as evidence, outside the undone transaction) and the answer is
/// 409 naming the reason.
async fn set_consent(
    db: &sqlx::PgPool,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    phone: &str,
    to: Consent,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ApiError> {
    match store::set_consent(&mut *tx, phone, api_change(to)).await? {
        store::ConsentOutcome::Refused(refused) => {
            tx.rollback().await?;
            store::set_consent(db, phone, api_change(to)).await?;
            Err(
                ApiError::new(StatusCode::CONFLICT, "consent_kept", refused.to_string())
                    .with_field("consent"),
            )
        }
        _ => Ok(tx),
    }
}

/// Get a user.
#[utoipa::path(
    get, path = "/v1/users/{phone_number}", tag = "users",
    params(("phone_number" = String, Path, description = "E.164 with its `+` as is: `/v1/users/+14155552671` (`%2B` and national forms work too; request logs mask every form)")),
    responses(
        (status = 200, body = UserView),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<UserView>, ApiError> {
    let phone = parse_phone(&raw, state.default_region, "phone_number")?;
    let user = store::get(&state.db, phone.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("no user with this phone number"))?;
    Ok(Json(user.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    /// A JSON merge patch over the attributes: `null` removes a key.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    /// Changes the consent (recorded as a consent event from `api`).
    pub consent: Option<ConsentValue>,
    /// Subscribes (`true`) or unsubscribes (`false`) per topic.
    #[schema(value_type = Option<Object>, example = json!({"promotions": false}))]
    pub topics: Option<BTreeMap<String, bool>>,
}

/// Change a user's attributes (merge patch) or consent.
#[utoipa::path(
    patch, path = "/v1/users/{phone_number}", tag = "users",
    params(("phone_number" = String, Path, description = "E.164 with its `+` as is: `/v1/users/+14155552671` (`%2B` and national forms work too; request logs mask every form)")),
    request_body = PatchUser,
    responses(
        (status = 200, body = UserView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The person opted out themselves; only they can opt back in (`consent_kept`)", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn patch(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    ApiJson(req): ApiJson<PatchUser>,
) -> Result<Json<UserView>, ApiError> {
    let phone = parse_phone(&raw, state.default_region, "phone_number")?;
    let mut tx = state.db.begin().await?;
    let mut user = store::get_for_update(&mut *tx, phone.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("no user with this phone number"))?;
    if let Some(p) = req.attributes {
        let mut merged = user.attributes.clone();
        merge_patch(&mut merged, &Value::Object(p));
        if let Value::Object(m) = &merged {
            check_attributes(m, "attributes")?;
        }
        user = store::set_attributes(&mut *tx, phone.as_str(), &merged)
            .await
            .or_db(&[])?
            .expect("locked in this transaction");
    }
    if let Some(c) = req.consent {
        tx = set_consent(&state.db, tx, phone.as_str(), c.into()).await?;
        user = store::get(&mut *tx, phone.as_str())
            .await?
            .expect("locked in this transaction");
    }
    if let Some(topics) = &req.topics {
        tx = set_topics(&state.db, tx, phone.as_str(), topics).await?;
    }
    tx.commit().await?;
    Ok(Json(user.into()))
}

/// Erase a user: the user row goes, and every other trace of the number
/// (messages, decisions, consent events, inbound messages, raw webhooks)
/// keeps only an irreversible `erased:…` token, so counts stay right.
#[utoipa::path(
    delete, path = "/v1/users/{phone_number}", tag = "users",
    params(("phone_number" = String, Path, description = "E.164 with its `+` as is: `/v1/users/+14155552671` (`%2B` and national forms work too; request logs mask every form)")),
    responses(
        (status = 204, description = "Erased"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let phone = parse_phone(&raw, state.default_region, "phone_number")?;
    let mut tx = state.db.begin().await?;
    if !store::erase(&mut tx, phone.as_str()).await? {
        return Err(ApiError::not_found("no user with this phone number"));
    }
    tx.commit().await?;
    tracing::info!(phone = %phone, "user erased");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge_patch(
            &mut doc,
            &json!({"a": null, "b": {"c": 5, "d": null}, "e": {"f": 1}, "g": 7}),
        );
        assert_eq!(doc, json!({"b": {"c": 5}, "e": {"f": 1}, "g": 7}));
    }
}

/// A person's consent history, oldest first: every change and every refused
/// change, each with the signed webhook (exactly as received) or the import
/// behind it.
#[utoipa::path(
    get, path = "/v1/users/{phone_number}/consent", tag = "users",
    params(("phone_number" = String, Path, description = "E.164 with its `+` as is: `/v1/users/+14155552671/consent`")),
    responses(
        (status = 200, body = Vec<store::ConsentEvidence>),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn consent(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Vec<store::ConsentEvidence>>, ApiError> {
    let phone = parse_phone(&raw, state.default_region, "phone_number")?;
    store::get(&state.db, phone.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("no user with this phone number"))?;
    Ok(Json(
        store::consent_history(&state.db, phone.as_str()).await?,
    ))
}
