//! Campaign pages: the list, a new campaign, one campaign with its live
//! funnel, the dry run, launch/pause/resume/cancel, and recipients by outcome as CSV.

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Form, Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shared::domain::{CampaignAction, CampaignState};
use shared::engine::dry_run::{self, DryRun};
use shared::engine::send::SenderSettings;
use shared::http::ApiError;
use shared::store::campaigns::{self as store, Campaign, CampaignStats};
use shared::store::console::{self as reads, Outcome};
use shared::store::{segments, templates};
use shared::twilio::errors::meaning;
use uuid::Uuid;

use super::charts::{self, Bar};
use super::overview::{reaction_text, with_progress};
use super::session::Session;
use super::{BASE, ConsoleError, FieldError, redirect, render, text};
use crate::AppState;
use crate::campaigns::{self as api, CreateCampaign};
use crate::extract::{ApiJson, ApiPath};

/// Rows per page of an export (each page is one indexed query).
const EXPORT_PAGE: i64 = 10_000;
/// Rendered messages and people per decision a dry run shows.
const DRY_RUN_SAMPLES: usize = 5;

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, ConsoleError> {
    let campaigns = with_progress(&state, store::list(&state.db, None, None, 200).await?).await?;
    render(
        "campaigns.html",
        minijinja::context! { title => "Campaigns", nav => "campaigns", csrf => session.csrf, campaigns => campaigns },
    )
}

/// What the new-campaign form sends: text fields, empty meaning "not set".
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct CampaignForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    segment_id: String,
    #[serde(default)]
    template_id: String,
    #[serde(default)]
    rate_per_second: String,
    #[serde(default)]
    frequency_cap: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    quiet_hours_start: String,
    #[serde(default)]
    quiet_hours_end: String,
    #[serde(default)]
    default_timezone: String,
}

fn number(field: &str, s: &str) -> Result<Option<i32>, ApiError> {
    text(s)
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::unprocessable(field, format!("{field} must be a whole number"))
            })
        })
        .transpose()
}

fn id(field: &str, s: &str) -> Result<Option<Uuid>, ApiError> {
    text(s)
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::unprocessable(
                    field,
                    format!("choose a {}", field.trim_end_matches("_id")),
                )
            })
        })
        .transpose()
}

impl CampaignForm {
    fn request(&self) -> Result<CreateCampaign, ApiError> {
        Ok(CreateCampaign {
            name: self.name.clone(),
            segment_id: id("segment_id", &self.segment_id)?,
            template_id: id("template_id", &self.template_id)?
                .ok_or_else(|| ApiError::unprocessable("template_id", "choose a template"))?,
            trigger: None,
            starts_at: None,
            rate_per_second: number("rate_per_second", &self.rate_per_second)?,
            quiet_hours_start: text(&self.quiet_hours_start),
            quiet_hours_end: text(&self.quiet_hours_end),
            default_timezone: text(&self.default_timezone),
            frequency_cap: number("frequency_cap", &self.frequency_cap)?,
            max_attempts: None,
            topic: text(&self.topic),
        })
    }
}

async fn new_form(
    state: &AppState,
    session: &Session,
    form: &CampaignForm,
    error: Option<FieldError>,
) -> Result<Html<String>, ConsoleError> {
    let segments = segments::list(&state.db, None, 500).await?;
    let templates = templates::list(&state.db, None, 500).await?;
    render(
        "campaign_new.html",
        minijinja::context! {
            title => "New campaign", nav => "campaigns", csrf => session.csrf,
            segments => segments, templates => templates, form => form, error => error,
        },
    )
}

pub async fn new(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(form): Query<CampaignForm>,
) -> Result<Html<String>, ConsoleError> {
    new_form(&state, &session, &form, None).await
}

