//! HTTP plumbing shared by every function: the error type, the Twilio
//! webhook extractor, health checks and serving on `$PORT`.

pub mod auth;
pub mod error;
pub mod pagination;
pub mod server;
pub mod webhook;

pub use error::ApiError;
pub use webhook::WebhookAuth;
