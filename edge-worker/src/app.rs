//! Assembly: turn a validated [`Config`] into a running worker.
//!
//! [`App::build`] opens the store, builds every stage and destination
//! (failing early on any bad setting), and [`App::serve`] runs the HTTP
//! server, the delivery workers and housekeeping until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::destinations::{self, BuildContext, Destination};
use crate::http::admin::AdminAuth;
use crate::http::{router, AppState};
use crate::rules::{RuleHost, RuleWatcher};
use crate::stages::deliver::{abandon_removed, run_worker, DestinationRules, RetryPolicy};
use crate::stages::Pipeline;
use crate::storage::Storage;
use crate::time::now_ms;

/// A destination ready to run: its name, runtime, retry policy and rule chain.
struct DestinationRuntime {
    name: Arc<str>,
    destination: Arc<dyn Destination>,
    policy: RetryPolicy,
    rules: Option<Arc<dyn DestinationRules>>,
}

/// How often rule files are checked for changes (hot reload).
const RULE_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How often pending identity activity (counters, sessions) is written.
const IDENTITY_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A built worker, ready to serve.
pub struct App {
    config: Config,
    state: AppState,
    destinations: Vec<DestinationRuntime>,
    rules: RuleHost,
}

impl App {
    /// Builds every part from `config`. Fails on anything that would fail later.
    pub fn build(config: Config) -> anyhow::Result<App> {
        let metrics = crate::telemetry::install();
        // 1. The store.
        let storage = crate::storage::open(&config.storage, config.limits.dedup_window_secs)?;
        // 2. WASM rules: compiled once (cached on disk), refused on bad imports.
        let rules = load_rules(&config)?;
        // 3. Destinations, each checking its own settings.
        let destinations = build_destinations(&config, &rules)?;
        // 4. The stages.
        let pipeline = Pipeline::build(&config, Arc::clone(&storage), &rules)?;
        let admin = AdminAuth {
            token: config.admin.resolve_token()?.map(Arc::from),
            live_token: config.admin.resolve_live_token()?.map(Arc::from),
        };
        let syncs = crate::syncs::Syncs::new(Arc::new(config.clone()), storage.sync_store());
        let state = AppState {
            pipeline: Arc::new(pipeline),
            syncs: Arc::new(syncs),
            storage,
            metrics,
            server: Arc::new(config.server.clone()),
            admin: Arc::new(admin),
        };
        Ok(App {
            config,
            state,
            destinations,
            rules,
        })
    }

    /// The shared state (for tests that drive the router without a socket).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Binds `listen` (or the configured address) and serves until Ctrl-C or
    /// SIGTERM, then stops accepting, lets delivery finish its batch and exits.
    pub async fn serve(self, listen: Option<SocketAddr>) -> anyhow::Result<()> {
        let addr = listen.unwrap_or(self.config.server.listen);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}; is another process using it?"))?;
        let local = listener.local_addr()?;
        // NOTE: tests and scripts read this line to find the port.
        println!("waymark listening on http://{local}");
        tracing::info!(%local, "Listening.");

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let workers = self.start_background(&shutdown_rx).await;
        // 4. Hot reload: a changed rule file is swapped in atomically; a
        // broken one keeps the old rule running. Stops when dropped.
        let _watcher: RuleWatcher = self.rules.watch(RULE_WATCH_INTERVAL);
        // 5. The sync executor: queued and scheduled runs, and runs whose
        //    worker stopped marked interrupted.
        let executor = tokio::spawn(
            Arc::clone(&self.state.syncs)
                .run_executor(Arc::clone(&self.state.pipeline), shutdown_rx.clone()),
        );
        // 6. HTTP until a signal.
        let app = router(self.state.clone());
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await?;
        let _ = shutdown_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), executor).await;
        self.stop_background(workers).await;
        tracing::info!("Stopped.");
        Ok(())
    }

    /// Runs the sync `name` once in this process (`waymark sync run`): the
    /// delivery workers run while it does, and it returns once the run has
    /// ended (its rows delivered, failed, or the wait for them over).
    pub async fn run_sync(
        self,
        name: &str,
        full: bool,
    ) -> anyhow::Result<Option<crate::storage::syncs::SyncRun>> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let workers = self.start_background(&shutdown_rx).await;
        let run = self
            .state
            .syncs
            .run_now(&self.state.pipeline, name, full, shutdown_rx)
            .await;
        let _ = shutdown_tx.send(true);
        self.stop_background(workers).await;
        Ok(run?)
    }

    /// Starts what runs beside the HTTP server: one delivery worker per
    /// destination, removed destinations' upkeep, dedup upkeep and the
    /// identity flusher (steps 1 to 4).
    async fn start_background(
        &self,
        shutdown_rx: &watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let syncs = &self.state.syncs;
        if let Err(e) = syncs.register().await {
            tracing::warn!(error = %e, "Could not record the syncs' ids; the API and runs create them on first use.");
        }
        let mut workers = Vec::new();
        // 1. One delivery worker per destination.
        for d in &self.destinations {
            workers.push(tokio::spawn(run_worker(
                Arc::clone(&d.name),
                Arc::clone(&d.destination),
                d.policy.clone(),
                self.state.pipeline.outbox().clone(),
                d.rules.clone(),
                shutdown_rx.clone(),
            )));
        }
        // 2. Entries of destinations no longer configured go to the dead
        //    letters after a grace period.
        workers.push(tokio::spawn(abandon_removed(
            Arc::clone(&self.state.storage),
            self.destinations
                .iter()
                .map(|d| d.name.to_string())
                .collect(),
            Duration::from_secs(self.config.storage.removed_destination_secs),
            shutdown_rx.clone(),
        )));
        // 3. Housekeeping: fold recent dedup keys, forget those past the window.
        workers.push(tokio::spawn(keep_dedup(
            Arc::clone(&self.state.storage),
            self.config.limits.dedup_window_secs,
            shutdown_rx.clone(),
        )));
        // 4. Identity activity (counters, sessions) is written once a second
        //    and at shutdown.
        workers.push(tokio::spawn(
            self.state
                .pipeline
                .identity()
                .clone()
                .run_flusher(IDENTITY_FLUSH_INTERVAL, shutdown_rx.clone()),
        ));
        workers
    }

    /// Waits for the background tasks to stop and gives up delivery leases.
    async fn stop_background(&self, workers: Vec<tokio::task::JoinHandle<()>>) {
        for w in workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
        if let Err(e) = self.state.storage.close().await {
            tracing::warn!(error = %e, "Could not give up the delivery leases; other workers take over when they expire.");
        }
    }
}

