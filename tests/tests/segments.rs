//! The segment compiler (SQL) and evaluator (memory) agree on generated
//! segments × generated users in a real database.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use shared::segment::{EventFact, Segment, UserFacts};
use sqlx::{PgPool, QueryBuilder};

use crate::support::MIGRATOR;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "gold", "silver", "Bronze", "", "gölд", "42", "a", "beta", "b"
        ])
        .prop_map(|s| json!(s)),
        (-5i64..100).prop_map(|n| json!(n)),
        prop::sample::select(vec![42.5f64, -0.5, 0.0, 99.99]).prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
    ]
}

fn attribute_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(scalar(), 0..4).prop_map(Value::Array),
        1 => scalar().prop_map(|v| json!({"tier": v})),
    ]
}

const KEYS: [&str; 5] = ["plan", "age", "vip", "tags", "nested"];
const TOPICS: [&str; 2] = ["promotions", "order-updates"];

fn attributes() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), attribute_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

#[derive(Debug, Clone)]
struct GenUser {
    phone: String,
    attributes: Value,
    consent: &'static str,
    created_days_ago: i64,
    inbound_hours_ago: Option<i64>,
    unsubscribed_topics: Vec<String>,
    /// (name, hours ago, properties)
    events: Vec<(&'static str, i64, Value)>,
}

const EVENT_NAMES: [&str; 2] = ["order.placed", "cart.abandoned"];
const PROPERTY_KEYS: [&str; 4] = ["total", "sku", "coupon", "items"];

fn event() -> impl Strategy<Value = (&'static str, i64, Value)> {
    (
        prop::sample::select(EVENT_NAMES.to_vec()),
        0i64..2_000,
        prop::collection::btree_map(
            prop::sample::select(PROPERTY_KEYS.to_vec()),
            attribute_value(),
            0..4,
        )
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
    )
}

fn user() -> impl Strategy<Value = GenUser> {
    (
        prop::sample::select(vec!["+4477009", "+1415555", "+4930901", "+3361234"]),
        attributes(),
        prop::sample::select(vec!["unknown", "opted_in", "opted_out"]),
        0i64..400,
        prop::option::of(0i64..200),
        prop::sample::subsequence(TOPICS.to_vec(), 0..=TOPICS.len()),
        prop::collection::vec(event(), 0..6),
    )
        .prop_map(
            |(prefix, attributes, consent, created_days_ago, inbound_hours_ago, left, events)| {
                GenUser {
                    phone: prefix.to_owned(),
                    attributes,
                    consent,
                    created_days_ago,
                    inbound_hours_ago,
                    unsubscribed_topics: left.into_iter().map(str::to_owned).collect(),
                    events,
                }
            },
        )
}

/// A leaf over an event's properties, as an event condition's `where` holds.
fn property_leaf() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec!["total", "sku", "coupon", "items.0", "missing"]);
    prop_oneof![
        (
            key.clone(),
            prop::sample::select(vec!["eq", "ne", "lt", "gte", "contains"]),
            scalar()
        )
            .prop_filter("ordering takes no booleans", |(_, op, v)| {
                !(v.is_boolean() && ["lt", "gte"].contains(op))
            })
            .prop_map(|(k, op, v)| json!({"property": k, op: v})),
        (key.clone(), prop::collection::vec(scalar(), 0..3))
            .prop_map(|(k, v)| json!({"property": k, "in": v})),
        (key, any::<bool>()).prop_map(|(k, b)| json!({"property": k, "exists": b})),
    ]
}

fn property_filter() -> impl Strategy<Value = Value> {
    property_leaf().prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({"all": v})),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({"any": v})),
            inner.prop_map(|v| json!({"not": v})),
        ]
    })
}

