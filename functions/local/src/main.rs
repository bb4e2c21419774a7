use shared::config::Env;

/// Errors from anywhere, warnings from the project's crates only.
const DEMO_LOG: &str = "error,shared=warn,local=warn,api=warn,inbound=warn,status=warn,sender=warn,fanout=warn,ingest=warn";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "serve".to_owned());
    // The demo keeps the terminal for its story: only the project's own warnings
    // are logged (RUST_LOG asks for more, libraries included).
    shared::telemetry::init_with_default(if command == "demo" { DEMO_LOG } else { "info" });
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
        "demo" => {
            let options = demo_options(std::env::args().skip(2))?;
            let running = local::stack::start(&Env::from_process()).await?;
            let outcome = local::demo::run(&running, &options).await;
            running.stop().await;
            if !outcome? {
                std::process::exit(1);
            }
            Ok(())
        }
        other => anyhow::bail!("unknown command {other:?}: expected serve or demo"),
    }
}

/// `--users N` (default 5000) and `--timeout SECONDS` (default 300).
fn demo_options(
    mut args: impl Iterator<Item = String>,
) -> anyhow::Result<local::demo::DemoOptions> {
    let mut options = local::demo::DemoOptions {
        users: 5000,
        timeout: std::time::Duration::from_secs(300),
    };
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))?;
        match arg.as_str() {
            "--users" => {
                options.users = value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--users takes a number, got {value:?}"))?
            }
            "--timeout" => {
                options.timeout = std::time::Duration::from_secs(
                    value
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--timeout takes seconds, got {value:?}"))?,
                )
            }
            other => {
                anyhow::bail!("unknown option {other:?}: expected --users N or --timeout SECONDS")
            }
        }
    }
    Ok(options)
}
