//! [`Segment`](super::Segment) → a parameterized SQL predicate over `users`.
//!
//! Every leaf is a non-null boolean (a missing attribute or a value of
//! another type is `false`), so `not` means what it says. No user text is
//! ever part of the SQL: every value, path and prefix is a bind parameter.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

use super::{Condition, EventCondition, Field, Node, Scalar};

type Qb<'a> = &'a mut QueryBuilder<Postgres>;

pub(super) fn node(n: &Node, qb: Qb<'_>, now: DateTime<Utc>) {
    match n {
        Node::All(children) | Node::Any(children) if children.is_empty() => {
            qb.push(if matches!(n, Node::All(_)) {
                "true"
            } else {
                "false"
            });
        }
        Node::All(children) | Node::Any(children) => {
            let joiner = if matches!(n, Node::All(_)) {
                " and "
            } else {
                " or "
            };
            qb.push("(");
            for (i, c) in children.iter().enumerate() {
                if i > 0 {
                    qb.push(joiner);
                }
                node(c, qb, now);
            }
            qb.push(")");
        }
        Node::Not(inner) => {
            qb.push("(not ");
            node(inner, qb, now);
            qb.push(")");
        }
        Node::Leaf(c) => {
            qb.push("(");
            condition(c, qb, now);
            qb.push(")");
        }
    }
}

/// How a field reads in SQL.
enum Expr<'f> {
    /// A jsonb value (`attributes #> path`, or an event's `properties #> path`),
    /// SQL null when missing.
    Json(&'static str, &'f [String]),
    /// A text column that is never null.
    Text(&'static str),
    /// A timestamp column.
    Time(&'static str),
}

fn expr(f: &Field) -> Expr<'_> {
    match f {
        Field::Attribute(path) => Expr::Json("attributes", path),
        Field::Property(path) => Expr::Json(EVENT_ALIAS_PROPERTIES, path),
        Field::PhoneNumber | Field::Country => Expr::Text("phone_number"),
        Field::Consent => Expr::Text("consent"),
        Field::CreatedAt => Expr::Time("created_at"),
        Field::LastInboundAt => Expr::Time("last_inbound_at"),
    }
}

/// The events an event condition counts, under an alias no outer query uses.
const EVENT_ALIAS: &str = "segment_event";
const EVENT_ALIAS_PROPERTIES: &str = "segment_event.properties";

fn json(col: &str, path: &[String], qb: Qb<'_>) {
    qb.push(format!("({col} #> "));
    qb.push_bind(path.to_vec());
    qb.push("::text[])");
}

/// `case when jsonb_typeof(X) = '<type>' then <typed X> <op> <value> else false end`:
/// the type test guards the cast, and a missing value falls to `false`.
fn typed_json(col: &str, path: &[String], op: &str, value: &Scalar, qb: Qb<'_>) {
    let (type_name, cast) = match value {
        Scalar::Str(_) => ("string", " #>> '{}')"),
        Scalar::Num(_) => ("number", ")::float8"),
        Scalar::Bool(_) => ("boolean", ")::boolean"),
    };
    qb.push("case when jsonb_typeof");
    json(col, path, qb);
    qb.push(format!(" = '{type_name}' then ("));
    json(col, path, qb);
    qb.push(cast);
    qb.push(format!(" {op} "));
    bind_scalar(value, qb);
    qb.push(" else false end");
}

fn bind_scalar(value: &Scalar, qb: Qb<'_>) {
    match value {
        // Byte order, as Rust compares strings, whatever the database's collation.
        Scalar::Str(s) => {
            qb.push_bind(s.clone());
            qb.push(" collate \"C\"");
        }
        Scalar::Num(n) => {
            qb.push_bind(*n);
        }
        Scalar::Bool(b) => {
            qb.push_bind(*b);
        }
    }
}

fn compare(f: &Field, op: &str, value: &Scalar, qb: Qb<'_>) {
    match (expr(f), value) {
        (Expr::Json(col, path), _) => typed_json(col, path, op, value, qb),
        (Expr::Text(col), Scalar::Str(_)) => {
            qb.push(format!("{col} {op} "));
            bind_scalar(value, qb);
        }
        _ => {
            qb.push("false");
        }
    }
}

fn split(list: &[Scalar]) -> (Vec<String>, Vec<f64>, Vec<bool>) {
    let (mut s, mut n, mut b) = (vec![], vec![], vec![]);
    for v in list {
        match v {
            Scalar::Str(x) => s.push(x.clone()),
            Scalar::Num(x) => n.push(*x),
            Scalar::Bool(x) => b.push(*x),
        }
    }
    (s, n, b)
}

fn membership(f: &Field, list: &[Scalar], negate: bool, qb: Qb<'_>) {
    let (strs, nums, bools) = split(list);
    let not = if negate { "not " } else { "" };
    match expr(f) {
        Expr::Json(col, path) => {
            qb.push("case jsonb_typeof");
            json(col, path, qb);
            qb.push(format!(" when 'string' then {not}(("));
            json(col, path, qb);
            qb.push(" #>> '{}') = any(");
            qb.push_bind(strs);
            qb.push(format!(")) when 'number' then {not}(("));
            json(col, path, qb);
            qb.push(")::float8 = any(");
            qb.push_bind(nums);
            qb.push(format!(")) when 'boolean' then {not}(("));
            json(col, path, qb);
            qb.push(")::boolean = any(");
            qb.push_bind(bools);
            qb.push(")) else false end");
        }
        Expr::Text(col) => {
            qb.push(format!("{not}({col} = any("));
            qb.push_bind(strs);
            qb.push("))");
        }
        Expr::Time(_) => {
            qb.push("false");
        }
    }
}

