//! The PostgreSQL pool and the embedded migrations.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

/// The migrations in `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool that connects lazily, so a function starts (and answers 503) while
/// the database is away, and fails a request fast rather than hanging.
pub fn pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let options: sqlx::postgres::PgConnectOptions = config.url.expose().parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(
            options.options([("statement_timeout", config.statement_timeout_ms.to_string())]),
        ))
}

/// Applies pending migrations (the migration job and the local stack do this;
/// the functions themselves never change the schema).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await?;
    // The partitioned tables' months from now on, and any month a migration
    // left rows of in a default partition (lifecycle::partitions).
    crate::lifecycle::partitions::ensure_all(pool, chrono::Utc::now(), 3)
        .await
        .map_err(sqlx::migrate::MigrateError::Execute)?;
    Ok(())
}
