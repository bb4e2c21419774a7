//! The common library of Event Stream Engine.
//!
//! Every function crate is a thin router over this library: configuration,
//! telemetry, the pure domain (phone numbers, message statuses, consent), the
//! storage functions (one module per table), Twilio's webhook validation and
//! the flows that turn a webhook into committed rows.

pub mod config;
pub mod db;
pub mod domain;
pub mod engine;
pub mod gcp;
pub mod http;
pub mod import;
pub mod lifecycle;
pub mod ratelimit;
pub mod segment;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod trigger;
pub mod twilio;
pub mod webhooks;
