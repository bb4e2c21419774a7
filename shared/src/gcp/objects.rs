//! Reading objects as streams of bytes, never whole: Cloud Storage through
//! the official `google-cloud-storage` client, or a local folder (the local
//! stack and tests) behind the same [`ObjectSource`] trait.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use google_cloud_storage::client::Storage;
use tokio::io::AsyncReadExt;

use crate::config::{ConfigError, Env};

/// The object's bytes, chunk by chunk.
pub type ByteStream = BoxStream<'static, Result<Bytes, ObjectError>>;

/// An object opened for reading.
pub struct OpenedObject {
    pub size: Option<u64>,
    pub content_type: Option<String>,
    pub body: ByteStream,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object (or that generation of it) does not exist: it was deleted or
    /// replaced before we read it. Retrying will not help.
    #[error(
        "object gs://{bucket}/{name} (generation {generation}) was not found: deleted or replaced before it could be read"
    )]
    NotFound {
        bucket: String,
        name: String,
        generation: i64,
    },
    #[error("object name {0:?} is not allowed")]
    BadName(String),
    /// Anything else (network, permissions, the service): worth a retry.
    #[error("reading the object failed: {0:#}")]
    Read(#[source] anyhow::Error),
}

/// Where import files come from.
#[async_trait::async_trait]
pub trait ObjectSource: Send + Sync {
    /// Opens one generation of an object (`0` when the generation is unknown: the live one).
    async fn open(
        &self,
        bucket: &str,
        name: &str,
        generation: i64,
    ) -> Result<OpenedObject, ObjectError>;
}

/// Which object source a function uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectsConfig {
    /// Cloud Storage: `GCS_ENDPOINT` overrides the endpoint (an emulator);
    /// `GCS_ANONYMOUS=true` sends no credentials (an emulator, public buckets).
    Gcs {
        endpoint: Option<String>,
        anonymous: bool,
    },
    /// `IMPORT_LOCAL_DIR`: objects are files under this folder, by name.
    Local { root: PathBuf },
}

impl ObjectsConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        if let Some(root) = env.raw("IMPORT_LOCAL_DIR") {
            return Ok(Self::Local { root: root.into() });
        }
        let endpoint: Option<url::Url> = env.optional("GCS_ENDPOINT")?;
        Ok(Self::Gcs {
            endpoint: endpoint.map(|u| u.as_str().trim_end_matches('/').to_owned()),
            anonymous: env.or("GCS_ANONYMOUS", false)?,
        })
    }

    pub async fn build(&self) -> anyhow::Result<Arc<dyn ObjectSource>> {
        Ok(match self {
            Self::Gcs {
                endpoint,
                anonymous,
            } => Arc::new(GcsObjects::new(endpoint.as_deref(), *anonymous).await?),
            Self::Local { root } => Arc::new(LocalObjects::new(root.clone())),
        })
    }
}

/// Cloud Storage through the official client (credentials from the
/// environment: the Cloud Run service account).
#[derive(Clone, Debug)]
pub struct GcsObjects {
    client: Storage,
}

impl GcsObjects {
    pub async fn new(endpoint: Option<&str>, anonymous: bool) -> anyhow::Result<Self> {
        let mut builder = Storage::builder();
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if anonymous {
            builder = builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        Ok(Self {
            client: builder.build().await?,
        })
    }

    /// The client, for writing (the lifecycle job's archive).
    pub fn client(&self) -> &Storage {
        &self.client
    }
}

#[async_trait::async_trait]
impl ObjectSource for GcsObjects {
    #[tracing::instrument(skip_all, fields(bucket = %bucket, generation = generation))]
    async fn open(
        &self,
        bucket: &str,
        name: &str,
        generation: i64,
    ) -> Result<OpenedObject, ObjectError> {
        let mut request = self
            .client
            .read_object(format!("projects/_/buckets/{bucket}"), name);
        if generation != 0 {
            request = request.set_generation(generation);
        }
        let response = request.send().await.map_err(|e| {
            if e.http_status_code() == Some(404) {
                ObjectError::NotFound {
                    bucket: bucket.to_owned(),
                    name: name.to_owned(),
                    generation,
                }
            } else {
                ObjectError::Read(e.into())
            }
        })?;
        let highlights = response.object();
        let body = stream::unfold(response, |mut response| async move {
            let next = response.next().await?;
            Some((next.map_err(|e| ObjectError::Read(e.into())), response))
        });
        Ok(OpenedObject {
            size: u64::try_from(highlights.size).ok(),
            content_type: Some(highlights.content_type).filter(|c| !c.is_empty()),
            body: body.boxed(),
        })
    }
}

/// Objects as files under a folder: `name` is the path below `root`; the
/// bucket and generation are not part of the path.
#[derive(Clone, Debug)]
pub struct LocalObjects {
    root: PathBuf,
}

/// How much a local file read returns at a time.
const LOCAL_CHUNK: usize = 256 * 1024;

impl LocalObjects {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Where object `name` is as a file: a relative path of plain parts only.
    pub fn path(&self, name: &str) -> Result<PathBuf, ObjectError> {
        let relative = Path::new(name);
        let safe = !name.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(ObjectError::BadName(name.to_owned()));
        }
        Ok(self.root.join(relative))
    }
}

