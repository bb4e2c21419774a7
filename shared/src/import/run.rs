//! Running one import: claim → stage → merge.
//!
//! Crash safety: rows are `COPY`ed into a temporary staging table on the
//! import's own database session, inside one transaction that ends with the
//! merge into `users` and the import's completion. Until that commit nothing
//! of the file is visible; if the worker dies at any point, its session ends,
//! which rolls the transaction back, drops the staging table and releases the
//! import's advisory lock, and the redelivered event re-runs the import from
//! the start. A finished import (completed or failed) is never run again.
//!
//! Pipelining: the object is read, parsed and validated on a thread of its
//! own while the COPY runs; every `insert_ahead_bytes` of COPY data (and at
//! the end) the COPY pauses for the users those rows create to be inserted,
//! in the same transaction, while the parser reads on. The merge then has
//! only the other rows left: existing users', and those with consent or
//! topics (`store::imports::insert_new_users`). A file that mostly updates
//! existing users stops creating ahead after its first step: the rest of it
//! is COPYed straight to the merge's table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::copy::{COLUMNS, encode_row};
use super::reader::{FormatHint, RowReader, RowSink};
use super::{FileError, Reject, Row};
use crate::domain::Region;
use crate::gcp::{ObjectError, ObjectRef, ObjectSource};
use crate::store::imports::{self, AheadStep, Import, MergeCounts, Progress};

/// `MAX_IMPORT_BYTES` by default: 2 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// COPY data is sent in batches of about this size.
const BATCH_BYTES: usize = 512 * 1024;
/// The users the staged rows create are inserted every this many bytes of COPY data.
const INSERT_AHEAD_BYTES: usize = 16 * 1024 * 1024;
/// See [`ImportSettings::ahead_sample_rows`]: about the first step's rows.
const AHEAD_SAMPLE_ROWS: u64 = 100_000;
/// Parsed batches wait for the COPY in a queue of at most this many bytes,
/// about one `INSERT_AHEAD_BYTES` step: the parser reads on while the users
/// of the previous step are inserted.
const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Rejects are written in batches of at most this many.
const REJECT_BATCH: usize = 1000;
/// An import started this many times without finishing is failed rather than
/// run again: whatever kills it (a crash, a database error) would again.
pub const MAX_ATTEMPTS: i32 = 5;
/// How often the `imports` row shows progress, by default.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// For national numbers.
    pub default_region: Option<Region>,
    /// Larger objects fail the import.
    pub max_bytes: u64,
    /// How often the `imports` row is updated while the file is read.
    pub progress_every: Duration,
    /// COPY data is sent in batches of about this many bytes.
    pub batch_bytes: usize,
    /// Every this many bytes of COPY data, the users the staged rows create
    /// are inserted ahead of the merge.
    pub insert_ahead_bytes: usize,
    /// Once this many rows went through those steps and most of them named
    /// users who exist (a file of updates), the rest of the file is staged
    /// for the merge alone: creating ahead would only copy it twice.
    pub ahead_sample_rows: u64,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            default_region: None,
            max_bytes: DEFAULT_MAX_BYTES,
            progress_every: PROGRESS_EVERY,
            batch_bytes: BATCH_BYTES,
            insert_ahead_bytes: INSERT_AHEAD_BYTES,
            ahead_sample_rows: AHEAD_SAMPLE_ROWS,
        }
    }
}

/// Infrastructure trouble: the event should be redelivered and the import re-run.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Object(ObjectError),
    #[error("the file parser stopped unexpectedly: {0}")]
    Parser(String),
}

/// What became of an event.
#[derive(Debug)]
pub enum Outcome {
    /// This call ran the import to its end: completed, or failed for a reason in the file.
    Finished(Import),
    /// The import had already finished: nothing was done.
    AlreadyFinished(Import),
    /// Another worker is running this import right now.
    InProgress(Uuid),
}

/// Runs imports: where objects come from, where users go.
#[derive(Clone)]
pub struct Importer {
    pub db: PgPool,
    pub objects: Arc<dyn ObjectSource>,
    pub settings: ImportSettings,
}

impl Importer {
    pub fn new(db: PgPool, objects: Arc<dyn ObjectSource>, settings: ImportSettings) -> Self {
        Self {
            db,
            objects,
            settings,
        }
    }

