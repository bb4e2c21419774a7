//! Serves the API on loopback with a fresh, migrated database and a known
//! key, for schemathesis (`scripts/schemathesis`). The database is created
//! on the server at `DATABASE_URL` and dropped again on SIGTERM or Ctrl-C.
//!
//! Environment: `DATABASE_URL` (a role that may create databases),
//! `PORT` (default 18089), `API_KEY` (the plain key; default `fuzz-key`).

use std::sync::Arc;

use shared::http::auth::ApiKeys;
use shared::http::server::{shutdown_signal, with_standard_routes};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let admin: PgConnectOptions = std::env::var("DATABASE_URL")?.parse()?;
    let port: u16 = std::env::var("PORT").map_or(Ok(18089), |p| p.parse())?;
    let key = std::env::var("API_KEY").unwrap_or_else(|_| "fuzz-key".to_owned());
    let name = format!("api_fuzz_{}", std::process::id());

    let mut conn = PgConnection::connect_with(&admin).await?;
    sqlx::query(AssertSqlSafe(format!("create database {name}")))
        .execute(&mut conn)
        .await?;
    let db = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(admin.clone().database(&name))
        .await?;
    shared::db::migrate(&db).await?;

    let state = api::AppState {
        db: db.clone(),
        keys: Arc::new(ApiKeys::from_hashes(&[ApiKeys::hash(&key)]).map_err(anyhow::Error::msg)?),
        default_region: Some("US".parse().map_err(anyhow::Error::msg)?),
    };
    let app = with_standard_routes(api::router(state), db.clone(), None);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "serving http://127.0.0.1:{port}{} on database {name}",
        api::OPENAPI_PATH
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;

    db.close().await;
    sqlx::query(AssertSqlSafe(format!("drop database {name} with (force)")))
        .execute(&mut conn)
        .await?;
    served?;
    Ok(())
}
