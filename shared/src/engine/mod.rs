//! The campaign engine (DESIGN §5): the fan-out tick, reconciliation with Twilio and the sender's
//! decision for one message. The function crates are thin routers over these.

pub mod fanout;
pub mod reconcile;
pub mod send;
