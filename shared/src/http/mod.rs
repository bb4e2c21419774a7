//! HTTP plumbing shared by every function: the error type, the Twilio
//! webhook extractor, health checks and serving on `$PORT`.

pub mod error;
pub mod server;
pub mod webhook;

pub use error::ApiError;
pub use webhook::WebhookAuth;
