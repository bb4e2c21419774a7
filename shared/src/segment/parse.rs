//! JSON → [`Segment`], naming the JSON path of every problem.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use super::{
    Condition, EventCondition, Field, MAX_AT_LEAST, MAX_DEPTH, MAX_LIST, MAX_NODES, Node, Scalar,
    Segment, SegmentError, When,
};

/// What a definition's leaves may look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// A person: attributes, built-in fields, topics and events.
    People,
    /// One event's properties (an event condition's `where`, a trigger's filter).
    Properties,
}

const OPERATORS: &[&str] = &[
    "eq",
    "ne",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "exists",
    "within",
    "before",
    "after",
];

struct Parser {
    nodes: usize,
}

pub(super) fn parse(definition: &Value, scope: Scope) -> Result<Segment, SegmentError> {
    let mut p = Parser { nodes: 0 };
    let root = p.node(definition, "$", 1, scope)?;
    Ok(Segment { root })
}

fn err(path: &str, message: impl Into<String>) -> SegmentError {
    SegmentError {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Parser {
    fn node(
        &mut self,
        v: &Value,
        path: &str,
        depth: usize,
        scope: Scope,
    ) -> Result<Node, SegmentError> {
        if depth > MAX_DEPTH {
            return Err(err(path, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(err(path, format!("more than {MAX_NODES} nodes")));
        }
        let Value::Object(obj) = v else {
            return Err(err(path, "expected an object"));
        };
        for (key, make) in [
            ("all", Node::All as fn(Vec<Node>) -> Node),
            ("any", Node::Any),
        ] {
            if let Some(children) = obj.get(key) {
                only_key(obj, key, path)?;
                let Value::Array(items) = children else {
                    return Err(err(
                        &format!("{path}.{key}"),
                        "expected an array of conditions",
                    ));
                };
                let nodes = items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| self.node(c, &format!("{path}.{key}[{i}]"), depth + 1, scope))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(make(nodes));
            }
        }
        if let Some(inner) = obj.get("not") {
            only_key(obj, "not", path)?;
            return Ok(Node::Not(Box::new(self.node(
                inner,
                &format!("{path}.not"),
                depth + 1,
                scope,
            )?)));
        }
        match scope {
            Scope::People if obj.contains_key("event") => {
                self.event(obj, path, depth).map(Node::Leaf)
            }
            Scope::People if obj.contains_key("property") => Err(err(
                &format!("{path}.property"),
                "property conditions apply inside an event condition's \"where\"",
            )),
            Scope::People => leaf(obj, path).map(Node::Leaf),
            Scope::Properties => property_leaf(obj, path).map(Node::Leaf),
        }
    }

    /// `{"event": "order.placed", "did": true, "at_least": 2, "within": "30d",
    /// "where": {"property": "total", "gte": 50}}`.
    fn event(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<Condition, SegmentError> {
        const KEYS: [&str; 5] = ["event", "did", "at_least", "within", "where"];
        if let Some(other) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(err(
                &format!("{path}.{other}"),
                format!("an event condition takes {}", KEYS.join(", ")),
            ));
        }
        let name = obj["event"].as_str().ok_or_else(|| {
            err(
                &format!("{path}.event"),
                "expected an event name (a string)",
            )
        })?;
        let name =
            crate::domain::EventName::parse(name).map_err(|e| err(&format!("{path}.event"), e))?;
        let did = match obj.get("did") {
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(err(&format!("{path}.did"), "expected true or false")),
            None => {
                return Err(err(
                    path,
                    "missing \"did\": true (did it) or false (did not)",
                ));
            }
        };
        let at_least = match obj.get("at_least") {
            None => 1,
            Some(v) => v
                .as_i64()
                .filter(|n| (1..=MAX_AT_LEAST).contains(n))
                .ok_or_else(|| {
                    err(
                        &format!("{path}.at_least"),
                        format!("expected a whole number from 1 to {MAX_AT_LEAST}"),
                    )
                })?,
        };
        let within = obj
            .get("within")
            .map(|v| duration(v, &format!("{path}.within")))
            .transpose()?;
        let filter = obj
            .get("where")
            .map(|v| self.node(v, &format!("{path}.where"), depth + 1, Scope::Properties))
            .transpose()?;
        Ok(Condition::Event(Box::new(EventCondition {
            name: name.as_str().to_owned(),
            did,
            at_least,
            within,
            filter,
        })))
    }
}

/// `{"property": "order.total", "gte": 50}`: a leaf over an event's properties.
fn property_leaf(obj: &Map<String, Value>, path: &str) -> Result<Condition, SegmentError> {
    let Some(p) = obj.get("property") else {
        return Err(err(
            path,
            "expected \"all\", \"any\", \"not\", or a condition with \"property\" (an event filter looks at the event's properties only)",
        ));
    };
    let field = match attribute(p, &format!("{path}.property"))? {
        Field::Attribute(parts) => Field::Property(parts),
        other => other,
    };
    operator(obj, &["property"], field, path)
}

fn only_key(obj: &Map<String, Value>, key: &str, path: &str) -> Result<(), SegmentError> {
    match obj.keys().find(|k| *k != key) {
        Some(other) => Err(err(
            &format!("{path}.{other}"),
            format!("unexpected beside \"{key}\""),
        )),
        None => Ok(()),
    }
}

/// `{"topic": "promotions", "subscribed": true}`.
fn topic(obj: &Map<String, Value>, name: &Value, path: &str) -> Result<Condition, SegmentError> {
    let name = name
        .as_str()
        .ok_or_else(|| err(&format!("{path}.topic"), "expected a topic name (a string)"))?;
    let topic = crate::domain::Topic::parse(name).map_err(|e| err(&format!("{path}.topic"), e))?;
    if let Some(other) = obj.keys().find(|k| *k != "topic" && *k != "subscribed") {
        return Err(err(
            &format!("{path}.{other}"),
            "a topic condition takes only \"subscribed\"",
        ));
    }
    let subscribed = match obj.get("subscribed") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(err(&format!("{path}.subscribed"), "expected true or false")),
        None => return Err(err(path, "missing \"subscribed\": true or false")),
    };
    Ok(Condition::Subscribed(topic.as_str().to_owned(), subscribed))
}

fn leaf(obj: &Map<String, Value>, path: &str) -> Result<Condition, SegmentError> {
    if let Some(name) = obj.get("topic") {
        return topic(obj, name, path);
    }
    let field = match (obj.get("attribute"), obj.get("field")) {
        (Some(_), Some(_)) => {
            return Err(err(
                path,
                "give either \"attribute\" or \"field\", not both",
            ));
        }
        (Some(a), None) => attribute(a, &format!("{path}.attribute"))?,
        (None, Some(f)) => builtin(f, &format!("{path}.field"))?,
        (None, None) => {
            return Err(err(
                path,
                "expected \"all\", \"any\", \"not\", or a condition with \"attribute\", \"field\", \"topic\" or \"event\"",
            ));
        }
    };
    operator(obj, &["attribute", "field"], field, path)
}

/// The one operator beside the field key(s) of a leaf.
fn operator(
    obj: &Map<String, Value>,
    field_keys: &[&str],
    field: Field,
    path: &str,
) -> Result<Condition, SegmentError> {
    let mut ops = obj
        .iter()
        .filter(|(k, _)| !field_keys.contains(&k.as_str()));
    let Some((op, value)) = ops.next() else {
        return Err(err(
            path,
            format!("missing operator: one of {}", OPERATORS.join(", ")),
        ));
    };
    if let Some((extra, _)) = ops.next() {
        return Err(err(
            &format!("{path}.{extra}"),
            "one operator per condition",
        ));
    }
    let vpath = format!("{path}.{op}");
    if !OPERATORS.contains(&op.as_str()) {
        return Err(err(
            &vpath,
            format!("unknown operator, expected one of {}", OPERATORS.join(", ")),
        ));
    }
    condition(field, op, value, &vpath)
}

fn attribute(v: &Value, path: &str) -> Result<Field, SegmentError> {
    let Value::String(s) = v else {
        return Err(err(
            path,
            "expected a dotted attribute path such as \"plan.tier\"",
        ));
    };
    let parts: Vec<String> = s.split('.').map(str::to_owned).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(path, format!("{s:?} has an empty path segment")));
    }
    Ok(Field::Attribute(parts))
}

