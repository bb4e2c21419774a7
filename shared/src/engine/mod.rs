//! The campaign engine (DESIGN §5): the fan-out tick, reconciliation with
//! Twilio, the sender's decision for one message, and the messages events
//! start (triggered campaigns). The function crates are thin routers over these.

pub mod dry_run;
pub mod fanout;
pub mod reconcile;
pub mod send;
pub mod triggers;
