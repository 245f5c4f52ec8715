//! The WASM rule host: loads rule components, runs them on events in a
//! sandbox, and swaps them when their file or config changes.
//!
//! # Overview
//!
//! * [`RuleHost`] owns the loaded rules. It is built once at start from the
//!   `[[rules]]` tables ([`RuleHost::load`]), hands out chains
//!   ([`RuleHost::chain`]) and reloads rules ([`RuleHost::reload`],
//!   [`RuleHost::watch`]).
//! * [`RuleChain`](crate::stages::rules::RuleChain) is the rules stage: the
//!   rules a source or destination names, applied in order to one event.
//! * Inside, each rule is a `LoadedRule` (compiled component, `InstancePre`,
//!   a pool of warm instances), behind a handle that reload swaps atomically.
//!
//! Files follow object lifetimes: `engine.rs` (the one `Engine`, the epoch
//! ticker), `bindings.rs` (the one `bindgen!`), `host/` (the WIT imports,
//! per-store state), `pool.rs` (warm instances), `loaded.rs` (a loaded rule
//! and one call of it), `cache.rs` (compiled artifacts on disk),
//! `reload.rs` (file watching), `trial.rs` (`waymark rule test`).
//!
//! ```no_run
//! use waymark::config::Config;
//! use waymark::rules::RuleHost;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("waymark.toml".as_ref())?;
//! let host = RuleHost::builder().cache_dir("waymark-data/rules-cache").build()?;
//! host.load(&config.rules)?;
//! let chain = host.chain(&["hash-pii".to_owned()])?;
//! let _watcher = host.watch(std::time::Duration::from_secs(1));
//! # let mut event = waymark::event::Event::from_map(Default::default());
//! let verdict = chain.apply(&mut event);
//! # let _ = verdict;
//! # Ok(())
//! # }
//! ```

mod bindings;
mod cache;
mod engine;
mod error;
mod host;
mod loaded;
mod pool;
mod reload;
mod trial;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::Engine;

pub use error::{FaultKind, RuleError};
pub use host::EventView;
pub use reload::RuleWatcher;
pub use trial::{parse_event, trial, Trial, TrialOutcome};

use crate::config::RuleConfig;
use crate::stages::rules::RuleChain;
use crate::telemetry::rules::{RuleLoadError, RuleLoaded, RuleReloaded};
pub(crate) use loaded::Outcome;
use loaded::{load_timed, LoadedRule};

/// One configured rule: its current version, swapped whole on reload.
pub(crate) struct RuleHandle {
    pub(crate) name: String,
    current: RwLock<Arc<LoadedRule>>,
    /// The last broken file version reported, so it is logged once.
    pub(crate) last_failure: Mutex<Option<String>>,
}

impl RuleHandle {
    /// The version to run this event with. In-flight calls keep the
    /// version they started with, so a swap never splits an event.
    pub(crate) fn current(&self) -> Arc<LoadedRule> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn swap(&self, next: LoadedRule) {
        let next = Arc::new(next);
        match self.current.write() {
            Ok(mut current) => *current = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

/// Builds a [`RuleHost`].
#[derive(Debug, Default)]
pub struct RuleHostBuilder {
    cache_dir: Option<PathBuf>,
}

impl RuleHostBuilder {
    /// Where compiled rules are cached, keyed by content hash and engine
    /// version. Default: no cache (every start compiles).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> RuleHostBuilder {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Creates the host on the process's rule engine (made on first use).
    pub fn build(self) -> Result<RuleHost, RuleError> {
        let engine = engine::shared().map_err(RuleError::Engine)?.clone();
        // The linker holds only Waymark's interfaces: no WASI at all.
        let mut linker = Linker::new(&engine);
        bindings::Rule::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| RuleError::Engine(e.to_string()))?;
        Ok(RuleHost {
            inner: Arc::new(HostInner {
                engine,
                linker,
                cache_dir: self.cache_dir,
                rules: RwLock::new(HashMap::new()),
            }),
        })
    }
}

/// The loaded rules of one worker. Cheap to clone.
#[derive(Clone)]
pub struct RuleHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<RuleState>,
    cache_dir: Option<PathBuf>,
    rules: RwLock<HashMap<String, Arc<RuleHandle>>>,
}

use host::RuleState;

impl std::fmt::Debug for RuleHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleHost")
            .field("rules", &self.names())
            .finish_non_exhaustive()
    }
}

