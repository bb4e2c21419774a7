//! The audit tables at scale (docs/lifecycle.md): the status callback path
//! and the console's campaign and person pages on a database without history
//! and on one with `BENCH_WEBHOOK_ROWS` (50,000,000) `webhook_events` rows
//! across 12 monthly partitions, measured in alternating rounds; then one
//! month archived and dropped, beside the floor of copying the same rows out
//! of the database to nowhere.
//!
//! Both databases are seeded alike. The history is loaded as a long-lived
//! database holds it: indexed after the load, vacuumed and frozen (past
//! months are append-only, so autovacuum does this once and never again).
//! With `BENCH_LIFECYCLE_KEEP=1` the loaded database is kept (the archived
//! month loaded again) and the next run reuses it instead of loading.

use std::time::Instant;

use futures::StreamExt;
use shared::lifecycle::store::ArchiveConfig;
use shared::lifecycle::{AuditTable, Month, archive};
use shared::webhooks::group_commit::GroupCommitSettings;
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use crate::bench::{Figure, Run, drop_database, fresh_database, open_database};
use crate::bench_console::{pct, seed, sign_in, time_page};
use crate::bench_webhooks::{over_http, serve};
use crate::fixtures;

const MONTHS: i32 = 12;
/// The first id of the loaded history, above anything the live runs insert.
const HISTORY_BASE_ID: i64 = 1_000_000_000;
const LOADED_DB: &str = "ese_bench_lifecycle";
const EMPTY_DB: &str = "ese_bench_lifecycle_empty";

fn count(var: &str, default: i64) -> i64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The console pages timed, on the campaign `seed` made big.
fn pages(campaign: Uuid) -> Vec<(String, String)> {
    vec![
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
    ]
}

/// Users, campaigns and decisions as the console bench makes them (smaller),
/// statistics fresh; returns the big campaign.
async fn seed_db(db: &PgPool) -> anyhow::Result<Uuid> {
    let (campaign, _) = seed(db, 100_000, 50_000, 5_000).await?;
    sqlx::query("vacuum analyze").execute(db).await?;
    Ok(campaign)
}

/// One round's p99 of each measured path.
struct Latencies {
    callbacks: f64,
    pages: Vec<f64>,
}

