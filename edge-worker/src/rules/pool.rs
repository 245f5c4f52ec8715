//! Warm instances of one loaded rule, and their recycling.
//!
//! # Design
//!
//! An instance (a `Store` plus the instantiated component) is made once and
//! reused for many events: instantiating from the pooling allocator costs
//! microseconds, a warm call tens of nanoseconds of host overhead (issue #3).
//! An instance is thrown away after [`RECYCLE_AFTER_USES`] calls, when its
//! memory grew past the high-water mark (wasm memory never shrinks), or
//! after any trap (its state may be broken). Calls are synchronous and
//! short, so at most one instance per calling thread is busy at a time; the
//! idle list grows to the peak concurrency and no further.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::{Engine, Store};

use super::bindings::{Rule, RulePre};
use super::engine;
use super::host::{LogBudget, RuleState};

/// Calls an instance serves before it is replaced by a fresh one.
pub(crate) const RECYCLE_AFTER_USES: u64 = 10_000;

/// Instances of one rule that may exist at once (busy and idle).
pub(crate) const MAX_INSTANCES_PER_RULE: usize = 64;

/// How long `init` may run when an instance is made, in epoch ticks
/// (50 ms: parsing a config is slower than transforming an event).
const INIT_DEADLINE_TICKS: u64 = 100;

/// One warm instance.
pub(crate) struct Slot {
    pub(crate) store: Store<RuleState>,
    pub(crate) rule: Rule,
    pub(crate) uses: u64,
}

/// Why an instance could not be made.
#[derive(Debug)]
pub(crate) enum SlotError {
    /// The rule already has [`MAX_INSTANCES_PER_RULE`] instances.
    Full,
    /// Instantiation failed (pooling allocator full, memory cap).
    Instantiate(wasmtime::Error),
    /// `init` returned an error.
    Init(String),
    /// `init` trapped.
    InitTrapped(wasmtime::Error),
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotError::Full => write!(f, "all {MAX_INSTANCES_PER_RULE} instances are busy"),
            SlotError::Instantiate(e) => write!(f, "cannot instantiate: {e:#}"),
            SlotError::Init(message) => f.write_str(message),
            SlotError::InitTrapped(e) => write!(f, "init trapped: {e:#}"),
        }
    }
}

/// Everything needed to make instances of one loaded rule.
pub(crate) struct Pool {
    engine: Engine,
    pre: RulePre<RuleState>,
    name: Arc<str>,
    config_json: String,
    max_memory_bytes: usize,
    /// Above this many bytes of linear memory an instance is recycled.
    high_water_bytes: usize,
    log_budget: Arc<LogBudget>,
    idle: Mutex<Vec<Slot>>,
    live: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(
        engine: Engine,
        pre: RulePre<RuleState>,
        name: Arc<str>,
        config_json: String,
        max_memory_bytes: usize,
    ) -> Pool {
        Pool {
            engine,
            pre,
            name,
            config_json,
            max_memory_bytes,
            // Half the cap: a rule that once needed that much is recycled
            // before it can pin the whole cap for good.
            high_water_bytes: max_memory_bytes / 2,
            log_budget: Arc::new(LogBudget::new()),
            idle: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
        }
    }

    /// An idle instance, or a new one.
    pub(crate) fn take(&self) -> Result<Slot, SlotError> {
        if let Some(slot) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(slot);
        }
        // Reserve a place first, so racing threads cannot overshoot the cap.
        if self.live.fetch_add(1, Ordering::AcqRel) >= MAX_INSTANCES_PER_RULE {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(SlotError::Full);
        }
        self.instantiate().inspect_err(|_| {
            self.live.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Returns a healthy instance after a call; recycles a worn one.
    pub(crate) fn give_back(&self, slot: Slot) {
        let worn = slot.uses >= RECYCLE_AFTER_USES
            || slot.store.data().memory.peak_bytes > self.high_water_bytes;
        if worn {
            self.discard(slot);
            return;
        }
        match self.idle.lock() {
            Ok(mut idle) => idle.push(slot),
            Err(_) => self.discard(slot),
        }
    }

    /// Drops an instance (after a trap, or worn out).
    pub(crate) fn discard(&self, slot: Slot) {
        drop(slot);
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// Instances alive now (busy and idle).
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Makes and initialises a fresh instance.
    fn instantiate(&self) -> Result<Slot, SlotError> {
        // Step 1: a store with the rule's limits.
        let state = RuleState::new(
            self.name.clone(),
            self.log_budget.clone(),
            self.max_memory_bytes,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        // Step 2: instantiate from the pre-resolved imports (no linking here).
        store.set_epoch_deadline(INIT_DEADLINE_TICKS);
        let _running = engine::Running::start();
        let rule = self
            .pre
            .instantiate(&mut store)
            .map_err(SlotError::Instantiate)?;
        // Step 3: hand the rule its config.
        match rule.call_init(&mut store, &self.config_json) {
            Ok(Ok(())) => Ok(Slot {
                store,
                rule,
                uses: 0,
            }),
            Ok(Err(message)) => Err(SlotError::Init(message)),
            Err(trap) => Err(SlotError::InitTrapped(trap)),
        }
    }
}
