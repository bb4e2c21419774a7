//! Serving a function's router on `$PORT`, with health checks, a request span
//! and graceful shutdown on SIGTERM (Cloud Run's stop signal).

use axum::Router;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::telemetry;

/// How long one request may take before it is answered 408 (Cloud Run's own
/// limit is longer; this one keeps a stuck request from holding a connection).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Adds `/healthz` (process up), `/readyz` (database reachable), a request
/// timeout, a panic catcher (a panicking handler answers 500 and is logged,
/// the process serves on) and the request span carrying the trace.
pub fn with_standard_routes(router: Router, db: PgPool, gcp_project: Option<String>) -> Router {
    router
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready).with_state(db))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |req: &Request<_>| {
                    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
                    let (trace, span_id) = telemetry::trace_context(
                        gcp_project.as_deref(),
                        header("traceparent"),
                        header("x-cloud-trace-context"),
                    )
                    .unzip();
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = telemetry::mask_path(req.uri().path()),
                        trace = trace,
                        span_id = span_id.flatten(),
                        message_sid = tracing::field::Empty,
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
}

async fn ready(State(db): State<PgPool>) -> (StatusCode, &'static str) {
    match sqlx::query_scalar!("select 1 as ready")
        .fetch_one(&db)
        .await
    {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

/// Serves on `0.0.0.0:port` until SIGTERM or Ctrl-C, then drains in-flight requests.
pub async fn serve(router: Router, port: u16) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(port, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// A handler panicked: 500 with the API's error body, the panic logged.
fn panicked(cause: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let detail = cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    tracing::error!(panic = detail, "handler panicked");
    let body = serde_json::json!({"error": {"code": "internal", "message": "internal error"}});
    axum::response::IntoResponse::into_response((
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(body),
    ))
}