    /// Imports one object generation, or notes that it needs nothing.
    #[tracing::instrument(skip_all, fields(generation = object.generation, import_id))]
    pub async fn import(&self, object: &ObjectRef) -> Result<Outcome, ImportError> {
        let claimed = match self.claim(object).await? {
            Claim::Run(claimed) => claimed,
            Claim::Finished(import) => return Ok(Outcome::AlreadyFinished(import)),
            Claim::Busy(id) => return Ok(Outcome::InProgress(id)),
        };
        match claimed.stage().await? {
            Staging::Staged(staged) => Ok(Outcome::Finished(staged.merge().await?)),
            Staging::Failed(import) => Ok(Outcome::Finished(import)),
        }
    }

    /// Claims the import of `object` for this worker: it holds the import's
    /// lock until the returned value is dropped.
    pub async fn claim(&self, object: &ObjectRef) -> Result<Claim, ImportError> {
        let import = imports::claim(&self.db, object).await?;
        tracing::Span::current().record("import_id", tracing::field::display(import.id));
        if import.is_finished() {
            return Ok(Claim::Finished(import));
        }
        // A session of its own, closed (not returned to the pool) when the
        // import ends: the lock and the staging table go with it.
        let mut conn = PoolConnection::<Postgres>::detach(self.db.acquire().await?);
        // A file's COPY and merge run as long as the file is big: no request
        // statement timeout on this session.
        sqlx::query!("set statement_timeout = 0")
            .execute(&mut conn)
            .await?;
        if !imports::try_lock(&mut conn, import.id).await? {
            let _ = conn.close().await;
            return Ok(Claim::Busy(import.id));
        }
        let import = imports::get(&mut conn, import.id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        if import.is_finished() {
            let _ = conn.close().await;
            return Ok(Claim::Finished(import));
        }
        if import.attempts >= MAX_ATTEMPTS {
            let reason = format!(
                "the import was started {} times and never finished (the worker or the database failed each time; see the logs)",
                import.attempts
            );
            let import = imports::fail(&mut conn, import.id, &reason, Progress::default()).await?;
            let _ = conn.close().await;
            tracing::error!(attempts = import.attempts, "import given up");
            return Ok(Claim::Finished(import));
        }
        if import.attempts > 0 {
            tracing::warn!(
                attempt = import.attempts + 1,
                "re-running an import that did not finish"
            );
        }
        let import = imports::start_attempt(&mut conn, import.id).await?;
        Ok(Claim::Run(ClaimedImport {
            importer: self.clone(),
            conn,
            import,
            object: object.clone(),
        }))
    }
}

/// The result of [`Importer::claim`].
pub enum Claim {
    Run(ClaimedImport),
    Finished(Import),
    Busy(Uuid),
}

/// An import this worker holds the lock of.
pub struct ClaimedImport {
    importer: Importer,
    conn: PgConnection,
    import: Import,
    object: ObjectRef,
}

/// The result of [`ClaimedImport::stage`].
pub enum Staging {
    Staged(Staged),
    /// The file cannot be read: the import is failed with the reason.
    Failed(Import),
}

/// Every row of the file is staged and the new users it brings are inserted,
/// in a transaction not yet committed; the rest waits for the merge.
pub struct Staged {
    conn: PgConnection,
    import: Import,
    progress: Progress,
    created_ahead: u64,
    started: Instant,
}

impl ClaimedImport {
    pub fn import(&self) -> &Import {
        &self.import
    }

    /// Reads the whole object into the staging table.
    #[tracing::instrument(skip_all, fields(import_id = %self.import.id))]
    pub async fn stage(mut self) -> Result<Staging, ImportError> {
        let started = Instant::now();
        let id = self.import.id;
        let db = self.importer.db.clone();
        let mut stream = StageStream::default();
        let result = self.stage_inner(&mut stream).await;
        if result.is_ok() {
            return Ok(Staging::Staged(Staged {
                conn: self.conn,
                import: self.import,
                progress: stream.progress,
                created_ahead: stream.ahead.created,
                started,
            }));
        }
        let _ = self.conn.close().await;
        match result {
            Ok(()) => unreachable!("returned above"),
            Err(Stop::File(reason)) => {
                imports::insert_rejects(&db, id, &stream.rejects).await?;
                let import = imports::fail(&db, id, &reason.0, stream.progress).await?;
                tracing::warn!(reason = %reason, "import failed: the file cannot be read");
                Ok(Staging::Failed(import))
            }
            Err(Stop::Retry(e)) => Err(e),
        }
    }