fn builtin(v: &Value, path: &str) -> Result<Field, SegmentError> {
    match v.as_str() {
        Some("phone_number") => Ok(Field::PhoneNumber),
        Some("consent") => Ok(Field::Consent),
        Some("country") => Ok(Field::Country),
        Some("created_at") => Ok(Field::CreatedAt),
        Some("last_inbound_at") => Ok(Field::LastInboundAt),
        _ => Err(err(
            path,
            "unknown field, expected phone_number, consent, country, created_at or last_inbound_at",
        )),
    }
}

fn is_time(f: &Field) -> bool {
    matches!(f, Field::CreatedAt | Field::LastInboundAt)
}

fn condition(field: Field, op: &str, v: &Value, path: &str) -> Result<Condition, SegmentError> {
    if op == "exists" {
        let Value::Bool(b) = v else {
            return Err(err(path, "expected true or false"));
        };
        return Ok(Condition::Exists(field, *b));
    }
    if is_time(&field) {
        return match op {
            "within" => Ok(Condition::Within(field, duration(v, path)?)),
            "before" => Ok(Condition::Before(field, when(v, path)?)),
            "after" => Ok(Condition::After(field, when(v, path)?)),
            _ => Err(err(
                path,
                "time fields take within, before, after or exists",
            )),
        };
    }
    if matches!(op, "within" | "before" | "after") {
        return Err(err(
            path,
            "time operators apply to created_at and last_inbound_at",
        ));
    }
    if field == Field::Country {
        let negate = match op {
            "eq" | "in" => false,
            "ne" | "not_in" => true,
            _ => return Err(err(path, "country takes eq, ne, in or not_in")),
        };
        let values: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            single if op == "eq" || op == "ne" => vec![single],
            _ => return Err(err(path, "expected an array of countries")),
        };
        let codes = values
            .iter()
            .enumerate()
            .map(|(i, c)| country_code(c, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Condition::CountryIn(codes, negate));
    }
    if field == Field::Consent && !matches!(op, "eq" | "ne" | "in" | "not_in") {
        return Err(err(path, "consent takes eq, ne, in or not_in"));
    }
    let f = field;
    Ok(match op {
        "eq" => Condition::Eq(f, scalar(v, path)?),
        "ne" => Condition::Ne(f, scalar(v, path)?),
        "lt" | "lte" | "gt" | "gte" => {
            let s = scalar(v, path)?;
            if matches!(s, Scalar::Bool(_)) {
                return Err(err(
                    path,
                    "ordering compares numbers or strings, not booleans",
                ));
            }
            match op {
                "lt" => Condition::Lt(f, s),
                "lte" => Condition::Lte(f, s),
                "gt" => Condition::Gt(f, s),
                _ => Condition::Gte(f, s),
            }
        }
        "in" | "not_in" => {
            let Value::Array(items) = v else {
                return Err(err(path, "expected an array of values"));
            };
            if items.len() > MAX_LIST {
                return Err(err(
                    path,
                    format!("list has {} values, at most {MAX_LIST}", items.len()),
                ));
            }
            let list = items
                .iter()
                .enumerate()
                .map(|(i, x)| scalar(x, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            if op == "in" {
                Condition::In(f, list)
            } else {
                Condition::NotIn(f, list)
            }
        }
        "contains" => Condition::Contains(f, scalar(v, path)?),
        "starts_with" => match v {
            Value::String(s) => Condition::StartsWith(f, s.clone()),
            _ => return Err(err(path, "expected a string")),
        },
        _ => unreachable!("operators are checked against OPERATORS"),
    })
}

fn scalar(v: &Value, path: &str) -> Result<Scalar, SegmentError> {
    match v {
        Value::String(s) => Ok(Scalar::Str(s.clone())),
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Scalar::Num)
            .ok_or_else(|| err(path, "number out of range")),
        Value::Null => Err(err(path, "null is not a value; use {\"exists\": false}")),
        _ => Err(err(path, "expected a string, number or boolean")),
    }
}

fn country_code(v: &Value, path: &str) -> Result<u16, SegmentError> {
    let Some(s) = v.as_str() else {
        return Err(err(
            path,
            "expected a region such as \"GB\" or a calling code such as \"44\"",
        ));
    };
    let s = s.trim().trim_start_matches('+');
    if let Ok(code) = s.parse::<u16>() {
        return Ok(code);
    }
    s.to_ascii_uppercase()
        .parse::<phonenumber::country::Id>()
        .ok()
        .and_then(|id| phonenumber::metadata::DATABASE.by_id(id.as_ref()))
        .map(|m| m.country_code())
        .ok_or_else(|| err(path, format!("unknown country {s:?}")))
}

/// `"90m"`, `"12h"`, `"7d"`, `"2w"`.
pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()]
        .parse()
        .ok()
        .filter(|n| *n >= 0)?;
    match unit {
        's' => Duration::try_seconds(n),
        'm' => Duration::try_minutes(n),
        'h' => Duration::try_hours(n),
        'd' => Duration::try_days(n),
        'w' => Duration::try_weeks(n),
        _ => None,
    }
}

