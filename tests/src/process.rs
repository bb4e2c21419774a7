//! A function's own binary as a child process, for tests that kill it
//! mid-run (`kill -9`) and start it again.

use std::process::{Child, Command, Stdio};

use crate::pubsub_emulator::free_port;

/// Builds `package`'s binary of the same name (a no-op when it is fresh) and
/// says where it is.
pub fn function_binary(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cargo builds {package}: {e}"));
    assert!(out.status.success(), "cargo build -p {package} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == package && m["executable"].is_string())
        .map(|m| m["executable"].as_str().unwrap().to_owned())
        .next_back()
        .unwrap_or_else(|| panic!("cargo names the {package} executable"))
}

/// A function's process on a port of its own; killed when dropped.
pub struct FunctionProcess {
    binary: String,
    port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl FunctionProcess {
    pub fn start(binary: &str, env: &[(String, String)]) -> Self {
        let mut p = Self {
            binary: binary.to_owned(),
            port: free_port().expect("a free port"),
            env: env.to_vec(),
            child: None,
        };
        p.spawn();
        p
    }

    /// Starts the process (again, after [`FunctionProcess::kill_9`]) on its port.
    pub fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PORT", self.port.to_string())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.binary));
        self.child = Some(child);
    }

    /// SIGKILL, then reaps the process.
    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("the process is killed");
            c.wait().expect("the killed process is reaped");
        }
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}
