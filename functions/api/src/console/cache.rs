//! Stale-while-revalidate for figures that scan many rows (a big campaign's
//! funnel, the last 24 hours, a segment's size). A figure whose last
//! computation took under [`LIVE_UNDER`] is simply computed again for each
//! view (small data: always fresh). A slower one is read from
//! `console_cache` (shared by every instance) and shown with its age; when it
//! is older than its freshness, one background task per instance recomputes it
//! while the page answers at once with the stored one. Only the first view of
//! a slow figure waits for it.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::store::console_cache as store;

use crate::AppState;

/// A figure and, when it came from the store, when it was computed.
pub struct Cached<T> {
    pub value: T,
    pub computed_at: Option<DateTime<Utc>>,
}

impl<T> Cached<T> {
    /// Seconds since it was computed; `None` when computed for this request.
    pub fn age_seconds(&self) -> Option<i64> {
        self.computed_at
            .map(|t| (Utc::now() - t).num_seconds().max(0))
    }
}

/// A figure computed faster than this is computed for every view.
pub const LIVE_UNDER: Duration = Duration::from_millis(40);

/// What is stored: the figure and how long it took.
#[derive(Serialize, serde::Deserialize)]
struct Stored<T> {
    value: T,
    compute_ms: u64,
}

/// Keys being recomputed by this instance.
fn refreshing() -> &'static Mutex<HashSet<String>> {
    static KEYS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    KEYS.get_or_init(Mutex::default)
}

/// `key`'s figure, recomputed by `compute` when older than `fresh`.
pub async fn cached<T, F, Fut>(
    state: &AppState,
    key: String,
    fresh: Duration,
    compute: F,
) -> Result<Cached<T>, sqlx::Error>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: FnOnce(AppState) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
{
    let stored = store::get(&state.db, &key).await?;
    if let Some((stored, computed_at)) = stored
        && let Ok(stored) = serde_json::from_value::<Stored<T>>(stored)
        && stored.compute_ms >= LIVE_UNDER.as_millis() as u64
    {
        let age = (Utc::now() - computed_at).to_std().unwrap_or_default();
        if age > fresh {
            refresh_in_background(state.clone(), key, compute);
        }
        return Ok(Cached {
            value: stored.value,
            computed_at: Some(computed_at),
        });
    }
    let started = Instant::now();
    let value = compute(state.clone()).await?;
    let took = started.elapsed();
    if took >= LIVE_UNDER {
        save(state, &key, &value, took).await;
    }
    Ok(Cached {
        value,
        computed_at: None,
    })
}

async fn save<T: Serialize>(state: &AppState, key: &str, value: &T, took: Duration) {
    let stored = Stored {
        value,
        compute_ms: took.as_millis() as u64,
    };
    let stored = match serde_json::to_value(&stored) {
        Ok(v) => store::put(&state.db, key, &v)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        tracing::warn!(key, error = %e, "console figure not stored; the next view computes it again");
    }
    // Saves are rare (a slow figure, at most once per freshness period), so
    // each one also clears out figures left unused for a day.
    if let Err(e) = store::sweep(&state.db).await {
        tracing::warn!(error = %e, "old console figures not swept");
    }
}

fn refresh_in_background<T, F, Fut>(state: AppState, key: String, compute: F)
where
    T: Serialize + Send + Sync + 'static,
    F: FnOnce(AppState) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
{
    if !refreshing()
        .lock()
        .expect("refresh set")
        .insert(key.clone())
    {
        return;
    }
    tokio::spawn(async move {
        let started = Instant::now();
        match compute(state.clone()).await {
            Ok(value) => save(&state, &key, &value, started.elapsed()).await,
            Err(e) => tracing::warn!(key, error = %e, "console figure not recomputed"),
        }
        refreshing().lock().expect("refresh set").remove(&key);
    });
}
