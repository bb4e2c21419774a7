//! A private Redis for `local services` (the test command's services): the
//! machine's `redis-server` on a port of its own, keeping nothing on disk,
//! its pid and log in a project folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const INSTALL_HINT: &str = "redis-server was not found. Install it (Debian/Ubuntu: \
apt-get install redis-server) or set REDIS_URL to a running server.";

pub struct EmbeddedRedis {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

/// `redis-server` from `PATH`, or where Debian installs it.
fn find_bin() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
        .context(INSTALL_HINT)
}

impl EmbeddedRedis {
    pub fn new(dir: PathBuf, port: u16) -> anyhow::Result<Self> {
        Ok(Self {
            bin: find_bin()?,
            dir: std::path::absolute(&dir)
                .with_context(|| format!("resolving {}", dir.display()))?,
            port,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    /// Starts the server in the background unless one runs from this folder
    /// already, and waits until it accepts connections.
    pub fn start(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        self.stop();
        let log = self.dir.join("redis.log");
        let status = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.pid_file())
            .arg("--logfile")
            .arg(&log)
            .status()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !status.success() {
            bail!("redis-server did not start (log: {})", log.display());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "redis-server did not listen on port {} within 30 s (log: {})",
                    self.port,
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(port = self.port, "private Redis started");
        Ok(())
    }

    /// Stops the server this folder's pid file names, if it runs.
    pub fn stop(&self) {
        stop_pid_file(&self.pid_file());
    }
}

/// Sends SIGTERM to the process a pid file names and waits for it to end.
pub fn stop_pid_file(pid_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    let alive = || {
        Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if alive() {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_file(pid_file);
}
