//! Benchmarks: `cargo run --release -p e2e --bin bench -- <mode>`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "ingest" => e2e::bench_ingest::run().await,
        other => anyhow::bail!("unknown bench mode {other:?}: expected ingest"),
    }
}
