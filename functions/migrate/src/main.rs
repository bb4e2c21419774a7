//! The migration job: applies every pending migration, then exits.

use shared::config::{DatabaseConfig, load_or_exit};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let config = DatabaseConfig {
        // A migration runs as long as its table is big.
        statement_timeout_ms: 0,
        ..load_or_exit(DatabaseConfig::from_env)
    };
    let db = shared::db::pool(&config)?;
    shared::db::migrate(&db).await?;
    let applied = shared::db::MIGRATOR.iter().count();
    tracing::info!(migrations = applied, "database schema is up to date");
    Ok(())
}
