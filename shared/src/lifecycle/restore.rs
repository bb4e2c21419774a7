//! Restoring an archived month into a table of its own
//! (`restored_<partition>` unless named), with every erasure since applied:
//! an archive holds people as they were, and erasure reaches them here, on the
//! way back (docs/lifecycle.md says why not by rewriting the archive).
//!
//! The restore is one transaction: the table appears complete, checked
//! against the manifest's row count and checksum, and redacted, or not at all.

use std::io::Read;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgPool};

use super::archive::{ArchiveManifest, JSON_LINES_COPY, LifecycleError};
use super::store::ArchiveStore;
use super::{AuditTable, Month};
use crate::domain::PhoneNumber;
use crate::store::users;

use crate::store::users::ANONYMOUS_WEBHOOK_PARAMS;

/// Erased numbers are matched this many at a time (one pattern of alternatives).
const REDACT_BATCH: usize = 200;

/// What a restore brought back.
#[derive(Debug, Clone)]
pub struct RestoredMonth {
    pub table: String,
    pub manifest: ArchiveManifest,
    /// Rows in the table after redaction (an erased person's own events are
    /// not restored).
    pub rows: i64,
    /// Rows an erasure changed or removed.
    pub redacted: u64,
}

/// Restores `table`'s archived `month` into `into` (default
/// `restored_<partition>`), reading the manifest `archived_partitions`
/// recorded, or `manifest` when given (the bucket's listing, when the
/// database that recorded it is gone).
#[tracing::instrument(skip_all, fields(table = table.name(), month = %month))]
pub async fn restore(
    db: &PgPool,
    store: &ArchiveStore,
    table: AuditTable,
    month: Month,
    into: Option<&str>,
    manifest: Option<&str>,
    scratch: &Path,
) -> Result<RestoredMonth, LifecycleError> {
    let manifest_name = match manifest {
        Some(name) => name.to_owned(),
        None => sqlx::query_scalar(
            "select manifest from archived_partitions where table_name = $1 and month = $2",
        )
        .bind(table.name())
        .bind(month.first_day())
        .fetch_optional(db)
        .await?
        .ok_or_else(|| LifecycleError::NotArchived {
            table: table.name().to_owned(),
            month,
        })?,
    };
    let bad = |reason: String| LifecycleError::BadManifest {
        object: store.url(&manifest_name),
        reason,
    };
    let manifest: ArchiveManifest = serde_json::from_slice(&store.read_all(&manifest_name).await?)
        .map_err(|e| bad(e.to_string()))?;
    if manifest.table != table.name() || manifest.month != month.to_string() {
        return Err(bad(format!(
            "it describes {} {}, not {} {month}",
            manifest.table,
            manifest.month,
            table.name()
        )));
    }
    let into = into.map_or_else(|| format!("restored_{}", manifest.partition), str::to_owned);
    if into.is_empty()
        || into.len() > 63
        || !into.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        || !into
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(LifecycleError::BadTableName(into));
    }

    let mut tx = db.begin().await?;
    sqlx::query(AssertSqlSafe(format!(
        "create table {into} (like {} including defaults including constraints)",
        table.name()
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query("create temp table restore_lines (doc jsonb not null) on commit drop")
        .execute(&mut *tx)
        .await?;
    let downloaded = download(store, &manifest, scratch).await?;
    let loaded = load_lines(&mut tx, &downloaded, &store.url(&manifest.object)).await;
    let _ = tokio::fs::remove_file(&downloaded).await;
    loaded?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "insert into {into} select r.* from restore_lines l cross join lateral jsonb_populate_record(null::{into}, l.doc) r"
    )))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if rows != manifest.rows {
        return Err(LifecycleError::Corrupt {
            object: store.url(&manifest.object),
            reason: format!("{rows} rows read, the manifest says {}", manifest.rows),
        });
    }
    let redacted = redact(&mut tx, table, &into).await?;
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!("select count(*) from {into}")))
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(RestoredMonth {
        table: into,
        manifest,
        rows,
        redacted,
    })
}

