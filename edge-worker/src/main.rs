//! The `waymark` command: parse arguments, load config, build, serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use waymark::config::DEFAULT_TOML;
use waymark::{App, Config};

/// # Design
/// Per event the worker parses, edits and serialises JSON: many small,
/// short-lived allocations, where mimalloc is much cheaper than glibc's
/// malloc (issue #2 ingest benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Inspect and replay a destination's dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Inspect the quarantine and replay what a destination's rules quarantined.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Work with WASM rules.
    Rule {
        #[command(subcommand)]
        command: RuleCommand,
    },
    /// Reverse-ETL syncs: list them, plan a run, list its runs.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Print the configured syncs, one JSON object per line.
    List {
        /// Path of waymark.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the sync now in this process: read its model, diff it against
    /// what was synced, send the planned rows through the destination's
    /// outbox, wait for their outcomes and print the run. With a worker
    /// serving the same SQLite store, trigger through the API instead
    /// (`POST /api/v1/syncs/{id}/trigger`); on PostgreSQL this process is
    /// one more member of the fleet.
    Run {
        /// The sync's name (its slug).
        name: String,
        #[command(flatten)]
        store: DataDir,
        /// Plan every current row as added (Hightouch's `fullResync`).
        #[arg(long)]
        full: bool,
        /// Print the plan and send nothing; no run is recorded.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the sync's runs, newest first, one JSON object per line in
    /// the shape of Hightouch's API.
    Runs {
        /// The sync's name (its slug).
        name: String,
        #[command(flatten)]
        store: DataDir,
        /// Most runs to print.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Print a destination's dead letters, one JSON object per line, oldest first.
    List {
        #[command(flatten)]
        store: DlqStore,
        /// Most dead letters to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Move a destination's dead letters back to its outbox (all, or --id ones);
    /// a running worker delivers them within a second.
    Replay {
        #[command(flatten)]
        store: DlqStore,
        /// Replay only these dead letters (repeatable). Default: all.
        #[arg(long)]
        id: Vec<i64>,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Print quarantined events, one JSON object per line, newest first.
    List {
        #[command(flatten)]
        store: DataDir,
        /// Only events this destination's rules quarantined.
        #[arg(long)]
        destination: Option<String>,
        /// Most events to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Move events a destination's rules quarantined (--id, repeatable) back
    /// to that destination's outbox; its rules run again before delivery.
    /// Events quarantined at ingest are replayed with `POST /admin/quarantine/replay`.
    Replay {
        #[command(flatten)]
        store: DataDir,
        /// The quarantined events to replay (repeatable).
        #[arg(long, required = true)]
        id: Vec<i64>,
    },
}

/// Where the store is, for commands that open it.
#[derive(clap::Args)]
struct DataDir {
    /// Path of waymark.toml (for [storage] data_dir).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory; overrides the config's.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    /// The config (`--config`, else the embedded default), with
    /// `--data-dir` overriding the directory.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::embedded_default(),
        };
        if let Some(dir) = &self.data_dir {
            config = config.with_data_dir(dir.clone());
        }
        Ok(config)
    }

    /// The store `[storage]` names (the embedded one, or the fleet's
    /// PostgreSQL database), with `--data-dir` overriding the directory.
    fn open(&self) -> anyhow::Result<std::sync::Arc<dyn waymark::Storage>> {
        let config = self.config()?;
        Ok(waymark::storage::open(
            &config.storage,
            config.limits.dedup_window_secs,
        )?)
    }
}

#[derive(clap::Args)]
struct DlqStore {
    /// The destination's name.
    #[arg(long)]
    destination: String,
    #[command(flatten)]
    at: DataDir,
}

impl DlqStore {
    fn open(&self) -> anyhow::Result<std::sync::Arc<dyn waymark::Storage>> {
        self.at.open()
    }
}

#[derive(Subcommand)]
enum RuleCommand {
    /// Run a rule once on one event; print the verdict, the event and the fuel it cost.
    Test {
        /// The rule component (.wasm).
        rule: PathBuf,
        /// The rule's config as JSON (what its `config` table in waymark.toml becomes).
        #[arg(long, default_value = "{}")]
        config: String,
        /// A file holding one event as a JSON object.
        #[arg(long)]
        event: PathBuf,
        /// Memory cap, in MiB.
        #[arg(long, default_value_t = 16)]
        memory_mb: u64,
    },
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
        Command::Dlq { command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                match command {
                    DlqCommand::List { store, limit } => {
                        let letters = store
                            .open()?
                            .dead_letters(&store.destination, limit)
                            .await?;
                        for letter in &letters {
                            println!("{}", serde_json::to_string(letter)?);
                        }
                        eprintln!("{} dead letter(s) for {}", letters.len(), store.destination);
                    }
                    DlqCommand::Replay { store, id } => {
                        let ids = (!id.is_empty()).then_some(id);
                        let n = store
                            .open()?
                            .replay_dead_letters(&store.destination, ids)
                            .await?;
                        println!("replayed {n} dead letter(s) to {}", store.destination);
                    }
                }
                Ok(())
            })
        }
        Command::Quarantine { command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                match command {
                    QuarantineCommand::List {
                        store,
                        destination,
                        limit,
                    } => {
                        let entries = store.open()?.quarantine_list(limit).await?;
                        let mut shown = 0;
                        for entry in entries.iter().filter(|e| {
                            destination.is_none() || e.destination.as_deref() == destination.as_deref()
                        }) {
                            println!("{}", serde_json::to_string(entry)?);
                            shown += 1;
                        }
                        eprintln!("{shown} quarantined event(s)");
                    }
                    QuarantineCommand::Replay { store, id } => {
                        let asked = id.len();
                        let moved = store.open()?.quarantine_requeue(id).await?;
                        println!(
                            "replayed {} of {asked} quarantined event(s) to their destinations",
                            moved.len()
                        );
                        if moved.len() < asked {
                            eprintln!("the others are not quarantined by a destination's rules (or gone); replay ingest quarantine with POST /admin/quarantine/replay");
                        }
                    }
                }
                Ok(())
            })
        }
        Command::Sync { command } => sync_command(command),
        Command::Rule {
            command:
                RuleCommand::Test {
                    rule,
                    config,
                    event,
                    memory_mb,
                },
        } => {
            let text = std::fs::read_to_string(&event)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", event.display()))?;
            let event = waymark::rules::parse_event(&text)?;
            let trial = waymark::rules::trial(&rule, &config, memory_mb, event)?;
            print!("{}", trial.render());
            Ok(())
        }
    }
}