/// Builds the rule host and loads every `[[rules]]` entry.
fn load_rules(config: &Config) -> anyhow::Result<RuleHost> {
    let rules = RuleHost::builder()
        .cache_dir(config.storage.data_dir.join("rules-cache"))
        .build()?;
    rules.load(&config.rules)?;
    Ok(rules)
}

fn build_destinations(
    config: &Config,
    rules: &RuleHost,
) -> anyhow::Result<Vec<DestinationRuntime>> {
    let cx = BuildContext {
        data_dir: config.storage.data_dir.clone(),
    };
    config
        .destinations
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let destination: Arc<dyn Destination> = Arc::from(destinations::build(d, &cx, i)?);
            let chain = rules
                .chain(&d.rules)
                .with_context(|| format!("destinations[{i}].rules"))?;
            Ok(DestinationRuntime {
                name: Arc::from(d.name.as_str()),
                policy: RetryPolicy::from_config(&d.delivery, destination.max_batch()),
                destination,
                rules: (!chain.is_empty()).then(|| Arc::new(chain) as Arc<dyn DestinationRules>),
            })
        })
        .collect()
}

/// Checks a config the way `serve` would, without binding or starting
/// anything that lasts: destinations are built against a scratch directory.
pub fn check(config: &Config) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("waymark-check-{}", uuid::Uuid::new_v4()));
    let mut checked = config.clone();
    checked.storage.data_dir = scratch.clone();
    let result =
        load_rules(&checked).and_then(|rules| build_destinations(&checked, &rules).map(|_| ()));
    let _ = std::fs::remove_dir_all(scratch);
    crate::visitor::CookieCodec::from_config(&config.identity)?;
    result?;
    // The store and the warehouses: on a thread of their own, so a caller
    // inside a runtime may call this too.
    let storage = config.storage.clone();
    let syncs = config.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async {
                    crate::storage::check(&storage).await?;
                    // Warehouses answer, queries prepare, mapped columns exist.
                    crate::syncs::check(&syncs).await?;
                    Ok(())
                })
            })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the storage check panicked"))?
}

/// How often recent dedup keys are folded into long-term storage.
const DEDUP_FOLD_INTERVAL: Duration = Duration::from_secs(1);

/// How often dedup keys past the window are pruned.
const DEDUP_PRUNE_INTERVAL: Duration = Duration::from_secs(600);

async fn keep_dedup(
    storage: Arc<dyn Storage>,
    window_secs: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_prune = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DEDUP_FOLD_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = storage.fold_dedup().await {
            tracing::warn!(error = %error, "Folding dedup keys failed.");
        }
        if last_prune.elapsed() >= DEDUP_PRUNE_INTERVAL {
            last_prune = tokio::time::Instant::now();
            let cutoff = now_ms() - window_secs as i64 * 1_000;
            match storage.prune_dedup(cutoff).await {
                Ok(n) => tracing::debug!(pruned = n, "Dedup entries pruned."),
                Err(error) => tracing::warn!(error = %error, "Pruning dedup entries failed."),
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("Shutting down.");
}
