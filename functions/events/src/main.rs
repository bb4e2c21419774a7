use shared::config::load_or_exit;
use shared::http::server::{serve, with_standard_routes};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let config = load_or_exit(events::Config::from_env);
    let db = shared::db::pool(&config.database)?;
    let app = with_standard_routes(
        events::app(&config, db.clone()),
        db,
        config.gcp_project.clone(),
    );
    serve(app, config.port).await?;
    Ok(())
}
