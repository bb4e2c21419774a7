//! `cargo run --release -p e2e --bin bench -- <name|all>`: prints a table per
//! benchmark, then every figure beside its floor as one markdown table.
//! `BENCH_FIGURES=path` also writes the figures there as JSON (what
//! `scripts/capacity` reads).

use e2e::bench::{Figure, print_figures};

const NAMES: [&str; 6] = [
    "webhooks", "ingest", "fanout", "sender", "events", "console",
];

async fn one(name: &str) -> anyhow::Result<Vec<Figure>> {
    match name {
        "webhooks" => e2e::bench_webhooks::run().await,
        "ingest" => e2e::bench_ingest::run().await,
        "fanout" => e2e::bench_engine::fanout().await,
        "sender" => e2e::bench_engine::sender_path().await,
        "events" => e2e::bench_events::run().await,
        "console" => e2e::bench_console::run().await,
        // Not in `all`: it writes about 35 GB and takes about 15 minutes.
        "lifecycle" => e2e::bench_lifecycle::run().await,
        other => anyhow::bail!(
            "unknown benchmark {other:?}: expected all, lifecycle or one of {}",
            NAMES.join(", ")
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    let names: Vec<&str> = match which.as_str() {
        "all" => NAMES.to_vec(),
        name => vec![name],
    };
    let mut figures = vec![];
    for name in names {
        if which == "all" {
            println!("\n## {name}\n");
        }
        figures.extend(one(name).await?);
    }
    // The import's child process reports to its parent, not to a reader.
    if figures.is_empty() {
        return Ok(());
    }
    println!("\n## Every figure beside its floor\n");
    print_figures(&figures);
    if let Some(path) = std::env::var_os("BENCH_FIGURES") {
        std::fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
        println!("\nfigures written to {}", path.to_string_lossy());
    }
    Ok(())
}