#[async_trait::async_trait]
impl ObjectSource for LocalObjects {
    #[tracing::instrument(skip_all, fields(bucket = %bucket, generation = generation))]
    async fn open(
        &self,
        bucket: &str,
        name: &str,
        generation: i64,
    ) -> Result<OpenedObject, ObjectError> {
        let path = self.path(name)?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ObjectError::NotFound {
                    bucket: bucket.to_owned(),
                    name: name.to_owned(),
                    generation,
                }
            } else {
                ObjectError::Read(e.into())
            }
        })?;
        let size = file.metadata().await.ok().map(|m| m.len());
        let body = stream::try_unfold(file, |mut file| async move {
            let mut buf = BytesMut::with_capacity(LOCAL_CHUNK);
            let n = file
                .read_buf(&mut buf)
                .await
                .map_err(|e| ObjectError::Read(e.into()))?;
            Ok((n > 0).then(|| (buf.freeze(), file)))
        });
        Ok(OpenedObject {
            size,
            content_type: None,
            body: body.boxed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_objects_stream_files_and_refuse_escapes() {
        let root = std::env::temp_dir().join(format!("objects-{}", uuid::Uuid::new_v4()));
        tokio::fs::create_dir_all(root.join("in")).await.unwrap();
        let content = vec![b'x'; LOCAL_CHUNK + 10];
        tokio::fs::write(root.join("in/users.csv"), &content)
            .await
            .unwrap();
        let objects = LocalObjects::new(root.clone());

        let opened = objects.open("b", "in/users.csv", 0).await.unwrap();
        assert_eq!(opened.size, Some(content.len() as u64));
        let chunks: Vec<Bytes> = opened.body.map(|c| c.unwrap()).collect().await;
        assert!(chunks.len() >= 2);
        assert_eq!(chunks.concat(), content);

        assert!(matches!(
            objects.open("b", "missing.csv", 3).await.err(),
            Some(ObjectError::NotFound { generation: 3, .. })
        ));
        for name in ["../etc/passwd", "/etc/passwd", ""] {
            assert!(matches!(
                objects.open("b", name, 0).await.err(),
                Some(ObjectError::BadName(_))
            ));
        }
        tokio::fs::remove_dir_all(root).await.unwrap();
    }

    #[test]
    fn config_picks_the_source() {
        let local = ObjectsConfig::from_env(&Env::from_pairs([("IMPORT_LOCAL_DIR", "/tmp/inbox")]));
        assert_eq!(
            local.unwrap(),
            ObjectsConfig::Local {
                root: "/tmp/inbox".into()
            }
        );
        let emulator = ObjectsConfig::from_env(&Env::from_pairs([
            ("GCS_ENDPOINT", "http://127.0.0.1:4443/"),
            ("GCS_ANONYMOUS", "true"),
        ]));
        assert_eq!(
            emulator.unwrap(),
            ObjectsConfig::Gcs {
                endpoint: Some("http://127.0.0.1:4443".into()),
                anonymous: true
            }
        );
        let bad = ObjectsConfig::from_env(&Env::from_pairs([("GCS_ENDPOINT", "not a url")]));
        assert_eq!(bad.unwrap_err().var, "GCS_ENDPOINT");
    }
}