fn event_leaf() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(EVENT_NAMES.to_vec()),
        any::<bool>(),
        prop::option::of(1i64..4),
        prop::option::of(prop::sample::select(vec!["1d", "7d", "30d", "90m"])),
        prop::option::of(property_filter()),
    )
        .prop_map(|(name, did, at_least, within, filter)| {
            let mut c = json!({"event": name, "did": did});
            if let Some(n) = at_least {
                c["at_least"] = json!(n);
            }
            if let Some(w) = within {
                c["within"] = json!(w);
            }
            if let Some(f) = filter {
                c["where"] = f;
            }
            c
        })
}

fn leaf() -> impl Strategy<Value = Value> {
    let attr = prop::sample::select(vec![
        "plan",
        "age",
        "vip",
        "tags",
        "nested.tier",
        "tags.0",
        "missing",
    ]);
    prop_oneof![
        (
            attr.clone(),
            prop::sample::select(vec!["eq", "ne", "lt", "lte", "gt", "gte", "contains"]),
            scalar()
        )
            .prop_filter("ordering takes no booleans", |(_, op, v)| {
                !(v.is_boolean() && ["lt", "lte", "gt", "gte"].contains(op))
            })
            .prop_map(|(a, op, v)| json!({"attribute": a, op: v})),
        (
            attr.clone(),
            prop::sample::select(vec!["in", "not_in"]),
            prop::collection::vec(scalar(), 0..4)
        )
            .prop_map(|(a, op, v)| json!({"attribute": a, op: v})),
        (attr.clone(), prop::sample::select(vec!["4", "g", "", "b"]))
            .prop_map(|(a, p)| json!({"attribute": a, "starts_with": p})),
        (attr, any::<bool>()).prop_map(|(a, b)| json!({"attribute": a, "exists": b})),
        (
            prop::sample::select(vec!["eq", "ne", "in", "not_in"]),
            prop::sample::select(vec!["opted_in", "opted_out", "unknown"])
        )
            .prop_map(|(op, c)| if op.ends_with("in") {
                json!({"field": "consent", op: [c]})
            } else {
                json!({"field": "consent", op: c})
            }),
        prop::sample::select(vec!["GB", "US", "44", "DE"])
            .prop_map(|c| json!({"field": "country", "in": [c]})),
        (
            prop::sample::select(vec!["created_at", "last_inbound_at"]),
            prop::sample::select(vec!["within", "before", "after"]),
            prop::sample::select(vec!["1d", "7d", "30d", "12h", "2026-01-01T00:00:00Z"])
        )
            .prop_filter("within takes a duration", |(_, op, v)| !(*op == "within"
                && v.starts_with("2026")))
            .prop_map(|(f, op, v)| json!({"field": f, op: v})),
        (prop::sample::select(vec!["+44", "+1415", "9"]))
            .prop_map(|p| json!({"field": "phone_number", "starts_with": p})),
        (prop::sample::select(TOPICS.to_vec()), any::<bool>())
            .prop_map(|(t, s)| json!({"topic": t, "subscribed": s})),
        event_leaf(),
        event_leaf(),
    ]
}

fn segment() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"all": v})),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"any": v})),
            inner.prop_map(|v| json!({"not": v})),
        ]
    })
}

