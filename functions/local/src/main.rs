use shared::config::Env;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let command = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "serve".to_owned());
    match command.as_str() {
        "serve" => {
            let running = local::stack::start(&Env::from_process()).await?;
            for (service, what) in &running.services {
                eprintln!("{service:>16}: {what}");
            }
            eprintln!("serving every function on {}", running.base_url);
            running.wait().await;
            Ok(())
        }
        other => anyhow::bail!("unknown command {other:?}: expected serve or demo"),
    }
}
