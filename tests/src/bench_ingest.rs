//! `bench ingest`: imports a generated 1,000,000-row CSV from a local file
//! into a fresh database, in a child process so that its peak RSS is the
//! import's own, and compares it with the floor: the same file loaded with a
//! bare `COPY` into a staging table plus one upsert statement.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::bench::Figure;
use shared::domain::PhoneNumber;
use shared::gcp::ObjectRef;
use shared::gcp::objects::LocalObjects;
use shared::import::run::{Claim, ImportSettings, Importer, Staging};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::io::AsyncReadExt;

const ROWS: u64 = 1_000_000;
const CHILD: &str = "BENCH_INGEST_CHILD";
const FILE_NAME: &str = "bench-users.csv";

/// What the child reports on its last line.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildReport {
    seconds: f64,
    staging: f64,
    rows_read: i64,
    inserted: i64,
    rejected: i64,
    duplicates: i64,
    peak_rss_kib: u64,
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    if std::env::var_os(CHILD).is_some() {
        child().await?;
        return Ok(vec![]);
    }
    let base = crate::bench::admin_url();
    let dir = std::env::temp_dir().join(format!("bench-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(FILE_NAME);
    check_generated_numbers()?;
    let bytes = generate(&file)?;
    println!(
        "ingest bench: {ROWS} rows (CSV, {:.1} MiB, phone + 5 attribute columns, 2% invalid numbers, 5% duplicates)",
        bytes as f64 / 1048576.0
    );

    let import_db = fresh_database(&base, "import").await?;
    let wall = Instant::now();
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .arg("ingest")
        .env(CHILD, "1")
        .env("DATABASE_URL", &base)
        .env("BENCH_DATABASE", &import_db)
        .env("BENCH_DIR", &dir)
        .output()
        .await?;
    let wall = wall.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "the import child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: ChildReport = serde_json::from_str(
        stdout
            .lines()
            .last()
            .context("the import child printed nothing")?,
    )?;

    let floor_db = fresh_database(&base, "floor").await?;
    let (copy_s, upsert_s) = floor(&base, &floor_db, &file).await?;
    let floor_s = copy_s + upsert_s;
    let ratio = report.seconds / floor_s;
    let rss_mb = report.peak_rss_kib as f64 * 1024.0 / 1e6;

    println!(
        "  import: {:.2} s (read+validate+COPY {:.2} s, merge {:.2} s), {:.0} rows/s, peak RSS {:.1} MB (child process wall {:.2} s; rows {}, inserted {}, rejected {}, duplicates {})",
        report.seconds,
        report.staging,
        report.seconds - report.staging,
        report.rows_read as f64 / report.seconds,
        rss_mb,
        wall,
        report.rows_read,
        report.inserted,
        report.rejected,
        report.duplicates
    );
    println!(
        "  floor:  {floor_s:.2} s (bare COPY into a staging table {copy_s:.2} s + one upsert {upsert_s:.2} s)"
    );
    println!("  ratio:  {ratio:.2} (import / floor)");
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "  targets: 1M rows <= 20 s: {}; peak RSS <= 200 MB: {}; ratio <= 1.2: {}",
        verdict(report.seconds <= 20.0),
        verdict(rss_mb <= 200.0),
        verdict(ratio <= 1.2)
    );

    drop_database(&base, &import_db).await?;
    drop_database(&base, &floor_db).await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(vec![
        Figure::time(
            "ingest",
            format!("import {ROWS} CSV rows"),
            report.seconds,
            floor_s,
        )
        .floor_is("bare COPY into a staging table + one upsert")
        .goal(1.2),
        Figure::time("ingest", "import peak RSS", rss_mb, 200.0)
            .unit("MB")
            .floor_is("the memory budget")
            .goal(1.0),
    ])
}

/// The child: one import, as the function runs it, then its own peak RSS.
async fn child() -> anyhow::Result<()> {
    let base = std::env::var("DATABASE_URL")?;
    let database = std::env::var("BENCH_DATABASE")?;
    let dir = PathBuf::from(std::env::var("BENCH_DIR")?);
    let options = PgConnectOptions::from_str(&base)?.database(&database);
    let db = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options)
        .await?;
    let size = std::fs::metadata(dir.join(FILE_NAME))?.len();
    let importer = Importer::new(
        db,
        Arc::new(LocalObjects::new(dir)),
        ImportSettings {
            default_region: Some("US".parse().map_err(anyhow::Error::msg)?),
            ..ImportSettings::default()
        },
    );
    let object = ObjectRef {
        bucket: "bench".into(),
        name: FILE_NAME.into(),
        generation: 1,
        size: Some(size),
        content_type: Some("text/csv".into()),
    };
    let started = Instant::now();
    let Claim::Run(claimed) = importer.claim(&object).await? else {
        bail!("the import did not run");
    };
    let Staging::Staged(staged) = claimed.stage().await? else {
        bail!("the file did not stage");
    };
    let staging = started.elapsed().as_secs_f64();
    let import = staged.merge().await?;
    let seconds = started.elapsed().as_secs_f64();
    if import.state != "completed" {
        bail!("the import failed: {:?}", import.failure_reason);
    }
    let report = ChildReport {
        seconds,
        staging,
        rows_read: import.rows_read,
        inserted: import.inserted,
        rejected: import.rejected,
        duplicates: import.duplicates,
        peak_rss_kib: peak_rss_kib()?,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `VmHWM`: the process's peak resident set size.
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}