fn sample<T: std::fmt::Debug>(runner: &mut TestRunner, s: impl Strategy<Value = T>) -> T {
    s.new_tree(runner)
        .expect("strategy yields a value")
        .current()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn compiler_and_evaluator_agree(db: PgPool) {
    let now: DateTime<Utc> = "2026-06-01T12:00:00Z".parse().unwrap();
    let mut runner = TestRunner::deterministic();
    let mut users = vec![];
    for i in 0..120 {
        let mut u = sample(&mut runner, user());
        u.phone = format!("{}{:04}", u.phone, i);
        let created = now - Duration::days(u.created_days_ago);
        let inbound = u.inbound_hours_ago.map(|h| now - Duration::hours(h));
        sqlx::query("insert into users (phone_number, attributes, consent, created_at, last_inbound_at) values ($1, $2, $3, $4, $5)")
            .bind(&u.phone)
            .bind(&u.attributes)
            .bind(u.consent)
            .bind(created)
            .bind(inbound)
            .execute(&db)
            .await
            .unwrap();
        for topic in &u.unsubscribed_topics {
            sqlx::query("insert into topic_subscriptions (phone_number, topic, subscribed, source) values ($1, $2, false, 'api')")
                .bind(&u.phone)
                .bind(topic)
                .execute(&db)
                .await
                .unwrap();
        }
        // A topic chosen explicitly, and still subscribed, reads as subscribed too.
        if u.unsubscribed_topics.is_empty() && i % 3 == 0 {
            sqlx::query("insert into topic_subscriptions (phone_number, topic, subscribed, source) values ($1, 'promotions', true, 'api')")
                .bind(&u.phone)
                .execute(&db)
                .await
                .unwrap();
        }
        let mut facts = vec![];
        for (k, (name, hours_ago, properties)) in u.events.iter().enumerate() {
            let occurred = now - Duration::hours(*hours_ago);
            sqlx::query("insert into events (idempotency_key, phone_number, name, properties, occurred_at, source) values ($1, $2, $3, $4, $5, 'api')")
                .bind(format!("{}-{k}", u.phone))
                .bind(&u.phone)
                .bind(name)
                .bind(properties)
                .bind(occurred)
                .execute(&db)
                .await
                .unwrap();
            facts.push(EventFact {
                name: (*name).to_owned(),
                occurred_at: occurred,
                properties: properties.clone(),
            });
        }
        users.push((u, created, inbound, facts));
    }

    let mut matched_some = 0;
    let mut event_splits = 0;
    for _ in 0..300 {
        let definition = sample(&mut runner, segment());
        let seg =
            Segment::parse(&definition).unwrap_or_else(|e| panic!("generated {definition}: {e}"));
        let mut qb = QueryBuilder::new("select phone_number from users where ");
        seg.push_predicate_at(&mut qb, now);
        qb.push(" order by phone_number");
        let mut from_sql: Vec<String> = qb
            .build_query_scalar()
            .fetch_all(&db)
            .await
            .unwrap_or_else(|e| panic!("{definition}: {e}"));
        from_sql.sort();
        let mut from_memory: Vec<String> = users
            .iter()
            .filter(|(u, created, inbound, facts)| {
                seg.matches(
                    &UserFacts {
                        phone_number: &u.phone,
                        attributes: &u.attributes,
                        consent: u.consent,
                        created_at: *created,
                        last_inbound_at: *inbound,
                        unsubscribed_topics: &u.unsubscribed_topics,
                        events: facts,
                    },
                    now,
                )
            })
            .map(|(u, ..)| u.phone.clone())
            .collect();
        from_memory.sort();
        assert_eq!(from_sql, from_memory, "segment {definition}");
        if !from_sql.is_empty() && from_sql.len() < users.len() {
            matched_some += 1;
            if definition.to_string().contains("\"event\"") {
                event_splits += 1;
            }
        }
    }
    // The generated segments discriminate: most select some users but not all.
    assert!(
        matched_some > 100,
        "only {matched_some} segments split the users"
    );
    assert!(
        event_splits > 20,
        "only {event_splits} event conditions split the users"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn user_text_never_reaches_the_sql(db: PgPool) {
    let hostile = "x'); drop table users; --";
    let seg = Segment::parse(&json!({"any": [{"attribute": hostile, "eq": hostile}, {"attribute": "a", "in": [hostile]}]})).unwrap();
    let mut qb = QueryBuilder::new("select count(*) from users where ");
    seg.push_predicate(&mut qb);
    assert!(
        !qb.sql().as_str().contains("drop table"),
        "{}",
        qb.sql().as_str()
    );
    let n: i64 = qb.build_query_scalar().fetch_one(&db).await.unwrap();
    assert_eq!(n, 0);
}
