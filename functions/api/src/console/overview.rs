//! The overview: what is running, the last 24 hours, what failed and why,
//! opt-outs today and imports in progress.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::Html;
use chrono::{DateTime, Timelike, Utc};
use serde::Serialize;
use shared::domain::CampaignState;
use shared::store::campaigns::{self, Campaign};
use shared::store::{console as reads, imports};
use shared::twilio::errors::meaning;
use uuid::Uuid;

use super::cache::cached;
use super::charts::{self, Series};
use super::session::Session;
use super::{ConsoleError, render};
use crate::AppState;

#[derive(Serialize)]
pub struct Listed {
    #[serde(flatten)]
    campaign: Campaign,
    recipients: i64,
    done: i64,
}

/// How fresh the figures of a list or the overview are kept.
const FRESH: Duration = Duration::from_secs(15);

/// Campaigns with their progress (as of the cached figure: counting a
/// big campaign's messages by status takes a scan).
pub async fn with_progress(
    state: &AppState,
    list: Vec<Campaign>,
) -> Result<Vec<Listed>, ConsoleError> {
    let ids: Vec<_> = list.iter().map(|c| c.id).collect();
    let mut key_ids = ids.clone();
    key_ids.sort();
    let key = format!(
        "campaign-progress:{}",
        key_ids
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let progress = cached(state, key, FRESH, move |s| async move {
        reads::campaign_progress(&s.db, &ids).await
    })
    .await?
    .value;
    Ok(list
        .into_iter()
        .map(|campaign| {
            let p = progress
                .iter()
                .find(|(id, _)| *id == campaign.id)
                .map(|(_, p)| *p)
                .unwrap_or_default();
            Listed {
                campaign,
                recipients: p.recipients,
                done: p.done,
            }
        })
        .collect())
}

/// The overview's figures over the last 24 hours.
#[derive(Serialize, serde::Deserialize)]
struct Figures {
    hours: Vec<(DateTime<Utc>, reads::HourCounts)>,
    errors: Vec<(i32, i64)>,
    opt_outs: i64,
}

async fn figures(state: AppState) -> Result<Figures, sqlx::Error> {
    let now = Utc::now();
    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |t| t.and_utc());
    Ok(Figures {
        hours: reads::activity_by_hour(&state.db, now - chrono::Duration::hours(23)).await?,
        errors: reads::top_error_codes(&state.db, now - chrono::Duration::hours(24), 8).await?,
        opt_outs: reads::opt_outs_since(&state.db, midnight).await?,
    })
}

#[derive(Serialize)]
struct ErrorRow {
    code: i32,
    count: i64,
    meaning: &'static str,
    reaction: String,
}

pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, ConsoleError> {
    let mut active = campaigns::list(&state.db, Some(CampaignState::Running), None, 50).await?;
    active.extend(campaigns::list(&state.db, Some(CampaignState::Scheduled), None, 50).await?);
    active.extend(campaigns::list(&state.db, Some(CampaignState::Paused), None, 50).await?);
    let active = with_progress(&state, active).await?;
    let figures = cached(&state, "overview".to_owned(), FRESH, figures).await?;
    let age = figures.age_seconds();
    let Figures {
        hours,
        errors,
        opt_outs,
    } = figures.value;
    let labels: Vec<String> = hours
        .iter()
        .map(|(h, _)| format!("{:02}h", h.hour()))
        .collect();
    let series = |name, class, f: fn(&reads::HourCounts) -> i64| Series {
        name,
        class,
        values: hours.iter().map(|(_, c)| f(c)).collect(),
    };
    let chart = charts::lines(
        "Messages in the last 24 hours",
        &labels,
        &[
            series("sent", "line-sent", |c| c.sent),
            series("delivered", "line-delivered", |c| c.delivered),
            series("read", "line-read", |c| c.read),
            series("failed", "line-failed", |c| c.failed),
        ],
    );
    let totals = hours
        .iter()
        .fold(reads::HourCounts::default(), |a, (_, c)| {
            reads::HourCounts {
                sent: a.sent + c.sent,
                delivered: a.delivered + c.delivered,
                read: a.read + c.read,
                failed: a.failed + c.failed,
            }
        });
    let errors: Vec<ErrorRow> = errors
        .into_iter()
        .map(|(code, count)| {
            let m = meaning(code);
            ErrorRow {
                code,
                count,
                meaning: m.map_or("not in our table of Twilio codes", |m| m.meaning),
                reaction: m.map_or_else(
                    || "failed the message".to_owned(),
                    |m| reaction_text(m.reaction).to_owned(),
                ),
            }
        })
        .collect();
    let running_imports: Vec<_> = imports::list(&state.db, None, 20)
        .await?
        .into_iter()
        .filter(|i| !i.is_finished())
        .collect();
    render(
        "overview.html",
        minijinja::context! {
            title => "Overview", nav => "overview", csrf => session.csrf,
            active => active, chart => chart, totals => minijinja::context! {
                sent => totals.sent, delivered => totals.delivered, read => totals.read, failed => totals.failed,
            },
            hours => hours.iter().map(|(h, c)| minijinja::context! {
                hour => format!("{:02}:00", h.hour()), sent => c.sent, delivered => c.delivered, read => c.read, failed => c.failed,
            }).collect::<Vec<_>>(),
            errors => errors, opt_outs => opt_outs, imports => running_imports, age => age,
        },
    )
}

/// What the engine does about an error code, in words.
pub fn reaction_text(r: shared::twilio::errors::Reaction) -> &'static str {
    use shared::twilio::errors::Reaction;
    match r {
        Reaction::Retry => "retried later with backoff",
        Reaction::Reconcile => "asked Twilio before any resend (never sent twice)",
        Reaction::FailMessage => "failed the message; not retried",
        Reaction::OptOut => "failed the message and opted the person out",
        Reaction::HoldAccount => "held the campaign's messages; repeated holds pause it",
    }
}
