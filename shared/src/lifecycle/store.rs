//! Where archives go: the archive bucket (`ARCHIVE_BUCKET`, with
//! `GCS_ENDPOINT` and `GCS_ANONYMOUS` as for imports) or, locally, a folder
//! (`ARCHIVE_DIR`). Objects are written once and never replaced: the job's
//! service account may create objects and nothing else.

use std::path::PathBuf;

use bytes::Bytes;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::config::{ConfigError, Env};
use crate::gcp::objects::{ByteStream, GcsObjects, LocalObjects};
use crate::gcp::{ObjectError, ObjectSource};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveConfig {
    Bucket {
        bucket: String,
        endpoint: Option<String>,
        anonymous: bool,
    },
    Folder(PathBuf),
}

impl ArchiveConfig {
    /// `ARCHIVE_DIR` first (the local stack), then `ARCHIVE_BUCKET`; one is required.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        if let Some(dir) = env.raw("ARCHIVE_DIR") {
            return Ok(Self::Folder(dir.into()));
        }
        let bucket: String = env.required("ARCHIVE_BUCKET")?;
        let endpoint: Option<url::Url> = env.optional("GCS_ENDPOINT")?;
        Ok(Self::Bucket {
            bucket,
            endpoint: endpoint.map(|u| u.as_str().trim_end_matches('/').to_owned()),
            anonymous: env.or("GCS_ANONYMOUS", false)?,
        })
    }

    pub async fn build(&self) -> anyhow::Result<ArchiveStore> {
        Ok(match self {
            Self::Bucket {
                bucket,
                endpoint,
                anonymous,
            } => ArchiveStore::Bucket {
                bucket: bucket.clone(),
                objects: Box::new(GcsObjects::new(endpoint.as_deref(), *anonymous).await?),
            },
            Self::Folder(root) => ArchiveStore::Folder(LocalObjects::new(root.clone())),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveStoreError {
    #[error("{0} exists already: archive objects are never replaced")]
    Exists(String),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("writing {0} failed: {1:#}")]
    Write(String, #[source] anyhow::Error),
}

pub enum ArchiveStore {
    Bucket {
        bucket: String,
        objects: Box<GcsObjects>,
    },
    Folder(LocalObjects),
}

impl ArchiveStore {
    /// The object's address, for manifests and reports.
    pub fn url(&self, name: &str) -> String {
        match self {
            Self::Bucket { bucket, .. } => format!("gs://{bucket}/{name}"),
            Self::Folder(objects) => objects
                .path(name)
                .map_or_else(|_| name.to_owned(), |p| p.display().to_string()),
        }
    }

    /// Stores the chunks `body` yields as object `name`, unless `name`
    /// exists. The object is created only when the stream ends without an
    /// error: a chunk that is an error abandons it.
    #[tracing::instrument(skip_all, fields(object = name))]
    pub async fn put_stream(
        &self,
        name: &str,
        body: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
        content_type: &str,
    ) -> Result<(), ArchiveStoreError> {
        let failed = |e: anyhow::Error| ArchiveStoreError::Write(self.url(name), e);
        match self {
            Self::Bucket { bucket, objects } => {
                let upload = objects
                    .client()
                    .write_object(
                        format!("projects/_/buckets/{bucket}"),
                        name,
                        ChannelSource(body),
                    )
                    .set_content_type(content_type)
                    // Generation 0: only if no live object has this name.
                    .set_if_generation_match(0)
                    // Resumable, in chunks: a month never has to fit in memory.
                    .send_buffered();
                // Boxed: the client's future is too deep to lay out inline in callers.
                Box::pin(upload).await.map_err(|e| {
                    if e.http_status_code() == Some(412) {
                        ArchiveStoreError::Exists(self.url(name))
                    } else {
                        failed(e.into())
                    }
                })?;
                Ok(())
            }
            Self::Folder(objects) => {
                let target = objects.path(name)?;
                if tokio::fs::try_exists(&target)
                    .await
                    .map_err(|e| failed(e.into()))?
                {
                    return Err(ArchiveStoreError::Exists(self.url(name)));
                }
                let partial = target.with_extension("partial");
                let mut source = ChannelSource(body);
                let write = async {
                    if let Some(dir) = target.parent() {
                        tokio::fs::create_dir_all(dir).await?;
                    }
                    let mut file = tokio::fs::File::create(&partial).await?;
                    while let Some(chunk) = source.0.recv().await {
                        file.write_all(&chunk?).await?;
                    }
                    file.flush().await?;
                    file.sync_all().await?;
                    tokio::fs::rename(&partial, &target).await
                };
                let written = write.await;
                if written.is_err() {
                    let _ = tokio::fs::remove_file(&partial).await;
                }
                written.map_err(|e| failed(e.into()))
            }
        }
    }

    /// Stores `body` as object `name`, unless `name` exists.
    pub async fn put_bytes(
        &self,
        name: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), ArchiveStoreError> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(Ok(Bytes::from(body)))
            .await
            .expect("the receiver is here");
        drop(tx);
        self.put_stream(name, rx, content_type).await
    }

    /// Object `name`'s bytes, as a stream.
    pub async fn open(&self, name: &str) -> Result<ByteStream, ObjectError> {
        let opened = match self {
            Self::Bucket { bucket, objects } => objects.open(bucket, name, 0).await?,
            Self::Folder(objects) => objects.open("archive", name, 0).await?,
        };
        Ok(opened.body)
    }

    /// Object `name` whole (a manifest).
    pub async fn read_all(&self, name: &str) -> Result<Vec<u8>, ObjectError> {
        let mut body = self.open(name).await?;
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }
}

/// The chunks of an upload, as the Cloud Storage client reads them.
struct ChannelSource(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl google_cloud_storage::streaming_source::StreamingSource for ChannelSource {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<Result<Bytes, Self::Error>> {
        self.0.recv().await
    }
}