fn duration(v: &Value, path: &str) -> Result<Duration, SegmentError> {
    v.as_str().and_then(parse_duration).ok_or_else(|| {
        err(
            path,
            "expected a duration such as \"30m\", \"12h\", \"7d\" or \"2w\"",
        )
    })
}

fn when(v: &Value, path: &str) -> Result<When, SegmentError> {
    let Some(s) = v.as_str() else {
        return Err(err(
            path,
            "expected an RFC 3339 time or a duration such as \"7d\" (that long ago)",
        ));
    };
    if let Some(d) = parse_duration(s) {
        return Ok(When::Ago(d));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| When::At(t.with_timezone(&Utc)))
        .map_err(|_| {
            err(
                path,
                format!("{s:?} is neither an RFC 3339 time nor a duration such as \"7d\""),
            )
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn error(v: Value) -> String {
        Segment::parse(&v).unwrap_err().to_string()
    }

    #[test]
    fn accepts_the_documented_shapes() {
        let def = json!({"all": [
            {"field": "consent", "eq": "opted_in"},
            {"any": [{"attribute": "plan.tier", "in": ["gold", "silver"]}, {"attribute": "age", "gte": 30}]},
            {"not": {"attribute": "vip", "eq": true}},
            {"field": "last_inbound_at", "within": "7d"},
            {"field": "created_at", "before": "2026-01-01T00:00:00Z"},
            {"field": "country", "in": ["GB", "44", "DE"]},
            {"attribute": "tags", "contains": "beta"},
            {"attribute": "email", "exists": false}
        ]});
        Segment::parse(&def).unwrap();
    }

    #[test]
    fn errors_name_the_json_path() {
        assert_eq!(
            error(
                json!({"all": [{"field": "consent", "eq": "opted_in"}, {"attribute": "age", "gte": null}]})
            ),
            "$.all[1].gte: null is not a value; use {\"exists\": false}"
        );
        assert_eq!(
            error(json!({"any": [{"not": {"attribute": "a", "between": 1}}]})),
            "$.any[0].not.between: unknown operator, expected one of eq, ne, lt, lte, gt, gte, in, not_in, contains, starts_with, exists, within, before, after"
        );
        assert!(error(json!({"all": {}})).starts_with("$.all: expected an array"));
        assert!(error(json!([1])).starts_with("$: expected an object"));
        assert!(error(json!({"field": "nope", "eq": 1})).starts_with("$.field: unknown field"));
        assert!(error(json!({"attribute": "a..b", "eq": 1})).contains("empty path segment"));
        assert!(
            error(json!({"attribute": "a", "eq": 1, "ne": 2})).starts_with("$.ne: one operator")
        );
        assert!(error(json!({"field": "created_at", "within": "soon"})).contains("duration"));
        assert!(error(json!({"attribute": "a", "within": "7d"})).contains("time operators"));
        assert!(error(json!({"field": "country", "eq": "Atlantis"})).contains("unknown country"));
        assert!(error(json!({"all": [], "any": []})).contains("unexpected beside"));
    }

    #[test]
    fn event_conditions_and_filters() {
        Segment::parse(&json!({"all": [
            {"event": "order.placed", "did": true, "at_least": 2, "within": "30d",
             "where": {"any": [{"property": "total", "gte": 50}, {"not": {"property": "coupon", "exists": true}}]}},
            {"event": "cart.abandoned", "did": false}
        ]}))
        .unwrap();
        assert_eq!(
            error(json!({"event": "order.placed"})),
            "$: missing \"did\": true (did it) or false (did not)"
        );
        assert_eq!(
            error(json!({"event": "order placed", "did": true})),
            "$.event: \"order placed\" is not an event name: a letter or digit, then letters, digits, '_', '.', ':' or '-', at most 100"
        );
        assert!(
            error(json!({"event": "x", "did": true, "at_least": 0}))
                .starts_with("$.at_least: expected a whole number from 1 to 1000")
        );
        assert!(
            error(json!({"event": "x", "did": true, "within": "soon"})).starts_with("$.within:")
        );
        assert!(error(json!({"event": "x", "did": true, "times": 2})).starts_with("$.times:"));
        // Inside `where` only the event's properties; outside it, no properties.
        assert!(
            error(json!({"event": "x", "did": true, "where": {"attribute": "a", "eq": 1}}))
                .starts_with("$.where: expected")
        );
        assert!(
            error(json!({"not": {"property": "total", "gt": 1}}))
                .starts_with("$.not.property: property conditions apply inside")
        );
        let filter = Segment::parse_event_filter(&json!({"all": [
            {"property": "total", "gte": 50}, {"property": "items.0.sku", "starts_with": "A"}
        ]}))
        .unwrap();
        assert!(filter.matches_event(&json!({"total": 60, "items": [{"sku": "A-1"}]})));
        assert!(!filter.matches_event(&json!({"total": 40, "items": [{"sku": "A-1"}]})));
        assert!(!filter.matches_event(&json!({})));
        assert!(
            Segment::parse_event_filter(&json!({"event": "x", "did": true}))
                .unwrap_err()
                .to_string()
                .starts_with("$: expected")
        );
        assert!(
            Segment::parse_event_filter(&json!({"property": "a", "eq": 1, "attribute": "b"}))
                .unwrap_err()
                .to_string()
                .contains("operator")
        );
    }

    #[test]
    fn limits_hold() {
        let mut deep = json!({"attribute": "a", "eq": 1});
        for _ in 0..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        assert!(error(deep).contains("nested deeper than 16"));
        let wide = json!({"any": (0..MAX_NODES).map(|i| json!({"attribute": "a", "eq": i})).collect::<Vec<_>>()});
        assert!(error(wide).contains("more than 500 nodes"));
        let long = json!({"attribute": "a", "in": (0..=MAX_LIST).collect::<Vec<_>>()});
        assert_eq!(error(long), "$.in: list has 10001 values, at most 10000");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Some(Duration::days(7)));
        assert_eq!(parse_duration("90m"), Some(Duration::minutes(90)));
        assert_eq!(parse_duration("-1d"), None);
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("3y"), None);
    }
}
