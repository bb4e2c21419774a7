//! `local services up|down`: a private PostgreSQL cluster and Redis for the
//! test command, in a project folder on free ports, so the tests never touch
//! the machine's own databases.

use std::net::TcpListener;
use std::path::Path;

use crate::postgres::{EmbeddedPostgres, ensure_database};
use crate::redis_server::EmbeddedRedis;

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Starts both servers under `dir` and returns the shell lines that point
/// the tests at them (`export DATABASE_URL=…`, `export REDIS_URL=…`).
pub async fn up(dir: &Path) -> anyhow::Result<String> {
    down(dir);
    let pg = EmbeddedPostgres::new(dir.join("postgres"), free_port()?)?;
    pg.start()?;
    ensure_database(&pg.url("postgres"), "postgres").await?;
    let redis = EmbeddedRedis::new(dir.join("redis"), free_port()?)?;
    redis.start()?;
    Ok(format!(
        "export DATABASE_URL={}\nexport REDIS_URL={}\n",
        pg.url("postgres"),
        redis.url()
    ))
}

/// Stops what `up` started under `dir` (the cluster's data stays for next time).
pub fn down(dir: &Path) {
    if let Ok(pg) = EmbeddedPostgres::new(dir.join("postgres"), 0) {
        pg.stop_if_running();
    }
    crate::redis_server::stop_pid_file(&dir.join("redis").join("redis.pid"));
}