/// Status callbacks for 100,000 fresh messages over HTTP for 10 s, then each
/// page `runs` times.
async fn measure(
    db: &PgPool,
    pages: &[(String, String)],
    runs: usize,
) -> anyhow::Result<Latencies> {
    // Their numbers are nobody's the pages show, so that every round's
    // pages read the same rows.
    let campaign = fixtures::campaign(db).await;
    let prefix: &'static str = format!("SM{}-", Uuid::new_v4().simple()).leak();
    fixtures::sending_messages_to(db, campaign, prefix, 100_000, "+1416").await?;
    sqlx::query("analyze messages").execute(db).await?;
    let settings = GroupCommitSettings::from_env(&shared::config::Env::from_process())?;
    let addr = serve(db, settings).await?;
    let callbacks: Run = over_http("status callbacks, group commit", addr, prefix, 16).await?;
    // The pages are timed apart from that burst of writes: its dirty pages
    // flushed now rather than by a checkpoint that may fall on either
    // database's pages.
    sqlx::query("checkpoint").execute(db).await?;
    let router = crate::bench_console::router(db)?;
    let cookie = sign_in(&router).await?;
    // A figure the console caches and finds stale is recomputed in the
    // background on the first view: let that happen before timing.
    for (_, path) in pages {
        time_page(&router, &cookie, path, 0).await?;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut timed = vec![];
    for (_, path) in pages {
        let (_, ms) = time_page(&router, &cookie, path, runs).await?;
        timed.push(pct(&ms, 0.99));
    }
    Ok(Latencies {
        callbacks: callbacks.percentile_ms(0.99),
        pages: timed,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
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
        // What autovacuum does once to a past month, and never again.
        format!("vacuum (freeze, analyze) {partition}"),
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

/// The loaded database of an earlier run kept (`BENCH_LIFECYCLE_KEEP=1`),
/// if it holds all of its `rows` (no `bench_loaded` row otherwise).
async fn reuse_loaded(keep: bool, rows: i64) -> anyhow::Result<Option<(PgPool, Uuid)>> {
    if !keep {
        return Ok(None);
    }
    let Ok(db) = open_database(LOADED_DB, 40).await else {
        return Ok(None);
    };
    let campaign: Option<Uuid> =
        sqlx::query_scalar("select campaign from bench_loaded where rows = $1")
            .bind(rows)
            .fetch_optional(&db)
            .await
            .unwrap_or(None);
    Ok(campaign.map(|c| (db, c)))
}

/// Loads `months` of history, two at a time (one per core), then leaves the
/// database as it stands in steady state: keys vacuumed, WAL checkpointed.
async fn load_history(
    db: &PgPool,
    months: &[(usize, Month)],
    per_month: i64,
) -> anyhow::Result<()> {
    let mut loads = futures::stream::iter(months.iter().map(|&(k, month)| {
        let db = db.clone();
        let first = HISTORY_BASE_ID + k as i64 * per_month;
        async move { load_month(&db, month, first, per_month).await }
    }))
    .buffer_unordered(2);
    while let Some(loaded) = loads.next().await {
        loaded?;
    }
    drop(loads);
    for sql in [
        "vacuum analyze webhook_keys",
        "analyze webhook_events",
        "checkpoint",
    ] {
        sqlx::query(sql).execute(db).await?;
    }
    Ok(())
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let total = count("BENCH_WEBHOOK_ROWS", 50_000_000);
    let rounds = count("BENCH_LIFECYCLE_ROUNDS", 7).max(1) as usize;
    let page_runs = count("BENCH_LIFECYCLE_PAGE_RUNS", 1000).max(10) as usize;
    let keep = std::env::var("BENCH_LIFECYCLE_KEEP").as_deref() == Ok("1");
    let per_month = total / MONTHS as i64;
    let current = Month::of(chrono::Utc::now());
    let months: Vec<(usize, Month)> = current
        .plus(-MONTHS)
        .through(current.plus(-1))
        .enumerate()
        .collect();

    let empty = fresh_database(EMPTY_DB, 40).await?;
    let empty_campaign = seed_db(&empty).await?;
    let (db, campaign) = match reuse_loaded(keep, per_month * MONTHS as i64).await? {
        Some((db, campaign)) => {
            println!("lifecycle: reusing the loaded database {LOADED_DB}");
            // The earlier runs' callback messages, not what the seed made.
            sqlx::query(
                "delete from messages where campaign_id in
                     (select id from campaigns where name like 'fixture-%')",
            )
            .execute(&db)
            .await?;
            sqlx::query("vacuum analyze messages").execute(&db).await?;
            (db, campaign)
        }
        None => {
            let db = fresh_database(LOADED_DB, 40).await?;
            let campaign = seed_db(&db).await?;
            let t = Instant::now();
            load_history(&db, &months, per_month).await?;
            sqlx::query("select setval(pg_get_serial_sequence('webhook_events', 'id'), $1)")
                .bind(HISTORY_BASE_ID + total)
                .execute(&db)
                .await?;
            println!(
                "lifecycle: loaded {} webhook_events rows across {MONTHS} monthly partitions (keys, indexes, vacuum) in {:.0} s",
                per_month * MONTHS as i64,
                t.elapsed().as_secs_f64()
            );
            sqlx::query("create table bench_loaded (rows bigint, campaign uuid)")
                .execute(&db)
                .await?;
            (db, campaign)
        }
    };
    let loaded: i64 = sqlx::query_scalar("select count(*) from webhook_events")
        .fetch_one(&db)
        .await?;
    let size: String =
        sqlx::query_scalar("select pg_size_pretty(pg_database_size(current_database()))")
            .fetch_one(&db)
            .await?;
    println!("lifecycle: {loaded} webhook_events rows; database {size}");

    // Rounds alternate between the two databases, so that whatever else the
    // machine does (its disk, a checkpoint) falls on both alike; each path's
    // figure is the median of its per-round p99s (each of a few milliseconds,
    // where one stall moves a single round's p99 by half).
    let (empty_pages, full_pages) = (pages(empty_campaign), pages(campaign));
    let mut with_none = vec![];
    let mut with_history = vec![];
    for round in 0..rounds {
        // Which goes first alternates too: a checkpoint the first one's
        // writes start falls on the second.
        if round % 2 == 0 {
            with_none.push(measure(&empty, &empty_pages, page_runs).await?);
            with_history.push(measure(&db, &full_pages, page_runs).await?);
        } else {
            with_history.push(measure(&db, &full_pages, page_runs).await?);
            with_none.push(measure(&empty, &empty_pages, page_runs).await?);
        }
        let (e, f) = (&with_none[round], &with_history[round]);
        println!(
            "  round {}: p99 ms without / with history: callbacks {:.2} / {:.2}; pages {}",
            round + 1,
            e.callbacks,
            f.callbacks,
            e.pages
                .iter()
                .zip(&f.pages)
                .map(|(a, b)| format!("{a:.2} / {b:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let median_of = |rounds: &[Latencies], f: &dyn Fn(&Latencies) -> f64| {
        median(rounds.iter().map(f).collect())
    };

    // The floor on the second-oldest month, then the oldest archived and dropped.
    sqlx::query("delete from bench_loaded").execute(&db).await?;
    let (floor_s, json_bytes) = copy_out(&db, months[1].1).await?;
    let scratch = std::env::temp_dir().join(format!("bench-archive-{}", uuid::Uuid::new_v4()));
    let store = ArchiveConfig::Folder(scratch.clone()).build().await?;
    let archived = archive::archive_month(
        &db,
        &store,
        AuditTable::WebhookEvents,
        months[0].1,
        chrono::Utc::now(),
    )
    .await?;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    if keep {
        load_history(&db, &months[..1], per_month).await?;
        sqlx::query("insert into bench_loaded values ($1, $2)")
            .bind(per_month * MONTHS as i64)
            .bind(campaign)
            .execute(&db)
            .await?;
        println!("lifecycle: {LOADED_DB} kept for the next run, its archived month loaded again");
    } else {
        db.close().await;
        drop_database(LOADED_DB).await?;
    }
    empty.close().await;
    drop_database(EMPTY_DB).await?;

    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        format!("p99 (ms), median of {rounds} rounds"),
        "empty",
        "50M rows",
        "ratio"
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
        median_of(&with_none, &|l| l.callbacks),
        median_of(&with_history, &|l| l.callbacks),
    );
    for (k, (what, _)) in full_pages.iter().enumerate() {
        p99(
            what.trim().to_owned(),
            median_of(&with_none, &|l| l.pages[k]),
            median_of(&with_history, &|l| l.pages[k]),
        );
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
