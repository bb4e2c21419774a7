//! The audit tables at scale (docs/lifecycle.md): the status callback path
//! and the console's campaign and person pages on a database without history,
//! then again with `BENCH_WEBHOOK_ROWS` (50,000,000) `webhook_events` rows
//! across 12 monthly partitions; then one month archived and dropped, beside
//! the floor of copying the same rows out of the database to nowhere.

use std::time::Instant;

use futures::StreamExt;
use shared::lifecycle::store::ArchiveConfig;
use shared::lifecycle::{AuditTable, Month, archive};
use shared::webhooks::group_commit::GroupCommitSettings;
use sqlx::{AssertSqlSafe, PgPool};

use crate::bench::{Figure, Run, fresh_database};
use crate::bench_console::{pct, seed, sign_in, time_page};
use crate::bench_webhooks::{over_http, serve};
use crate::fixtures;

const MONTHS: i32 = 12;
/// The first id of the loaded history, above anything the live runs insert.
const HISTORY_BASE_ID: i64 = 1_000_000_000;
const PAGE_RUNS: usize = 200;

fn count(var: &str, default: i64) -> i64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The p99 of each measured path.
struct Latencies {
    callbacks: Run,
    pages: Vec<(String, f64)>,
}

async fn measure(
    db: &PgPool,
    prefix: &'static str,
    pages: &[(String, String)],
) -> anyhow::Result<Latencies> {
    let settings = GroupCommitSettings::from_env(&shared::config::Env::from_process())?;
    let addr = serve(db, settings).await?;
    let callbacks = over_http("status callbacks, group commit", addr, prefix, 16).await?;
    let router = crate::bench_console::router(db)?;
    let cookie = sign_in(&router).await?;
    // A figure the console caches and finds stale is recomputed in the
    // background on the first view: let that happen before timing.
    for (_, path) in pages {
        time_page(&router, &cookie, path, 0).await?;
    }
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let mut timed = vec![];
    for (name, path) in pages {
        let (_, ms) = time_page(&router, &cookie, path, PAGE_RUNS).await?;
        timed.push((name.clone(), pct(&ms, 0.99)));
    }
    Ok(Latencies {
        callbacks,
        pages: timed,
    })
}

/// `rows` status callbacks in the partition of `month`, loaded bare and
/// indexed after, as a restore or a long-lived database would hold them; their
/// admission keys too.
async fn load_month(db: &PgPool, month: Month, first_id: i64, rows: i64) -> anyhow::Result<()> {
    let partition = AuditTable::WebhookEvents.partition(month);
    let (from, to) = (month.start().to_rfc3339(), month.end().to_rfc3339());
    let step_ms = (month.end() - month.start()).num_milliseconds() / rows.max(1);
    let statements = [
        format!(
            "create table {partition} (like webhook_events including defaults including constraints)"
        ),
        format!(
            "insert into {partition} (id, kind, dedupe_key, message_sid, request_uri, content_type, raw_body, params, received_at)
             select i, 'status', 'SMh' || i || ':delivered', 'SMh' || i,
                    'https://status-abc123-uc.a.run.app/webhooks/status', 'application/x-www-form-urlencoded',
                    'AccountSid=AC0123456789abcdef0123456789abcdef&ApiVersion=2010-04-01&From=whatsapp%3A%2B14155550000'
                      || '&MessageSid=SMh' || i || '&MessageStatus=delivered&To=whatsapp%3A%2B1415' || lpad((i % 10000000)::text, 7, '0'),
                    jsonb_build_object('AccountSid', 'AC0123456789abcdef0123456789abcdef', 'ApiVersion', '2010-04-01',
                                       'From', 'whatsapp:+14155550000', 'MessageSid', 'SMh' || i,
                                       'MessageStatus', 'delivered', 'To', 'whatsapp:+1415' || lpad((i % 10000000)::text, 7, '0')),
                    '{from}'::timestamptz + (i - {first_id}) * {step_ms} * interval '1 millisecond'
             from generate_series({first_id}::bigint, {last}::bigint) as i",
            last = first_id + rows - 1
        ),
        format!("alter table {partition} add primary key (id, received_at)"),
        format!("create index on {partition} (message_sid)"),
        format!(
            "alter table webhook_events attach partition {partition} for values from ('{from}') to ('{to}')"
        ),
        format!(
            "insert into webhook_keys (kind, dedupe_key, received_at)
             select kind, dedupe_key, received_at from {partition} order by dedupe_key"
        ),
    ];
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql)).execute(db).await?;
    }
    Ok(())
}

