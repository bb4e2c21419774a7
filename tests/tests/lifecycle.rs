//! The audit tables' lifecycle (docs/lifecycle.md): monthly partitions, keys
//! that hold across them, a month archived and dropped, and restored with the
//! erasures made since.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use e2e::fake_gcs::FakeGcs;
use serde_json::json;
use shared::config::Env;
use shared::domain::{EventName, EventSource, PhoneNumber};
use shared::lifecycle::archive::{self, ArchiveManifest, LifecycleError};
use shared::lifecycle::restore;
use shared::lifecycle::store::{ArchiveConfig, ArchiveStore};
use shared::lifecycle::{AuditTable, LifecycleSettings, Month, partitions};
use shared::store::events::{self, NewEvent};
use shared::store::users;
use shared::store::webhook_events::{self, NewWebhookEvent};
use sqlx::PgPool;

use crate::support::{MIGRATOR, url_of};

/// Ada is erased after her month is archived; Grace opted out by WhatsApp
/// (consent evidence); Linus is only mentioned.
const ADA: &str = "+14155552671";
const GRACE: &str = "+14155550100";
const LINUS: &str = "+14155550199";

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lifecycle-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn folder_store(dir: &Path) -> ArchiveStore {
    ArchiveConfig::Folder(dir.to_owned()).build().await.unwrap()
}

async fn count(db: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Which partition each row of `table` is in, by id.
async fn placement(db: &PgPool, table: &str) -> Vec<(i64, String)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select id, tableoid::regclass::text from {table} order by id"
    )))
    .fetch_all(db)
    .await
    .unwrap()
}

async fn webhook(
    db: &PgPool,
    kind: &'static str,
    key: &str,
    body: &str,
    params: serde_json::Value,
) -> i64 {
    webhook_events::insert(
        db,
        &NewWebhookEvent {
            kind,
            dedupe_key: key,
            idempotency_token: None,
            message_sid: Some(key),
            request_uri: "https://hooks.example/webhooks/twilio",
            content_type: "application/x-www-form-urlencoded",
            raw_body: body,
            params: &params,
        },
    )
    .await
    .unwrap()
    .expect("a new event is stored")
}

fn event(key: &str, phone: &str, properties: serde_json::Value) -> NewEvent {
    NewEvent {
        idempotency_key: key.to_owned(),
        phone_number: PhoneNumber::parse(phone, None).unwrap(),
        name: EventName::parse("order.placed").unwrap(),
        properties,
        occurred_at: Utc::now(),
        source: EventSource::Api,
    }
}

/// A month long past any retention, as rows of a database older than its partitions.
fn long_ago() -> DateTime<Utc> {
    Month::of(Utc::now()).plus(-30).start() + Duration::days(3)
}

