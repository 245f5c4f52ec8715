//! The `waymark` command: parse arguments, load config, build, serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use waymark::config::DEFAULT_TOML;
use waymark::{App, Config};

/// Waymark: first-party edge collector for Segment Spec events.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector. Without --config, runs the embedded default.
    Serve {
        /// Path of waymark.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override [server] listen, e.g. 127.0.0.1:0 for a free port.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Override [storage] data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a config file and print precise errors.
    Check {
        /// Path of waymark.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the embedded default config.
    DefaultConfig,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WAYMARK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let mut config = match config {
                Some(path) => Config::load(&path)?,
                None => {
                    eprintln!("No --config given: running the embedded default.\n");
                    eprintln!("{DEFAULT_TOML}");
                    eprintln!("Send events with the write key `wk_demo`; they land in <data_dir>/events.ndjson.\n");
                    Config::embedded_default()
                }
            };
            if let Some(dir) = data_dir {
                config = config.with_data_dir(dir);
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move { App::build(config)?.serve(listen).await })
        }
        Command::Check { config } => {
            let parsed = Config::load(&config)?;
            waymark::app::check(&parsed)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::DefaultConfig => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
    }
}
