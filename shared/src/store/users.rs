//! `users`, and the `consent_events` written with every consent change.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgExecutor, PgPool};

use crate::domain::consent::ConsentRefused;
use crate::domain::{Consent, ConsentSource, PhoneNumber};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct User {
    pub phone_number: String,
    pub attributes: serde_json::Value,
    pub consent: Consent,
    pub consent_changed_at: Option<DateTime<Utc>>,
    pub consent_source: Option<ConsentSource>,
    pub wa_id: Option<String>,
    pub profile_name: Option<String>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn get(db: impl PgExecutor<'_>, phone: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"select phone_number, attributes, consent as "consent: Consent", consent_changed_at,
                  consent_source as "consent_source: ConsentSource", wa_id, profile_name,
                  last_inbound_at, created_at, updated_at
           from users where phone_number = $1"#,
        phone
    )
    .fetch_optional(db)
    .await
}

/// Creates the user on first contact (consent `unknown`) and opens the 24-hour
/// window: `last_inbound_at` only ever moves forward, whatever order messages arrive in.
#[tracing::instrument(skip_all)]
pub async fn record_inbound(
    db: impl PgExecutor<'_>,
    phone: &PhoneNumber,
    wa_id: Option<&str>,
    profile_name: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into users (phone_number, wa_id, profile_name, last_inbound_at)
         values ($1, $2, $3, $4)
         on conflict (phone_number) do update set
             wa_id = coalesce(excluded.wa_id, users.wa_id),
             profile_name = coalesce(excluded.profile_name, users.profile_name),
             last_inbound_at = greatest(users.last_inbound_at, excluded.last_inbound_at)",
        phone.as_str(),
        wa_id,
        profile_name,
        at
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Where a consent change came from, for its `consent_events` row.
#[derive(Debug, Clone, Copy)]
pub struct ConsentChange<'a> {
    pub to: Consent,
    pub source: ConsentSource,
    pub webhook_event_id: Option<i64>,
    pub import_id: Option<uuid::Uuid>,
    pub detail: Option<&'a str>,
}

/// What [`set_consent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentOutcome {
    /// The consent changed from this.
    Changed { from: Consent },
    /// The user is unknown, or already had that consent: nothing written.
    Unchanged,
    /// The precedence rules kept the person's own opt-out; the refused change
    /// is recorded as a `consent_events` row with `refused`.
    Refused(ConsentRefused),
}

impl ConsentOutcome {
    pub fn changed_from(self) -> Option<Consent> {
        match self {
            ConsentOutcome::Changed { from } => Some(from),
            _ => None,
        }
    }
}

/// Sets an existing user's consent and records the change, in one statement,
/// under the precedence rules of [`precedence`](crate::domain::consent::precedence):
/// an opt-out the person made is undone only by the person, and a change that
/// rule refuses is recorded as refused instead.
#[tracing::instrument(skip_all, fields(to = %change.to, source = change.source.as_str()))]
pub async fn set_consent(
    db: impl PgExecutor<'_>,
    phone: &str,
    change: ConsentChange<'_>,
) -> Result<ConsentOutcome, sqlx::Error> {
    let row = sqlx::query!(
        r#"with prev as (
             select phone_number, consent, consent_source from users where phone_number = $1 for update
         ), refused as (
             select * from prev
             where prev.consent = 'opted_out' and $2::text <> 'opted_out'
               and prev.consent_source = any($7::text[]) and not ($3::text = any($7))
         ), changed as (
             update users u set consent = $2, consent_changed_at = now(), consent_source = $3
             from prev
             where u.phone_number = prev.phone_number
               -- A change, or the person making their own a state someone
               -- else set (their STOP after an import's opt-out is theirs).
               and (prev.consent <> $2 or ($3 = any($7) and prev.consent_source is distinct from $3))
               and not exists (select 1 from refused)
             returning prev.consent as from_consent
         )
         insert into consent_events
             (phone_number, from_consent, to_consent, source, webhook_event_id, import_id, detail, refused)
         select $1, from_consent, $2, $3, $4::bigint, $5::uuid, $6::text, false from changed
         union all
         select $1, consent, $2, $3, $4, $5,
                'refused: the person opted out (' || consent_source || '); only they can opt back in', true
         from refused
         returning from_consent, refused, (select consent_source from refused) as by_the_person"#,
        phone,
        change.to.as_str(),
        change.source.as_str(),
        change.webhook_event_id,
        change.import_id,
        change.detail,
        &ConsentSource::the_persons()
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => ConsentOutcome::Unchanged,
        Some(r) if r.refused => ConsentOutcome::Refused(ConsentRefused {
            by_the_person: r
                .by_the_person
                .as_deref()
                .and_then(ConsentSource::parse)
                .map_or("keyword", ConsentSource::as_str),
        }),
        Some(r) => ConsentOutcome::Changed {
            from: r
                .from_consent
                .parse()
                .expect("users.consent is constrained to valid values"),
        },
    })
}