    async fn stage_inner(&mut self, stream: &mut StageStream) -> Result<(), Stop> {
        let settings = &self.importer.settings;
        let object = &self.object;
        if let Some(size) = object.size {
            check_size(size, settings.max_bytes)?;
        }
        // The import's transaction: staging, the users inserted ahead and the
        // merge commit together or not at all. It spans two calls (stage and
        // merge) on a session that is closed, never reused, if it ends early.
        sqlx::query("begin").execute(&mut self.conn).await?;
        imports::create_staging(&mut self.conn).await?;
        let opened = self
            .importer
            .objects
            .open(&object.bucket, &object.name, object.generation)
            .await
            .map_err(Stop::from_object)?;
        if let Some(size) = opened.size {
            check_size(size, settings.max_bytes)?;
        }
        let hint = FormatHint::from_object(
            &object.name,
            object
                .content_type
                .as_deref()
                .or(opened.content_type.as_deref()),
        );
        let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(8);
        let batch_bytes = settings.batch_bytes.max(1);
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>((QUEUE_BYTES / batch_bytes).clamp(4, 64));
        let region = settings.default_region;
        let parser = tokio::task::spawn_blocking(move || {
            parse(chunk_rx, batch_tx, hint, region, batch_bytes)
        });

        let pump = pump(opened.body, chunk_tx, settings.max_bytes);
        let copy = copy_batches(
            &mut self.conn,
            &self.importer.db,
            self.import.id,
            batch_rx,
            stream,
            settings,
        );
        let (pumped, copied) = tokio::join!(pump, copy);
        let parsed = parser
            .await
            .map_err(|e| Stop::Retry(ImportError::Parser(e.to_string())))?;
        // The first cause wins: a read error or a file error stops the parser,
        // which ends the copy.
        pumped?;
        let copied = copied?;
        stream.progress.bytes_read = copied.bytes_read.max(stream.progress.bytes_read);
        let format = match parsed {
            Ok(format) => format,
            Err(ParseStop::File(e)) => return Err(Stop::File(e)),
            Err(ParseStop::Closed) => {
                return Err(Stop::Retry(ImportError::Parser(
                    "its input or output closed early".into(),
                )));
            }
        };
        imports::set_format(&self.importer.db, self.import.id, format).await?;
        imports::insert_rejects(&self.importer.db, self.import.id, &stream.rejects).await?;
        stream.rejects.clear();
        Ok(())
    }
}

impl Staged {
    pub fn import(&self) -> &Import {
        &self.import
    }

    /// How many new users were inserted while the file was read (visible
    /// once the merge commits).
    pub fn created_ahead(&self) -> u64 {
        self.created_ahead
    }

    /// Merges the staged rows and completes the import, in one transaction.
    #[tracing::instrument(skip_all, fields(import_id = %self.import.id))]
    pub async fn merge(mut self) -> Result<Import, ImportError> {
        let id = self.import.id;
        // In the transaction `stage` began.
        let staged_rows = self.progress.rows_read - self.progress.rejected;
        let counts: MergeCounts = imports::merge_staged(&mut self.conn, id, staged_rows).await?;
        let import = imports::complete(&mut self.conn, id, self.progress, counts).await?;
        imports::drop_staging(&mut self.conn).await?;
        sqlx::query("commit").execute(&mut self.conn).await?;
        let _ = self.conn.close().await;
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(
            bucket = %import.bucket,
            generation = import.generation,
            format = import.format.as_deref().unwrap_or(""),
            rows_read = import.rows_read,
            inserted = import.inserted,
            updated = import.updated,
            unchanged = import.unchanged,
            duplicates = import.duplicates,
            rejected = import.rejected,
            consent_changes = counts.consent_changes,
            consent_kept = counts.consent_kept,
            created_ahead = self.created_ahead,
            seconds,
            rows_per_second = (import.rows_read as f64 / seconds.max(1e-9)).round(),
            "import completed"
        );
        Ok(import)
    }
}

/// Why staging stopped.
enum Stop {
    File(FileError),
    Retry(ImportError),
}

impl Stop {
    fn from_object(e: ObjectError) -> Self {
        match e {
            ObjectError::NotFound { .. } | ObjectError::BadName(_) => {
                Self::File(FileError::new(e.to_string()))
            }
            ObjectError::Read(_) => Self::Retry(ImportError::Object(e)),
        }
    }
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Self::Retry(e.into())
    }
}

