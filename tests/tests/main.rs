//! End-to-end tests across functions: real PostgreSQL (a fresh database per
//! test), routers exactly as the functions serve them.

mod ingest;
mod support;
mod webhooks_edges;
mod webhooks_inbound;
mod webhooks_status;