fn condition(c: &Condition, qb: Qb<'_>, now: DateTime<Utc>) {
    match c {
        Condition::Eq(f, v) => compare(f, "=", v, qb),
        Condition::Ne(f, v) => compare(f, "<>", v, qb),
        Condition::Lt(f, v) => compare(f, "<", v, qb),
        Condition::Lte(f, v) => compare(f, "<=", v, qb),
        Condition::Gt(f, v) => compare(f, ">", v, qb),
        Condition::Gte(f, v) => compare(f, ">=", v, qb),
        Condition::In(f, list) => membership(f, list, false, qb),
        Condition::NotIn(f, list) => membership(f, list, true, qb),
        Condition::Contains(f, v) => match expr(f) {
            Expr::Json(col, path) => {
                qb.push("case jsonb_typeof");
                json(col, path, qb);
                qb.push(" when 'array' then ");
                json(col, path, qb);
                qb.push(" @> jsonb_build_array(");
                qb.push_bind(scalar_json(v));
                qb.push("::jsonb)");
                if let Scalar::Str(s) = v {
                    qb.push(" when 'string' then strpos((");
                    json(col, path, qb);
                    qb.push(" #>> '{}'), ");
                    qb.push_bind(s.clone());
                    qb.push(") > 0");
                }
                qb.push(" else false end");
            }
            Expr::Text(col) => match v {
                Scalar::Str(s) => {
                    qb.push(format!("strpos({col}, "));
                    qb.push_bind(s.clone());
                    qb.push(") > 0");
                }
                _ => {
                    qb.push("false");
                }
            },
            Expr::Time(_) => {
                qb.push("false");
            }
        },
        Condition::StartsWith(f, s) => match expr(f) {
            Expr::Json(col, path) => {
                qb.push("case when jsonb_typeof");
                json(col, path, qb);
                qb.push(" = 'string' then starts_with((");
                json(col, path, qb);
                qb.push(" #>> '{}'), ");
                qb.push_bind(s.clone());
                qb.push(") else false end");
            }
            Expr::Text(col) => {
                qb.push(format!("starts_with({col}, "));
                qb.push_bind(s.clone());
                qb.push(")");
            }
            Expr::Time(_) => {
                qb.push("false");
            }
        },
        Condition::Exists(f, want) => {
            let null_test = if *want { " is not null" } else { " is null" };
            match expr(f) {
                Expr::Json(col, path) => {
                    json(col, path, qb);
                    qb.push(null_test);
                }
                Expr::Text(_) => {
                    qb.push(if *want { "true" } else { "false" });
                }
                Expr::Time(col) => {
                    qb.push(format!("{col}{null_test}"));
                }
            }
        }
        Condition::Within(f, d) => time(f, ">=", now - *d, qb),
        Condition::Before(f, w) => time(f, "<", w.resolve(now), qb),
        Condition::After(f, w) => time(f, ">", w.resolve(now), qb),
        Condition::CountryIn(codes, negate) => {
            let patterns: Vec<String> = codes.iter().map(|c| format!("+{c}%")).collect();
            qb.push(if *negate { "not (" } else { "(" });
            qb.push("phone_number like any(");
            qb.push_bind(patterns);
            qb.push("))");
        }
        Condition::Subscribed(topic, subscribed) => {
            qb.push("(coalesce((select ts.subscribed from topic_subscriptions ts where ts.phone_number = users.phone_number and ts.topic = ");
            qb.push_bind(topic.clone());
            qb.push("), true) = ");
            qb.push_bind(*subscribed);
            qb.push(")");
        }
        Condition::Event(e) => event(e, qb, now),
    }
}

/// Counts the person's matching events up to `at_least` (no further: the
/// answer is known by then) and compares.
fn event(e: &EventCondition, qb: Qb<'_>, now: DateTime<Utc>) {
    qb.push(if e.did { "(" } else { "not (" });
    qb.push(format!(
        "(select count(*) from (select 1 from events {EVENT_ALIAS} \
         where {EVENT_ALIAS}.phone_number = users.phone_number and {EVENT_ALIAS}.name = "
    ));
    qb.push_bind(e.name.clone());
    if let Some(d) = e.within {
        qb.push(format!(" and {EVENT_ALIAS}.occurred_at >= "));
        qb.push_bind(now - d);
    }
    if let Some(filter) = &e.filter {
        qb.push(" and ");
        node(filter, qb, now);
    }
    qb.push(" limit ");
    qb.push_bind(e.at_least);
    qb.push(") counted) >= ");
    qb.push_bind(e.at_least);
    qb.push(")");
}

fn time(f: &Field, op: &str, at: DateTime<Utc>, qb: Qb<'_>) {
    match expr(f) {
        Expr::Time(col) => {
            qb.push(format!("coalesce({col} {op} "));
            qb.push_bind(at);
            qb.push(", false)");
        }
        _ => {
            qb.push("false");
        }
    }
}

fn scalar_json(v: &Scalar) -> serde_json::Value {
    match v {
        Scalar::Str(s) => s.clone().into(),
        Scalar::Num(n) => (*n).into(),
        Scalar::Bool(b) => (*b).into(),
    }
}