fn check_size(size: u64, max: u64) -> Result<(), Stop> {
    if size > max {
        return Err(Stop::File(FileError::new(format!(
            "file is {size} bytes, over the limit of {max} bytes (MAX_IMPORT_BYTES)"
        ))));
    }
    Ok(())
}

/// What the staging has seen so far.
#[derive(Default)]
struct StageStream {
    progress: Progress,
    rejects: Vec<Reject>,
    /// What the steps that create users ahead of the merge did, all together.
    ahead: imports::AheadStep,
}

impl StageStream {
    /// Whether the COPY still pauses to create users ahead: until the steps
    /// have seen `ahead_sample_rows` rows and set more of them aside than
    /// they created (no step runs after that, so it stays so).
    fn creating_ahead(&self, settings: &ImportSettings) -> bool {
        let AheadStep { created, set_aside } = self.ahead;
        created + set_aside < settings.ahead_sample_rows || set_aside <= created
    }
}

/// The object's bytes on their way to the parser.
enum Chunk {
    Data(Bytes),
    /// The object was read to its end; anything else closing the channel is an abort.
    End,
}

/// Parsed rows on their way to the database.
struct Batch {
    copy: Vec<u8>,
    rejects: Vec<Reject>,
    rows_read: u64,
    rejected: u64,
    bytes_read: u64,
}

/// Streams the object into the parser, enforcing the size limit.
async fn pump(
    mut body: crate::gcp::objects::ByteStream,
    tx: mpsc::Sender<Chunk>,
    max_bytes: u64,
) -> Result<(), Stop> {
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(Stop::from_object)?;
        total += chunk.len() as u64;
        check_size(total, max_bytes)?;
        if tx.send(Chunk::Data(chunk)).await.is_err() {
            // The parser stopped (a file error); it says why.
            return Ok(());
        }
    }
    let _ = tx.send(Chunk::End).await;
    Ok(())
}

struct Copied {
    bytes_read: u64,
}

/// Sends the parser's batches into `COPY` on the import's session, pausing
/// every `insert_ahead_bytes` to insert the users the rows so far create;
/// writes rejects and progress through the pool.
async fn copy_batches(
    conn: &mut PgConnection,
    db: &PgPool,
    id: Uuid,
    mut batches: mpsc::Receiver<Batch>,
    stream: &mut StageStream,
    settings: &ImportSettings,
) -> Result<Copied, Stop> {
    let ahead_statement = format!("copy {} ({COLUMNS}) from stdin", imports::STAGING_TABLE);
    let merge_statement = format!("copy {} ({COLUMNS}) from stdin", imports::REST_TABLE);
    let mut last_progress = Instant::now();
    let mut bytes_read = 0;
    loop {
        // One COPY, until the file ends or (creating ahead) `insert_ahead_bytes` were sent.
        let ahead = stream.creating_ahead(settings);
        let statement = if ahead {
            &ahead_statement
        } else {
            &merge_statement
        };
        let mut copy = conn.copy_in_raw(statement).await?;
        let (mut sent, mut file_ended) = (0usize, true);
        while let Some(batch) = batches.recv().await {
            sent += batch.copy.len();
            if !batch.copy.is_empty()
                && let Err(e) = copy.send(batch.copy).await
            {
                let _ = copy.abort("import stopped").await;
                return Err(e.into());
            }
            stream.progress.rows_read += batch.rows_read;
            stream.progress.rejected += batch.rejected;
            bytes_read = batch.bytes_read;
            stream.progress.bytes_read = bytes_read;
            stream.rejects.extend(batch.rejects);
            if stream.rejects.len() >= REJECT_BATCH
                || last_progress.elapsed() >= settings.progress_every
            {
                imports::insert_rejects(db, id, &stream.rejects).await?;
                stream.rejects.clear();
                imports::record_progress(db, id, stream.progress).await?;
                last_progress = Instant::now();
            }
            if ahead && sent >= settings.insert_ahead_bytes {
                file_ended = false;
                break;
            }
        }
        copy.finish().await?;
        if ahead {
            let step = imports::insert_new_users(conn).await?;
            stream.ahead.created += step.created;
            stream.ahead.set_aside += step.set_aside;
            if !stream.creating_ahead(settings) {
                tracing::info!(
                    created = stream.ahead.created,
                    set_aside = stream.ahead.set_aside,
                    "most rows name existing users: the rest of the file is staged for the merge"
                );
            }
        }
        if file_ended {
            return Ok(Copied { bytes_read });
        }
    }
}