// --- API queries ---

/// The sort key of the user list: the phone number, ascending.
pub type ListKey = String;

/// A user and whether this call created it.
#[derive(Debug, Clone)]
pub struct Upserted {
    pub user: User,
    pub created: bool,
}

/// Creates the user, or replaces its attributes when `attributes` is given.
#[tracing::instrument(skip_all)]
pub async fn upsert(
    db: impl PgExecutor<'_>,
    phone: &PhoneNumber,
    attributes: Option<&serde_json::Value>,
) -> Result<Upserted, sqlx::Error> {
    let row = sqlx::query!(
        r#"insert into users (phone_number, attributes) values ($1, coalesce($2::jsonb, '{}'))
           on conflict (phone_number) do update set attributes = coalesce($2::jsonb, users.attributes)
           returning phone_number, attributes, consent as "consent: Consent", consent_changed_at,
                     consent_source as "consent_source: ConsentSource", wa_id, profile_name,
                     last_inbound_at, created_at, updated_at, (xmax = 0) as "created!""#,
        phone.as_str(),
        attributes
    )
    .fetch_one(db)
    .await?;
    Ok(Upserted {
        user: User {
            phone_number: row.phone_number,
            attributes: row.attributes,
            consent: row.consent,
            consent_changed_at: row.consent_changed_at,
            consent_source: row.consent_source,
            wa_id: row.wa_id,
            profile_name: row.profile_name,
            last_inbound_at: row.last_inbound_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        },
        created: row.created,
    })
}

/// The user, locked until the transaction ends.
pub async fn get_for_update(
    db: impl PgExecutor<'_>,
    phone: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"select phone_number, attributes, consent as "consent: Consent", consent_changed_at,
                  consent_source as "consent_source: ConsentSource", wa_id, profile_name,
                  last_inbound_at, created_at, updated_at
           from users where phone_number = $1 for update"#,
        phone
    )
    .fetch_optional(db)
    .await
}

#[tracing::instrument(skip_all)]
pub async fn set_attributes(
    db: impl PgExecutor<'_>,
    phone: &str,
    attributes: &serde_json::Value,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"update users set attributes = $2 where phone_number = $1
           returning phone_number, attributes, consent as "consent: Consent", consent_changed_at,
                  consent_source as "consent_source: ConsentSource", wa_id, profile_name,
                  last_inbound_at, created_at, updated_at"#,
        phone,
        attributes
    )
    .fetch_optional(db)
    .await
}

/// The webhook parameters that say nothing about a person, kept when an
/// erased user's webhooks are scrubbed.
pub const ANONYMOUS_WEBHOOK_PARAMS: &[&str] = &[
    "AccountSid",
    "ApiVersion",
    "ChannelPrefix",
    "ErrorCode",
    "EventType",
    "MessageSid",
    "MessageStatus",
    "MessagingServiceSid",
    "NumMedia",
    "NumSegments",
    "SmsMessageSid",
    "SmsSid",
    "SmsStatus",
];

