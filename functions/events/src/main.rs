use shared::config::load_or_exit;
use shared::gcp::{PubSubConfig, PubSubPublisher};
use shared::http::server::{serve, with_standard_routes};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let config = load_or_exit(events::Config::from_env);
    // The sends topic, for triggered messages due at once: the binary's
    // dependency (the local stack gives the function its in-process queue).
    let pubsub = load_or_exit(PubSubConfig::from_env);
    let db = shared::db::pool(&config.database)?;
    let publisher = PubSubPublisher::from_config(&pubsub).await?;
    let app = with_standard_routes(
        events::app(&config, db.clone(), publisher),
        db,
        config.gcp_project.clone(),
    );
    serve(app, config.port).await?;
    Ok(())
}
