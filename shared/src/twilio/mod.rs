//! Twilio: request validation for the webhooks Twilio sends us.

pub mod errors;
pub mod signature;

pub use signature::{SignatureValidator, compute_signature};