/// Erases a user's personal data and keeps what is anonymous (how many
/// messages a campaign sent, their statuses, error codes and decisions):
///
/// - the `users` row is deleted;
/// - everywhere else the phone number becomes one token,
///   `erased:` + md5(number + a random UUID), the same in every table so
///   per-recipient counts still add up, and irreversible since the random
///   part is not kept;
/// - message bodies and content variables, inbound bodies, media, profile
///   names and WaIds are cleared, and the raw webhooks about the user keep
///   only [`ANONYMOUS_WEBHOOK_PARAMS`] (their raw body is emptied);
/// - messages not yet handed to a sender (`pending`, `queued`) are skipped,
///   with a `skipped_erased` decision;
/// - then every free text that still mentions the number, in any format
///   (`+1…`, `whatsapp:`, `%2B`, national, with spaces, dashes, dots,
///   parentheses or their URL encodings between the digits: see
///   [`PhoneNumber::written_pattern`]), is redacted: raw webhooks nobody matched to a message, Twilio's error texts
///   (they quote the `To`), decision reasons, import lines and their reject
///   reasons, consent details, other people's inbound texts and the
///   properties of their events that mention it. (The person's own events
///   are deleted with them.)
///
/// The consent events stay, against the token: they prove consent. The sweep
/// reads those tables whole; erasure is rare and runs in one transaction.
///
/// Returns `false` (and changes nothing) when there is no such user.
#[tracing::instrument(skip_all)]
pub async fn erase(tx: &mut sqlx::PgConnection, phone: &str) -> Result<bool, sqlx::Error> {
    let Some(token): Option<String> = sqlx::query_scalar!(
        r#"delete from users where phone_number = $1
         returning 'erased:' || md5(phone_number || gen_random_uuid()::text) as "token!""#,
        phone
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(false);
    };
    // Archived months are redacted when restored (lifecycle::restore), so
    // while any archive exists the number is kept for that, with the token a
    // restore gives it (the first erasure's). Months not archived yet are
    // redacted below and archived redacted.
    sqlx::query!(
        "insert into erasures (phone_number, token)
         select $1, $2 where exists (select 1 from archived_partitions)
         on conflict (phone_number) do nothing",
        phone,
        &token
    )
    .execute(&mut *tx)
    .await?;
    for table in ["webhook_events", "webhook_events_kept"] {
        sqlx::query(AssertSqlSafe(format!(
            "update {table} w set
             raw_body = '',
             params = (select coalesce(jsonb_object_agg(key, value), '{{}}') from jsonb_each(w.params)
                       where key = any($2)) || '{{\"Erased\": \"true\"}}'
         where w.id in (select webhook_event_id from inbound_messages where from_number = $1)
            or (w.kind = 'status' and w.message_sid in
                (select twilio_sid from messages where phone_number = $1 and twilio_sid is not null))"
        )))
        .bind(phone)
        .bind(ANONYMOUS_WEBHOOK_PARAMS)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!(
        "update inbound_messages set from_number = $2, wa_id = null, profile_name = null,
             body = '', num_media = 0, media = '[]', button_payload = null, button_text = null
         where from_number = $1",
        phone,
        &token
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into decisions (message_id, campaign_id, phone_number, decision, reason)
         select id, campaign_id, $2, 'skipped_erased', '{\"detail\": \"user erased through the API\"}'
         from messages where phone_number = $1 and status in ('pending', 'queued')",
        phone,
        &token
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update messages set phone_number = $2, body = null, content_variables = null,
             last_decision = case when status in ('pending', 'queued') then 'skipped_erased' else last_decision end,
             status = case when status in ('pending', 'queued') then 'skipped' else status end,
             status_rank = case when status in ('pending', 'queued') then $3 else status_rank end
         where phone_number = $1",
        phone,
        &token,
        crate::domain::MessageStatus::Skipped.rank()
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update decisions set phone_number = $2 where phone_number = $1",
        phone,
        &token
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update consent_events set phone_number = $2 where phone_number = $1",
        phone,
        &token
    )
    .execute(&mut *tx)
    .await?;
    let pattern = PhoneNumber::from_trusted(phone.to_owned()).written_pattern();
    for table in ["webhook_events", "webhook_events_kept"] {
        sqlx::query(AssertSqlSafe(erase_webhooks_sql(table)))
            .bind(&pattern)
            .bind(ANONYMOUS_WEBHOOK_PARAMS)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(AssertSqlSafe(erase_decision_reasons_sql("decisions")))
        .bind(&pattern)
        .execute(&mut *tx)
        .await?;
    sqlx::query(AssertSqlSafe(erase_event_properties_sql("events")))
        .bind(&pattern)
        .execute(&mut *tx)
        .await?;
    for sql in ERASE_SWEEP {
        sqlx::query(*sql).bind(&pattern).execute(&mut *tx).await?;
    }
    Ok(true)
}

/// Whether a text mentions the number: `$1` is its
/// [`written_pattern`](PhoneNumber::written_pattern).
macro_rules! mentions {
    ($col:literal) => {
        concat!($col, " ~ $1")
    };
}

/// The sweep of [`erase`] over raw webhooks, for `table` (`webhook_events`,
/// its kept copies, or a restored archive): `$1` is the number's written
/// pattern (or several joined by `|`), `$2` the anonymous webhook parameters.
pub fn erase_webhooks_sql(table: &str) -> String {
    format!(
        "update {table} w set raw_body = '',
             params = coalesce((select jsonb_object_agg(key, value) from jsonb_each(w.params)
                                where key = any($2)
                                  and value::text !~ $1),
                               '{{}}') || '{{\"Erased\": \"true\"}}'
         where raw_body ~ $1 or params::text ~ $1"
    )
}

/// The sweep of [`erase`] over decision reasons, for `table` (`decisions` or
/// a restored archive): the keys whose value mentions the number (`$1`) go.
pub fn erase_decision_reasons_sql(table: &str) -> String {
    format!(
        "update {table} d set reason = coalesce((select jsonb_object_agg(key, value) from jsonb_each(d.reason)
             where value::text !~ $1), '{{}}')
                || '{{\"erased\": true}}'
         where reason::text ~ $1"
    )
}

