use shared::config::load_or_exit;
use shared::http::server::{serve, with_standard_routes};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let config = load_or_exit(api::Config::from_env);
    let db = shared::db::pool(&config.service.database)?;
    let app = with_standard_routes(
        api::app(&config, db.clone()),
        db,
        config.service.gcp_project.clone(),
    );
    serve(app, config.service.port).await?;
    Ok(())
}
