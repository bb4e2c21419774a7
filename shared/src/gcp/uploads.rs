//! Where a file uploaded in the console goes: the import bucket, so the same
//! object-finalized event starts its import as for an analyst's file, or,
//! locally, the inbox folder the local stack watches (which does the same).

use std::path::PathBuf;

use bytes::Bytes;
use google_cloud_storage::client::Storage;
use tokio::sync::OnceCell;

use crate::config::{ConfigError, Env};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadTarget {
    /// `IMPORT_BUCKET` (with `GCS_ENDPOINT`, `GCS_ANONYMOUS` as for reading).
    Bucket {
        bucket: String,
        endpoint: Option<String>,
        anonymous: bool,
    },
    /// `IMPORT_INBOX_DIR`: written as `.name.partial`, then renamed, so the
    /// watcher never picks up half a file.
    Folder(PathBuf),
    /// Neither is set: the console says uploads are off and why.
    Off,
}

impl UploadTarget {
    /// `IMPORT_INBOX_DIR` first (the local stack names a bucket for its
    /// events too), then `IMPORT_BUCKET`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        if let Some(dir) = env.raw("IMPORT_INBOX_DIR") {
            return Ok(Self::Folder(dir.into()));
        }
        if let Some(bucket) = env.raw("IMPORT_BUCKET") {
            let endpoint: Option<url::Url> = env.optional("GCS_ENDPOINT")?;
            return Ok(Self::Bucket {
                bucket: bucket.to_owned(),
                endpoint: endpoint.map(|u| u.as_str().trim_end_matches('/').to_owned()),
                anonymous: env.or("GCS_ANONYMOUS", false)?,
            });
        }
        Ok(Self::Off)
    }

    /// Where uploads land, for the page that offers them.
    pub fn describe(&self) -> String {
        match self {
            Self::Bucket { bucket, .. } => format!("gs://{bucket}"),
            Self::Folder(dir) => format!("the inbox folder {}", dir.display()),
            Self::Off => "nowhere: set IMPORT_BUCKET (or IMPORT_INBOX_DIR locally)".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("uploads are off: set IMPORT_BUCKET (or IMPORT_INBOX_DIR locally) on the api function")]
    Off,
    #[error("storing the upload failed: {0:#}")]
    Store(#[source] anyhow::Error),
}

/// Writes uploads to their [`UploadTarget`]; the Cloud Storage client is built on first use.
pub struct Uploads {
    target: UploadTarget,
    client: OnceCell<Storage>,
}

impl Uploads {
    pub fn new(target: UploadTarget) -> Self {
        Self {
            target,
            client: OnceCell::new(),
        }
    }

    pub fn target(&self) -> &UploadTarget {
        &self.target
    }

    /// Stores `body` as object `name` (a plain file name: the caller has cleaned it).
    pub async fn put(
        &self,
        name: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(), UploadError> {
        match &self.target {
            UploadTarget::Off => Err(UploadError::Off),
            UploadTarget::Folder(dir) => {
                let partial = dir.join(format!(".{name}.partial"));
                let write = async {
                    tokio::fs::create_dir_all(dir).await?;
                    tokio::fs::write(&partial, &body).await?;
                    tokio::fs::rename(&partial, dir.join(name)).await
                };
                write.await.map_err(|e| UploadError::Store(e.into()))
            }
            UploadTarget::Bucket {
                bucket,
                endpoint,
                anonymous,
            } => {
                let client = self
                    .client
                    .get_or_try_init(|| async {
                        let mut builder = Storage::builder();
                        if let Some(endpoint) = endpoint {
                            builder = builder.with_endpoint(endpoint);
                        }
                        if *anonymous {
                            builder = builder.with_credentials(
                                google_cloud_auth::credentials::anonymous::Builder::new().build(),
                            );
                        }
                        builder.build().await
                    })
                    .await
                    .map_err(|e| UploadError::Store(e.into()))?;
                client
                    .write_object(format!("projects/_/buckets/{bucket}"), name, body)
                    .set_content_type(content_type)
                    .send_buffered()
                    .await
                    .map_err(|e| UploadError::Store(e.into()))?;
                Ok(())
            }
        }
    }
}