/// `waymark sync ...`.
fn sync_command(command: SyncCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            SyncCommand::List { config } => {
                let config = Config::load(&config)?;
                for s in &config.syncs {
                    let line = serde_json::json!({
                        "name": s.name, "model": s.model, "destination": s.destination,
                        "call": s.call, "mode": s.mode, "schedule": s.schedule,
                        "disabled": s.disabled,
                    });
                    println!("{line}");
                }
                eprintln!("{} sync(s)", config.syncs.len());
            }
            SyncCommand::Run {
                name,
                store,
                full,
                dry_run,
            } => {
                let config = store.config()?;
                if !dry_run {
                    let Some(run) = App::build(config)?.run_sync(&name, full).await? else {
                        anyhow::bail!(
                            "a run of `{name}` is active on another worker, or was left by one that stopped (it is marked interrupted once its heartbeat is 30 s old); `waymark sync runs {name}` shows it"
                        );
                    };
                    let api = waymark::syncs::api_types::ApiSyncRun::from(&run);
                    println!("{}", serde_json::to_string(&api)?);
                    eprintln!(
                        "{name}: run {} {}: {} row(s) read; planned {} added, {} changed, {} removed; {} delivered, {} failed, {} invalid{}",
                        run.id,
                        run.status.as_str(),
                        run.query_size.unwrap_or(0),
                        run.planned.added,
                        run.planned.changed,
                        run.planned.removed,
                        run.successful.total(),
                        run.failed.total(),
                        run.invalid,
                        run.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                    );
                    if run.status == waymark::storage::syncs::RunStatus::Failed {
                        anyhow::bail!("run {} of `{name}` failed", run.id);
                    }
                    return Ok(());
                }
                let storage = store.open()?;
                let plan = waymark::syncs::dry_run::dry_run(
                    &config,
                    storage.sync_store().as_ref(),
                    &name,
                    full,
                )
                .await?;
                println!("{}", serde_json::to_string(&plan)?);
                eprintln!(
                    "{name}: {} row(s) read; would send {} added, {} changed, {} removed ({} retried); {} unchanged, {} invalid. Nothing was sent.",
                    plan.query_size,
                    plan.planned.added,
                    plan.planned.changed,
                    plan.planned.removed,
                    plan.retried,
                    plan.unchanged,
                    plan.invalid
                );
            }
            SyncCommand::Runs { name, store, limit } => {
                let config = store.config()?;
                let storage = store.open()?;
                let runs = waymark::syncs::run::history(
                    &config,
                    storage.sync_store().as_ref(),
                    &name,
                    limit,
                )
                .await?;
                for run in &runs {
                    println!("{}", serde_json::to_string(run)?);
                }
                eprintln!("{name}: {} run(s)", runs.len());
            }
        }
        Ok(())
    })
}