/// The floor of archiving: the same rows copied out as JSON lines to nowhere.
async fn copy_out(db: &PgPool, month: Month) -> anyhow::Result<(f64, u64)> {
    let partition = AuditTable::WebhookEvents.partition(month);
    let mut conn = db.acquire().await?;
    let t = Instant::now();
    let mut stream = conn
        .copy_out_raw(&format!(
            "copy (select row_to_json(p) from only {partition} p order by id) to stdout \
             with (format csv, quote e'\\x01', delimiter e'\\x02')"
        ))
        .await?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok((t.elapsed().as_secs_f64(), bytes))
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let total = count("BENCH_WEBHOOK_ROWS", 50_000_000);
    let db = fresh_database("ese_bench_lifecycle", 40).await?;
    let (campaign, _) = seed(&db, 100_000, 50_000, 5_000).await?;
    for prefix in ["SMempty-", "SMfull-"] {
        let callbacks = fixtures::campaign(&db).await;
        fixtures::sending_messages(&db, callbacks, prefix, 100_000).await?;
    }
    sqlx::query("vacuum analyze").execute(&db).await?;
    let pages = [
        (
            "console campaign page (50,000 messages)".to_owned(),
            format!("/console/campaigns/{campaign}"),
        ),
        (
            "  its funnel".to_owned(),
            format!("/console/campaigns/{campaign}/funnel"),
        ),
        (
            "console person page".to_owned(),
            "/console/people/%2B14150000017".to_owned(),
        ),
    ];

    let empty = measure(&db, "SMempty-", &pages).await?;

    let current = Month::of(chrono::Utc::now());
    let per_month = total / MONTHS as i64;
    let t = Instant::now();
    let months: Vec<Month> = current.plus(-MONTHS).through(current.plus(-1)).collect();
    // Two months at a time: one per core.
    let mut loads = futures::stream::iter(months.iter().enumerate().map(|(k, month)| {
        let db = db.clone();
        let first = HISTORY_BASE_ID + k as i64 * per_month;
        async move { load_month(&db, *month, first, per_month).await }
    }))
    .buffer_unordered(2);
    while let Some(loaded) = loads.next().await {
        loaded?;
    }
    drop(loads);
    sqlx::query("select setval(pg_get_serial_sequence('webhook_events', 'id'), $1)")
        .bind(HISTORY_BASE_ID + total)
        .execute(&db)
        .await?;
    // Steady state, not the aftermath of the load: the keys vacuumed (as
    // autovacuum would have), the load's WAL checkpointed.
    sqlx::query("vacuum analyze webhook_keys")
        .execute(&db)
        .await?;
    sqlx::query("analyze").execute(&db).await?;
    sqlx::query("checkpoint").execute(&db).await?;
    let loaded: i64 = sqlx::query_scalar("select count(*) from webhook_events")
        .fetch_one(&db)
        .await?;
    let size: String =
        sqlx::query_scalar("select pg_size_pretty(pg_database_size(current_database()))")
            .fetch_one(&db)
            .await?;
    println!(
        "lifecycle: loaded {loaded} webhook_events rows across {MONTHS} monthly partitions (and their keys) in {:.0} s; database {size}",
        t.elapsed().as_secs_f64()
    );

    let full = measure(&db, "SMfull-", &pages).await?;

    // The floor on the second-oldest month, then the oldest archived and dropped.
    let (floor_s, json_bytes) = copy_out(&db, months[1]).await?;
    let scratch = std::env::temp_dir().join(format!("bench-archive-{}", uuid::Uuid::new_v4()));
    let store = ArchiveConfig::Folder(scratch.clone()).build().await?;
    let archived = archive::archive_month(
        &db,
        &store,
        AuditTable::WebhookEvents,
        months[0],
        chrono::Utc::now(),
    )
    .await?;
    let _ = tokio::fs::remove_dir_all(&scratch).await;

    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "p99 (ms)", "empty", "50M rows", "ratio"
    );
    let mut figures = vec![];
    let mut p99 = |what: String, empty: f64, full: f64| {
        println!(
            "{what:<44} {empty:>12.2} {full:>12.2} {:>8.2}",
            full / empty
        );
        figures.push(
            Figure::time(
                "lifecycle",
                format!("{what} p99, {loaded} webhook rows"),
                full,
                empty,
            )
            .unit("ms")
            .floor_is("the same on a database without history")
            .goal(1.2),
        );
    };
    p99(
        "status callbacks, group commit, 16 conns".to_owned(),
        empty.callbacks.percentile_ms(0.99),
        full.callbacks.percentile_ms(0.99),
    );
    for ((what, e), (_, f)) in empty.pages.iter().zip(&full.pages) {
        p99(what.trim().to_owned(), *e, *f);
    }
    let db_time = archived.database_time().as_secs_f64();
    println!(
        "archive + drop {} ({} rows, {} MB of JSON, {} MB gzip'd): database time {:.1} s (export {:.1} s, drop {:.2} s, keys {:.1} s for {} keys); floor: the same rows copied out {:.1} s; budget 60 s: {}",
        archived.manifest.partition,
        archived.manifest.rows,
        json_bytes / 1_000_000,
        archived.manifest.compressed_bytes / 1_000_000,
        db_time,
        archived.export.as_secs_f64(),
        archived.drop.as_secs_f64(),
        archived.keys.as_secs_f64(),
        archived.keys_removed,
        floor_s,
        if db_time < 60.0 { "met" } else { "not met" }
    );
    figures.push(
        Figure::time(
            "lifecycle",
            format!(
                "archive + drop one month ({} rows), database time",
                archived.manifest.rows
            ),
            db_time,
            floor_s,
        )
        .floor_is("the same rows copied out as JSON to nowhere"),
    );
    Ok(figures)
}
