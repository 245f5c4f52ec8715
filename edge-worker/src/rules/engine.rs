//! The one wasmtime `Engine` for the process, the epoch ticker that gives
//! every call its deadline, and the separate fuel-metering engine used by
//! `waymark rule test`.
//!
//! No other file touches `wasmtime::Config`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// How often the ticker bumps the epoch. A call's deadline is a whole
/// number of ticks, so this is the deadline's resolution.
pub(crate) const EPOCH_TICK: Duration = Duration::from_micros(500);

/// Component instances the pooling allocator holds across all rules.
pub(crate) const MAX_INSTANCES: u32 = 1_000;

/// Core instances per component: the rule's module plus the small shim
/// modules `wit-component` adds, with room to spare.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 8;

/// The deadline for one call, in epoch ticks: at least `timeout_ms`, at most
/// one tick more.
pub(crate) fn deadline_ticks(timeout_ms: u64) -> u64 {
    let tick_us = EPOCH_TICK.as_micros() as u64;
    timeout_ms.saturating_mul(1_000).div_ceil(tick_us) + 1
}

/// The process's rule engine, built on first use; the epoch ticker starts
/// with it.
pub(crate) fn shared() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let engine = Engine::new(&config()).map_err(|e| e.to_string())?;
            start_ticker(&engine);
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The engine settings, one reason per line.
fn config() -> Config {
    let mut config = Config::new();
    // Rules are components (WIT contract), not core modules.
    config.wasm_component_model(true);
    // Calls are synchronous: a rule call is microseconds and never waits on I/O.
    // A wall-clock deadline per call, checked at loop headers and function entries.
    config.epoch_interruption(true);
    // Compile for speed of the compiled code; compilation is cached on disk.
    config.cranelift_opt_level(OptLevel::Speed);
    // Rules cannot recurse deep: 512 KiB of wasm stack is plenty and bounds the host.
    config.max_wasm_stack(512 * 1024);
    // Instantiate from a pool of preallocated slots (~µs, no mmap per instance);
    // recycled memory is reset from its initial image (copy-on-write).
    config.memory_init_cow(true);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(MAX_INSTANCES);
    pool.total_core_instances(MAX_INSTANCES * MAX_CORE_INSTANCES_PER_COMPONENT);
    pool.max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT);
    pool.total_memories(MAX_INSTANCES);
    pool.max_memories_per_component(2);
    pool.total_tables(MAX_INSTANCES * 2);
    pool.max_tables_per_component(4);
    // Keep freed slots warm: the next instance of the same rule reuses them.
    pool.max_unused_warm_slots(MAX_INSTANCES / 4);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Guest calls (transform or init) running right now.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// The ticker thread, woken when the first call starts.
static TICKER: OnceLock<Thread> = OnceLock::new();

/// Marks a guest call as running while it lives, so its deadline ticks.
///
/// # Design
/// Ticking every 500 µs costs a wake-up each time; with no call in flight
/// (no rules, or an idle worker) the ticker parks instead, and the first
/// call to start wakes it. A deadline counts from the epoch at its call's
/// start, so epochs that were not ticked while parked change nothing.
#[must_use = "the deadline ticks only while the guard lives"]
pub(crate) struct Running(());

impl Running {
    /// Marks a call as started.
    pub(crate) fn start() -> Running {
        if RUNNING.fetch_add(1, Ordering::SeqCst) == 0 {
            if let Some(ticker) = TICKER.get() {
                ticker.unpark();
            }
        }
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bumps the engine's epoch every [`EPOCH_TICK`] while a call runs, for as
/// long as the engine lives. One thread for the whole process.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("waymark-rules-epoch".to_owned())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                if RUNNING.load(Ordering::SeqCst) == 0 {
                    drop(engine);
                    // An unpark that came first returns this at once; the
                    // timeout lets the thread notice a dropped engine.
                    std::thread::park_timeout(Duration::from_secs(1));
                    continue;
                }
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    match spawned {
        Ok(handle) => {
            let _ = TICKER.set(handle.thread().clone());
        }
        Err(error) => {
            // NOTE: without the ticker no deadline ever fires; refuse loudly.
            tracing::error!(error = %error, "Cannot start the rules epoch ticker.");
        }
    }
}

/// A plain engine that meters fuel (one unit per wasm instruction, roughly)
/// for `waymark rule test`. Not pooled and without deadlines: a runaway rule
/// stops when its fuel runs out.
pub(crate) fn metering() -> Result<Engine, String> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.max_wasm_stack(512 * 1024);
    Engine::new(&config).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_ticks_and_add_one() {
        assert_eq!(deadline_ticks(2), 5);
        assert_eq!(deadline_ticks(1), 3);
        assert_eq!(deadline_ticks(0), 1);
    }
}
