use std::sync::Arc;

use shared::config::load_or_exit;
use shared::engine::send::Sender;
use shared::http::server::{serve, with_standard_routes};
use shared::ratelimit::Limiter;
use shared::twilio::TwilioClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let config = load_or_exit(sender::Config::from_env);
    let db = shared::db::pool(&config.database)?;
    let limiter = Limiter::redis(&config.redis_url, &config.redis_prefix).await?;
    let twilio = TwilioClient::new(config.twilio.clone())?;
    let state = Arc::new(Sender::new(
        db.clone(),
        twilio,
        limiter,
        config.settings.clone(),
    ));
    let app = with_standard_routes(sender::router(state), db, config.gcp_project.clone());
    serve(app, config.port).await?;
    Ok(())
}
