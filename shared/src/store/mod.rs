//! Storage functions, one module per table. Each takes an executor (a pool,
//! a connection or a transaction) so callers decide the transaction.

pub mod campaigns;
pub mod dispatch;
pub mod imports;
pub mod imports_read;
pub mod inbound_messages;
pub mod messages;
pub mod outbox;
pub mod segments;
pub mod templates;
pub mod users;
pub mod webhook_events;
