//! People: search by number or attribute; a person's page answers "why did
//! or didn't this person get this campaign" — attributes, consent and its
//! evidence, every message with its decisions, decisions that made no
//! message, and what they sent us.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use serde::Deserialize;
use serde_json::Value;
use shared::http::ApiError;
use shared::store::inbound_messages::{self, InboundFilter};
use shared::store::{console as reads, users};

use super::session::Session;
use super::{ConsoleError, render};
use crate::AppState;

const RESULTS: i64 = 50;
const MESSAGES: i64 = 100;

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// What a search box query asks for.
#[derive(Debug, PartialEq)]
enum Search {
    /// Numbers starting with this (`+` and digits).
    Number(String),
    /// Attributes containing this one-key object.
    Attribute(Value),
}

fn parse_search(q: &str) -> Result<Search, String> {
    let q = q.trim();
    if let Some((key, value)) = q.split_once('=') {
        let key = key.trim();
        if key.is_empty() {
            return Err("name the attribute before '=': plan=gold".into());
        }
        let value = value.trim();
        let value = match serde_json::from_str::<Value>(value) {
            Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
            _ => Value::String(value.trim_matches('"').to_owned()),
        };
        return Ok(Search::Attribute(serde_json::json!({ key: value })));
    }
    let digits: String = q
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let number = digits.strip_prefix('+').unwrap_or(&digits);
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{q:?} is neither a number (+14155550100, or its first digits) nor an attribute (plan=gold)"
        ));
    }
    Ok(Search::Number(format!("+{number}")))
}

pub async fn search(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(query): Query<SearchQuery>,
) -> Result<Html<String>, ConsoleError> {
    let q = query.q.unwrap_or_default();
    let (people, error) = if q.trim().is_empty() {
        (Vec::new(), None)
    } else {
        match parse_search(&q) {
            Ok(Search::Number(prefix)) => (
                reads::people_by_number_prefix(&state.db, &prefix, RESULTS).await?,
                None,
            ),
            Ok(Search::Attribute(pattern)) => (
                reads::people_by_attribute(&state.db, &pattern, RESULTS).await?,
                None,
            ),
            Err(e) => (Vec::new(), Some(e)),
        }
    };
    render(
        "people.html",
        minijinja::context! {
            title => "People", nav => "people", csrf => session.csrf, q => q,
            searched => !q.trim().is_empty(), people => people, error => error, limit => RESULTS,
        },
    )
}

pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(phone): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let user = users::get(&state.db, &phone)
        .await?
        .ok_or_else(|| ApiError::not_found("no person with this number"))?;
    let consent = users::consent_history(&state.db, &phone).await?;
    let topics = users::unsubscribed_topics(&state.db, &phone).await?;
    let messages = reads::person_messages(&state.db, &phone, MESSAGES).await?;
    let decisions = reads::person_decisions_without_message(&state.db, &phone, MESSAGES).await?;
    let inbound = inbound_messages::list(
        &state.db,
        InboundFilter {
            from_number: Some(&phone),
            since: None,
        },
        None,
        MESSAGES,
    )
    .await?;
    render(
        "person.html",
        minijinja::context! {
            title => user.phone_number.clone(), nav => "people", csrf => session.csrf,
            user => user, consent => consent, topics => topics, messages => messages,
            decisions => decisions, inbound => inbound,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_read_as_numbers_or_attributes() {
        assert_eq!(
            parse_search(" +1 (415) 555-01 "),
            Ok(Search::Number("+141555501".into()))
        );
        assert_eq!(parse_search("4155"), Ok(Search::Number("+4155".into())));
        assert_eq!(
            parse_search("plan = gold"),
            Ok(Search::Attribute(serde_json::json!({"plan": "gold"})))
        );
        assert_eq!(
            parse_search("orders=3"),
            Ok(Search::Attribute(serde_json::json!({"orders": 3})))
        );
        assert!(parse_search("ada").unwrap_err().contains("neither"));
        assert!(parse_search("=x").is_err());
    }
}
