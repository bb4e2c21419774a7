use shared::config::load_or_exit;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let config = load_or_exit(sender::Config::from_env);
    // The rate limiter's Redis is the binary's dependency (the local stack
    // gives the function an in-process limiter instead).
    let redis = load_or_exit(shared::config::RedisConfig::from_env);
    sender::run(config, redis).await
}
