//! Monthly partitions: which exist, and creating the missing ones.
//!
//! [`ensure`] creates every month from the current one to `through`, and a
//! partition for every month that has rows in the default partition (rows that
//! arrived before their month existed, or rows of the table before it was
//! partitioned), moving those rows in. The migrate job, the lifecycle job and
//! each fan-out tick run it; it takes a transaction-scoped advisory lock, so
//! concurrent runs create each month once.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use super::{AuditTable, Month};

/// The advisory lock key every partition change holds.
const PARTITION_LOCK: i64 = 0x6c69_6665_6379_636c; // "lifecycl"

/// Months of `table` that have a partition, oldest first.
#[tracing::instrument(skip_all, fields(table = table.name()))]
pub async fn list(db: &mut PgConnection, table: AuditTable) -> Result<Vec<Month>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid
         where i.inhparent = $1::regclass",
    )
    .bind(table.name())
    .fetch_all(&mut *db)
    .await?;
    let prefix = format!("{}_", table.name());
    let mut months: Vec<Month> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&prefix))
        .filter_map(Month::from_partition_suffix)
        .collect();
    months.sort();
    Ok(months)
}

/// The months rows in the default partition belong to, oldest first.
async fn months_in_default(
    db: &mut PgConnection,
    table: AuditTable,
) -> Result<Vec<Month>, sqlx::Error> {
    let starts: Vec<DateTime<Utc>> = sqlx::query_scalar(AssertSqlSafe(format!(
        "select distinct date_trunc('month', {col}, 'UTC') from only {default} order by 1",
        col = table.time_column(),
        default = table.default_partition(),
    )))
    .fetch_all(&mut *db)
    .await?;
    Ok(starts.into_iter().map(Month::of).collect())
}

/// How many rows wait in the default partition (zero when partitions are
/// created in time: the lifecycle job reports it).
pub async fn default_rows(db: &mut PgConnection, table: AuditTable) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "select count(*) from only {}",
        table.default_partition()
    )))
    .fetch_one(&mut *db)
    .await
}

/// Creates the partitions of `table` from the current month through
/// `through`, and one for every month with rows in the default partition
/// (moving them in). Returns the months created, oldest first.
#[tracing::instrument(skip_all, fields(table = table.name(), through = %through))]
pub async fn ensure(
    db: &PgPool,
    table: AuditTable,
    now: DateTime<Utc>,
    through: Month,
) -> Result<Vec<Month>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let existing = list(&mut conn, table).await?;
    let stranded = months_in_default(&mut conn, table).await?;
    let mut wanted: Vec<Month> = Month::of(now)
        .through(through)
        .chain(stranded.iter().copied())
        .collect();
    wanted.sort();
    wanted.dedup();
    wanted.retain(|m| !existing.contains(m));
    drop(conn);

    let mut created = Vec::new();
    for month in wanted {
        let mut tx = db.begin().await?;
        sqlx::query("set local lock_timeout = '10s'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("select pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK)
            .execute(&mut *tx)
            .await?;
        // Another run may have created it while this one waited.
        if list(&mut tx, table).await?.contains(&month) {
            continue;
        }
        create(&mut tx, table, month, stranded.contains(&month)).await?;
        tx.commit().await?;
        tracing::info!(table = table.name(), month = %month, "partition created");
        created.push(month);
    }
    Ok(created)
}

/// Creates one month's partition. With rows of that month in the default
/// partition, the default is detached while they move (a default partition
/// may not hold rows of a range being added), then attached again.
async fn create(
    tx: &mut PgConnection,
    table: AuditTable,
    month: Month,
    move_rows: bool,
) -> Result<(), sqlx::Error> {
    let parent = table.name();
    let partition = table.partition(month);
    let default = table.default_partition();
    let col = table.time_column();
    let (from, to) = (month.start().to_rfc3339(), month.end().to_rfc3339());
    let create = format!(
        "create table {partition} partition of {parent} for values from ('{from}') to ('{to}')"
    );
    if !move_rows {
        sqlx::query(AssertSqlSafe(create)).execute(&mut *tx).await?;
        return Ok(());
    }
    for sql in [
        format!("alter table {parent} detach partition {default}"),
        create,
        format!(
            "insert into {partition} select * from {default} where {col} >= '{from}' and {col} < '{to}'"
        ),
        format!("delete from {default} where {col} >= '{from}' and {col} < '{to}'"),
        format!("alter table {parent} attach partition {default} default"),
    ] {
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
    }
    Ok(())
}

/// [`ensure`] for every partitioned table, `ahead` months past the current one.
pub async fn ensure_all(
    db: &PgPool,
    now: DateTime<Utc>,
    ahead: u32,
) -> Result<Vec<(AuditTable, Month)>, sqlx::Error> {
    let mut created = Vec::new();
    for table in AuditTable::ALL {
        let through = Month::of(now).plus(ahead as i32);
        created.extend(
            ensure(db, table, now, through)
                .await?
                .into_iter()
                .map(|m| (table, m)),
        );
    }
    Ok(created)
}
