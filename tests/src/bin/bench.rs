//! `cargo run --release -p e2e --bin bench -- <webhooks|ingest|fanout|sender|events|console>`: prints a table per benchmark.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    match which.as_str() {
        "webhooks" => e2e::bench_webhooks::run().await,
        "ingest" => e2e::bench_ingest::run().await,
        "fanout" => e2e::bench_engine::fanout().await,
        "sender" => e2e::bench_engine::sender_path().await,
        "events" => e2e::bench_events::run().await,
        "console" => e2e::bench_console::run().await,
        other => anyhow::bail!(
            "unknown benchmark {other:?}: expected webhooks, ingest, fanout, sender, events or console"
        ),
    }
}
