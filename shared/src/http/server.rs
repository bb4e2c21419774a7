//! Serving a function's router on `$PORT`, with health checks, a request span
//! and graceful shutdown on SIGTERM (Cloud Run's stop signal).

use axum::Router;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use sqlx::PgPool;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::telemetry;

/// Adds `/healthz` (process up), `/readyz` (database reachable) and the
/// request span carrying the Cloud Trace id.
pub fn with_standard_routes(router: Router, db: PgPool, gcp_project: Option<String>) -> Router {
    router
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready).with_state(db))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |req: &Request<_>| {
                    let trace = req
                        .headers()
                        .get("x-cloud-trace-context")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|h| telemetry::trace_name(gcp_project.as_deref(), h));
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = telemetry::mask_path(req.uri().path()),
                        trace = trace,
                        message_sid = tracing::field::Empty,
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
}

async fn ready(State(db): State<PgPool>) -> (StatusCode, &'static str) {
    match sqlx::query("select 1").execute(&db).await {
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
