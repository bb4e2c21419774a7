//! `cargo run --release -p e2e --bin bench -- <webhooks|…>`: prints a table per benchmark.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    match which.as_str() {
        "webhooks" => e2e::bench_webhooks::run().await,
        other => anyhow::bail!("unknown benchmark {other:?}: expected webhooks"),
    }
}
