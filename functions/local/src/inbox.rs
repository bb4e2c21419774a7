//! The local stand-in for the import bucket: a file dropped into the inbox
//! folder becomes an object (moved under `objects/`, with a generation) and is
//! delivered to the ingest route as the same CloudEvent Eventarc sends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

/// The bucket name the local stack's events carry.
pub const LOCAL_BUCKET: &str = "local-imports";

pub struct Inbox {
    pub inbox: PathBuf,
    pub objects: PathBuf,
}

impl Inbox {
    pub fn new(data_dir: &Path) -> std::io::Result<Self> {
        let inbox = data_dir.join("inbox");
        let objects = data_dir.join("objects");
        std::fs::create_dir_all(&inbox)?;
        std::fs::create_dir_all(&objects)?;
        Ok(Self { inbox, objects })
    }

    /// Watches the inbox every `every` and delivers each finished file to
    /// `ingest_url`. A file whose name starts with `.` or ends with `.partial`
    /// is still being written and waits.
    pub fn watch(
        self,
        ingest_url: String,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = self.deliver_new(&http, &ingest_url).await {
                            tracing::warn!(error = %e, "inbox delivery failed");
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        });
    }

    async fn deliver_new(&self, http: &reqwest::Client, ingest_url: &str) -> anyhow::Result<()> {
        let mut entries = tokio::fs::read_dir(&self.inbox).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                || name.ends_with(".partial")
                || !entry.file_type().await?.is_file()
            {
                continue;
            }
            let generation = chrono::Utc::now().timestamp_micros();
            let size = entry.metadata().await?.len();
            tokio::fs::rename(entry.path(), self.objects.join(&name)).await?;
            let content_type = match Path::new(&name).extension().and_then(|e| e.to_str()) {
                Some("json") => "application/json",
                Some("ndjson") | Some("jsonl") => "application/x-ndjson",
                _ => "text/csv",
            };
            let object = json!({
                "kind": "storage#object",
                "bucket": LOCAL_BUCKET,
                "name": name,
                "generation": generation.to_string(),
                "size": size.to_string(),
                "contentType": content_type,
            });
            let response = http
                .post(ingest_url)
                .header("ce-specversion", "1.0")
                .header("ce-id", format!("local-{generation}"))
                .header(
                    "ce-source",
                    format!("//storage.googleapis.com/projects/_/buckets/{LOCAL_BUCKET}"),
                )
                .header("ce-type", "google.cloud.storage.object.v1.finalized")
                .header("ce-subject", format!("objects/{name}"))
                .header("content-type", "application/json")
                .json(&object)
                .send()
                .await?;
            if response.status().is_success() {
                tracing::info!(object = name, "inbox file delivered to ingest");
            } else {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                tracing::warn!(object = name, status, body, "ingest refused the inbox file");
            }
        }
        Ok(())
    }
}
