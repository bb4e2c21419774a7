use std::sync::Arc;

use shared::config::load_or_exit;
use shared::gcp::PubSubPublisher;
use shared::http::server::{serve, with_standard_routes};
use shared::twilio::TwilioClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let config = load_or_exit(fanout::Config::from_env);
    let db = shared::db::pool(&config.database)?;
    let publisher = PubSubPublisher::from_config(&config.pubsub).await?;
    let state = Arc::new(fanout::AppState {
        db: db.clone(),
        publisher,
        settings: config.settings.clone(),
        twilio: Some(TwilioClient::new(config.twilio.clone())?),
        reconcile: config.reconcile.clone(),
    });
    let app = with_standard_routes(fanout::router(state), db, config.gcp_project.clone());
    serve(app, config.port).await?;
    Ok(())
}