/// The sweep of [`erase`] over other people's events that mention the number
/// (a reply quoting it), for `table` (`events` or a restored archive): the
/// properties that do are dropped. The person's own events went with them.
pub fn erase_event_properties_sql(table: &str) -> String {
    format!(
        "update {table} e set properties = coalesce((select jsonb_object_agg(key, value) from jsonb_each(e.properties)
             where value::text !~ $1), '{{}}')
                || '{{\"erased\": true}}'
         where properties::text ~ $1"
    )
}

/// The rest of the sweep of [`erase`]: `$1` is the number's written pattern.
const ERASE_SWEEP: &[&str] = &[
    concat!(
        "update import_rejects set raw_line = '[erased]', reason = '[erased]' where ",
        mentions!("raw_line"),
        " or ",
        mentions!("reason")
    ),
    concat!(
        "update messages set error_message = '[erased]' where ",
        mentions!("error_message")
    ),
    concat!(
        "update consent_events set detail = '[erased]' where ",
        mentions!("detail")
    ),
    concat!(
        "update inbound_messages set body = '[erased]' where ",
        mentions!("body")
    ),
    concat!(
        "update imports set failure_reason = '[erased]' where ",
        mentions!("failure_reason")
    ),
];

/// Up to `limit` users after the phone number `after`, by phone number; only
/// those with `consent` and in `segment` when given.
#[tracing::instrument(skip_all)]
pub async fn list_page(
    db: impl PgExecutor<'_>,
    consent: Option<Consent>,
    segment: Option<&crate::segment::Segment>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<User>, sqlx::Error> {
    let mut qb = sqlx::QueryBuilder::new("select * from users where true");
    if let Some(c) = consent {
        qb.push(" and consent = ").push_bind(c.as_str());
    }
    if let Some(s) = segment {
        qb.push(" and ");
        s.push_predicate(&mut qb);
    }
    if let Some(a) = after {
        qb.push(" and phone_number > ").push_bind(a.to_owned());
    }
    qb.push(" order by phone_number limit ").push_bind(limit);
    qb.build_query_as().fetch_all(db).await
}

/// How many users a segment matches now.
#[tracing::instrument(skip_all)]
pub async fn count_matching(
    db: impl PgExecutor<'_>,
    segment: &crate::segment::Segment,
) -> Result<i64, sqlx::Error> {
    let mut qb = sqlx::QueryBuilder::new("select count(*) from users where ");
    segment.push_predicate(&mut qb);
    qb.build_query_scalar().fetch_one(db).await
}

/// One consent change (or refused change) with the evidence behind it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct ConsentEvidence {
    pub id: i64,
    pub from_consent: String,
    pub to_consent: String,
    /// `keyword`, `button`, `twilio` (the person), `import` or `api`.
    pub source: String,
    /// The precedence rules kept the person's own opt-out: nothing changed.
    pub refused: bool,
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The signed webhook behind it (a keyword, a button, a 21610 callback).
    pub webhook_event_id: Option<i64>,
    /// That webhook exactly as Twilio sent it.
    pub webhook_raw_body: Option<String>,
    pub webhook_received_at: Option<DateTime<Utc>>,
    /// The import behind it (`/v1/imports/{id}`).
    pub import_id: Option<uuid::Uuid>,
    /// The topic it is about; `null` for consent as a whole.
    pub topic: Option<String>,
}