/// Downloads the object to `scratch`, checking its size and SHA-256 against
/// the manifest, before anything is loaded.
async fn download(
    store: &ArchiveStore,
    manifest: &ArchiveManifest,
    scratch: &Path,
) -> Result<PathBuf, LifecycleError> {
    let url = store.url(&manifest.object);
    let path = scratch.join(format!("restore-{}.ndjson.gz", uuid::Uuid::new_v4()));
    let file_error = |e| LifecycleError::File(path.clone(), e);
    let mut file = tokio::fs::File::create(&path).await.map_err(file_error)?;
    let mut body = store.open(&manifest.object).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(file_error)?;
    }
    file.flush().await.map_err(file_error)?;
    let sha256 = hex::encode(hasher.finalize());
    if size != manifest.compressed_bytes || sha256 != manifest.sha256 {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(LifecycleError::Corrupt {
            object: url,
            reason: format!(
                "{size} bytes with SHA-256 {sha256}, the manifest says {} bytes with {}",
                manifest.compressed_bytes, manifest.sha256
            ),
        });
    }
    Ok(path)
}

/// Streams the downloaded object, gunzipped, into `restore_lines`.
async fn load_lines(
    tx: &mut sqlx::PgConnection,
    path: &Path,
    url: &str,
) -> Result<(), LifecycleError> {
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(16);
    let file = std::fs::File::open(path).map_err(|e| LifecycleError::File(path.to_owned(), e))?;
    let gunzip = tokio::task::spawn_blocking(move || {
        let mut decoder = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        loop {
            let mut buf = vec![0; 256 * 1024];
            let read = decoder.read(&mut buf);
            let done = matches!(read, Ok(0) | Err(_));
            let sent = match read {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    lines_tx.blocking_send(Ok(buf))
                }
                Err(e) => lines_tx.blocking_send(Err(e)),
            };
            if sent.is_err() || done {
                break;
            }
        }
    });
    let mut copy = tx
        .copy_in_raw(&format!(
            "copy restore_lines (doc) from stdin with ({JSON_LINES_COPY})"
        ))
        .await?;
    while let Some(lines) = lines_rx.recv().await {
        match lines {
            Ok(lines) => {
                copy.send(lines).await?;
            }
            Err(e) => {
                let _ = copy.abort("the archive does not gunzip").await;
                return Err(LifecycleError::Corrupt {
                    object: url.to_owned(),
                    reason: format!("it does not gunzip: {e}"),
                });
            }
        }
    }
    let _ = gunzip.await;
    copy.finish().await?;
    Ok(())
}

/// Applies every erasure recorded to a restored table, as `users::erase`
/// applies it to the live one.
async fn redact(
    tx: &mut sqlx::PgConnection,
    table: AuditTable,
    into: &str,
) -> Result<u64, LifecycleError> {
    let mut redacted = 0;
    // Structured columns: the erased number becomes its token (decisions), or
    // the person's own rows go (events are the person's data).
    redacted += match table {
        AuditTable::Decisions => {
            sqlx::query(AssertSqlSafe(format!(
                "update {into} d set phone_number = e.token from erasures e where d.phone_number = e.phone_number"
            )))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        }
        AuditTable::Events => {
            sqlx::query(AssertSqlSafe(format!(
                "delete from {into} d using erasures e where d.phone_number = e.phone_number"
            )))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        }
        AuditTable::WebhookEvents => 0,
    };
    // Free text: any mention of an erased number, in any way it is written.
    let numbers: Vec<String> =
        sqlx::query_scalar("select phone_number from erasures order by phone_number")
            .fetch_all(&mut *tx)
            .await?;
    for batch in numbers.chunks(REDACT_BATCH) {
        let pattern = batch
            .iter()
            .map(|n| {
                format!(
                    "(?:{})",
                    PhoneNumber::from_trusted(n.clone()).written_pattern()
                )
            })
            .collect::<Vec<_>>()
            .join("|");
        let query = match table {
            AuditTable::WebhookEvents => {
                sqlx::query(AssertSqlSafe(users::erase_webhooks_sql(into)))
                    .bind(&pattern)
                    .bind(ANONYMOUS_WEBHOOK_PARAMS)
            }
            AuditTable::Decisions => {
                sqlx::query(AssertSqlSafe(users::erase_decision_reasons_sql(into))).bind(&pattern)
            }
            AuditTable::Events => {
                sqlx::query(AssertSqlSafe(users::erase_event_properties_sql(into))).bind(&pattern)
            }
        };
        redacted += query.execute(&mut *tx).await?.rows_affected();
    }
    Ok(redacted)
}
