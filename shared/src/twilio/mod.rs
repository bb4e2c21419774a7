//! Twilio: request validation for the webhooks Twilio sends us, and the
//! Messages API client the sender calls.

pub mod client;
pub mod errors;
pub mod signature;

pub use client::{
    Accepted, FromAddress, LookupError, Outbound, SendError, TwilioClient, TwilioConfig,
    TwilioMessage,
};
pub use signature::{SignatureValidator, compute_signature};
