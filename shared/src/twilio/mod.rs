//! Twilio: request validation for the webhooks Twilio sends us, and the
//! Messages API client the sender calls.

pub mod client;
pub mod errors;
pub mod signature;

pub use client::{Accepted, Outbound, SendError, Sender, TwilioClient, TwilioConfig};
pub use signature::{SignatureValidator, compute_signature};