/// A person's consent history, oldest first, with its evidence.
///
/// The evidence is read only for the changes a webhook made, by id: an id
/// does not say which month's partition holds the webhook, so that read
/// visits every partition's index, and most histories (imports, the API)
/// need none of it.
#[tracing::instrument(skip_all)]
pub async fn consent_history(
    db: &PgPool,
    phone: &str,
) -> Result<Vec<ConsentEvidence>, sqlx::Error> {
    let mut history = sqlx::query_as!(
        ConsentEvidence,
        r#"select c.id, c.from_consent, c.to_consent, c.source, c.refused, c.detail, c.created_at,
                c.webhook_event_id, null::text as "webhook_raw_body?",
                null::timestamptz as "webhook_received_at?", c.import_id, c.topic
         from consent_events c
         where c.phone_number = $1
         order by c.id"#,
        phone
    )
    .fetch_all(db)
    .await?;
    let ids: Vec<i64> = history.iter().filter_map(|c| c.webhook_event_id).collect();
    if ids.is_empty() {
        return Ok(history);
    }
    // The webhook is in its month's partition, or, once that month is
    // archived, among the kept copies (lifecycle::archive).
    let evidence: HashMap<i64, (String, DateTime<Utc>)> = sqlx::query!(
        r#"select distinct on (id) id as "id!", raw_body as "raw_body!", received_at as "received_at!"
         from (select id, raw_body, received_at from webhook_events where id = any($1)
               union all
               select id, raw_body, received_at from webhook_events_kept where id = any($1)) w
         order by id"#,
        &ids
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|w| (w.id, (w.raw_body, w.received_at)))
    .collect();
    for change in &mut history {
        if let Some((raw_body, received_at)) =
            change.webhook_event_id.and_then(|id| evidence.get(&id))
        {
            change.webhook_raw_body = Some(raw_body.clone());
            change.webhook_received_at = Some(*received_at);
        }
    }
    Ok(history)
}

/// Subscribes or unsubscribes a person from a topic, under the same
/// precedence as consent: a topic the person left themselves (a button) is
/// rejoined only by the person. Recorded as a `consent_events` row with the
/// topic, refused changes too.
#[tracing::instrument(skip_all, fields(topic = topic.as_str(), subscribed, source = source.as_str()))]
pub async fn set_topic(
    db: impl PgExecutor<'_>,
    phone: &str,
    topic: &crate::domain::Topic,
    subscribed: bool,
    source: ConsentSource,
    webhook_event_id: Option<i64>,
) -> Result<ConsentOutcome, sqlx::Error> {
    let row = sqlx::query!(
        r#"with prev as (
             select u.phone_number, coalesce(t.subscribed, true) as subscribed, t.source
             from users u left join topic_subscriptions t on t.phone_number = u.phone_number and t.topic = $2
             where u.phone_number = $1
             for update of u
         ), refused as (
             select * from prev
             where not prev.subscribed and $3::bool and prev.source = any($6::text[])
               and not ($4::text = any($6))
         ), changed as (
             insert into topic_subscriptions (phone_number, topic, subscribed, source)
             select phone_number, $2::text, $3, $4 from prev
             where (prev.subscribed <> $3 or ($4 = any($6) and prev.source is distinct from $4))
               and not exists (select 1 from refused)
             on conflict (phone_number, topic) do update
                 set subscribed = excluded.subscribed, source = excluded.source, changed_at = now()
             returning 1
         )
         insert into consent_events
             (phone_number, from_consent, to_consent, source, webhook_event_id, detail, refused, topic)
         select $1, case when $3 then 'opted_out' else 'opted_in' end,
                case when $3 then 'opted_in' else 'opted_out' end, $4, $5::bigint, null, false, $2
         from changed
         union all
         select $1, 'opted_out', 'opted_in', $4, $5,
                'refused: the person left this topic (' || source || '); only they can rejoin', true, $2
         from refused
         returning refused, (select source from refused) as by_the_person"#,
        phone,
        topic.as_str(),
        subscribed,
        source.as_str(),
        webhook_event_id,
        &ConsentSource::the_persons()
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => ConsentOutcome::Unchanged,
        Some(r) if r.refused => ConsentOutcome::Refused(ConsentRefused {
            by_the_person: r
                .by_the_person
                .as_deref()
                .and_then(ConsentSource::parse)
                .map_or("button", ConsentSource::as_str),
        }),
        Some(_) => ConsentOutcome::Changed {
            from: if subscribed {
                Consent::OptedOut
            } else {
                Consent::OptedIn
            },
        },
    })
}

/// The topics a person left.
pub async fn unsubscribed_topics(
    db: impl PgExecutor<'_>,
    phone: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select topic from topic_subscriptions where phone_number = $1 and not subscribed order by topic",
        phone
    )
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    /// jsonb writes a number as every digit of its numeric: it must read back.
    #[test]
    fn numbers_next_to_f64_max_read_back_from_jsonb_text() {
        let digits = format!("17976931348623155{}", "0".repeat(292));
        let v: serde_json::Value = serde_json::from_str(&digits).expect("reads");
        assert_eq!(v.as_f64(), Some(1.7976931348623155e308));
    }
}