impl RuleHost {
    /// A builder with the defaults.
    pub fn builder() -> RuleHostBuilder {
        RuleHostBuilder::default()
    }

    /// Loads every rule, failing on the first that cannot be loaded (at
    /// start, a broken rule is a config error). Replaces rules of the same name.
    pub fn load(&self, configs: &[RuleConfig]) -> Result<(), RuleError> {
        for config in configs {
            let loaded = self.load_one(config)?;
            self.install(loaded);
        }
        Ok(())
    }

    /// The chain of the named rules, in order.
    pub fn chain(&self, names: &[String]) -> Result<RuleChain, RuleError> {
        let rules = self.read_rules();
        let handles = names
            .iter()
            .map(|name| {
                rules
                    .get(name)
                    .cloned()
                    .ok_or_else(|| RuleError::Unknown(name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RuleChain::new(handles))
    }

    /// Applies a new `[[rules]]` list: changed rules are rebuilt and swapped,
    /// new ones are added, unchanged ones are kept. A rule that fails to
    /// build keeps its old version running; its error is logged and returned.
    /// Rules no longer listed stay available to existing chains until they
    /// are rebuilt.
    pub fn reload(&self, configs: &[RuleConfig]) -> Vec<RuleError> {
        let mut errors = Vec::new();
        for config in configs {
            let existing = self.read_rules().get(&config.name).cloned();
            if let Some(handle) = &existing {
                if same_config(&handle.current().config, config) {
                    continue;
                }
            }
            match self.load_one(config) {
                Ok(loaded) => {
                    RuleReloaded {
                        rule: &config.name,
                        cause: "config",
                    }
                    .emit();
                    self.install(loaded);
                }
                Err(error) => {
                    RuleLoadError {
                        rule: &config.name,
                        error: &error,
                        keeping_old: existing.is_some(),
                    }
                    .emit();
                    errors.push(error);
                }
            }
        }
        errors
    }

    /// Names of the loaded rules, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read_rules().keys().cloned().collect();
        names.sort();
        names
    }

    /// Instances alive for a rule (busy and idle), for tests and the admin API.
    pub fn instances(&self, rule: &str) -> Option<usize> {
        self.read_rules().get(rule).map(|h| h.current().pool.live())
    }

    fn load_one(&self, config: &RuleConfig) -> Result<LoadedRule, RuleError> {
        let inner = &self.inner;
        let (loaded, elapsed) = load_timed(
            &inner.engine,
            &inner.linker,
            inner.cache_dir.as_deref(),
            config,
        )?;
        RuleLoaded {
            rule: &config.name,
            path: &config.path,
            cached: loaded.cached,
            elapsed,
        }
        .emit();
        Ok(loaded)
    }

    /// Makes `loaded` the current version of its rule.
    fn install(&self, loaded: LoadedRule) {
        let existing = self.read_rules().get(&*loaded.name).cloned();
        match existing {
            Some(handle) => handle.swap(loaded),
            None => {
                let handle = Arc::new(RuleHandle {
                    name: loaded.name.to_string(),
                    current: RwLock::new(Arc::new(loaded)),
                    last_failure: Mutex::new(None),
                });
                let mut rules = match self.inner.rules.write() {
                    Ok(rules) => rules,
                    Err(poisoned) => poisoned.into_inner(),
                };
                rules.insert(handle.name.clone(), handle);
            }
        }
    }

    fn read_rules(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<RuleHandle>>> {
        match self.inner.rules.read() {
            Ok(rules) => rules,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn handles(&self) -> Vec<Arc<RuleHandle>> {
        self.read_rules().values().cloned().collect()
    }
}

/// Whether two configs of a rule would build the same rule (the file's
/// content is checked separately, by the watcher).
fn same_config(a: &RuleConfig, b: &RuleConfig) -> bool {
    a.path == b.path
        && a.config == b.config
        && a.on_error == b.on_error
        && a.timeout_ms == b.timeout_ms
        && a.memory_mb == b.memory_mb
}
