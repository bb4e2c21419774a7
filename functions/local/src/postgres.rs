//! A private PostgreSQL cluster for the local stack, started from the
//! machine's server binaries, its data kept under the project between runs.
//! `initdb` and `postgres` refuse to run as root, so as root they run as the
//! unprivileged `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

pub struct EmbeddedPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<String>,
}

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. \
Install them (Debian/Ubuntu: apt-get install postgresql) or set DATABASE_URL to a running server.";

/// The directory holding `initdb` and `pg_ctl`: `pg_config --bindir`, the
/// newest `/usr/lib/postgresql/*/bin`, or `PATH`.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let has_tools = |d: &Path| {
        d.join("initdb").is_file() && d.join("pg_ctl").is_file() && d.join("postgres").is_file()
    };
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = versions.into_iter().rev().find(|d| has_tools(d)) {
        return Ok(dir);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d))
    {
        return Ok(dir);
    }
    bail!(INSTALL_HINT)
}

/// Whether `user` can enter every folder above `dir` (the first that exists).
fn reachable_by(user: &str, dir: &Path) -> bool {
    let probe = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    Command::new("runuser")
        .args(["-u", user, "--", "test", "-x"])
        .arg(probe)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A short stable name for a path (FNV-1a), so each checkout keeps its own cluster.
fn path_key(path: &Path) -> String {
    let hash = path
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl EmbeddedPostgres {
    pub fn new(data: PathBuf, port: u16) -> anyhow::Result<Self> {
        // The server runs in its own folder: a relative path would miss.
        let data =
            std::path::absolute(&data).with_context(|| format!("resolving {}", data.display()))?;
        let run_as = if is_root() {
            let exists = Command::new("id")
                .arg("postgres")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !exists {
                bail!(
                    "running as root, and there is no unprivileged `postgres` user to run the database as: create one (useradd --system postgres) or set DATABASE_URL"
                );
            }
            Some("postgres".to_owned())
        } else {
            None
        };
        let data = match &run_as {
            Some(user) if !reachable_by(user, &data) => {
                // The project sits below a folder closed to other users (a home
                // folder, say): keep the cluster where the server's user can work.
                let fallback = std::env::temp_dir()
                    .join(format!("ese-local-{}", path_key(&data)))
                    .join("postgres");
                tracing::warn!(
                    wanted = %data.display(),
                    using = %fallback.display(),
                    "the {user} user cannot reach the project folder; the private cluster lives elsewhere"
                );
                fallback
            }
            _ => data,
        };
        Ok(Self {
            bin: find_bin_dir()?,
            data,
            port,
            run_as,
        })
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<String> {
        let program = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let out = cmd
            .args(args)
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Initializes the cluster on first use and starts it unless it runs already.
    pub fn start(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data)
            .with_context(|| format!("creating {}", self.data.display()))?;
        if let Some(user) = &self.run_as {
            let status = Command::new("chown")
                .args(["-R", user])
                .arg(&self.data)
                .status()?;
            if !status.success() {
                bail!("could not hand {} to the {user} user", self.data.display());
            }
        }
        let data = self.data.to_string_lossy().into_owned();
        let pgdata = self.data.join("pgdata");
        let pgdata_s = pgdata.to_string_lossy().into_owned();
        if !pgdata.join("PG_VERSION").is_file() {
            tracing::info!(dir = %pgdata.display(), "initializing a private PostgreSQL cluster");
            self.run(
                "initdb",
                &[
                    "-D",
                    &pgdata_s,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
            )?;
        }
        if self.run("pg_ctl", &["-D", &pgdata_s, "status"]).is_ok() {
            return Ok(());
        }
        let options = format!(
            "-p {} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = self
            .data
            .join("postgres.log")
            .to_string_lossy()
            .into_owned();
        self.run(
            "pg_ctl",
            &[
                "-D", &pgdata_s, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
            ],
        )
        .with_context(|| format!("starting PostgreSQL (log: {log})"))?;
        tracing::info!(port = self.port, "private PostgreSQL started");
        Ok(())
    }

    /// Stops the cluster when it runs; quiet when it does not.
    pub fn stop_if_running(&self) {
        let pgdata = self.data.join("pgdata").to_string_lossy().into_owned();
        if self.run("pg_ctl", &["-D", &pgdata, "status"]).is_ok() {
            self.stop();
        }
    }

    pub fn stop(&self) {
        let pgdata = self.data.join("pgdata").to_string_lossy().into_owned();
        if let Err(e) = self.run("pg_ctl", &["-D", &pgdata, "-m", "fast", "-w", "stop"]) {
            tracing::warn!(error = %e, "stopping the private PostgreSQL");
        }
    }
}

/// Creates `database` on the server at `admin_url` unless it exists.
pub async fn ensure_database(admin_url: &str, database: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    let exists: bool = sqlx::query_scalar!(
        r#"select exists (select 1 from pg_database where datname = $1) as "exists!""#,
        database
    )
    .fetch_one(&mut conn)
    .await?;
    if !exists {
        anyhow::ensure!(
            database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {database:?} must be letters, digits and underscores"
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {database}")))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}
