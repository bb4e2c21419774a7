//! `/v1/users`: upsert, get, merge-patch, filters, pagination, erasure.

use axum::http::StatusCode;
use e2e::{fixtures, status_params, webhooks_router};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::api_support::{Api, api};
use crate::support::{MIGRATOR, count, post_signed};

const ADA: &str = "/v1/users/%2B14155552671";

async fn create(api: &Api, phone: &str, attributes: Value, consent: &str) -> Value {
    api.post(
        "/v1/users",
        json!({"phone_number": phone, "attributes": attributes, "consent": consent}),
    )
    .await
    .expect(StatusCode::CREATED)
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn upsert_get_and_patch(db: PgPool) {
    let api = api(db.clone());
    // A national number is read in DEFAULT_REGION.
    let ada = create(
        &api,
        "(415) 555-2671",
        json!({"first_name": "Ada", "plan": {"tier": "gold"}}),
        "opted_in",
    )
    .await;
    assert_eq!(ada["phone_number"], "+14155552671");
    assert_eq!(ada["consent"], "opted_in");
    assert_eq!(ada["consent_source"], "api");
    assert_eq!(
        count(
            &db,
            "select count(*) from consent_events where source = 'api'"
        )
        .await,
        1
    );

    // The same number again updates: attributes replaced, consent untouched.
    let again = api
        .post("/v1/users", json!({"phone_number": "whatsapp:+14155552671", "attributes": {"first_name": "Ada L."}}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(again["attributes"], json!({"first_name": "Ada L."}));
    assert_eq!(again["consent"], "opted_in");

    let got = api.get(ADA).await.expect(StatusCode::OK);
    assert_eq!(got["attributes"]["first_name"], "Ada L.");
    // A literal + in the path means the same.
    api.get("/v1/users/+14155552671")
        .await
        .expect(StatusCode::OK);

    let patched = api
        .patch(
            ADA,
            json!({"attributes": {"first_name": null, "plan": {"tier": "silver"}, "age": 42}}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        patched["attributes"],
        json!({"plan": {"tier": "silver"}, "age": 42})
    );
    let patched = api
        .patch(ADA, json!({"consent": "opted_out"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(patched["consent"], "opted_out");
    assert_eq!(
        count(
            &db,
            "select count(*) from consent_events where source = 'api'"
        )
        .await,
        2
    );

    let reply = api
        .patch(ADA, json!({"attributes": {"timezone": "Nowhere/Land"}}))
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("attributes.timezone")
        )
    );
    let reply = api.patch(ADA, json!({"attribute": {}})).await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("attribute"))
    );

    let reply = api.get("/v1/users/%2B14155550100").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = api
        .patch("/v1/users/%2B14155550100", json!({"consent": "opted_in"}))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = api.get("/v1/users/not-a-number").await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("phone_number"))
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn lists_filter_by_consent_and_segment(db: PgPool) {
    let api = api(db);
    create(&api, "+14155550001", json!({"plan": "gold"}), "opted_in").await;
    create(&api, "+14155550002", json!({"plan": "silver"}), "opted_in").await;
    create(&api, "+14155550003", json!({"plan": "gold"}), "opted_out").await;
    create(&api, "+442071838750", json!({"plan": "gold"}), "unknown").await;

    let phones = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["phone_number"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = api.get("/v1/users").await.expect(StatusCode::OK);
    assert_eq!(
        phones(&all),
        [
            "+14155550001",
            "+14155550002",
            "+14155550003",
            "+442071838750"
        ]
    );
    assert_eq!(all["next_cursor"], Value::Null);

    let opted_in = api
        .get("/v1/users?consent=opted_in")
        .await
        .expect(StatusCode::OK);
    assert_eq!(phones(&opted_in), ["+14155550001", "+14155550002"]);

    let gold =
        json!({"all": [{"attribute": "plan", "eq": "gold"}, {"field": "country", "eq": "US"}]});
    let segment = api
        .post(
            "/v1/segments",
            json!({"name": "US gold", "definition": gold}),
        )
        .await
        .expect(StatusCode::CREATED);
    let by_id = api
        .get(&format!(
            "/v1/users?segment_id={}",
            segment["id"].as_str().unwrap()
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(phones(&by_id), ["+14155550001", "+14155550003"]);
    let by_id_opted_in = api
        .get(&format!(
            "/v1/users?consent=opted_in&segment_id={}",
            segment["id"].as_str().unwrap()
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(phones(&by_id_opted_in), ["+14155550001"]);

    let inline: String = form_urlencoded::byte_serialize(gold.to_string().as_bytes()).collect();
    let by_definition = api
        .get(&format!("/v1/users?segment={inline}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(phones(&by_definition), phones(&by_id));

    let bad: String =
        form_urlencoded::byte_serialize(br#"{"all": [{"attribute": "plan", "gte": null}]}"#)
            .collect();
    let reply = api.get(&format!("/v1/users?segment={bad}")).await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("segment"))
    );
    assert!(reply.message().contains("$.all[0]"), "{}", reply.message());
    let reply = api.get("/v1/users?segment=%7Bnot%20json").await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::BAD_REQUEST, Some("segment"))
    );
    let reply = api
        .get("/v1/users?segment_id=0193a8a4-0000-7000-8000-000000000000")
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("segment_id"))
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn pages_are_stable_while_users_are_inserted(db: PgPool) {
    let api = api(db.clone());
    sqlx::query("insert into users (phone_number) select '+1415555' || lpad((i * 2)::text, 4, '0') from generate_series(1000, 1049) i")
        .execute(&db)
        .await
        .unwrap();
    let before: Vec<String> =
        sqlx::query_scalar("select phone_number from users order by phone_number")
            .fetch_all(&db)
            .await
            .unwrap();

    let mut seen = vec![];
    let mut path = "/v1/users?limit=7".to_owned();
    let mut inserted = 0;
    loop {
        let page = api.get(&path).await.expect(StatusCode::OK);
        let rows = page["data"].as_array().unwrap();
        assert!(rows.len() <= 7);
        seen.extend(
            rows.iter()
                .map(|u| u["phone_number"].as_str().unwrap().to_owned()),
        );
        // Between pages, users arrive both before and after the cursor.
        inserted += 1;
        sqlx::query("insert into users (phone_number) values ($1), ($2)")
            .bind(format!("+1415555{:04}", 2000 + inserted * 2 + 1))
            .bind(format!("+1415555{:04}", 2098 - inserted * 2 + 1))
            .execute(&db)
            .await
            .unwrap();
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/users?limit=7&cursor={c}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages repeat or go backwards");
    for phone in &before {
        assert!(seen.contains(phone), "{phone} was skipped");
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn erasing_a_user_keeps_only_anonymous_counts(db: PgPool) {
    let api = api(db.clone());
    let webhooks = webhooks_router(db.clone());
    let phone = "+14155552671";
    create(&api, phone, json!({"first_name": "Ada"}), "opted_in").await;
    // Ada writes to us, then says STOP: an inbound message and a consent event.
    for (sid, body) in [("SMin1", "Hello there"), ("SMin2", "STOP")] {
        let params = [
            ("AccountSid", "AC00000000000000000000000000000000"),
            ("Body", body),
            ("From", "whatsapp:+14155552671"),
            ("MessageSid", sid),
            ("ProfileName", "Ada Lovelace"),
            ("To", "whatsapp:+14155238886"),
            ("WaId", "14155552671"),
        ];
        let (code, text) = post_signed(&webhooks, "/webhooks/inbound", &params).await;
        assert_eq!(code, StatusCode::OK, "{text}");
    }
    let campaign = fixtures::campaign(&db).await;
    let delivered = fixtures::message(&db, campaign, phone, "sent", Some("SMout1")).await;
    fixtures::message(&db, fixtures::campaign(&db).await, phone, "pending", None).await;
    let (code, _) = post_signed(
        &webhooks,
        "/webhooks/status",
        &status_params("SMout1", "delivered", "whatsapp:+14155552671"),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    sqlx::query("insert into decisions (message_id, campaign_id, phone_number, decision) values ($1, $2, $3, 'sent')")
        .bind(delivered)
        .bind(campaign)
        .bind(phone)
        .execute(&db)
        .await
        .unwrap();
    let messages_before = count(&db, "select count(*) from messages").await;

    api.delete(ADA).await.expect(StatusCode::NO_CONTENT);

    assert_eq!(api.get(ADA).await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.delete(ADA).await.status, StatusCode::NOT_FOUND);
    // Nothing anywhere still holds the number, the name or what Ada wrote.
    for sql in [
        "select count(*) from users where phone_number = '+14155552671'",
        "select count(*) from messages where phone_number = '+14155552671' or body is not null",
        "select count(*) from decisions where phone_number = '+14155552671'",
        "select count(*) from consent_events where phone_number = '+14155552671'",
        "select count(*) from inbound_messages where from_number = '+14155552671' or profile_name is not null or body <> ''",
        "select count(*) from webhook_events where raw_body like '%14155552671%' or params::text like '%14155552671%' or params::text like '%Ada%' or params::text like '%Hello%'",
    ] {
        assert_eq!(count(&db, sql).await, 0, "{sql}");
    }
    // What is anonymous stays, under one token for the person.
    assert_eq!(
        count(&db, "select count(*) from messages").await,
        messages_before
    );
    assert_eq!(
        count(&db, "select count(distinct phone_number) from (select phone_number from messages union all select phone_number from decisions union all select phone_number from consent_events union all select from_number from inbound_messages) t").await,
        1
    );
    assert_eq!(count(&db, "select count(*) from messages where phone_number like 'erased:%' and status = 'delivered'").await, 1);
    // The pending message will never go out, and says why.
    assert_eq!(
        count(
            &db,
            "select count(*) from messages where status = 'skipped'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "select count(*) from decisions where decision = 'skipped_erased'"
        )
        .await,
        1
    );
    // The delivery timeline survives without the person.
    let detail = api
        .get(&format!("/v1/messages/{delivered}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(detail["status_events"][0]["status"], "delivered");
    assert!(
        detail["message"]["phone_number"]
            .as_str()
            .unwrap()
            .starts_with("erased:")
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_api_cannot_undo_an_opt_out_the_person_made(db: PgPool) {
    let api = api(db.clone());
    create(
        &api,
        "+14155552671",
        json!({"first_name": "Ada"}),
        "opted_in",
    )
    .await;
    // Ada texts STOP.
    let webhooks = webhooks_router(db.clone());
    let stop = [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("Body", "STOP!"),
        ("From", "whatsapp:+14155552671"),
        ("MessageSid", "SMstop"),
        ("To", "whatsapp:+14155238886"),
    ];
    assert_eq!(
        post_signed(&webhooks, "/webhooks/inbound", &stop).await.0,
        StatusCode::OK
    );

    let reply = api
        .patch(
            ADA,
            json!({"consent": "opted_in", "attributes": {"plan": "gold"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.field(), Some("consent"));
    assert!(
        reply.message().contains("only they can opt back in"),
        "{}",
        reply.message()
    );
    let reply = api
        .post(
            "/v1/users",
            json!({"phone_number": "+14155552671", "consent": "opted_in"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    // Nothing of either request was applied; both refusals are evidence.
    let ada = api.get(ADA).await.expect(StatusCode::OK);
    assert_eq!(
        (&ada["consent"], &ada["consent_source"]),
        (&json!("opted_out"), &json!("keyword"))
    );
    assert_eq!(ada["attributes"], json!({"first_name": "Ada"}));
    assert_eq!(
        count(
            &db,
            "select count(*) from consent_events where refused and source = 'api'"
        )
        .await,
        2
    );
    // The API may still opt out, and the person may opt back in.
    api.patch(ADA, json!({"consent": "opted_out"}))
        .await
        .expect(StatusCode::OK);
    let start = [
        ("Body", "start"),
        ("MessageSid", "SMstart"),
        ("From", "whatsapp:+14155552671"),
        ("To", "whatsapp:+14155238886"),
    ];
    assert_eq!(
        post_signed(&webhooks, "/webhooks/inbound", &start).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.get(ADA).await.expect(StatusCode::OK)["consent"],
        "opted_in"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn consent_evidence_inbound_messages_and_campaign_opt_outs(db: PgPool) {
    let api = api(db.clone());
    create(
        &api,
        "+14155552671",
        json!({"first_name": "Ada"}),
        "opted_in",
    )
    .await;
    let campaign = fixtures::campaign(&db).await;
    sqlx::query("update campaigns set state = 'running', started_at = now() - interval '1 minute' where id = $1")
        .bind(campaign)
        .execute(&db)
        .await
        .unwrap();
    fixtures::message(&db, campaign, "+14155552671", "delivered", Some("SMc1")).await;
    let webhooks = webhooks_router(db.clone());
    let stop = [
        ("Body", "Stop 🛑"),
        ("From", "whatsapp:+14155552671"),
        ("MessageSid", "SMstop"),
        ("To", "whatsapp:+14155238886"),
    ];
    assert_eq!(
        post_signed(&webhooks, "/webhooks/inbound", &stop).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.patch(ADA, json!({"consent": "opted_in"})).await.status,
        StatusCode::CONFLICT
    );

    let history = api
        .get(&format!("{ADA}/consent"))
        .await
        .expect(StatusCode::OK);
    let history = history.as_array().unwrap();
    let sources: Vec<(&str, &str, bool)> = history
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap(),
                e["to_consent"].as_str().unwrap(),
                e["refused"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("api", "opted_in", false),
            ("keyword", "opted_out", false),
            ("api", "opted_in", true)
        ]
    );
    // The STOP's evidence is the signed webhook exactly as Twilio sent it.
    let raw = history[1]["webhook_raw_body"].as_str().unwrap();
    assert!(raw.contains("MessageSid=SMstop"), "{raw}");
    assert_eq!(
        api.get("/v1/users/%2B14155550000/consent").await.status,
        StatusCode::NOT_FOUND
    );

    let inbound = api
        .get("/v1/inbound-messages?from_number=%2B14155552671")
        .await
        .expect(StatusCode::OK);
    assert_eq!(inbound["data"][0]["message_sid"], "SMstop");
    assert_eq!(inbound["data"][0]["body"], "Stop 🛑");
    let none = api
        .get("/v1/inbound-messages?from_number=%2B14155550000")
        .await
        .expect(StatusCode::OK);
    assert_eq!(none["data"], json!([]));

    let stats = api
        .get(&format!("/v1/campaigns/{campaign}/stats"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(stats["opt_outs"], 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_stop_after_an_api_opt_out_makes_the_opt_out_the_persons(db: PgPool) {
    let api = api(db.clone());
    create(&api, "+14155552671", json!({}), "opted_out").await;
    // A quick-reply button whose label Twilio sends as the body: the payload
    // is not a keyword, the label is; it counts as the person's tap.
    let webhooks = webhooks_router(db.clone());
    let tap = [
        ("Body", "STOP"),
        ("ButtonPayload", "btn-1"),
        ("ButtonText", "STOP"),
        ("From", "whatsapp:+14155552671"),
        ("MessageSid", "SMtap"),
        ("To", "whatsapp:+14155238886"),
    ];
    assert_eq!(
        post_signed(&webhooks, "/webhooks/inbound", &tap).await.0,
        StatusCode::OK
    );
    let ada = api.get(ADA).await.expect(StatusCode::OK);
    assert_eq!(
        (&ada["consent"], &ada["consent_source"]),
        (&json!("opted_out"), &json!("button"))
    );
    // Now only Ada can opt back in.
    assert_eq!(
        api.patch(ADA, json!({"consent": "opted_in"})).await.status,
        StatusCode::CONFLICT
    );
}