pub async fn create(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<CampaignForm>,
) -> Result<Response, ConsoleError> {
    let created = match form.request() {
        Ok(req) => api::create(State(state.clone()), ApiJson(req)).await,
        Err(e) => Err(e),
    };
    match created {
        Ok((_, Json(c))) => Ok(redirect(&format!("{BASE}/campaigns/{}", c.id))),
        Err(e) if e.status.is_client_error() => {
            let page = new_form(&state, &session, &form, Some(e.into())).await?;
            Ok((axum::http::StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn find(state: &AppState, id: Uuid) -> Result<Campaign, ConsoleError> {
    Ok(store::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no campaign with this id"))?)
}

fn parse_id(raw: &str) -> Result<Uuid, ConsoleError> {
    super::parse_id(raw, "no campaign with this id")
}

#[derive(Serialize)]
struct Failure {
    code: String,
    count: i64,
    meaning: &'static str,
    reaction: &'static str,
}

/// The funnel's context: the chart, the counts behind it, and the decisions.
fn funnel_context(c: &Campaign, stats: &CampaignStats, age: Option<i64>) -> minijinja::Value {
    let status = |s: &str| stats.by_status.get(s).copied().unwrap_or(0);
    let mut bars = vec![
        Bar {
            label: "recipients".into(),
            value: stats.messages,
            class: "bar-queued",
        },
        Bar {
            label: "sent to Twilio".into(),
            value: stats.accepted_by_twilio,
            class: "bar-sent",
        },
        Bar {
            label: "delivered".into(),
            value: stats.delivered,
            class: "bar-delivered",
        },
        Bar {
            label: "read".into(),
            value: stats.read,
            class: "bar-read",
        },
        Bar {
            label: "skipped".into(),
            value: status("skipped"),
            class: "bar-skipped",
        },
    ];
    let mut failures: Vec<Failure> = stats
        .by_error_code
        .iter()
        .map(|(code, n)| {
            let m = code.parse().ok().and_then(meaning);
            Failure {
                code: code.clone(),
                count: *n,
                meaning: m.map_or("not in our table of Twilio codes", |m| m.meaning),
                reaction: m.map_or("failed the message", |m| reaction_text(m.reaction)),
            }
        })
        .collect();
    failures.sort_by_key(|f| std::cmp::Reverse(f.count));
    for f in &failures {
        bars.push(Bar {
            label: format!("failed {}", f.code),
            value: f.count,
            class: "bar-failed",
        });
    }
    let mut decisions: Vec<(&String, &i64)> = stats.by_decision.iter().collect();
    decisions.sort_by(|a, b| b.1.cmp(a.1));
    let in_flight = status("pending") + status("queued") + status("sending");
    minijinja::context! {
        campaign_id => c.id,
        age => age,
        state => c.state.as_str(),
        done => c.state.is_terminal(),
        chart => charts::bars("Delivery funnel", &bars),
        stats => stats,
        in_flight => in_flight,
        failures => failures,
        decisions => decisions.into_iter().map(|(d, n)| minijinja::context! { decision => d, count => n }).collect::<Vec<_>>(),
    }
}

/// How fresh a big campaign's funnel is kept (a small one is counted per view).
const STATS_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// A campaign's stats, through the console's cache.
async fn stats_of(
    state: &AppState,
    id: Uuid,
) -> Result<super::cache::Cached<CampaignStats>, ConsoleError> {
    Ok(super::cache::cached(
        state,
        format!("campaign-stats:{id}"),
        STATS_FRESH,
        move |s| async move { store::stats(&s.db, id).await },
    )
    .await?)
}

/// The live part of a campaign page, fetched again while it runs.
pub async fn funnel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let c = find(&state, parse_id(&id)?).await?;
    let stats = stats_of(&state, c.id).await?;
    render(
        "funnel.html",
        minijinja::context! { f => funnel_context(&c, &stats.value, stats.age_seconds()) },
    )
}

/// What a campaign page shows beside the campaign: a dry run, a test send's
/// outcome, an action's error.
#[derive(Default)]
struct Shown {
    dry_run: Option<Result<DryRun, String>>,
    test_send: Option<Result<String, String>>,
    error: Option<String>,
}

async fn campaign_page(
    state: &AppState,
    session: &Session,
    c: Campaign,
    shown: Shown,
) -> Result<Html<String>, ConsoleError> {
    let Shown {
        dry_run,
        test_send,
        error,
    } = shown;
    let cached = stats_of(state, c.id).await?;
    let age = cached.age_seconds();
    let stats = cached.value;
    let segment = match c.segment_id {
        Some(id) => segments::get(&state.db, id).await?,
        None => None,
    };
    let template = templates::get(&state.db, c.template_id).await?;
    let actions: Vec<&str> = [
        (CampaignAction::Launch, "launch"),
        (CampaignAction::Pause, "pause"),
        (CampaignAction::Resume, "resume"),
        (CampaignAction::Cancel, "cancel"),
    ]
    .into_iter()
    .filter(|(a, _)| c.state.transition(*a).is_ok())
    .map(|(_, name)| name)
    .collect();
    let dry_run = dry_run.map(|r| match r {
        Ok(run) => {
            let mut decisions: Vec<_> = run.by_decision.iter().collect();
            decisions.sort_by(|a, b| b.1.cmp(a.1));
            minijinja::context! {
                audience => run.audience,
                decisions => decisions.into_iter().map(|(d, n)| minijinja::context! {
                    decision => d, count => n,
                    examples => run.examples.get(d).map(|e| e.iter().map(|x| minijinja::context! {
                        phone => x.phone_number, reason => x.reason.to_string(),
                    }).collect::<Vec<_>>()),
                }).collect::<Vec<_>>(),
                samples => run.samples.iter().map(|s| minijinja::context! {
                    phone => s.phone_number, use_content => s.use_content,
                    body => s.rendered.body, content_sid => s.rendered.content_sid,
                    content_variables => s.rendered.content_variables,
                }).collect::<Vec<_>>(),
            }
        }
        Err(e) => minijinja::context! { error => e },
    });
    let outcomes: Vec<String> = ["all", "sent", "delivered", "read", "failed", "skipped"]
        .into_iter()
        .map(str::to_owned)
        .chain(stats.by_error_code.keys().cloned())
        .collect();
    let running = matches!(c.state, CampaignState::Running | CampaignState::Scheduled);
    render(
        "campaign.html",
        minijinja::context! {
            title => c.name.clone(), nav => "campaigns", csrf => session.csrf,
            campaign => c, segment => segment, template => template, actions => actions,
            f => funnel_context(&c, &stats, age), live => running, dry_run => dry_run,
            outcomes => outcomes, error => error, test_sends => state.twilio.is_some(),
            test_send => test_send.map(|r| match r {
                Ok(sent) => minijinja::context! { sent => sent },
                Err(refused) => minijinja::context! { refused => refused },
            }),
        },
    )
}

pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let c = find(&state, parse_id(&id)?).await?;
    campaign_page(&state, &session, c, Shown::default()).await
}

/// Runs the sender's rules over the whole audience now, without Twilio.
pub async fn dry_run(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let c = find(&state, parse_id(&id)?).await?;
    let template = templates::get(&state.db, c.template_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the campaign's template is gone"))?;
    let run = match c.segment_id {
        None => Err(dry_run::DryRunError::NoAudience.to_string()),
        Some(segment_id) => {
            let segment = segments::get(&state.db, segment_id)
                .await?
                .ok_or_else(|| ApiError::not_found("the campaign's segment is gone"))?;
            let settings = SenderSettings::default();
            match dry_run::dry_run(
                &state.db,
                &c,
                &segment.definition,
                &template,
                &settings,
                Utc::now(),
                DRY_RUN_SAMPLES,
            )
            .await
            {
                Ok(run) => Ok(run),
                Err(dry_run::DryRunError::Database(e)) => return Err(e.into()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let shown = Shown {
        dry_run: Some(run),
        ..Shown::default()
    };
    campaign_page(&state, &session, c, shown).await
}

/// Launch, pause, resume or cancel, through the API's own transition.
pub async fn act(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let id = parse_id(&id)?;
    let s = State(state.clone());
    let done = match action.as_str() {
        "launch" => api::launch(s, ApiPath(id)).await,
        "pause" => api::pause(s, ApiPath(id)).await,
        "resume" => api::resume(s, ApiPath(id)).await,
        "cancel" => api::cancel(s, ApiPath(id)).await,
        _ => return Err(ApiError::not_found("no such campaign action").into()),
    };
    match done {
        Ok(_) => Ok(redirect(&format!("{BASE}/campaigns/{id}"))),
        Err(e) if e.status.is_client_error() => {
            let c = find(&state, id).await?;
            let shown = Shown {
                error: Some(e.message),
                ..Shown::default()
            };
            let page = campaign_page(&state, &session, c, shown).await?;
            Ok((e.status, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct TestSendForm {
    #[serde(default)]
    phone_number: String,
}

/// One message of the campaign to one person now, through Twilio, under the
/// sender's rules except quiet hours; recorded as a `test_sent` decision.
pub async fn test_send(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<TestSendForm>,
) -> Result<Response, ConsoleError> {
    let c = find(&state, parse_id(&id)?).await?;
    let outcome = send_test(&state, &session, &c, &form.phone_number).await?;
    let status = if outcome.is_ok() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    };
    let shown = Shown {
        test_send: Some(outcome),
        ..Shown::default()
    };
    Ok((status, campaign_page(&state, &session, c, shown).await?).into_response())
}

/// `Ok(what was sent)`, or `Err(why not)`; `ConsoleError` only for the database.
async fn send_test(
    state: &AppState,
    session: &Session,
    c: &Campaign,
    phone: &str,
) -> Result<Result<String, String>, ConsoleError> {
    let Some(twilio) = &state.twilio else {
        return Ok(Err(
            "test sends are off: the api function has no Twilio settings (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_FROM, PUBLIC_BASE_URL)".into(),
        ));
    };
    let to = match crate::users::parse_phone(phone, state.default_region, "phone_number") {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.message)),
    };
    let Some(person) = reads::audience_member(&state.db, to.as_str(), c.topic.as_deref()).await?
    else {
        return Ok(Err(format!(
            "{} is not a known person: import them (with their consent) first",
            to.as_str()
        )));
    };
    let template = templates::get(&state.db, c.template_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the campaign's template is gone"))?;
    let compiled = shared::template::Template::new(
        template.body.as_deref(),
        template.content_sid.as_deref(),
        template.content_variables.as_ref(),
    )
    .map_err(|e| e.to_string());
    // Quiet hours do not hold back an operator's own test.
    let mut rules = c.clone();
    rules.quiet_hours_start = None;
    rules.quiet_hours_end = None;
    let claimed = dry_run::as_claimed(&rules, &template, &person);
    let plan = match shared::engine::send::decide(
        &claimed,
        compiled.as_ref().map_err(String::as_str),
        Utc::now(),
        &SenderSettings::default(),
    ) {
        shared::engine::send::Decision::Send(plan) => plan,
        shared::engine::send::Decision::End {
            decision, reason, ..
        } => {
            return Ok(Err(format!("not sent: {decision} {reason}")));
        }
    };
    let (body, content_sid, content_variables) = if plan.use_content {
        (
            None,
            plan.rendered.content_sid.as_deref(),
            plan.rendered.content_variables.as_deref(),
        )
    } else {
        (plan.rendered.body.as_deref(), None, None)
    };
    let message = shared::twilio::Outbound {
        message_id: Uuid::now_v7(),
        to: &to,
        body,
        content_sid,
        content_variables,
    };
    let (decision, reason, outcome) = match twilio.send(&message).await {
        Ok(accepted) => {
            let what = body.map_or_else(
                || {
                    format!(
                        "content template {} with {}",
                        content_sid.unwrap_or(""),
                        content_variables.unwrap_or("{}")
                    )
                },
                |b| format!("\"{b}\""),
            );
            let sid = accepted.sid.clone().unwrap_or_default();
            (
                "test_sent",
                serde_json::json!({"sid": accepted.sid, "twilio_status": accepted.status, "body": body,
                                   "content_sid": content_sid, "content_variables": content_variables,
                                   "by_key": session.key_id()}),
                Ok(format!("sent to {}: {what} (Twilio {sid})", to.as_str())),
            )
        }
        Err(e) => (
            "test_failed",
            serde_json::json!({"error": e.to_string(), "by_key": session.key_id()}),
            Err(format!("Twilio did not take it: {e}")),
        ),
    };
    reads::record_decision(&state.db, c.id, to.as_str(), decision, &reason).await?;
    tracing::info!(campaign = %c.id, decision, "console test send");
    Ok(outcome)
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    outcome: Option<String>,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A campaign's recipients with one outcome as CSV, streamed page by page.
pub async fn export(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ConsoleError> {
    let c = find(&state, parse_id(&id)?).await?;
    let label = q.outcome.unwrap_or_else(|| "all".to_owned());
    let outcome = Outcome::parse(&label).ok_or_else(|| {
        ApiError::bad_request(
            "outcome",
            "outcome must be all, sent, delivered, read, failed, skipped or a Twilio error code",
        )
    })?;
    let header = Bytes::from_static(
        b"phone_number,status,error_code,last_decision,sent_at,delivered_at,read_at,failed_at\n",
    );
    let db = state.db.clone();
    let campaign = c.id;
    let pages = futures::stream::unfold(Some(None::<Uuid>), move |after| {
        let db = db.clone();
        async move {
            let after = after?;
            match reads::recipients_page(&db, campaign, outcome, after, EXPORT_PAGE).await {
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
                Ok(rows) => {
                    let next = (rows.len() as i64 == EXPORT_PAGE)
                        .then(|| rows.last().map(|r| r.id))
                        .flatten()
                        .map(Some);
                    if rows.is_empty() {
                        return None;
                    }
                    let t = |t: Option<chrono::DateTime<Utc>>| {
                        t.map(|t| t.to_rfc3339()).unwrap_or_default()
                    };
                    let mut out = String::with_capacity(rows.len() * 96);
                    for r in rows {
                        out.push_str(&format!(
                            "{},{},{},{},{},{},{},{}\n",
                            csv_field(&r.phone_number),
                            csv_field(&r.status),
                            r.error_code.map(|c| c.to_string()).unwrap_or_default(),
                            csv_field(r.last_decision.as_deref().unwrap_or("")),
                            t(r.sent_at),
                            t(r.delivered_at),
                            t(r.read_at),
                            t(r.failed_at),
                        ));
                    }
                    Some((Ok(Bytes::from(out)), next))
                }
            }
        }
    });
    let body = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::io::Error>(header) }),
        pages,
    );
    let file = format!("campaign-{}-{}.csv", c.id, outcome.label());
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
