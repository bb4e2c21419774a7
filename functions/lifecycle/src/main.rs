//! The lifecycle job: see the library for what each command does.

use clap::Parser;
use lifecycle::{Cli, Config, execute};
use shared::config::load_or_exit;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let cli = Cli::parse();
    let config = load_or_exit(Config::from_env);
    for line in execute(&config, &cli.command).await? {
        println!("{line}");
    }
    Ok(())
}
