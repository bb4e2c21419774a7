//! [`Segment`](super::Segment) evaluated for one user in memory, with exactly
//! the meaning the SQL compiler gives it.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Condition, EventCondition, Field, Node, Scalar};

/// What a segment can look at for one user.
#[derive(Debug, Clone, Copy)]
pub struct UserFacts<'a> {
    pub phone_number: &'a str,
    pub attributes: &'a Value,
    pub consent: &'a str,
    pub created_at: DateTime<Utc>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// The topics the user left.
    pub unsubscribed_topics: &'a [String],
    /// The user's events (any order).
    pub events: &'a [EventFact],
}

/// One of a user's events, as event conditions see it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFact {
    pub name: String,
    pub occurred_at: DateTime<Utc>,
    pub properties: Value,
}

/// What a definition is evaluated against: a person, or one event's
/// properties (an event filter).
pub(super) enum Facts<'u, 'a> {
    User(&'u UserFacts<'a>),
    Properties(&'u Value),
}

pub(super) fn node(n: &Node, f: &Facts<'_, '_>, now: DateTime<Utc>) -> bool {
    match n {
        Node::All(children) => children.iter().all(|c| node(c, f, now)),
        Node::Any(children) => children.iter().any(|c| node(c, f, now)),
        Node::Not(inner) => !node(inner, f, now),
        Node::Leaf(c) => condition(c, f, now),
    }
}

/// How many of the user's events count for `e`, compared with `at_least`.
fn event(e: &EventCondition, u: &UserFacts<'_>, now: DateTime<Utc>) -> bool {
    let since = e.within.map(|d| now - d);
    let count = u
        .events
        .iter()
        .filter(|x| x.name == e.name)
        .filter(|x| since.is_none_or(|t| x.occurred_at >= t))
        .filter(|x| {
            e.filter
                .as_ref()
                .is_none_or(|f| node(f, &Facts::Properties(&x.properties), now))
        })
        .take(e.at_least as usize)
        .count() as i64;
    (count >= e.at_least) == e.did
}

/// What a field holds for this user, as a JSON value (`None` when missing).
enum Read<'a> {
    Json(Option<&'a Value>),
    Text(&'a str),
    Time(Option<DateTime<Utc>>),
}

fn read<'u>(f: &Field, facts: &Facts<'u, '_>) -> Read<'u> {
    let u: &'u UserFacts<'_> = match (f, facts) {
        (Field::Property(path), Facts::Properties(p)) => return Read::Json(lookup(p, path)),
        (_, Facts::Properties(_)) | (Field::Property(_), _) => return Read::Json(None),
        (_, Facts::User(u)) => u,
    };
    match f {
        Field::Attribute(path) => Read::Json(lookup(u.attributes, path)),
        Field::PhoneNumber | Field::Country => Read::Text(u.phone_number),
        Field::Consent => Read::Text(u.consent),
        Field::CreatedAt => Read::Time(Some(u.created_at)),
        Field::LastInboundAt => Read::Time(u.last_inbound_at),
        Field::Property(_) => Read::Json(None),
    }
}

/// `attributes #> path`: objects by key, arrays by index.
fn lookup<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(root, |cur, key| match cur {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The field as a scalar of the same type as `like`, or `None`.
fn same_type<'a>(r: &Read<'a>, like: &Scalar) -> Option<Scalar> {
    match (r, like) {
        (Read::Json(Some(Value::String(s))), Scalar::Str(_)) => Some(Scalar::Str(s.clone())),
        (Read::Text(s), Scalar::Str(_)) => Some(Scalar::Str((*s).to_owned())),
        (Read::Json(Some(Value::Number(n))), Scalar::Num(_)) => n.as_f64().map(Scalar::Num),
        (Read::Json(Some(Value::Bool(b))), Scalar::Bool(_)) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

fn scalar_of(r: &Read<'_>) -> Option<Scalar> {
    match r {
        Read::Json(Some(Value::String(s))) => Some(Scalar::Str(s.clone())),
        Read::Text(s) => Some(Scalar::Str((*s).to_owned())),
        Read::Json(Some(Value::Number(n))) => n.as_f64().map(Scalar::Num),
        Read::Json(Some(Value::Bool(b))) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

fn ordering(a: &Scalar, b: &Scalar) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Scalar::Str(x), Scalar::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Scalar::Num(x), Scalar::Num(y)) => x.partial_cmp(y),
        (Scalar::Bool(x), Scalar::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn compare(
    f: &Field,
    v: &Scalar,
    u: &Facts<'_, '_>,
    accept: fn(std::cmp::Ordering) -> bool,
) -> bool {
    same_type(&read(f, u), v)
        .and_then(|x| ordering(&x, v))
        .is_some_and(accept)
}

fn condition(c: &Condition, u: &Facts<'_, '_>, now: DateTime<Utc>) -> bool {
    use std::cmp::Ordering::*;
    match c {
        Condition::Eq(f, v) => compare(f, v, u, |o| o == Equal),
        Condition::Ne(f, v) => compare(f, v, u, |o| o != Equal),
        Condition::Lt(f, v) => compare(f, v, u, |o| o == Less),
        Condition::Lte(f, v) => compare(f, v, u, |o| o != Greater),
        Condition::Gt(f, v) => compare(f, v, u, |o| o == Greater),
        Condition::Gte(f, v) => compare(f, v, u, |o| o != Less),
        Condition::In(f, list) | Condition::NotIn(f, list) => {
            let negate = matches!(c, Condition::NotIn(..));
            match scalar_of(&read(f, u)) {
                Some(x) => list.iter().any(|v| ordering(&x, v) == Some(Equal)) != negate,
                None => false,
            }
        }
        Condition::Contains(f, v) => match (read(f, u), v) {
            (Read::Json(Some(Value::Array(items))), _) => items.iter().any(|item| {
                scalar_of(&Read::Json(Some(item))).is_some_and(|x| ordering(&x, v) == Some(Equal))
            }),
            (Read::Json(Some(Value::String(s))), Scalar::Str(needle)) => {
                s.contains(needle.as_str())
            }
            (Read::Text(s), Scalar::Str(needle)) => s.contains(needle.as_str()),
            _ => false,
        },
        Condition::StartsWith(f, prefix) => match read(f, u) {
            Read::Json(Some(Value::String(s))) => s.starts_with(prefix.as_str()),
            Read::Text(s) => s.starts_with(prefix.as_str()),
            _ => false,
        },
        Condition::Exists(f, want) => {
            let present = match read(f, u) {
                Read::Json(v) => v.is_some(),
                Read::Text(_) => true,
                Read::Time(t) => t.is_some(),
            };
            present == *want
        }
        Condition::Within(f, d) => time(f, u, |t| t >= now - *d),
        Condition::Before(f, w) => time(f, u, |t| t < w.resolve(now)),
        Condition::After(f, w) => time(f, u, |t| t > w.resolve(now)),
        Condition::CountryIn(codes, negate) => match u {
            Facts::User(u) => {
                codes
                    .iter()
                    .any(|c| u.phone_number.starts_with(&format!("+{c}")))
                    != *negate
            }
            Facts::Properties(_) => false,
        },
        Condition::Subscribed(topic, subscribed) => match u {
            Facts::User(u) => u.unsubscribed_topics.iter().any(|t| t == topic) != *subscribed,
            Facts::Properties(_) => false,
        },
        Condition::Event(e) => match u {
            Facts::User(u) => event(e, u, now),
            Facts::Properties(_) => false,
        },
    }
}

fn time(f: &Field, u: &Facts<'_, '_>, test: impl Fn(DateTime<Utc>) -> bool) -> bool {
    match read(f, u) {
        Read::Time(Some(t)) => test(t),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::super::Segment;
    use super::*;

    fn user<'a>(attributes: &'a Value) -> UserFacts<'a> {
        UserFacts {
            phone_number: "+447700900123",
            attributes,
            consent: "opted_in",
            created_at: "2026-01-10T00:00:00Z".parse().unwrap(),
            last_inbound_at: None,
            unsubscribed_topics: &[],
            events: &[],
        }
    }

    #[test]
    fn topic_conditions_read_the_topics_left() {
        let now: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        let attrs = json!({});
        let left = ["promotions".to_owned()];
        let u = UserFacts {
            unsubscribed_topics: &left,
            ..user(&attrs)
        };
        let seg = |v: Value| Segment::parse(&v).unwrap();
        assert!(!seg(json!({"topic": "promotions", "subscribed": true})).matches(&u, now));
        assert!(seg(json!({"topic": "promotions", "subscribed": false})).matches(&u, now));
        // No choice made means subscribed.
        assert!(seg(json!({"topic": "order-updates", "subscribed": true})).matches(&u, now));
        assert!(Segment::parse(&json!({"topic": "Bad Name", "subscribed": true})).is_err());
        assert!(Segment::parse(&json!({"topic": "promotions"})).is_err());
        assert!(Segment::parse(&json!({"topic": "promotions", "subscribed": "yes"})).is_err());
    }

    fn check(def: Value, attrs: Value) -> bool {
        let now: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        Segment::parse(&def).unwrap().matches(&user(&attrs), now)
    }

    #[test]
    fn missing_attributes_match_nothing_but_exists_false_and_not() {
        let attrs = json!({});
        assert!(!check(json!({"attribute": "age", "gte": 1}), attrs.clone()));
        assert!(!check(json!({"attribute": "age", "ne": 1}), attrs.clone()));
        assert!(!check(
            json!({"attribute": "age", "not_in": [1]}),
            attrs.clone()
        ));
        assert!(check(
            json!({"attribute": "age", "exists": false}),
            attrs.clone()
        ));
        assert!(check(json!({"not": {"attribute": "age", "gte": 1}}), attrs));
    }

    #[test]
    fn operators_only_match_their_own_type() {
        let attrs = json!({"age": "42", "n": 42, "vip": true, "tags": ["a", "b"], "plan": {"tier": "gold"}});
        assert!(!check(json!({"attribute": "age", "gt": 1}), attrs.clone()));
        assert!(check(json!({"attribute": "n", "gt": 41.5}), attrs.clone()));
        assert!(check(json!({"attribute": "n", "eq": 42.0}), attrs.clone()));
        assert!(check(
            json!({"attribute": "vip", "eq": true}),
            attrs.clone()
        ));
        assert!(check(
            json!({"attribute": "plan.tier", "in": ["gold", 3]}),
            attrs.clone()
        ));
        assert!(check(
            json!({"attribute": "tags", "contains": "b"}),
            attrs.clone()
        ));
        assert!(check(
            json!({"attribute": "tags.0", "eq": "a"}),
            attrs.clone()
        ));
        assert!(check(
            json!({"attribute": "age", "starts_with": "4"}),
            attrs.clone()
        ));
        assert!(!check(json!({"attribute": "plan", "eq": "gold"}), attrs));
    }

    #[test]
    fn built_in_fields() {
        let a = json!({});
        assert!(check(json!({"field": "country", "eq": "GB"}), a.clone()));
        assert!(check(
            json!({"field": "country", "not_in": ["US", "DE"]}),
            a.clone()
        ));
        assert!(check(
            json!({"field": "consent", "eq": "opted_in"}),
            a.clone()
        ));
        assert!(check(
            json!({"field": "created_at", "within": "30d"}),
            a.clone()
        ));
        assert!(!check(
            json!({"field": "created_at", "within": "7d"}),
            a.clone()
        ));
        assert!(check(
            json!({"field": "created_at", "before": "2026-01-11T00:00:00Z"}),
            a.clone()
        ));
        assert!(!check(
            json!({"field": "last_inbound_at", "after": "1000d"}),
            a.clone()
        ));
        assert!(check(
            json!({"field": "last_inbound_at", "exists": false}),
            a.clone()
        ));
        assert!(check(
            json!({"field": "phone_number", "starts_with": "+44"}),
            a
        ));
        let _ = Duration::days(1);
    }

    #[test]
    fn event_conditions_count_matching_events_in_the_window() {
        let now: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        let attrs = json!({});
        let ev = |name: &str, days_ago: i64, total: i64| EventFact {
            name: name.to_owned(),
            occurred_at: now - Duration::days(days_ago),
            properties: json!({"total": total}),
        };
        let events = [
            ev("order.placed", 1, 80),
            ev("order.placed", 10, 20),
            ev("order.placed", 40, 90),
        ];
        let u = UserFacts {
            events: &events,
            ..user(&attrs)
        };
        let seg = |v: Value| Segment::parse(&v).unwrap().matches(&u, now);
        assert!(seg(
            json!({"event": "order.placed", "did": true, "at_least": 3})
        ));
        assert!(!seg(
            json!({"event": "order.placed", "did": true, "at_least": 3, "within": "30d"})
        ));
        assert!(seg(
            json!({"event": "order.placed", "did": true, "at_least": 2, "within": "30d"})
        ));
        assert!(seg(
            json!({"event": "order.placed", "did": true, "at_least": 2,
                           "where": {"property": "total", "gte": 50}})
        ));
        assert!(!seg(
            json!({"event": "order.placed", "did": true, "at_least": 2, "within": "30d",
                            "where": {"property": "total", "gte": 50}})
        ));
        assert!(seg(json!({"event": "cart.abandoned", "did": false})));
        assert!(!seg(
            json!({"event": "order.placed", "did": false, "within": "7d"})
        ));
        assert!(seg(
            json!({"not": {"event": "order.placed", "did": true, "at_least": 4}})
        ));
    }

    #[test]
    fn empty_groups() {
        assert!(check(json!({"all": []}), json!({})));
        assert!(!check(json!({"any": []}), json!({})));
    }
}
