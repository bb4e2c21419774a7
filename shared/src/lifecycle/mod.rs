//! The life of the append-only audit tables (docs/lifecycle.md): each is
//! partitioned by month; partitions are created ahead ([`partitions`]); a month
//! past its table's retention is written to the archive bucket as one gzip'd
//! newline-delimited JSON object with a manifest, then dropped ([`archive`]);
//! an archived month comes back into a table of its own, with every erasure
//! since applied ([`restore`]).

pub mod archive;
pub mod month;
pub mod partitions;
pub mod restore;
pub mod store;

pub use month::{Month, MonthError};

use crate::config::{ConfigError, Env};

/// A table partitioned by month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditTable {
    /// Every authenticated webhook, raw.
    WebhookEvents,
    /// Every orchestration decision.
    Decisions,
    /// What people did.
    Events,
}

impl AuditTable {
    pub const ALL: [AuditTable; 3] = [Self::WebhookEvents, Self::Decisions, Self::Events];

    pub fn name(self) -> &'static str {
        match self {
            Self::WebhookEvents => "webhook_events",
            Self::Decisions => "decisions",
            Self::Events => "events",
        }
    }

    /// The column the table is partitioned on.
    pub fn time_column(self) -> &'static str {
        match self {
            Self::WebhookEvents | Self::Events => "received_at",
            Self::Decisions => "created_at",
        }
    }

    /// The unpartitioned table of keys that admitted its rows (see
    /// `store::webhook_events::insert_event_sql`), and its time column.
    pub fn key_table(self) -> Option<&'static str> {
        match self {
            Self::WebhookEvents => Some("webhook_keys"),
            Self::Events => Some("event_keys"),
            Self::Decisions => None,
        }
    }

    /// The months kept in the database besides the current one, unless configured.
    pub fn default_retention(self) -> u32 {
        match self {
            // Raw callbacks explain recent outcomes; a message row keeps the result.
            Self::WebhookEvents => 6,
            // A year of decisions, so that a campaign compares with last year's.
            Self::Decisions => 13,
            // Segments ask "did X in the last N days"; two years covers any window offered.
            Self::Events => 25,
        }
    }

    /// The variable that overrides [`default_retention`](Self::default_retention).
    pub fn retention_variable(self) -> &'static str {
        match self {
            Self::WebhookEvents => "RETAIN_WEBHOOK_EVENTS_MONTHS",
            Self::Decisions => "RETAIN_DECISIONS_MONTHS",
            Self::Events => "RETAIN_EVENTS_MONTHS",
        }
    }

    /// The name of the partition that holds `month`.
    pub fn partition(self, month: Month) -> String {
        format!("{}_{}", self.name(), month.partition_suffix())
    }

    /// The partition rows go to when their month has none.
    pub fn default_partition(self) -> String {
        format!("{}_default", self.name())
    }
}

impl std::str::FromStr for AuditTable {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "{s:?} is not an archived table: one of {}",
                    names.join(", ")
                )
            })
    }
}

/// How long each table's months stay in the database, and how far ahead
/// partitions are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleSettings {
    /// Per table, the months kept besides the current one: with 6, on any day
    /// of December the database holds June to December, and May is archived.
    pub retention: Vec<(AuditTable, u32)>,
    /// Months created ahead of the current one (`PARTITIONS_AHEAD_MONTHS`).
    pub ahead: u32,
    /// How long the archive bucket keeps an object (`ARCHIVE_KEEP_DAYS`, as
    /// its lifecycle rule): an erased number is kept for redaction on restore
    /// until every archive that may hold it is gone.
    pub archive_keep_days: u32,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            retention: AuditTable::ALL
                .iter()
                .map(|t| (*t, t.default_retention()))
                .collect(),
            ahead: 3,
            archive_keep_days: 2555,
        }
    }
}

impl LifecycleSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let mut retention = Vec::new();
        for table in AuditTable::ALL {
            let months: u32 = env.or(table.retention_variable(), table.default_retention())?;
            if months == 0 {
                return Err(ConfigError::new(
                    table.retention_variable(),
                    "must be at least 1: the month just ended still receives late rows",
                ));
            }
            retention.push((table, months));
        }
        Ok(Self {
            retention,
            ahead: env.or("PARTITIONS_AHEAD_MONTHS", defaults.ahead)?,
            archive_keep_days: env.or("ARCHIVE_KEEP_DAYS", defaults.archive_keep_days)?,
        })
    }

    pub fn retention(&self, table: AuditTable) -> u32 {
        self.retention
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(table.default_retention(), |(_, m)| *m)
    }

    /// Whether `month`'s partition of `table` is past retention in `current`.
    pub fn expired(&self, table: AuditTable, month: Month, current: Month) -> bool {
        month < current.plus(-(self.retention(table) as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn month(s: &str) -> Month {
        s.parse().unwrap()
    }

    #[test]
    fn retention_keeps_the_current_month_and_that_many_before_it() {
        let settings = LifecycleSettings::default();
        let now = month("2026-12");
        // webhook_events: 6 months besides December.
        assert!(!settings.expired(AuditTable::WebhookEvents, month("2026-06"), now));
        assert!(settings.expired(AuditTable::WebhookEvents, month("2026-05"), now));
        assert!(!settings.expired(AuditTable::Decisions, month("2025-11"), now));
        assert!(settings.expired(AuditTable::Decisions, month("2025-10"), now));
        assert!(!settings.expired(AuditTable::Events, month("2024-11"), now));
        assert!(!settings.expired(AuditTable::WebhookEvents, month("2027-01"), now));
    }

    #[test]
    fn settings_are_read_from_the_environment_and_zero_retention_is_refused() {
        let env = Env::from_pairs([
            ("RETAIN_DECISIONS_MONTHS", "2"),
            ("PARTITIONS_AHEAD_MONTHS", "1"),
        ]);
        let settings = LifecycleSettings::from_env(&env).unwrap();
        assert_eq!(settings.retention(AuditTable::Decisions), 2);
        assert_eq!(settings.retention(AuditTable::WebhookEvents), 6);
        assert_eq!(settings.ahead, 1);

        let env = Env::from_pairs([("RETAIN_WEBHOOK_EVENTS_MONTHS", "0")]);
        let err = LifecycleSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("RETAIN_WEBHOOK_EVENTS_MONTHS"), "{err}");
    }

    #[test]
    fn tables_are_named_as_in_the_schema() {
        assert_eq!("decisions".parse::<AuditTable>(), Ok(AuditTable::Decisions));
        let err = "users".parse::<AuditTable>().unwrap_err();
        assert!(err.contains("webhook_events, decisions, events"), "{err}");
        let m = month("2026-01");
        assert_eq!(AuditTable::Events.partition(m), "events_y2026m01");
    }
}
