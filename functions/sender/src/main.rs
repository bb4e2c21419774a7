use shared::config::load_or_exit;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    sender::run(load_or_exit(sender::Config::from_env)).await
}
