//! The segment DSL (DESIGN §4): who a campaign is for.
//!
//! One parser validates a JSON definition and names the JSON path of every
//! problem ([`Segment::parse`]); one compiler turns a segment into a
//! parameterized SQL predicate over `users` ([`Segment::push_predicate`]); one
//! evaluator answers for a single user ([`Segment::matches`]). Both give every
//! condition two-valued meaning: a condition on a missing attribute, or on an
//! attribute of another type than the value, is false, and `not` negates that.
//! Event conditions ask whether a person did something (`order.placed` at
//! least twice within 30 days, with a total over 50); the same grammar over an
//! event's `properties` alone is a triggered campaign's filter
//! ([`Segment::parse_event_filter`], [`Segment::matches_event`]).
//! The grammar with examples is in `docs/segments.md`.

mod compile;
mod eval;
mod parse;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

pub use eval::{EventFact, UserFacts};

/// Nesting depth at most.
pub const MAX_DEPTH: usize = 16;
/// Nodes (boolean and leaf) at most.
pub const MAX_NODES: usize = 500;
/// Values in one `in` / `not_in` list at most.
pub const MAX_LIST: usize = 10_000;
/// The largest `at_least` an event condition takes.
pub const MAX_AT_LEAST: i64 = 1_000;

/// A validated segment definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    root: Node,
}

/// A problem in a definition, at a JSON path such as `$.all[1].gte`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SegmentError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Leaf(Condition),
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    /// A dotted path into `attributes`.
    Attribute(Vec<String>),
    /// A dotted path into an event's `properties` (inside an event filter only).
    Property(Vec<String>),
    PhoneNumber,
    Consent,
    /// The country calling code of the number, written as a region (`GB`)
    /// or a code (`44`); regions that share a code (`US`, `CA`) share its users.
    Country,
    CreatedAt,
    LastInboundAt,
}

/// A JSON scalar a condition compares with.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// A point in time: fixed, or a duration before the evaluation time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    At(DateTime<Utc>),
    Ago(Duration),
}

impl When {
    fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            When::At(t) => t,
            When::Ago(d) => now - d,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Eq(Field, Scalar),
    Ne(Field, Scalar),
    Lt(Field, Scalar),
    Lte(Field, Scalar),
    Gt(Field, Scalar),
    Gte(Field, Scalar),
    In(Field, Vec<Scalar>),
    NotIn(Field, Vec<Scalar>),
    Contains(Field, Scalar),
    StartsWith(Field, String),
    Exists(Field, bool),
    /// The timestamp is at or after `now - duration`.
    Within(Field, Duration),
    Before(Field, When),
    After(Field, When),
    /// Country conditions compile to calling-code prefixes of `phone_number`.
    CountryIn(Vec<u16>, bool),
    /// Subscribed to the topic (no `topic_subscriptions` row means subscribed).
    Subscribed(String, bool),
    Event(Box<EventCondition>),
}

/// Did (or did not) the person do `name` at least `at_least` times, within
/// the last `within` when given, counting only events that pass `filter`.
#[derive(Debug, Clone, PartialEq)]
struct EventCondition {
    name: String,
    did: bool,
    at_least: i64,
    within: Option<Duration>,
    filter: Option<Node>,
}

impl Segment {
    /// A segment of people.
    pub fn parse(definition: &Value) -> Result<Self, SegmentError> {
        parse::parse(definition, parse::Scope::People)
    }

    /// A filter over one event's `properties`: the same grammar with
    /// `{"property": "total", "gte": 50}` leaves and nothing else.
    pub fn parse_event_filter(definition: &Value) -> Result<Self, SegmentError> {
        parse::parse(definition, parse::Scope::Properties)
    }

    /// Whether `user` is in the segment at `now`.
    pub fn matches(&self, user: &UserFacts<'_>, now: DateTime<Utc>) -> bool {
        eval::node(&self.root, &eval::Facts::User(user), now)
    }

    /// Whether an event with these `properties` passes an event filter.
    pub fn matches_event(&self, properties: &Value) -> bool {
        eval::node(&self.root, &eval::Facts::Properties(properties), Utc::now())
    }

    /// Appends the predicate for `now()`.
    pub fn push_predicate(&self, qb: &mut sqlx::QueryBuilder<sqlx::Postgres>) {
        self.push_predicate_at(qb, Utc::now());
    }

    /// Appends a parenthesized boolean expression over the columns of `users`
    /// (unqualified), every value a bind parameter.
    pub fn push_predicate_at(
        &self,
        qb: &mut sqlx::QueryBuilder<sqlx::Postgres>,
        now: DateTime<Utc>,
    ) {
        compile::node(&self.root, qb, now);
    }
}
