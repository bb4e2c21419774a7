//! Cursor pagination: `?limit=&cursor=` in, `{"data": [...], "next_cursor": ...}` out.
//!
//! The cursor is the sort key of the last row of a page, as JSON, in
//! URL-safe base64. Queries read past it (keyset: `(created_at, id) < cursor`
//! for the newest-first lists, `phone_number > cursor` for users), so a page
//! never repeats or skips a row when rows are inserted between requests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::http::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// `?limit=&cursor=`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Rows per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; absent for the first page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// The page size, refused when out of range.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit.unwrap_or(DEFAULT_LIMIT) {
            n @ 1..=MAX_LIMIT => Ok(i64::from(n)),
            _ => Err(ApiError::bad_request(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }

    /// The sort key the page starts after, or `None` for the first page.
    pub fn after<K: DeserializeOwned>(&self) -> Result<Option<K>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                decode_cursor(c).ok_or_else(|| {
                    ApiError::bad_request("cursor", "cursor is not one this API returned")
                })
            })
            .transpose()
    }
}

pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("sort keys serialize"))
}

pub fn decode_cursor<K: DeserializeOwned>(cursor: &str) -> Option<K> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from rows fetched with `limit + 1`: the extra row only tells
    /// that there is a next page, and is dropped.
    pub fn from_rows<K: Serialize>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode_cursor(&key(last)))
        } else {
            None
        };
        Self {
            data: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let key = ("2026-11-27T10:00:00.123456Z".to_owned(), 42_i64);
        let c = encode_cursor(&key);
        assert_eq!(decode_cursor::<(String, i64)>(&c), Some(key));
        assert_eq!(decode_cursor::<(String, i64)>("not a cursor!"), None);
        let params = PageParams {
            limit: None,
            cursor: Some("bm9wZQ".into()),
        };
        assert_eq!(
            params
                .after::<(String, i64)>()
                .unwrap_err()
                .field
                .as_deref(),
            Some("cursor")
        );
    }

    #[test]
    fn limit_is_bounded() {
        let with = |limit| PageParams {
            limit,
            cursor: None,
        };
        assert_eq!(with(None).limit().unwrap(), 50);
        assert_eq!(with(Some(500)).limit().unwrap(), 500);
        assert!(with(Some(0)).limit().is_err());
        assert!(with(Some(501)).limit().is_err());
    }

    #[test]
    fn a_page_keeps_limit_rows_and_points_after_the_last() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(page.data, vec![1, 2]);
        assert_eq!(
            decode_cursor::<i32>(page.next_cursor.as_deref().unwrap()),
            Some(2)
        );
        let last = Page::from_rows(vec![1, 2], 2, |n| *n);
        assert_eq!(last.next_cursor, None);
    }
}
