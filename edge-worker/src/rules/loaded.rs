//! A rule loaded from its file: compiled, checked against what the worker
//! grants, pre-linked, with a warm instance ready; and one call of it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Map;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, Resource};
use wasmtime::{Engine, Trap};

use super::bindings::{waymark::rules::types::Verdict as WitVerdict, RulePre};
use super::cache;
use super::engine::{self, deadline_ticks};
use super::error::{FaultKind, RuleError};
use super::host::{MemoryCapExceeded, RuleState};
use super::pool::{Pool, SlotError};
use crate::config::{OnError, RuleConfig};
use crate::event::Event;
use crate::telemetry::rules::{RuleLogsDropped, RulePathsRefused};

/// The interfaces a rule may import: Waymark's own, nothing else.
pub(crate) const GRANTED_IMPORTS: [&str; 2] =
    ["waymark:rules/types@0.1.0", "waymark:rules/log@0.1.0"];

/// What a rule decided about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Pass it on.
    Keep,
    /// Drop it, with the rule's reason.
    Drop(String),
}

/// The file a rule was loaded from, to notice changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    pub(crate) modified: Option<std::time::SystemTime>,
    pub(crate) len: u64,
    pub(crate) sha256: String,
}

/// A rule ready to run.
pub(crate) struct LoadedRule {
    pub(crate) config: RuleConfig,
    pub(crate) name: Arc<str>,
    pub(crate) on_error: OnError,
    deadline_ticks: u64,
    pub(crate) pool: Pool,
    /// What the file looked like when loaded (and since, if only touched).
    pub(crate) stamp: Mutex<FileStamp>,
    /// Whether the compiled code came from the on-disk cache.
    pub(crate) cached: bool,
}