/// The valid number of the `n`th unique user: half in the US, the rest in
/// five other countries, all in E.164.
fn phone(n: u64) -> String {
    let k = n / 10;
    match n % 10 {
        0..5 => format!("+1415{:07}", 2_000_000 + k * 5 + n % 10),
        5 => format!("+447912{:06}", k),
        6 => format!("+49151{:08}", k),
        7 => format!("+336{:08}", 10_000_000 + k),
        8 => format!("+3461{:07}", k),
        _ => format!("+9198{:08}", k),
    }
}

const INVALID: [&str; 5] = [
    "+1555",
    "12345",
    "not a number",
    "+11234567890",
    "+99912345678",
];
const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST: [&str; 6] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth",
];
const CITIES: [&str; 6] = ["Paris", "Lisbon", "New York", "Madrid", "Berlin", "Mumbai"];

/// The generator makes valid numbers only where it means to.
fn check_generated_numbers() -> anyhow::Result<()> {
    let us = Some("US".parse().map_err(anyhow::Error::msg)?);
    for n in (0..ROWS).step_by(997) {
        if let Err(e) = PhoneNumber::parse(&phone(n), us) {
            bail!("the bench generates an invalid number for user {n}: {e}");
        }
    }
    if let Some(valid) = INVALID.iter().find(|i| PhoneNumber::parse(i, us).is_ok()) {
        bail!("the bench's invalid number {valid} is valid");
    }
    Ok(())
}

/// Writes the CSV: 2% invalid numbers, 5% repeats of an earlier user.
fn generate(path: &Path) -> anyhow::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(
        out,
        "phone_number,first_name,last_name,age,city,signup_date"
    )?;
    let mut unique = 0u64;
    for row in 0..ROWS {
        let number = if row % 50 == 7 {
            INVALID[(row / 50 % 5) as usize].to_owned()
        } else if row % 20 == 3 && unique > 1000 {
            phone(unique - 1000)
        } else {
            unique += 1;
            phone(unique - 1)
        };
        let city = CITIES[(row % 6) as usize];
        let city = if city.contains(' ') {
            format!("\"{city}\"")
        } else {
            city.to_owned()
        };
        writeln!(
            out,
            "{number},{},{},{},{city},2024-{:02}-{:02}",
            FIRST[(row % 8) as usize],
            LAST[(row % 6) as usize],
            18 + row % 60,
            1 + row % 12,
            1 + row % 28
        )?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

async fn fresh_database(base: &str, purpose: &str) -> anyhow::Result<String> {
    let name = format!("bench_ingest_{purpose}_{}", std::process::id());
    let mut admin = PgConnection::connect(base).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database if exists {name} with (force)"
    )))
    .execute(&mut admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let mut conn = PgConnectOptions::from_str(base)?
        .database(&name)
        .connect()
        .await?;
    shared::db::MIGRATOR.run(&mut conn).await?;
    conn.close().await?;
    Ok(name)
}

async fn drop_database(base: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(base).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database if exists {name} with (force)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}

/// The floor: the file as it is, `COPY`ed into a staging table, then one
/// upsert that keeps the last row per number (no validation beyond the E.164
/// shape, no rejects, no consent, no progress). Returns (copy, upsert) seconds.
async fn floor(base: &str, database: &str, file: &Path) -> anyhow::Result<(f64, f64)> {
    let mut conn = PgConnectOptions::from_str(base)?
        .database(database)
        .connect()
        .await?;
    sqlx::query(
        "create unlogged table floor_staging (
             line bigint generated always as identity,
             phone_number text, first_name text, last_name text, age text, city text, signup_date text)",
    )
    .execute(&mut conn)
    .await?;

    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "copy floor_staging (phone_number, first_name, last_name, age, city, signup_date)
             from stdin (format csv, header true)",
        )
        .await?;
    let mut input = tokio::fs::File::open(file).await?;
    let mut buf = vec![0u8; 512 * 1024];
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        copy.send(&buf[..n]).await?;
    }
    copy.finish().await?;
    let copy_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    sqlx::query(
        "insert into users as u (phone_number, attributes)
         select distinct on (phone_number) phone_number,
                jsonb_build_object('first_name', first_name, 'last_name', last_name,
                                   'age', age::int, 'city', city, 'signup_date', signup_date)
         from floor_staging
         where phone_number ~ '^\\+[1-9][0-9]{6,14}$'
         order by phone_number, line desc
         on conflict (phone_number) do update set attributes = u.attributes || excluded.attributes",
    )
    .execute(&mut conn)
    .await?;
    let upsert_s = started.elapsed().as_secs_f64();
    conn.close().await?;
    Ok((copy_s, upsert_s))
}
