//! `imports` (one row per object generation), `import_rejects`, and the
//! per-import staging table the rows are copied into before the merge: the
//! ingest function's writes, and the reads the API lists them with.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::ConsentSource;
use crate::gcp::ObjectRef;
use crate::store::PageKey;

/// A refused row of an import: where it is, why, and what it said
/// (truncated: `import::Reject::new`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    pub reason: String,
    pub raw: String,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct Import {
    pub id: Uuid,
    pub bucket: String,
    pub object: String,
    pub generation: i64,
    /// `running`, `completed` or `failed`.
    pub state: String,
    pub failure_reason: Option<String>,
    /// `csv`, `json` or `ndjson`, once detected.
    pub format: Option<String>,
    pub size_bytes: Option<i64>,
    /// How far reading got: progress while `running`.
    pub bytes_read: i64,
    pub rows_read: i64,
    pub inserted: i64,
    pub updated: i64,
    /// Rows naming a user the file did not change.
    pub unchanged: i64,
    pub duplicates: i64,
    /// Opt-ins the file asked for that the person's own opt-out kept out.
    pub consent_kept: i64,
    pub rejected: i64,
    /// How many times the import was started (a crashed run is re-run).
    pub attempts: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl Import {
    /// Completed or failed: a redelivered event has nothing left to do.
    pub fn is_finished(&self) -> bool {
        self.state != "running"
    }
}

/// How far reading has got, written while an import runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub bytes_read: u64,
    pub rows_read: u64,
    pub rejected: u64,
}

/// What the merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct MergeCounts {
    pub inserted: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub duplicates: i64,
    pub consent_changes: i64,
    /// Opt-ins the file asked for that the person's own opt-out kept out.
    pub consent_kept: i64,
}

/// The import of this object generation, created `running` the first time it is seen.
#[tracing::instrument(skip_all, fields(generation = object.generation))]
pub async fn claim(
    db: impl PgExecutor<'_> + Copy,
    object: &ObjectRef,
) -> Result<Import, sqlx::Error> {
    let created: Option<Import> = sqlx::query_as!(
        Import,
        "insert into imports (bucket, object, generation, size_bytes) values ($1, $2, $3, $4)
         on conflict on constraint imports_object_generation_key do nothing
         returning *",
        &object.bucket,
        &object.name,
        object.generation,
        object.size.and_then(|s| i64::try_from(s).ok())
    )
    .fetch_optional(db)
    .await?;
    match created {
        Some(import) => Ok(import),
        None => {
            sqlx::query_as!(
                Import,
                "select * from imports where bucket = $1 and object = $2 and generation = $3",
                &object.bucket,
                &object.name,
                object.generation
            )
            .fetch_one(db)
            .await
        }
    }
}

#[tracing::instrument(skip_all)]
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Import>, sqlx::Error> {
    sqlx::query_as!(Import, "select * from imports where id = $1", id)
        .fetch_optional(db)
        .await
}

/// Takes the import's lock for this session; `false` when another session
/// (a worker still running it) holds it. Released when the session ends,
/// however it ends.
#[tracing::instrument(skip_all)]
pub async fn try_lock(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    // If the worker's host vanishes without closing the connection, the server
    // notices within about a minute and releases the lock (TCP keepalives; no
    // effect over a Unix socket, where the socket's end is always noticed).
    sqlx::query!(
        "select set_config('tcp_keepalives_idle', '30', false) as idle,
                set_config('tcp_keepalives_interval', '10', false) as interval,
                set_config('tcp_keepalives_count', '3', false) as count"
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        r#"select pg_try_advisory_lock(hashtextextended('import:' || $1::uuid::text, 0)) as "locked!""#,
        id
    )
    .fetch_one(conn)
    .await
}

/// Starts (or restarts, after a crash) a run: forgets what an earlier run
/// recorded, counts the attempt.
#[tracing::instrument(skip_all)]
pub async fn start_attempt(db: impl PgExecutor<'_>, id: Uuid) -> Result<Import, sqlx::Error> {
    sqlx::query_as!(
        Import,
        "with cleared as (delete from import_rejects where import_id = $1)
         update imports set state = 'running', failure_reason = null, format = null,
             bytes_read = 0, rows_read = 0, inserted = 0, updated = 0, unchanged = 0,
             duplicates = 0, rejected = 0, attempts = attempts + 1,
             started_at = now(), finished_at = null
         where id = $1
         returning *",
        id
    )
    .fetch_one(db)
    .await
}

