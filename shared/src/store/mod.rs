//! Storage functions, one module per table. Each takes an executor (a pool,
//! a connection or a transaction) so callers decide the transaction.

pub mod imports;
pub mod inbound_messages;
pub mod messages;
pub mod users;
pub mod webhook_events;
