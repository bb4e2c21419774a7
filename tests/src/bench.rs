//! What every benchmark shares: a fresh database, timed concurrent loops and
//! the percentiles they print.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

/// The server the benchmarks create their databases on.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Drops and recreates database `name` on the admin server, migrated.
pub async fn fresh_database(name: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    drop_database(name).await?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url())
        .await?;
    sqlx::query(AssertSqlSafe(format!("create database {name}")))
        .execute(&admin)
        .await?;
    admin.close().await;
    open_database(name, max_connections).await
}

/// A pool on the existing bench database `name`, migrated.
pub async fn open_database(name: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let mut url = url::Url::parse(&admin_url())?;
    url.set_path(name);
    let db = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(url.as_str())
        .await?;
    shared::db::migrate(&db).await?;
    Ok(db)
}

/// Drops the bench database `name`, whoever is connected.
pub async fn drop_database(name: &str) -> anyhow::Result<()> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url())
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "drop database if exists {name} with (force)"
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    Ok(())
}

/// What a timed run measured.
pub struct Run {
    pub label: String,
    pub ops: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    pub fn row(&self) -> String {
        format!(
            "{:<28} {:>9} {:>7} {:>10.0} {:>8.2} {:>8.2}",
            self.label,
            self.ops,
            self.errors,
            self.per_second(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99)
        )
    }

    pub fn header() -> String {
        format!(
            "{:<28} {:>9} {:>7} {:>10} {:>8} {:>8}",
            "path", "ops", "errors", "ops/s", "p50 ms", "p99 ms"
        )
    }
}

/// Runs `op(i)` from `concurrency` tasks for `duration`, `i` counting up across
/// all tasks, and collects every latency. An `Err` counts as an error.
pub async fn run_for<F, Fut>(label: &str, concurrency: usize, duration: Duration, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(64 * 1024);
            let mut errors = 0;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match op(i).await {
                    Ok(()) => latencies.push(t.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies_us = vec![];
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("bench task");
        latencies_us.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Run {
        label: label.to_owned(),
        ops: latencies_us.len(),
        errors,
        elapsed,
        latencies_us,
    }
}

/// `BENCH_SECONDS`, default `default`.
pub fn seconds(default: u64) -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

/// One benchmark figure beside its floor: what `bench all` prints as one
/// table, so that runs compare by ratio rather than by absolute numbers that
/// change with the machine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figure {
    pub bench: &'static str,
    /// What was measured (`status callbacks, HTTP, 16 connections`).
    pub what: String,
    pub value: f64,
    /// The same work done the plainest way, in the same run.
    pub floor: f64,
    /// What the floor is.
    pub floor_is: String,
    pub unit: &'static str,
    /// Whether more is better (a rate) or less is (a time).
    pub higher_is_better: bool,
    /// The ratio the design aims for, in the figure's own direction: at least
    /// this for a rate, at most this for a time.
    pub goal: Option<f64>,
}

impl Figure {
    /// A time, where less is better: `ratio = value / floor`.
    pub fn time(bench: &'static str, what: impl Into<String>, value: f64, floor: f64) -> Self {
        Self {
            bench,
            what: what.into(),
            value,
            floor,
            floor_is: String::new(),
            unit: "s",
            higher_is_better: false,
            goal: None,
        }
    }

    /// A rate, where more is better: `ratio = value / floor`.
    pub fn rate(bench: &'static str, what: impl Into<String>, value: f64, floor: f64) -> Self {
        Self {
            unit: "ops/s",
            higher_is_better: true,
            ..Self::time(bench, what, value, floor)
        }
    }

    pub fn unit(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }

    pub fn floor_is(mut self, floor_is: impl Into<String>) -> Self {
        self.floor_is = floor_is.into();
        self
    }

    pub fn goal(mut self, goal: f64) -> Self {
        self.goal = Some(goal);
        self
    }

    pub fn ratio(&self) -> f64 {
        self.value / self.floor
    }

    /// `None` without a goal.
    pub fn met(&self) -> Option<bool> {
        self.goal.map(|goal| {
            if self.higher_is_better {
                self.ratio() >= goal
            } else {
                self.ratio() <= goal
            }
        })
    }

    pub fn markdown_header() -> &'static str {
        "| bench | figure | value | floor | floor is | ratio | goal | met |\n|---|---|---:|---:|---|---:|---|---|"
    }

    pub fn markdown_row(&self) -> String {
        let goal = match (self.goal, self.higher_is_better) {
            (Some(g), true) => format!("≥ {g:.2}"),
            (Some(g), false) => format!("≤ {g:.2}"),
            (None, _) => String::new(),
        };
        let met = match self.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        format!(
            "| {} | {} | {} {} | {} {} | {} | {:.2} | {goal} | {met} |",
            self.bench,
            self.what,
            number(self.value),
            self.unit,
            number(self.floor),
            self.unit,
            self.floor_is,
            self.ratio()
        )
    }
}

/// A figure to three significant digits or so, without a trail of decimals.
fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Prints figures as one markdown table.
pub fn print_figures(figures: &[Figure]) {
    println!("{}", Figure::markdown_header());
    for f in figures {
        println!("{}", f.markdown_row());
    }
}

/// The next transaction id the server will assign: the difference between two
/// readings counts the write transactions in between (on a quiet server).
pub async fn next_xid(db: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            .fetch_one(db)
            .await?,
    )
}