#[tracing::instrument(skip_all)]
pub async fn set_format(
    db: impl PgExecutor<'_>,
    id: Uuid,
    format: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!("update imports set format = $2 where id = $1", id, format)
        .execute(db)
        .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn record_progress(
    db: impl PgExecutor<'_>,
    id: Uuid,
    progress: Progress,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update imports set bytes_read = $2, rows_read = $3, rejected = $4 where id = $1",
        id,
        to_i64(progress.bytes_read),
        to_i64(progress.rows_read),
        to_i64(progress.rejected)
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores rejects, set-based.
#[tracing::instrument(skip_all, fields(n = rejects.len()))]
pub async fn insert_rejects(
    db: impl PgExecutor<'_>,
    id: Uuid,
    rejects: &[Reject],
) -> Result<(), sqlx::Error> {
    if rejects.is_empty() {
        return Ok(());
    }
    let lines: Vec<i64> = rejects.iter().map(|r| to_i64(r.line)).collect();
    let raws: Vec<String> = rejects.iter().map(|r| r.raw.clone()).collect();
    let reasons: Vec<String> = rejects.iter().map(|r| r.reason.clone()).collect();
    sqlx::query!(
        "insert into import_rejects (import_id, line_number, raw_line, reason)
         select $1, * from unnest($2::bigint[], $3::text[], $4::text[])",
        id,
        &lines,
        &raws,
        &reasons
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Fails the import with one reason; nothing it read is merged.
#[tracing::instrument(skip_all)]
pub async fn fail(
    db: impl PgExecutor<'_>,
    id: Uuid,
    reason: &str,
    progress: Progress,
) -> Result<Import, sqlx::Error> {
    sqlx::query_as!(
        Import,
        "update imports set state = 'failed', failure_reason = $2, finished_at = now(),
             bytes_read = $3, rows_read = $4, rejected = $5
         where id = $1
         returning *",
        id,
        reason,
        to_i64(progress.bytes_read),
        to_i64(progress.rows_read),
        to_i64(progress.rejected)
    )
    .fetch_one(db)
    .await
}

/// Marks the import completed with its counts (in the merge's transaction).
#[tracing::instrument(skip_all)]
pub async fn complete(
    db: impl PgExecutor<'_>,
    id: Uuid,
    progress: Progress,
    counts: MergeCounts,
) -> Result<Import, sqlx::Error> {
    sqlx::query_as!(
        Import,
        "update imports set state = 'completed', finished_at = now(),
             bytes_read = $2, rows_read = $3, rejected = $4,
             inserted = $5, updated = $6, unchanged = $7, duplicates = $8, consent_kept = $9
         where id = $1
         returning *",
        id,
        to_i64(progress.bytes_read),
        to_i64(progress.rows_read),
        to_i64(progress.rejected),
        counts.inserted,
        counts.updated,
        counts.unchanged,
        counts.duplicates,
        counts.consent_kept
    )
    .fetch_one(db)
    .await
}

/// The staging table's name: a temporary table, private to the session that
/// runs the import and gone with it if the worker dies. It holds the rows
/// COPYed since the last [`insert_new_users`].
pub const STAGING_TABLE: &str = "pg_temp.import_rows";
/// The rows left for [`merge_staged`].
pub const REST_TABLE: &str = "pg_temp.import_rest";

/// Creates this session's empty staging tables: `import_rows` (what the COPY
/// fills), `import_rest` (the rows left for the merge, and what the COPY
/// fills once creating ahead has stopped paying) and `import_new` (the users
/// [`insert_new_users`] created).
#[tracing::instrument(skip_all)]
pub async fn create_staging(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    drop_staging(conn).await?;
    sqlx::query(
        "create temporary table import_rows (
             -- The row's place among the file's rows (1, 2, ...): what
             -- later means when one number has several rows.
             position      bigint not null,
             phone_number  text not null,
             attributes    jsonb not null,
             consent       text,
             topics        jsonb
         )",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query("create temporary table import_rest (like pg_temp.import_rows)")
        .execute(&mut *conn)
        .await?;
    // Unindexed: the merge reads it whole, by hash join.
    sqlx::query("create temporary table import_new (phone_number text not null)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn drop_staging(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "drop table if exists pg_temp.import_rows, pg_temp.import_rest, pg_temp.import_new",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the rows staged since the last call out of `import_rows`: the users
/// they bring that do not exist yet are created (with those rows' attributes,
/// folded in file order, and no consent) and listed in `import_new`; every
/// other row (an existing user's, a number whose rows carry consent or
/// topics) moves to `import_rest` for [`merge_staged`]. Run every few MiB of
/// the COPY and once at its end, inside the import's transaction: the bulk of
/// a large file's writes, done while the rest of it is still being read, and
/// none of it visible before the merge commits.
#[tracing::instrument(skip_all)]
pub async fn insert_new_users(conn: &mut PgConnection) -> Result<AheadStep, sqlx::Error> {
    let (created, set_aside): (i64, i64) = sqlx::query_as(
        "with created as (
             insert into users (phone_number, attributes)
             select phone_number, jsonb_merge_agg(attributes order by position)
             from pg_temp.import_rows
             group by phone_number
             having bool_and(consent is null and topics is null)
             on conflict (phone_number) do nothing
             returning phone_number
         ),
         listed as (
             insert into pg_temp.import_new (phone_number) select phone_number from created
         ),
         rest as (
             insert into pg_temp.import_rest
             select r.* from pg_temp.import_rows r
             where not exists (select 1 from created c where c.phone_number = r.phone_number)
             returning 1
         )
         select (select count(*) from created), (select count(*) from rest)",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("truncate pg_temp.import_rows")
        .execute(conn)
        .await?;
    Ok(AheadStep {
        created: u64::try_from(created).unwrap_or(0),
        set_aside: u64::try_from(set_aside).unwrap_or(0),
    })
}

/// What one [`insert_new_users`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AheadStep {
    /// Users created.
    pub created: u64,
    /// Rows moved to `import_rest` for the merge.
    pub set_aside: u64,
}

/// Merges the staged rows into `users`; run inside the import's transaction.
///
/// Rows of one phone number are folded in file order (later values win per
/// attribute, the last consent given wins); existing users keep attributes the
/// file does not mention (`existing || new`). A user the file would not change
/// is not written. Every consent change gets its `consent_events` row. An
/// opt-out the person made themselves is kept whatever the file says (the
/// refused change is recorded, and counted as `consent_kept`).
///
/// It reads `import_rest`: the users [`insert_new_users`] created are done,
/// but for rows that name them again later in the file (those are in
/// `import_rest`, and a user named there counts as inserted, not updated).
/// Folding those later rows over what was created gives what folding them
/// all would have: `||` is associative, and a user created ahead has consent
/// `unknown` from no source, as a new user has before the merge. `rows` is
/// how many rows were staged.
#[tracing::instrument(skip_all)]
pub async fn merge_staged(
    conn: &mut PgConnection,
    id: Uuid,
    rows: u64,
) -> Result<MergeCounts, sqlx::Error> {
    // Temporary tables are never analyzed by autovacuum: without this the
    // planner would not know that import_rest is small and import_new large.
    sqlx::query("analyze pg_temp.import_rest, pg_temp.import_new")
        .execute(&mut *conn)
        .await?;
    // Sorting a large file's rows by phone number needs memory; this only
    // lasts as long as the merge's transaction.
    sqlx::query("set local work_mem = '256MB'")
        .execute(&mut *conn)
        .await?;
    // Lock the users whose consent or topics the file sets, so that what is
    // read below is what is replaced (an inbound STOP or button tap cannot
    // slip in between); the topic merge runs in the same transaction.
    sqlx::query(
        "select 1 from users u
         where u.phone_number in (select phone_number from pg_temp.import_rest
                                  where consent is not null or topics is not null)
         for update",
    )
    .execute(&mut *conn)
    .await?;
    let mut counts: MergeCounts = sqlx::query_as::<_, MergeCounts>("with folded as (
             select phone_number,
                    jsonb_merge_agg(attributes order by position) as attributes,
                    (array_agg(consent order by position desc) filter (where consent is not null))[1] as consent
             from pg_temp.import_rest
             group by phone_number
         ),
         merged as (
             select f.*, n.phone_number is not null as created
             from folded f left join pg_temp.import_new n using (phone_number)
         ),
         source as (
             select m.phone_number, m.attributes, u.consent as old_consent, u.consent_source as old_source,
                    -- The person's own opt-out stands (docs/consent.md).
                    (m.consent is not null and m.consent <> 'opted_out' and u.consent = 'opted_out'
                     and u.consent_source = any($2)) as kept,
                    m.consent as asked
             from merged m left join users u using (phone_number)
         ),
         decided as (
             select phone_number, attributes, old_consent, old_source, kept, asked,
                    case when kept then null else asked end as consent
             from source
         ),
         written as (
             insert into users as u (phone_number, attributes, consent, consent_changed_at, consent_source)
             select phone_number, attributes, coalesce(consent, 'unknown'),
                    case when consent is not null then now() end,
                    case when consent is not null then 'import' end
             from decided
             on conflict (phone_number) do update set
                 attributes = u.attributes || excluded.attributes,
                 consent = case when excluded.consent_source is null then u.consent
                                else excluded.consent end,
                 consent_changed_at = case when excluded.consent_source is not null
                                            and excluded.consent <> u.consent
                                           then excluded.consent_changed_at
                                           else u.consent_changed_at end,
                 consent_source = case when excluded.consent_source is not null
                                        and excluded.consent <> u.consent
                                       then excluded.consent_source
                                       else u.consent_source end
             where (u.attributes || excluded.attributes) <> u.attributes
                or (excluded.consent_source is not null and excluded.consent <> u.consent)
             returning u.phone_number, (xmax = 0) as inserted
         ),
         -- Written now, not created ahead by insert_new_users.
         written_now as (
             select w.inserted from written w
             where not exists (select 1 from merged m where m.phone_number = w.phone_number and m.created)
         ),
         changes as (
             insert into consent_events (phone_number, from_consent, to_consent, source, import_id, detail, refused)
             select phone_number, coalesce(old_consent, 'unknown'), consent, 'import', $1, null, false
             from decided
             where consent is not null and consent <> coalesce(old_consent, 'unknown')
             union all
             select phone_number, old_consent, asked, 'import', $1,
                    'refused: the person opted out (' || old_source || '); only they can opt back in', true
             from decided
             where kept
             returning refused
         )
         select (select count(*) from pg_temp.import_new) + (select count(*) from written_now where inserted) as inserted,
                (select count(*) from written_now where not inserted) as updated,
                (select count(*) from merged where not created) - (select count(*) from written_now) as unchanged,
                -- Rows past the first of each number.
                $3 - (select count(*) from pg_temp.import_new)
                    - (select count(*) from merged where not created) as duplicates,
                (select count(*) from changes where not refused) as consent_changes,
                (select count(*) from changes where refused) as consent_kept").bind(id).bind(ConsentSource::the_persons()).bind(to_i64(rows))
    .fetch_one(&mut *conn)
    .await?;
    counts.consent_kept += merge_staged_topics(conn, id).await?;
    Ok(counts)
}

/// Applies the staged `topic.<name>` choices (the last one of the file per
/// person and topic), under the same precedence as consent: a topic the
/// person left themselves stays left. Returns how many choices were kept out.
/// Runs after [`merge_staged`] in its transaction, under its lock.
async fn merge_staged_topics(conn: &mut PgConnection, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("with asked as (
             select r.phone_number, t.key as topic,
                    (array_agg(t.value::boolean order by r.position desc))[1] as subscribed
             from pg_temp.import_rest r, jsonb_each_text(r.topics) t
             where r.topics is not null
             group by 1, 2
         ), decided as (
             select a.phone_number, a.topic, a.subscribed, coalesce(s.subscribed, true) as was, s.source,
                    (a.subscribed and s.subscribed = false and s.source = any($2)) as kept
             from asked a left join topic_subscriptions s using (phone_number, topic)
         ), written as (
             insert into topic_subscriptions (phone_number, topic, subscribed, source)
             select phone_number, topic, subscribed, 'import' from decided
             where not kept and was <> subscribed
             on conflict (phone_number, topic) do update
                 set subscribed = excluded.subscribed, source = excluded.source, changed_at = now()
             returning 1
         ), events as (
             insert into consent_events (phone_number, from_consent, to_consent, source, import_id, refused, topic, detail)
             select phone_number, case when was then 'opted_in' else 'opted_out' end,
                    case when subscribed then 'opted_in' else 'opted_out' end, 'import', $1, false, topic, null
             from decided where not kept and was <> subscribed
             union all
             select phone_number, 'opted_out', 'opted_in', 'import', $1, true, topic,
                    'refused: the person left this topic (' || source || '); only they can rejoin'
             from decided where kept
             returning refused
         )
         select count(*) filter (where refused) from events").bind(id).bind(ConsentSource::the_persons())
    .fetch_one(conn)
    .await
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// What the API reads.

/// One import as the API shows it: the row the ingest function keeps.
pub type ImportRecord = Import;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct ImportReject {
    pub line_number: i64,
    /// The line as read (truncated by the importer).
    pub raw_line: String,
    pub reason: String,
}

/// Up to `limit` imports after `after`, newest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    after: Option<PageKey>,
    limit: i64,
) -> Result<Vec<ImportRecord>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as!(
        ImportRecord,
        "select * from imports
         where $1::timestamptz is null or (started_at, id) < ($1, $2)
         order by started_at desc, id desc
         limit $3",
        at,
        id,
        limit
    )
    .fetch_all(db)
    .await
}

/// The first `limit` rejected lines of an import, by line number.
#[tracing::instrument(skip_all)]
pub async fn rejects(
    db: impl PgExecutor<'_>,
    import_id: Uuid,
    limit: i64,
) -> Result<Vec<ImportReject>, sqlx::Error> {
    sqlx::query_as!(
        ImportReject,
        "select line_number, raw_line, reason from import_rejects
         where import_id = $1 order by line_number, id limit $2",
        import_id,
        limit
    )
    .fetch_all(db)
    .await
}
