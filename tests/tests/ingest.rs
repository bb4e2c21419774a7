//! The ingest function: user files from the bucket to `users`, every refused
//! row explained, idempotent per object generation and safe to crash.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use e2e::fake_gcs::FakeGcs;
use e2e::ingest::{IMPORT_BUCKET, Inbox, finalized, ingest_config, ingest_router, notification};
use futures::StreamExt;
use serde_json::{Value, json};
use shared::domain::ConsentSource;
use shared::gcp::objects::{ByteStream, GcsObjects};
use shared::gcp::{ObjectError, ObjectRef, ObjectSource, OpenedObject};
use shared::import::run::{Claim, ImportSettings, Importer, Staging};
use shared::store::{imports, users};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::support::{MIGRATOR, count, send};

/// Sends an event and reads the JSON answer.
async fn deliver(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let (status, body) = send(router, request).await;
    let value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (status, value)
}

fn local_router(db: &PgPool, inbox: &Inbox) -> Router {
    ingest_router(db.clone(), &ingest_config(&[]), inbox.objects())
}

async fn attributes(db: &PgPool, phone: &str) -> Value {
    users::get(db, phone)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("user {phone} exists"))
        .attributes
}

async fn rejects(db: &PgPool, id: &str) -> Vec<(i64, String, String)> {
    imports::rejects(db, id.parse().unwrap(), i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.line_number, r.reason, r.raw_line))
        .collect()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn csv_import_creates_users_and_explains_every_reject(db: PgPool) {
    let inbox = Inbox::new();
    let router = local_router(&db, &inbox);
    let csv = "\u{FEFF}phone;first_name;age;vip;signup;timezone;consent\r\n\
               (415) 555-2671;Ada;36;true;2024-01-31;America/New_York;opted_in\r\n\
               +1555;Bob;40;false;;;\r\n\
               whatsapp:+14155552672;\"Cy \"\"the\"\" second\nline\";;;;;\r\n\
               +14155552673;Di;29;;;Mars/Base;\r\n\
               +14155552674;Eve;31\r\n\
               4155552671;Ada L.;37;;;;\r\n\
               +14155552675;Fay;22;;;;maybe\r\n";
    let object = inbox.put("drops/users.csv", csv);

    let (status, body) = deliver(&router, finalized(&object)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "completed", "{body}");
    assert_eq!(body["format"], "csv");
    assert_eq!(
        (&body["rows_read"], &body["rejected"], &body["duplicates"]),
        (&json!(7), &json!(4), &json!(1)),
        "{body}"
    );
    assert_eq!(
        (&body["inserted"], &body["updated"]),
        (&json!(2), &json!(0))
    );

    // The duplicate (line 7, a national number) merged over line 2, per attribute.
    assert_eq!(
        attributes(&db, "+14155552671").await,
        json!({"first_name": "Ada L.", "age": 37, "vip": true, "signup": "2024-01-31",
               "timezone": "America/New_York"})
    );
    assert_eq!(
        attributes(&db, "+14155552672").await,
        json!({"first_name": "Cy \"the\" second\nline"})
    );
    let ada = users::get(&db, "+14155552671").await.unwrap().unwrap();
    assert_eq!(
        (
            ada.consent.as_str(),
            ada.consent_source.map(ConsentSource::as_str)
        ),
        ("opted_in", Some("import"))
    );
    let event: (String, String, String, String) = sqlx::query_as(
        "select from_consent, to_consent, source, import_id::text from consent_events",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let id = body["import_id"].as_str().unwrap();
    assert_eq!(
        event,
        (
            "unknown".into(),
            "opted_in".into(),
            "import".into(),
            id.into()
        )
    );

    assert_eq!(
        rejects(&db, id).await,
        vec![
            (
                3,
                "invalid phone number \"+1555\": too short".into(),
                "+1555;Bob;40;false;;;".into()
            ),
            (
                6,
                "unknown timezone \"Mars/Base\"".into(),
                "+14155552673;Di;29;;;Mars/Base;".into()
            ),
            (
                7,
                "row has 3 fields, header has 7".into(),
                "+14155552674;Eve;31".into()
            ),
            (
                9,
                "unknown consent \"maybe\": expected opted_in or opted_out".into(),
                "+14155552675;Fay;22;;;;maybe".into()
            ),
        ]
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn json_arrays_and_ndjson_import_with_their_types(db: PgPool) {
    let inbox = Inbox::new();
    let router = local_router(&db, &inbox);
    let array = r#"[
        {"phone_number": "+14155552671", "plan": {"tier": "gold"}, "score": 9.5, "tags": ["a", "b"]},
        {"phone_number": "+1555"},
        "not an object",
        {"msisdn": 14155552672, "timezone": "europe/paris", "note": null, "consent": "opted_out"}
    ]"#;
    let object = inbox.put("users.json", array);
    let (status, body) = deliver(&router, finalized(&object)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["state"], &body["format"], &body["rejected"]),
        (&json!("completed"), &json!("json"), &json!(2))
    );
    assert_eq!(
        attributes(&db, "+14155552671").await,
        json!({"plan": {"tier": "gold"}, "score": 9.5, "tags": ["a", "b"]})
    );
    assert_eq!(
        attributes(&db, "+14155552672").await,
        json!({"timezone": "Europe/Paris"})
    );
    let reasons: Vec<(i64, String)> = rejects(&db, body["import_id"].as_str().unwrap())
        .await
        .into_iter()
        .map(|(line, reason, _)| (line, reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (3, "invalid phone number \"+1555\": too short".into()),
            (4, "not a JSON object".into())
        ]
    );

    let ndjson = "{\"wa_id\": \"14155552673\", \"first_name\": \"Ng\"}\n\
                  {\"wa_id\": \"14155552673\", \"last_name\": \"Uyen\"}\n\
                  {\"wa_id\": \"14155552674\", \"first_name\": }\n";
    let object = inbox.put("more.ndjson", ndjson);
    let (status, body) = deliver(&router, notification("OBJECT_FINALIZE", &object)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            &body["format"],
            &body["inserted"],
            &body["duplicates"],
            &body["rejected"]
        ),
        (&json!("ndjson"), &json!(1), &json!(1), &json!(1))
    );
    assert_eq!(
        attributes(&db, "+14155552673").await,
        json!({"first_name": "Ng", "last_name": "Uyen"})
    );
    let reasons = rejects(&db, body["import_id"].as_str().unwrap()).await;
    assert_eq!(reasons[0].0, 3);
    assert!(reasons[0].1.starts_with("invalid JSON: "), "{reasons:?}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn existing_users_keep_what_the_file_does_not_mention(db: PgPool) {
    // Ada texted STOP; Cy was opted out by an earlier import.
    sqlx::query(
        "insert into users (phone_number, attributes, consent, consent_source)
         values ('+14155552671', '{\"first_name\": \"Old\", \"plan\": \"gold\"}', 'opted_out', 'keyword'),
                ('+14155552673', '{}', 'opted_out', 'import')",
    )
    .execute(&db)
    .await
    .unwrap();
    let inbox = Inbox::new();
    let router = local_router(&db, &inbox);
    let csv = "phone_number,first_name,consent\n+14155552671,Ada,opted_in\n+14155552672,Bob,\n+14155552673,Cy,opted_in\n";
    let (_, body) = deliver(&router, finalized(&inbox.put("u.csv", csv))).await;
    assert_eq!(
        (
            &body["inserted"],
            &body["updated"],
            &body["unchanged"],
            &body["consent_kept"]
        ),
        (&json!(1), &json!(2), &json!(0), &json!(1)),
        "{body}"
    );
    assert_eq!(
        attributes(&db, "+14155552671").await,
        json!({"first_name": "Ada", "plan": "gold"})
    );
    // Only the person may undo their own opt-out: the file's opt-in is refused
    // and kept as evidence; an import's own opt-out the file may undo.
    let ada = users::get(&db, "+14155552671").await.unwrap().unwrap();
    assert_eq!(
        (
            ada.consent.as_str(),
            ada.consent_source.map(ConsentSource::as_str)
        ),
        ("opted_out", Some("keyword"))
    );
    let changes: Vec<(String, String, String, bool)> = sqlx::query_as(
        "select phone_number, from_consent, to_consent, refused from consent_events order by phone_number",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        changes,
        vec![
            (
                "+14155552671".into(),
                "opted_out".into(),
                "opted_in".into(),
                true
            ),
            (
                "+14155552673".into(),
                "opted_out".into(),
                "opted_in".into(),
                false
            ),
        ]
    );
    let bob = users::get(&db, "+14155552672").await.unwrap().unwrap();
    assert_eq!(bob.consent, "unknown");

    // The same content again (a new generation): nothing to change, nothing
    // written but the evidence of the refused opt-in, again.
    let before = users::get(&db, "+14155552671").await.unwrap().unwrap();
    let (_, body) = deliver(&router, finalized(&inbox.put("u.csv", csv))).await;
    assert_eq!(
        (
            &body["inserted"],
            &body["updated"],
            &body["unchanged"],
            &body["consent_kept"]
        ),
        (&json!(0), &json!(0), &json!(3), &json!(1)),
        "{body}"
    );
    let after = users::get(&db, "+14155552671").await.unwrap().unwrap();
    assert_eq!(before.updated_at, after.updated_at);
    assert_eq!(
        count(&db, "select count(*) from consent_events where refused").await,
        2
    );
    assert_eq!(
        count(&db, "select count(*) from consent_events where not refused").await,
        1
    );
    assert_eq!(count(&db, "select count(*) from imports").await, 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn unreadable_files_fail_the_import_with_one_reason(db: PgPool) {
    let inbox = Inbox::new();
    let router = local_router(&db, &inbox);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "binary.csv",
            b"phone\n\x00\x01\x02\x03".to_vec(),
            "file is binary, not text (it contains NUL bytes)",
        ),
        ("empty.csv", Vec::new(), "file is empty"),
        (
            "blank.csv",
            b"\xEF\xBB\xBF\r\n\r\n".to_vec(),
            "file is empty",
        ),
        (
            "no-phone.csv",
            b"name,email\nAda,ada@example.com\n".to_vec(),
            "no phone number column: expected one of phone_number, phone, msisdn, wa_id (header has name, email)",
        ),
        (
            "truncated.json",
            br#"[{"phone": "+14155552671"}, {"phone": "+1415"#.to_vec(),
            "not valid JSON: the array is never closed (is the file truncated?)",
        ),
        (
            "table.json",
            b"phone\n+14155552671\n".to_vec(),
            "not valid JSON: expected '[' (an array of objects) or '{' (one object per line) at the start, found 'p'",
        ),
        (
            "users.csv.gz",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00".to_vec(),
            "file is gzip-compressed: upload it uncompressed",
        ),
        (
            "latin1.csv",
            b"t\xe9l\xe9phone,phone\nx,+14155552671\n".to_vec(),
            "header row is not UTF-8 text: save the file as UTF-8",
        ),
    ];
    for (name, data, reason) in cases {
        let object = inbox.put(name, &data);
        let (status, body) = deliver(&router, finalized(&object)).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(body["state"], "failed", "{name}: {body}");
        assert_eq!(body["failure_reason"], reason, "{name}");
        // A failed import is finished: redelivery does nothing.
        let (status, again) = deliver(&router, finalized(&object)).await;
        assert_eq!(
            (status, &again["status"]),
            (StatusCode::OK, &json!("already_finished"))
        );
    }

    let gone = ObjectRef {
        bucket: IMPORT_BUCKET.into(),
        name: "deleted.csv".into(),
        generation: 5,
        size: None,
        content_type: None,
    };
    let (_, body) = deliver(&router, finalized(&gone)).await;
    assert_eq!(body["state"], "failed");
    assert!(
        body["failure_reason"]
            .as_str()
            .unwrap()
            .contains("was not found"),
        "{body}"
    );

    let small = ingest_router(
        db.clone(),
        &ingest_config(&[("MAX_IMPORT_BYTES", "40")]),
        inbox.objects(),
    );
    let mut big = inbox.put(
        "big.csv",
        "phone\n+14155552671\n+14155552672\n+14155552673\n",
    );
    let (_, body) = deliver(&small, finalized(&big)).await;
    assert_eq!(
        body["failure_reason"],
        "file is 45 bytes, over the limit of 40 bytes (MAX_IMPORT_BYTES)"
    );
    // The event's size can be missing or wrong: the limit holds while reading too.
    big.size = None;
    big.generation += 1000;
    let (_, body) = deliver(&small, finalized(&big)).await;
    assert_eq!(body["state"], "failed", "{body}");
    assert!(
        body["failure_reason"]
            .as_str()
            .unwrap()
            .contains("over the limit of 40 bytes")
    );

    assert_eq!(count(&db, "select count(*) from users").await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_line_over_64_kib_is_rejected_and_the_rest_imports(db: PgPool) {
    let inbox = Inbox::new();
    let router = local_router(&db, &inbox);
    let mut csv = b"phone,note\n+14155552671,short\n+14155552672,".to_vec();
    csv.extend(std::iter::repeat_n(b'x', 70 * 1024));
    csv.extend_from_slice(b"\n+14155552673,after\n");
    let (_, body) = deliver(&router, finalized(&inbox.put("long.csv", &csv))).await;
    assert_eq!(
        (&body["state"], &body["inserted"], &body["rejected"]),
        (&json!("completed"), &json!(2), &json!(1)),
        "{body}"
    );
    let rejected = rejects(&db, body["import_id"].as_str().unwrap()).await;
    assert_eq!(
        (rejected[0].0, rejected[0].1.as_str()),
        (3, "line is over 64 KiB")
    );
    assert!(rejected[0].2.starts_with("+14155552672,xxx"));
    assert!(rejected[0].2.len() <= 1024 + '…'.len_utf8());
    assert_eq!(
        attributes(&db, "+14155552673").await,
        json!({"note": "after"})
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn redelivered_events_are_acknowledged_without_work(db: PgPool) {
    let inbox = Inbox::new();
    let router = local_router(&db, &inbox);
    let object = inbox.put("u.csv", "phone,consent\n+14155552671,opted_in\n");
    let (_, first) = deliver(&router, finalized(&object)).await;
    assert_eq!(first["status"], "finished");

    for request in [finalized(&object), notification("OBJECT_FINALIZE", &object)] {
        let (status, again) = deliver(&router, request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["status"], "already_finished");
        assert_eq!(again["import_id"], first["import_id"]);
        assert_eq!(again["attempts"], 1);
    }
    assert_eq!(count(&db, "select count(*) from imports").await, 1);
    assert_eq!(count(&db, "select count(*) from consent_events").await, 1);

    // A new generation of the same object is a new import.
    let next = inbox.put("u.csv", "phone,consent\n+14155552671,opted_out\n");
    let (_, second) = deliver(&router, notification("OBJECT_FINALIZE", &next)).await;
    assert_eq!(second["status"], "finished");
    assert_ne!(second["import_id"], first["import_id"]);
    assert_eq!(count(&db, "select count(*) from consent_events").await, 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_import_interrupted_between_staging_and_merge_reruns_cleanly(db: PgPool) {
    let inbox = Inbox::new();
    let router = local_router(&db, &inbox);
    let object = inbox.put(
        "u.csv",
        "phone,first_name\n+14155552671,Ada\n+1555,Bad\n+14155552672,Bob\n",
    );
    // Its new users are inserted as soon as they are staged.
    let ahead = ImportSettings {
        insert_ahead_bytes: 1,
        ..ImportSettings::default()
    };
    let importer = Importer::new(db.clone(), inbox.objects(), ahead);
    let Claim::Run(claimed) = importer.claim(&object).await.unwrap() else {
        panic!("the first claim runs the import");
    };
    // While a worker runs it, a redelivery is turned away to come back later.
    let (status, body) = deliver(&router, finalized(&object)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let Staging::Staged(staged) = claimed.stage().await.unwrap() else {
        panic!("the file stages");
    };
    let id = staged.import().id;
    assert_eq!(staged.created_ahead(), 2);
    assert_eq!(count(&db, "select count(*) from users").await, 0);
    assert_eq!(count(&db, "select count(*) from import_rejects").await, 1);
    // The worker dies before the merge: its session, transaction (with the
    // users inserted ahead), staging table and lock go with it.
    drop(staged);
    assert_eq!(count(&db, "select count(*) from users").await, 0);
    let running = imports::get(&db, id).await.unwrap().unwrap();
    assert_eq!((running.state.as_str(), running.attempts), ("running", 1));

    // The event comes back; the server may still be closing the dead session.
    let mut answer = None;
    for _ in 0..100 {
        let (status, body) = deliver(&router, finalized(&object)).await;
        if status != StatusCode::CONFLICT {
            answer = Some((status, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = answer.expect("the lock is released when the session ends");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            &body["state"],
            &body["attempts"],
            &body["inserted"],
            &body["rejected"]
        ),
        (&json!("completed"), &json!(2), &json!(2), &json!(1)),
        "{body}"
    );
    assert_eq!(count(&db, "select count(*) from import_rejects").await, 1);
    assert_eq!(
        attributes(&db, "+14155552672").await,
        json!({"first_name": "Bob"})
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_import_that_keeps_dying_is_given_up(db: PgPool) {
    let inbox = Inbox::new();
    let router = local_router(&db, &inbox);
    let object = inbox.put("poison.csv", "phone\n+14155552671\n");
    sqlx::query(
        "insert into imports (bucket, object, generation, attempts) values ($1, $2, $3, $4)",
    )
    .bind(&object.bucket)
    .bind(&object.name)
    .bind(object.generation)
    .bind(shared::import::run::MAX_ATTEMPTS)
    .execute(&db)
    .await
    .unwrap();
    let (status, body) = deliver(&router, finalized(&object)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "failed");
    assert_eq!(
        body["failure_reason"],
        "the import was started 5 times and never finished (the worker or the database failed each time; see the logs)"
    );
    assert_eq!(count(&db, "select count(*) from users").await, 0);
}

/// An object that sends its first part, then waits for the test.
struct Gated {
    first: Bytes,
    rest: Bytes,
    gate: Arc<Notify>,
}

#[async_trait::async_trait]
impl ObjectSource for Gated {
    async fn open(&self, _: &str, _: &str, _: i64) -> Result<OpenedObject, ObjectError> {
        let gate = self.gate.clone();
        let rest = self.rest.clone();
        let body: ByteStream =
            futures::stream::once(futures::future::ready(Ok(self.first.clone())))
                .chain(futures::stream::once(async move {
                    gate.notified().await;
                    Ok(rest)
                }))
                .boxed();
        Ok(OpenedObject {
            size: None,
            content_type: None,
            body,
        })
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn progress_shows_while_the_file_is_read(db: PgPool) {
    let gate = Arc::new(Notify::new());
    let source = Gated {
        first: Bytes::from_static(b"phone\n+14155552671\n+1555\n+14155552672\n"),
        rest: Bytes::from_static(b"+14155552673\n"),
        gate: gate.clone(),
    };
    let settings = ImportSettings {
        progress_every: Duration::ZERO,
        ..ImportSettings::default()
    };
    let importer = Importer::new(db.clone(), Arc::new(source), settings);
    let object = ObjectRef {
        bucket: IMPORT_BUCKET.into(),
        name: "slow.csv".into(),
        generation: 1,
        size: None,
        content_type: None,
    };
    let running = tokio::spawn({
        let object = object.clone();
        async move { importer.import(&object).await }
    });
    let mut seen = None;
    for _ in 0..200 {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("select state, rows_read, rejected from imports")
                .fetch_optional(&db)
                .await
                .unwrap();
        if let Some(row) = row.filter(|r| r.1 > 0) {
            seen = Some(row);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, Some(("running".into(), 3, 1)));
    assert_eq!(count(&db, "select count(*) from import_rejects").await, 1);
    assert_eq!(count(&db, "select count(*) from users").await, 0);

    gate.notify_one();
    let outcome = running.await.unwrap().unwrap();
    let shared::import::run::Outcome::Finished(import) = outcome else {
        panic!("the import finishes: {outcome:?}");
    };
    assert_eq!((import.rows_read, import.inserted), (4, 3));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn other_events_are_ignored_and_malformed_ones_refused(db: PgPool) {
    let inbox = Inbox::new();
    let router = local_router(&db, &inbox);
    let object = inbox.put("u.csv", "phone\n+14155552671\n");
    let ignored = [
        e2e::ingest::cloud_event("google.cloud.storage.object.v1.deleted", &object),
        notification("OBJECT_DELETE", &object),
        finalized(&ObjectRef {
            bucket: "someone-elses-bucket".into(),
            ..object.clone()
        }),
        finalized(&ObjectRef {
            name: "folder/".into(),
            ..object.clone()
        }),
    ];
    for request in ignored {
        let (status, body) = deliver(&router, request).await;
        assert_eq!(
            (status, &body["status"]),
            (StatusCode::OK, &json!("ignored")),
            "{body}"
        );
    }

    let mut no_type = finalized(&object);
    no_type.headers_mut().remove("ce-type");
    let (status, body) = deliver(&router, no_type).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["message"],
        "not a CloudEvent: header ce-type is missing"
    );
    let bad_data = Request::post("/")
        .header("ce-id", "1")
        .header("ce-source", "s")
        .header("ce-type", shared::gcp::storage_event::OBJECT_FINALIZED)
        .body(Body::from("{\"bucket\": \"b\"}"))
        .unwrap();
    let (status, body) = deliver(&router, bad_data).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("event data is not a Cloud Storage object"),
        "{body}"
    );
    let not_envelope = Request::post("/pubsub/push")
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = deliver(&router, not_envelope).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field `message`"),
        "{body}"
    );
    assert_eq!(count(&db, "select count(*) from imports").await, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn objects_stream_from_cloud_storage(db: PgPool) {
    let gcs = FakeGcs::start().await;
    gcs.create_bucket(IMPORT_BUCKET).await;
    let config = ingest_config(&[("GCS_ENDPOINT", &gcs.endpoint), ("GCS_ANONYMOUS", "true")]);
    let state = ingest::AppState::new(db.clone(), &config)
        .await
        .expect("the Cloud Storage client builds");
    let router = ingest::router(state);

    let mut csv = String::from("phone,n\n");
    for i in 0..5000 {
        csv.push_str(&format!("+1415555{:04},{i}\n", i));
    }
    let object = gcs
        .upload(IMPORT_BUCKET, "drops/big.csv", "text/csv", csv.into_bytes())
        .await;
    let (status, body) = deliver(&router, finalized(&object)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["state"], &body["inserted"], &body["rejected"]),
        (&json!("completed"), &json!(5000), &json!(0)),
        "{body}"
    );
    assert_eq!(attributes(&db, "+14155554999").await, json!({"n": 4999}));

    let json_object = gcs
        .upload(
            IMPORT_BUCKET,
            "users",
            "application/json",
            br#"[{"phone": "+14155550001", "vip": true}]"#.to_vec(),
        )
        .await;
    let (_, body) = deliver(&router, notification("OBJECT_FINALIZE", &json_object)).await;
    assert_eq!(
        (&body["format"], &body["updated"]),
        (&json!("json"), &json!(1)),
        "{body}"
    );

    // An event for a generation that no longer exists.
    let replaced = ObjectRef {
        generation: object.generation + 1,
        ..object.clone()
    };
    let (_, body) = deliver(&router, finalized(&replaced)).await;
    assert_eq!(body["state"], "failed", "{body}");
    assert!(
        body["failure_reason"]
            .as_str()
            .unwrap()
            .contains("was not found"),
        "{body}"
    );

    // The client itself, for the record: what it reads is what was uploaded.
    let client = GcsObjects::new(Some(&gcs.endpoint), true).await.unwrap();
    let opened = client
        .open(IMPORT_BUCKET, "users", json_object.generation)
        .await
        .unwrap();
    let bytes: Vec<Bytes> = opened.body.map(|c| c.unwrap()).collect().await;
    assert_eq!(
        bytes.concat(),
        br#"[{"phone": "+14155550001", "vip": true}]"#
    );
}

/// An object delivered one line per chunk, as a slow network might: each
/// row reaches the importer on its own.
struct LineByLine(Bytes);

#[async_trait::async_trait]
impl ObjectSource for LineByLine {
    async fn open(&self, _: &str, _: &str, _: i64) -> Result<OpenedObject, ObjectError> {
        let mut lines = vec![];
        let mut start = 0;
        for (i, b) in self.0.iter().enumerate() {
            if *b == b'\n' {
                lines.push(Ok(self.0.slice(start..=i)));
                start = i + 1;
            }
        }
        Ok(OpenedObject {
            size: None,
            content_type: None,
            body: futures::stream::iter(lines).boxed(),
        })
    }
}

/// One scenario's outcome with its numbers' prefix taken out, to compare two runs.
async fn outcome(db: &PgPool, prefix: &str) -> Vec<String> {
    let like = format!("{prefix}%");
    let rows: Vec<(String,)> = sqlx::query_as(
        "select format('user %s %s %s %s %s', replace(phone_number, $2, 'P'), attributes, consent,
                       coalesce(consent_source, '-'), consent_changed_at is not null)
         from users where phone_number like $1
         union all
         select format('event %s %s>%s %s %s %s %s', replace(phone_number, $2, 'P'), from_consent, to_consent,
                       source, refused, coalesce(topic, '-'), coalesce(detail, '-'))
         from consent_events where phone_number like $1
         union all
         select format('topic %s %s %s %s', replace(phone_number, $2, 'P'), topic, subscribed, source)
         from topic_subscriptions where phone_number like $1
         order by 1",
    )
    .bind(&like)
    .bind(prefix)
    .fetch_all(db)
    .await
    .unwrap();
    rows.into_iter().map(|(r,)| r).collect()
}

/// The file of the pipelining scenario, its numbers starting with `prefix`:
/// repeats, consent and topics before and after the rows that create a user.
fn pipelining_file(prefix: &str) -> String {
    let rows = [
        "{p}01,Ada,Paris,,",
        "{p}02,Bob,Rome,,",
        "{p}03,Cy,,opted_in,",
        "{p}04,Di,Oslo,,",
        "{p}02,Bob,Lima,,",
        "{p}05,E,,,",
        "+1555,Bad,,,",
        "{p}06,Fay,,opted_in,",
        "{p}04,,,opted_out,",
        "{p}07,Gus,,,unsubscribed",
        "{p}01,Ada,Paris,,",
        "{p}08,Hal,Kyiv,opted_in,",
        "{p}08,Hal,Kyiv,opted_out,",
        "{p}09,Ida,,,unsubscribed",
        "{p}10,Jo,,,subscribed",
        "{p}11,Kim,Baku,,",
        "{p}07,Gus,Nice,,subscribed",
    ];
    let mut file = String::from("phone,first_name,city,consent,topic.news\n");
    for row in rows {
        file.push_str(&row.replace("{p}", prefix));
        file.push('\n');
    }
    file
}

/// Existing users of the pipelining scenario: one with attributes, one who
/// opted out themselves, one plain, one who left the news topic themselves.
async fn seed_pipelining_users(db: &PgPool, prefix: &str) {
    sqlx::query(
        "insert into users (phone_number, attributes, consent, consent_source, consent_changed_at) values
             ($1 || '05', '{\"first_name\": \"E\", \"vip\": true}', 'opted_in', 'import', now()),
             ($1 || '06', '{}', 'opted_out', 'keyword', now()),
             ($1 || '09', '{\"city\": \"Oran\"}', 'unknown', null, null),
             ($1 || '10', '{}', 'unknown', null, null)",
    )
    .bind(prefix)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "insert into topic_subscriptions (phone_number, topic, subscribed, source)
         values ($1 || '10', 'news', false, 'keyword')",
    )
    .bind(prefix)
    .execute(db)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn users_inserted_while_the_file_is_read_end_as_one_merge_would_leave_them(db: PgPool) {
    // The same scenario three times, on three sets of numbers: new users
    // inserted once the whole file is staged; as soon as each row is; and so
    // until most rows turn out to name existing users, the rest then staged
    // for the merge alone.
    let each_row = ImportSettings {
        batch_bytes: 1,
        insert_ahead_bytes: 1,
        ..ImportSettings::default()
    };
    let runs = [
        // One step at the end: Ada, Bob and Kim (Di's rows carry consent).
        ("+141555520", ImportSettings::default(), 3),
        // Ada, Bob, Di and Kim, each as their first row is staged (the
        // others bring consent or topics, or exist).
        ("+141555530", each_row.clone(), 4),
        // Ada, Bob and Di; by Fay's row (the eighth) four rows were set aside
        // against three created, and Kim is left to the merge.
        (
            "+141555540",
            ImportSettings {
                ahead_sample_rows: 3,
                ..each_row
            },
            3,
        ),
    ];
    let mut results = vec![];
    for (prefix, settings, created_ahead) in runs {
        seed_pipelining_users(&db, prefix).await;
        let source = LineByLine(Bytes::from(pipelining_file(prefix)));
        let object = ObjectRef {
            bucket: IMPORT_BUCKET.into(),
            name: format!("pipelining-{prefix}.csv"),
            generation: 1,
            size: None,
            content_type: None,
        };
        let importer = Importer::new(db.clone(), Arc::new(source), settings);
        let Claim::Run(claimed) = importer.claim(&object).await.unwrap() else {
            panic!("the import runs");
        };
        let Staging::Staged(staged) = claimed.stage().await.unwrap() else {
            panic!("the file stages");
        };
        assert_eq!(
            staged.created_ahead(),
            created_ahead,
            "{prefix}: users created ahead"
        );
        // Invisible until the merge commits: only the four seeded.
        let visible: i64 =
            sqlx::query_scalar("select count(*) from users where phone_number like $1 || '%'")
                .bind(prefix)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(visible, 4);
        let import = staged.merge().await.unwrap();
        let counts = (
            import.rows_read,
            import.rejected,
            import.inserted,
            import.updated,
            import.unchanged,
            import.duplicates,
            import.consent_kept,
        );
        results.push((counts, outcome(&db, prefix).await));
    }
    assert_eq!(results[2], results[1], "ahead until most rows were updates");
    let (end_only, ahead) = (&results[0], &results[1]);
    assert_eq!(ahead, end_only);
    // And what one merge leaves is what the rules say.
    assert_eq!(end_only.0, (17, 1, 7, 3, 1, 5, 2), "counts");
    let lines = &end_only.1;
    for expected in [
        r#"user P01 {"city": "Paris", "first_name": "Ada"} unknown - f"#,
        r#"user P02 {"city": "Lima", "first_name": "Bob"} unknown - f"#,
        r#"user P04 {"city": "Oslo", "first_name": "Di"} opted_out import t"#,
        r#"user P06 {"first_name": "Fay"} opted_out keyword t"#,
        r#"user P07 {"city": "Nice", "first_name": "Gus"} unknown - f"#,
        "event P04 unknown>opted_out import f - -",
        // In, then out, in one file: one change.
        "event P08 unknown>opted_out import f - -",
        "event P06 opted_out>opted_in import t - refused: the person opted out (keyword); only they can opt back in",
        "topic P09 news f import",
        "topic P10 news f keyword",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected:?} not in {lines:#?}"
        );
    }
}
