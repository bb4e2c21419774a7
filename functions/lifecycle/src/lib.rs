//! The lifecycle job (docs/lifecycle.md), run daily by Cloud Scheduler:
//! `lifecycle run` creates partitions ahead and archives every month past its
//! retention; `lifecycle restore` brings an archived month back into a table
//! of its own.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shared::config::{ConfigError, DatabaseConfig, Env};
use shared::lifecycle::archive::{self, RunReport};
use shared::lifecycle::restore::{self, RestoredMonth};
use shared::lifecycle::store::ArchiveConfig;
use shared::lifecycle::{AuditTable, LifecycleSettings, Month};

/// What the job cannot start without (the infra test checks its job sets them).
pub const REQUIRED_ENV: &[&str] = &["DATABASE_URL", "ARCHIVE_BUCKET"];

#[derive(Debug, Parser)]
#[command(
    name = "lifecycle",
    about = "Partitions, archives and restores the audit tables"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create partitions ahead; archive and drop every month past retention.
    Run,
    /// Restore an archived month into a table of its own, erasures applied.
    Restore {
        /// webhook_events, decisions or events.
        #[arg(long)]
        table: AuditTable,
        /// The month, as YYYY-MM.
        #[arg(long)]
        month: Month,
        /// The table to create (default restored_<table>_yYYYYmMM).
        #[arg(long)]
        into: Option<String>,
        /// The manifest's object name, when archived_partitions does not have it.
        #[arg(long)]
        manifest: Option<String>,
    },
}

/// Everything the job reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub archive: ArchiveConfig,
    pub settings: LifecycleSettings,
    /// Where a restore downloads the archive to (`LIFECYCLE_SCRATCH_DIR`, else the temp folder).
    pub scratch: PathBuf,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            database: DatabaseConfig {
                // Archiving a month is one long COPY.
                statement_timeout_ms: 0,
                ..DatabaseConfig::from_env(env)?
            },
            archive: ArchiveConfig::from_env(env)?,
            settings: LifecycleSettings::from_env(env)?,
            scratch: env
                .raw("LIFECYCLE_SCRATCH_DIR")
                .map_or_else(std::env::temp_dir, PathBuf::from),
        })
    }
}

/// Carries out one command and says what it did, a line per fact.
pub async fn execute(config: &Config, command: &Command) -> anyhow::Result<Vec<String>> {
    let db = shared::db::pool(&config.database)?;
    let store = config.archive.build().await?;
    match command {
        Command::Run => {
            // Boxed: the run's future is deep enough to overflow the layout limit inline.
            let report = Box::pin(archive::run(
                &db,
                &store,
                &config.settings,
                chrono::Utc::now(),
            ))
            .await?;
            Ok(describe_run(&report, &store))
        }
        Command::Restore {
            table,
            month,
            into,
            manifest,
        } => {
            let restored = Box::pin(restore::restore(
                &db,
                &store,
                *table,
                *month,
                into.as_deref(),
                manifest.as_deref(),
                &config.scratch,
            ))
            .await?;
            Ok(vec![describe_restore(&restored)])
        }
    }
}

fn describe_run(report: &RunReport, store: &shared::lifecycle::store::ArchiveStore) -> Vec<String> {
    let mut lines: Vec<String> = report
        .created
        .iter()
        .map(|(table, month)| format!("created partition {}", table.partition(*month)))
        .collect();
    lines.extend(report.archived.iter().map(|a| {
        format!(
            "archived {} {}: {} rows, {} bytes gzip'd, to {}; database time {:.1} s",
            a.table.name(),
            a.month,
            a.manifest.rows,
            a.manifest.compressed_bytes,
            store.url(&a.manifest.object),
            a.database_time().as_secs_f64()
        )
    }));
    lines.extend(
        report
            .stranded
            .iter()
            .filter(|(_, rows)| *rows > 0)
            .map(|(table, rows)| format!("{rows} rows wait in {}", table.default_partition())),
    );
    if report.erasures_pruned > 0 {
        lines.push(format!(
            "{} erased numbers no archive can hold any more, forgotten",
            report.erasures_pruned
        ));
    }
    if lines.is_empty() {
        lines.push("nothing to do: every partition exists and none is past retention".to_owned());
    }
    lines
}

fn describe_restore(restored: &RestoredMonth) -> String {
    format!(
        "restored {} {} into {}: {} rows ({} of the manifest's {} redacted or left out for erasures)",
        restored.manifest.table,
        restored.manifest.month,
        restored.table,
        restored.rows,
        restored.redacted,
        restored.manifest.rows
    )
}