/// Writes one of everything about Ada, Grace and Linus, then moves it all
/// `long_ago`, into the default partitions (as the partitioning migration
/// leaves a database's old rows).
async fn seed_old_month(db: &PgPool) {
    webhook(
        db,
        "status",
        "SMada:delivered",
        "MessageSid=SMada&MessageStatus=delivered&To=whatsapp%3A%2B14155552671",
        json!({"MessageSid": "SMada", "MessageStatus": "delivered", "To": "whatsapp:+14155552671"}),
    )
    .await;
    let stop = webhook(
        db,
        "inbound",
        "SMgrace",
        "Body=STOP&From=whatsapp%3A%2B14155550100",
        json!({"Body": "STOP", "From": "whatsapp:+14155550100"}),
    )
    .await;
    events::insert_batch(
        db,
        &[
            event("order-ada", ADA, json!({"total": 12})),
            event(
                "order-linus",
                LINUS,
                json!({"gift_for": "+1 415 555 2671", "total": 3}),
            ),
        ],
    )
    .await
    .unwrap();
    sqlx::query(
        "insert into decisions (phone_number, decision, reason)
         values ($1, 'skipped_consent', '{\"consent\": \"unknown\"}'),
                ($2, 'sent', '{\"note\": \"asked for +14155552671 too\"}')",
    )
    .bind(ADA)
    .bind(LINUS)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "insert into consent_events (phone_number, from_consent, to_consent, source, webhook_event_id)
         values ($1, 'opted_in', 'opted_out', 'keyword', $2)",
    )
    .bind(GRACE)
    .bind(stop)
    .execute(db)
    .await
    .unwrap();
    let at = long_ago();
    for sql in [
        "update webhook_events set received_at = $1",
        "update webhook_keys set received_at = $1",
        "update events set received_at = $1",
        "update event_keys set received_at = $1",
        "update decisions set created_at = $1",
    ] {
        sqlx::query(sql).bind(at).execute(db).await.unwrap();
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn months_get_their_partitions_and_rows_that_waited_in_the_default_move_in(db: PgPool) {
    seed_old_month(&db).await;
    let old = Month::of(long_ago());
    let now = Utc::now();
    assert!(
        placement(&db, "webhook_events")
            .await
            .iter()
            .all(|(_, p)| p == "webhook_events_default"),
        "a database without partitions keeps its rows in the default"
    );

    let created = partitions::ensure_all(&db, now, 2).await.unwrap();
    for table in AuditTable::ALL {
        let months = partitions::list(&mut db.acquire().await.unwrap(), table)
            .await
            .unwrap();
        let current = Month::of(now);
        assert_eq!(
            months,
            vec![old, current, current.plus(1), current.plus(2)],
            "{}",
            table.name()
        );
        assert!(created.contains(&(table, old)));
        assert_eq!(
            partitions::default_rows(&mut db.acquire().await.unwrap(), table)
                .await
                .unwrap(),
            0
        );
    }
    let placed = placement(&db, "webhook_events").await;
    assert_eq!(placed.len(), 2);
    assert!(
        placed
            .iter()
            .all(|(_, p)| *p == AuditTable::WebhookEvents.partition(old)),
        "{placed:?}"
    );
    assert_eq!(count(&db, "select count(*) from decisions").await, 2);
    assert_eq!(count(&db, "select count(*) from events").await, 2);

    // Nothing more to do, and runs at once agree.
    let (a, b) = tokio::join!(
        partitions::ensure_all(&db, now, 3),
        partitions::ensure_all(&db, now, 3)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.len() + b.len(),
        3,
        "one new month per table, created once: {a:?} {b:?}"
    );

    // A row of the current month goes to its partition, not the default.
    let id = webhook(&db, "status", "SMnew:sent", "MessageSid=SMnew", json!({})).await;
    let placed = placement(&db, "webhook_events").await;
    let current = AuditTable::WebhookEvents.partition(Month::of(now));
    assert!(placed.contains(&(id, current)), "{placed:?}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_redelivery_is_refused_whatever_month_the_first_delivery_is_in(db: PgPool) {
    partitions::ensure_all(&db, Utc::now(), 0).await.unwrap();
    let id = webhook(&db, "status", "SMx:delivered", "a", json!({})).await;
    // The first delivery now sits in last month's rows.
    let last_month = Month::of(Utc::now()).plus(-1).start() + Duration::days(27);
    sqlx::query("update webhook_events set received_at = $1 where id = $2")
        .bind(last_month)
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
    partitions::ensure(
        &db,
        AuditTable::WebhookEvents,
        Utc::now(),
        Month::of(Utc::now()),
    )
    .await
    .unwrap();
    assert_eq!(
        placement(&db, "webhook_events").await,
        vec![(
            id,
            AuditTable::WebhookEvents.partition(Month::of(last_month))
        )]
    );

    let again = NewWebhookEvent {
        kind: "status",
        dedupe_key: "SMx:delivered",
        idempotency_token: Some("token-1"),
        message_sid: Some("SMx"),
        request_uri: "/",
        content_type: "text/plain",
        raw_body: "b",
        params: &json!({}),
    };
    assert_eq!(
        webhook_events::insert(&db, &again).await.unwrap(),
        None,
        "same dedupe key"
    );
    let other_key_same_token = NewWebhookEvent {
        dedupe_key: "SMx:read",
        ..again.clone()
    };
    assert!(
        webhook_events::insert(&db, &other_key_same_token)
            .await
            .unwrap()
            .is_some()
    );
    let same_token = NewWebhookEvent {
        dedupe_key: "SMx:failed",
        ..again
    };
    assert_eq!(
        webhook_events::insert(&db, &same_token).await.unwrap(),
        None,
        "same idempotency token"
    );
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 2);

    // Events too.
    let first = events::insert_batch(&db, &[event("k-1", ADA, json!({}))])
        .await
        .unwrap();
    sqlx::query("update events set received_at = $1")
        .bind(last_month)
        .execute(&db)
        .await
        .unwrap();
    let replay = events::insert_batch(
        &db,
        &[event("k-1", ADA, json!({})), event("k-2", ADA, json!({}))],
    )
    .await
    .unwrap();
    assert!(first[0].is_some());
    assert_eq!(replay[0], None, "a replayed event key stores nothing");
    assert!(replay[1].is_some());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_month_past_retention_is_archived_dropped_and_restored_with_later_erasures_applied(
    db: PgPool,
) {
    seed_old_month(&db).await;
    let dir = scratch();
    let store = folder_store(&dir).await;
    let settings = LifecycleSettings::default();
    let now = Utc::now();
    let old = Month::of(long_ago());
    let grace_before =
        serde_json::to_value(users::consent_history(&db, GRACE).await.unwrap()).unwrap();
    assert_eq!(
        grace_before[0]["webhook_raw_body"],
        "Body=STOP&From=whatsapp%3A%2B14155550100"
    );

    let report = archive::run(&db, &store, &settings, now).await.unwrap();
    let archived: Vec<(AuditTable, Month, u64)> = report
        .archived
        .iter()
        .map(|a| (a.table, a.month, a.manifest.rows))
        .collect();
    assert_eq!(
        archived,
        vec![
            (AuditTable::WebhookEvents, old, 2),
            (AuditTable::Decisions, old, 2),
            (AuditTable::Events, old, 2)
        ]
    );
    for table in AuditTable::ALL {
        let months = partitions::list(&mut db.acquire().await.unwrap(), table)
            .await
            .unwrap();
        assert!(!months.contains(&old), "{} {old} is dropped", table.name());
        assert!(months.contains(&Month::of(now).plus(3)), "created ahead");
    }
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 0);
    assert_eq!(
        count(&db, "select count(*) from webhook_keys").await,
        0,
        "the month's keys go with it"
    );
    assert_eq!(count(&db, "select count(*) from event_keys").await, 0);
    assert_eq!(
        count(
            &db,
            "select count(*) from archived_partitions where dropped_at is not null"
        )
        .await,
        3
    );

    // Consent evidence outlives its month.
    assert_eq!(
        serde_json::to_value(users::consent_history(&db, GRACE).await.unwrap()).unwrap(),
        grace_before
    );

    // The objects are what the manifest says.
    let webhooks = &report.archived[0];
    let manifest_name = webhooks
        .manifest
        .object
        .replace(".ndjson.gz", ".manifest.json");
    let manifest: ArchiveManifest =
        serde_json::from_slice(&std::fs::read(dir.join(&manifest_name)).unwrap()).unwrap();
    assert_eq!(manifest, webhooks.manifest);
    assert_eq!(manifest.format, "ndjson+gzip");
    assert!(
        manifest
            .object
            .starts_with(&format!("webhook_events/{old}/"))
    );
    let mut lines = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(dir.join(&manifest.object)).unwrap()),
        &mut lines,
    )
    .unwrap();
    let rows: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["dedupe_key"], "SMada:delivered");
    assert!(
        manifest
            .columns
            .iter()
            .any(|c| c.name == "params" && c.type_name == "jsonb")
    );

    // A second run finds nothing to do.
    let again = archive::run(&db, &store, &settings, now).await.unwrap();
    assert!(
        again.archived.is_empty() && again.created.is_empty(),
        "{again:?}"
    );

    // Ada is erased after her month went to the archive.
    let mut tx = db.begin().await.unwrap();
    assert!(users::erase(&mut tx, ADA).await.unwrap());
    tx.commit().await.unwrap();
    let token: String = sqlx::query_scalar("select token from erasures where phone_number = $1")
        .bind(ADA)
        .fetch_one(&db)
        .await
        .expect("an erasure is recorded while archives exist");

    let restored = restore::restore(
        &db,
        &store,
        AuditTable::WebhookEvents,
        old,
        None,
        None,
        &dir,
    )
    .await
    .unwrap();
    assert_eq!(
        restored.table,
        format!("restored_{}", AuditTable::WebhookEvents.partition(old))
    );
    assert_eq!(restored.rows, 2);
    let bodies: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select dedupe_key, raw_body from {} order by id",
        restored.table
    )))
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        bodies,
        vec![
            ("SMada:delivered".to_owned(), String::new()),
            (
                "SMgrace".to_owned(),
                "Body=STOP&From=whatsapp%3A%2B14155550100".to_owned()
            )
        ],
        "Ada's callback comes back redacted, Grace's STOP as it was"
    );

    let decisions = restore::restore(
        &db,
        &store,
        AuditTable::Decisions,
        old,
        Some("old_decisions"),
        None,
        &dir,
    )
    .await
    .unwrap();
    assert_eq!(decisions.rows, 2);
    let phones: Vec<(String, serde_json::Value)> =
        sqlx::query_as("select phone_number, reason from old_decisions order by id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        phones[0].0, token,
        "Ada's decision carries her token, as live ones do"
    );
    assert_eq!(phones[1].0, LINUS);
    assert_eq!(
        phones[1].1,
        json!({"erased": true}),
        "a mention of Ada in Linus's decision is gone"
    );

    let restored_events = restore::restore(&db, &store, AuditTable::Events, old, None, None, &dir)
        .await
        .unwrap();
    assert_eq!(
        (restored_events.rows, restored_events.manifest.rows),
        (1, 2),
        "Ada's own event is not restored"
    );
    let linus: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select properties from {} where phone_number = '{LINUS}'",
        restored_events.table
    )))
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(linus, json!({"total": 3, "erased": true}));

    // Restoring onto an existing table is refused, and a damaged object is
    // refused before anything is created.
    let err = restore::restore(
        &db,
        &store,
        AuditTable::Decisions,
        old,
        Some("old_decisions"),
        None,
        &dir,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("old_decisions"), "{err}");
    let object = dir.join(&decisions.manifest.object);
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();
    let err = restore::restore(
        &db,
        &store,
        AuditTable::Decisions,
        old,
        Some("damaged"),
        None,
        &dir,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LifecycleError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert_eq!(
        count(
            &db,
            "select count(*) from pg_class where relname = 'damaged'"
        )
        .await,
        0
    );

    let err = restore::restore(
        &db,
        &store,
        AuditTable::Events,
        Month::of(now),
        None,
        None,
        &dir,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LifecycleError::NotArchived { .. }), "{err}");
    let err = restore::restore(
        &db,
        &store,
        AuditTable::Events,
        old,
        Some("Robert'); drop"),
        None,
        &dir,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LifecycleError::BadTableName(_)), "{err}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_archive_that_cannot_be_stored_drops_nothing_and_the_next_run_finishes_it(db: PgPool) {
    seed_old_month(&db).await;
    let dir = scratch();
    // The archive folder is a file: nothing can be written under it.
    let blocked = dir.join("not-a-folder");
    std::fs::write(&blocked, b"x").unwrap();
    let settings = LifecycleSettings::default();
    let err = archive::run(&db, &folder_store(&blocked).await, &settings, Utc::now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not-a-folder"), "{err}");
    let old = Month::of(long_ago());
    let months = partitions::list(&mut db.acquire().await.unwrap(), AuditTable::WebhookEvents)
        .await
        .unwrap();
    assert!(
        months.contains(&old),
        "the month stays until its archive is stored"
    );
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 2);
    assert_eq!(count(&db, "select count(*) from webhook_keys").await, 2);
    assert_eq!(
        count(&db, "select count(*) from archived_partitions").await,
        0
    );

    let report = archive::run(
        &db,
        &folder_store(&dir.join("archive")).await,
        &settings,
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(report.archived.len(), 3);
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn archives_go_to_cloud_storage_and_come_back_from_it(db: PgPool) {
    seed_old_month(&db).await;
    let gcs = FakeGcs::start().await;
    gcs.create_bucket("ese-archive").await;
    let env = Env::from_pairs([
        ("ARCHIVE_BUCKET", "ese-archive"),
        ("GCS_ENDPOINT", gcs.endpoint.as_str()),
        ("GCS_ANONYMOUS", "true"),
    ]);
    let store = ArchiveConfig::from_env(&env)
        .unwrap()
        .build()
        .await
        .unwrap();
    let old = Month::of(long_ago());
    let report = archive::run(&db, &store, &LifecycleSettings::default(), Utc::now())
        .await
        .unwrap();
    assert_eq!(report.archived.len(), 3);
    assert!(
        store
            .url(&report.archived[0].manifest.object)
            .starts_with("gs://ese-archive/webhook_events/")
    );

    // When the database lost its record, the manifest's name (from the
    // bucket's listing) is enough.
    let manifest = report.archived[1]
        .manifest
        .object
        .replace(".ndjson.gz", ".manifest.json");
    sqlx::query("delete from archived_partitions")
        .execute(&db)
        .await
        .unwrap();
    let restored = restore::restore(
        &db,
        &store,
        AuditTable::Decisions,
        old,
        None,
        Some(&manifest),
        &scratch(),
    )
    .await
    .unwrap();
    assert_eq!(restored.rows, 2);
    let err = restore::restore(
        &db,
        &store,
        AuditTable::Events,
        old,
        None,
        Some(&manifest),
        &scratch(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("describes decisions"), "{err}");
}

/// The upload in progress: a `.partial` file with bytes in it.
fn partial_upload(dir: &Path) -> Option<PathBuf> {
    let months = std::fs::read_dir(dir.join("webhook_events")).ok()?;
    months
        .filter_map(Result::ok)
        .filter_map(|m| std::fs::read_dir(m.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|f| f.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "partial")
                && std::fs::metadata(p).is_ok_and(|m| m.len() > 0)
        })
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_job_killed_mid_archive_drops_nothing_and_its_next_run_finishes(db: PgPool) {
    const ROWS: i64 = 200_000;
    let old = long_ago();
    sqlx::query(
        "with rows as (
             insert into webhook_events (kind, dedupe_key, message_sid, request_uri, content_type, raw_body, params, received_at)
             select 'status', 'SMk' || i || ':delivered', 'SMk' || i, '/webhooks/status', 'application/x-www-form-urlencoded',
                    'MessageSid=SMk' || i || '&MessageStatus=delivered&To=whatsapp%3A%2B1415' || lpad(i::text, 7, '0'),
                    jsonb_build_object('MessageSid', 'SMk' || i, 'MessageStatus', 'delivered'), $2
             from generate_series(1, $1) as i
             returning kind, dedupe_key, received_at
         )
         insert into webhook_keys (kind, dedupe_key, received_at) select * from rows",
    )
    .bind(ROWS)
    .bind(old)
    .execute(&db)
    .await
    .unwrap();
    let binary = e2e::process::function_binary("lifecycle");
    let archive = scratch();
    let run = || {
        let mut command = std::process::Command::new(&binary);
        command
            .arg("run")
            .env("DATABASE_URL", url_of(&db))
            .env("ARCHIVE_DIR", &archive)
            .env("RUST_LOG", "error");
        command
    };

    let mut child = run().stdout(std::process::Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while partial_upload(&archive).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no upload started within 2 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before it could be killed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let month = Month::of(old);
    let months = partitions::list(&mut db.acquire().await.unwrap(), AuditTable::WebhookEvents)
        .await
        .unwrap();
    assert!(months.contains(&month), "the month is still there");
    assert_eq!(
        count(&db, "select count(*) from webhook_events").await,
        ROWS
    );
    assert_eq!(count(&db, "select count(*) from webhook_keys").await, ROWS);
    assert_eq!(
        count(&db, "select count(*) from archived_partitions").await,
        0
    );

    let finished = run().output().unwrap();
    let said = String::from_utf8_lossy(&finished.stdout);
    assert!(
        finished.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    assert!(
        said.contains(&format!("archived webhook_events {month}: {ROWS} rows")),
        "{said}"
    );
    assert_eq!(count(&db, "select count(*) from webhook_events").await, 0);

    // What the killed run left is not what a restore reads.
    let store = folder_store(&archive).await;
    let restored = restore::restore(
        &db,
        &store,
        AuditTable::WebhookEvents,
        month,
        None,
        None,
        &archive,
    )
    .await
    .unwrap();
    assert_eq!(restored.rows, ROWS);
}