#[derive(Debug)]
enum ParseStop {
    File(FileError),
    /// The pump or the copy went away: they report why.
    Closed,
}

/// The parser thread: bytes in, COPY batches out.
fn parse(
    mut chunks: mpsc::Receiver<Chunk>,
    batches: mpsc::Sender<Batch>,
    hint: FormatHint,
    region: Option<Region>,
    batch_bytes: usize,
) -> Result<&'static str, ParseStop> {
    let mut reader = RowReader::new(hint, region);
    let mut sink = BatchSink {
        batch_bytes,
        ..BatchSink::default()
    };
    loop {
        let chunk = match chunks.try_recv() {
            Ok(chunk) => chunk,
            Err(mpsc::error::TryRecvError::Empty) => {
                // The object arrives slower than it parses: send what is ready,
                // so that progress shows while waiting.
                if sink.rows_read > 0 {
                    sink.flush(&batches)?;
                }
                match chunks.blocking_recv() {
                    Some(chunk) => chunk,
                    None => return Err(ParseStop::Closed),
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return Err(ParseStop::Closed),
        };
        match chunk {
            Chunk::Data(bytes) => {
                sink.bytes_read += bytes.len() as u64;
                let fed = reader.feed(&bytes, &mut sink);
                if let Err(e) = fed {
                    sink.flush(&batches)?;
                    return Err(ParseStop::File(e));
                }
                if sink.copy.len() >= sink.batch_bytes || sink.rejects.len() >= REJECT_BATCH {
                    sink.flush(&batches)?;
                }
            }
            Chunk::End => {
                let finished = reader.finish(&mut sink);
                sink.flush(&batches)?;
                finished.map_err(ParseStop::File)?;
                return Ok(reader.format().map_or("csv", |f| f.as_str()));
            }
        }
    }
}

#[derive(Default)]
struct BatchSink {
    batch_bytes: usize,
    copy: Vec<u8>,
    rejects: Vec<Reject>,
    rows_read: u64,
    rejected: u64,
    bytes_read: u64,
    /// The position of the last row encoded: rows are numbered 1, 2, … in
    /// file order (a line number would not do: a JSON array on one line
    /// has all its elements on line 1).
    position: u64,
}

impl BatchSink {
    fn flush(&mut self, batches: &mpsc::Sender<Batch>) -> Result<(), ParseStop> {
        let batch = Batch {
            copy: std::mem::replace(
                &mut self.copy,
                Vec::with_capacity(self.batch_bytes + 64 * 1024),
            ),
            rejects: std::mem::take(&mut self.rejects),
            rows_read: std::mem::take(&mut self.rows_read),
            rejected: std::mem::take(&mut self.rejected),
            bytes_read: self.bytes_read,
        };
        batches.blocking_send(batch).map_err(|_| ParseStop::Closed)
    }
}

impl RowSink for BatchSink {
    fn row(&mut self, _line: u64, row: Row<'_>) {
        self.rows_read += 1;
        self.position += 1;
        encode_row(self.position, &row, &mut self.copy);
    }

    fn reject(&mut self, reject: Reject) {
        self.rows_read += 1;
        self.rejected += 1;
        self.rejects.push(reject);
    }
}
