//! End-to-end tests across functions: real PostgreSQL (a fresh database per
//! test), routers exactly as the functions serve them.

mod api_campaigns;
mod api_messages;
mod api_openapi;
mod api_segments;
mod api_support;
mod api_templates;
mod api_users;
mod console;
mod console_browser;
mod deploy;
mod erasure;
mod events;
mod fanout;
mod group_commit;
mod ingest;
mod journey;
mod lifecycle;
mod pubsub;
mod reconcile;
mod redis_tls;
mod segments;
mod sender;
mod soak;
mod support;
mod topics;
mod triggers;
mod webhooks_edges;
mod webhooks_inbound;
mod webhooks_status;
