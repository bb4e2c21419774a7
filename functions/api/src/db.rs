//! Database errors as answers: named constraints become 409/422 naming the
//! field, values Postgres cannot store become 422, never a 500.

use axum::http::StatusCode;
use shared::http::ApiError;

/// A constraint a handler expects, and what to tell the caller when it is violated.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    pub constraint: &'static str,
    pub status: StatusCode,
    pub field: &'static str,
    pub message: &'static str,
}

impl Known {
    pub const fn conflict(
        constraint: &'static str,
        field: &'static str,
        message: &'static str,
    ) -> Self {
        Self {
            constraint,
            status: StatusCode::CONFLICT,
            field,
            message,
        }
    }

    pub const fn invalid(
        constraint: &'static str,
        field: &'static str,
        message: &'static str,
    ) -> Self {
        Self {
            constraint,
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field,
            message,
        }
    }

    fn error(&self) -> ApiError {
        let code = if self.status == StatusCode::CONFLICT {
            "conflict"
        } else {
            "unprocessable"
        };
        ApiError::new(self.status, code, self.message).with_field(self.field)
    }
}

/// Maps a database error: a `known` constraint to its answer, any other
/// integrity violation to 409 / 422, a value Postgres refuses (a NUL
/// character, a timestamp out of range) to 422; everything else stays 5xx.
pub fn db_error(e: sqlx::Error, known: &[Known]) -> ApiError {
    if let Some(db) = e.as_database_error() {
        if let Some(k) = db
            .constraint()
            .and_then(|c| known.iter().find(|k| k.constraint == c))
        {
            return k.error();
        }
        let code = db.code().unwrap_or_default().into_owned();
        let constraint = db.constraint().unwrap_or("a constraint").to_owned();
        if code == "23505" {
            return ApiError::conflict(format!("conflicts with an existing row ({constraint})"));
        }
        if code == "23503" {
            return ApiError::conflict(format!(
                "refers to or is referred to by other rows ({constraint})"
            ));
        }
        if code.starts_with("23") {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                format!("violates {constraint}"),
            );
        }
        if code.starts_with("22") {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                format!("a value cannot be stored: {}", db.message()),
            );
        }
    }
    ApiError::from(e)
}

/// `.or_db(&[…])` on a query's result.
pub trait OrDb<T> {
    fn or_db(self, known: &[Known]) -> Result<T, ApiError>;
}

impl<T> OrDb<T> for Result<T, sqlx::Error> {
    fn or_db(self, known: &[Known]) -> Result<T, ApiError> {
        self.map_err(|e| db_error(e, known))
    }
}