impl LoadedRule {
    /// Reads, compiles (or loads from cache), checks and warms up a rule.
    pub(crate) fn load(
        engine: &Engine,
        linker: &Linker<RuleState>,
        cache_dir: Option<&Path>,
        config: &RuleConfig,
    ) -> Result<LoadedRule, RuleError> {
        let rule = config.name.as_str();
        // Step 1: read the file and note what it was.
        let bytes = std::fs::read(&config.path).map_err(|source| RuleError::Read {
            rule: rule.to_owned(),
            path: config.path.clone(),
            source,
        })?;
        let meta = std::fs::metadata(&config.path).ok();
        let sha256 = cache::content_hash(&bytes);
        let stamp = FileStamp {
            modified: meta.as_ref().and_then(|m| m.modified().ok()),
            len: bytes.len() as u64,
            sha256: sha256.clone(),
        };
        // Step 2: compile once (or load the cached artifact).
        let (component, cached) =
            cache::compile(engine, &bytes, &sha256, cache_dir).map_err(|e| RuleError::Compile {
                rule: rule.to_owned(),
                path: config.path.clone(),
                cause: format!("{e:#}"),
            })?;
        // Step 3: refuse anything the worker does not grant, naming it.
        check_imports(engine, &component, rule)?;
        // Step 4: resolve imports and check exports once, at load.
        let pre = linker
            .instantiate_pre(&component)
            .and_then(RulePre::new)
            .map_err(|e| RuleError::Mismatch {
                rule: rule.to_owned(),
                cause: format!("{e:#}"),
            })?;
        // Step 5: the config the rule's init gets, as JSON text.
        let config_json = serde_json::to_string(&config.config).map_err(|e| RuleError::Init {
            rule: rule.to_owned(),
            message: format!("config cannot be passed as JSON: {e}"),
        })?;
        let max_memory_bytes =
            usize::try_from(config.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let name: Arc<str> = Arc::from(rule);
        let pool = Pool::new(
            engine.clone(),
            pre,
            name.clone(),
            config_json,
            max_memory_bytes,
        );
        // Step 6: one warm instance now, so init errors surface at load.
        let slot = pool.take().map_err(|e| RuleError::Init {
            rule: rule.to_owned(),
            message: e.to_string(),
        })?;
        pool.give_back(slot);
        Ok(LoadedRule {
            config: config.clone(),
            name,
            on_error: config.on_error,
            deadline_ticks: deadline_ticks(config.timeout_ms),
            pool,
            stamp: Mutex::new(stamp),
            cached,
        })
    }

    /// Runs the rule on one event, in place.
    ///
    /// On failure the event is exactly as it was before the call, the
    /// instance is discarded, and the error says what kind of failure it was.
    pub(crate) fn call(&self, event: &mut Event) -> Result<Outcome, Box<RuleError>> {
        // Step 1: a warm instance.
        let mut slot = self.pool.take().map_err(|e| self.slot_error(e))?;
        // Step 2: move the event in and arm the deadline.
        let taken = std::mem::replace(event, Event::from_map(Map::new()));
        slot.store.data_mut().begin(taken);
        slot.store.set_epoch_deadline(self.deadline_ticks);
        // Step 3: call.
        let running = engine::Running::start();
        let result = slot
            .rule
            .call_transform(&mut slot.store, Resource::new_borrow(0));
        drop(running);
        // Step 4: move the event back out, undoing the call's writes if it failed.
        let state = slot.store.data_mut();
        if let Some(back) = state.finish(result.is_err()) {
            *event = back;
        }
        if state.refused_paths > 0 {
            RulePathsRefused {
                rule: &self.name,
                count: state.refused_paths,
            }
            .emit();
        }
        if state.dropped_logs > 0 {
            RuleLogsDropped {
                rule: &self.name,
                count: state.dropped_logs,
            }
            .emit();
        }
        // Step 5: recycle or discard the instance.
        match result {
            Ok(verdict) => {
                slot.uses += 1;
                self.pool.give_back(slot);
                Ok(match verdict {
                    WitVerdict::Keep => Outcome::Keep,
                    WitVerdict::Drop(reason) => Outcome::Drop(reason),
                })
            }
            Err(error) => {
                let kind = classify(&error, slot.store.data().memory.exceeded);
                self.pool.discard(slot);
                Err(RuleError::call(&self.name, kind, format!("{error:#}")))
            }
        }
    }

    #[cold]
    fn slot_error(&self, error: SlotError) -> Box<RuleError> {
        RuleError::call(&self.name, FaultKind::Capacity, error)
    }
}

/// What kind of failure a call's error is.
fn classify(error: &wasmtime::Error, memory_exceeded: bool) -> FaultKind {
    if memory_exceeded || error.is::<MemoryCapExceeded>() {
        return FaultKind::Memory;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FaultKind::Deadline,
        _ => FaultKind::Trap,
    }
}

/// Refuses a component that imports anything but Waymark's interfaces.
pub(crate) fn check_imports(
    engine: &Engine,
    component: &Component,
    rule: &str,
) -> Result<(), RuleError> {
    let ty = component.component_type();
    for (import, item) in ty.imports(engine) {
        // Type imports (the world's `use types.{event, verdict}`) grant nothing.
        let is_type = matches!(item.ty, ComponentItem::Type(_) | ComponentItem::Resource(_));
        if !is_type && !GRANTED_IMPORTS.contains(&import) {
            return Err(RuleError::ForbiddenImport {
                rule: rule.to_owned(),
                import: import.to_owned(),
            });
        }
    }
    Ok(())
}

/// Loads a rule and reports how long it took.
pub(crate) fn load_timed(
    engine: &Engine,
    linker: &Linker<RuleState>,
    cache_dir: Option<&Path>,
    config: &RuleConfig,
) -> Result<(LoadedRule, std::time::Duration), RuleError> {
    let started = Instant::now();
    let loaded = LoadedRule::load(engine, linker, cache_dir, config)?;
    Ok((loaded, started.elapsed()))
}
