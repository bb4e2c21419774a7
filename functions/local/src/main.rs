use clap::{Parser, Subcommand};
use shared::config::Env;

/// Errors from anywhere, warnings from the project's crates only.
const DEMO_LOG: &str = "error,shared=warn,local=warn,api=warn,inbound=warn,status=warn,sender=warn,fanout=warn,ingest=warn";

/// Every Event Stream Engine function in one process, on embedded defaults
/// (a private PostgreSQL cluster, an in-process Pub/Sub and rate limiter, a
/// simulated Twilio) unless the environment names the real services.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every function on one port (LOCAL_PORT, default 8080) until Ctrl-C.
    Serve,
    /// Run the whole story: import a generated CSV, create a segment, a template
    /// and a campaign through the API, launch, wait for delivery, print a summary.
    /// Exits 0 only when every recipient is accounted for.
    Demo {
        /// Users in the generated file.
        #[arg(long, default_value_t = 5000)]
        users: usize,
        /// Seconds to wait for every recipient to be accounted for.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Leave the stack running afterwards (until Ctrl-C), to look around in
        /// the console at /console.
        #[arg(long)]
        keep: bool,
    },
    /// A private PostgreSQL cluster and Redis on free ports for the test
    /// command (`scripts/test`), so tests never touch the machine's own.
    Services {
        #[command(subcommand)]
        action: ServicesAction,
        /// Where the servers keep their data, pid files and logs.
        #[arg(long, global = true, default_value = ".local/test-services")]
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum ServicesAction {
    /// Start both and write `export DATABASE_URL=…` and `export REDIS_URL=…`
    /// to `<dir>/env`, for a shell to source.
    Up,
    /// Stop both (the cluster's data stays for the next run).
    Down,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    // The demo keeps the terminal for its story: only the project's own warnings
    // are logged (RUST_LOG asks for more, libraries included).
    let demo = matches!(command, Command::Demo { .. } | Command::Services { .. });
    shared::telemetry::init_with_default(if demo { DEMO_LOG } else { "info" });
    match command {
        Command::Services { action, dir } => {
            match action {
                ServicesAction::Up => {
                    let env_file = dir.join("env");
                    std::fs::write(&env_file, local::services::up(&dir).await?)?;
                    eprintln!(
                        "private PostgreSQL and Redis up: source {}",
                        env_file.display()
                    );
                }
                ServicesAction::Down => local::services::down(&dir),
            }
            Ok(())
        }
        Command::Serve => {
            let running = local::stack::start(&Env::from_process()).await?;
            for (service, what) in &running.services {
                eprintln!("{service:>16}: {what}");
            }
            eprintln!("serving every function on {}", running.base_url);
            running.wait().await;
            Ok(())
        }
        Command::Demo {
            users,
            timeout,
            keep,
        } => {
            let options = local::demo::DemoOptions {
                users,
                timeout: std::time::Duration::from_secs(timeout),
            };
            let running = local::stack::start(&Env::from_process()).await?;
            let outcome = local::demo::run(&running, &options).await;
            println!(
                "\nThe console: {}/console (sign in with the API key {})",
                running.base_url, running.api_key
            );
            if keep {
                println!("--keep: the stack serves until Ctrl-C");
                running.wait().await;
            } else {
                running.stop().await;
            }
            if !outcome? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
