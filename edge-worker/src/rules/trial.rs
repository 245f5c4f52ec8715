//! `waymark rule test`: runs a rule once on one event, outside the worker,
//! and reports what it did and what it cost in fuel (≈ wasm instructions).
//!
//! It uses its own fuel-metering engine, without the pool or deadlines: a
//! runaway rule stops when its fuel runs out.

use std::path::Path;

use wasmtime::component::{Component, HasSelf, Linker, Resource};
use wasmtime::Store;

use super::bindings::{waymark::rules::types::Verdict as WitVerdict, Rule};
use super::engine;
use super::error::RuleError;
use super::host::{LogBudget, RuleState};
use super::loaded::check_imports;
use crate::event::Event;

/// Fuel a trial may burn in `init` and in `transform`, each.
pub const TRIAL_FUEL: u64 = 1_000_000_000;

/// What the rule did with the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialOutcome {
    /// Kept the event.
    Keep,
    /// Dropped it, with a reason.
    Drop(String),
    /// Failed (trap, out of fuel, memory cap), with the cause; the event is
    /// as it was before the call.
    Failed(String),
}

/// The result of [`trial`].
#[derive(Debug, Clone)]
pub struct Trial {
    /// The verdict, or the failure.
    pub outcome: TrialOutcome,
    /// The event after the call.
    pub event: Event,
    /// Fuel `transform` burnt on this event.
    pub fuel: u64,
    /// Fuel `init` burnt.
    pub init_fuel: u64,
    /// Paths the rule tried to write and was refused.
    pub refused_paths: u32,
}

/// Parses an event given as JSON text (an object).
pub fn parse_event(text: &str) -> Result<Event, RuleError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(Event::from_map(map)),
        Ok(_) => Err(RuleError::Event(
            "the event must be a JSON object".to_owned(),
        )),
        Err(e) => Err(RuleError::Event(e.to_string())),
    }
}

impl Trial {
    /// The report `waymark rule test` prints.
    pub fn render(&self) -> String {
        let verdict = match &self.outcome {
            TrialOutcome::Keep => "keep".to_owned(),
            TrialOutcome::Drop(reason) => format!("drop ({reason})"),
            TrialOutcome::Failed(cause) => format!("failed: {cause} (the event is unchanged)"),
        };
        let event = serde_json::to_string_pretty(&self.event.to_map()).unwrap_or_default();
        let mut out = format!(
            "verdict: {verdict}\nfuel: {} (init: {})\n",
            self.fuel, self.init_fuel
        );
        if self.refused_paths > 0 {
            out.push_str(&format!("refused writes: {}\n", self.refused_paths));
        }
        out.push_str(&format!("event:\n{event}\n"));
        out
    }
}

/// Runs the rule at `path` with `config_json` on `event`, metering fuel.
pub fn trial(
    path: &Path,
    config_json: &str,
    memory_mb: u64,
    event: Event,
) -> Result<Trial, RuleError> {
    let rule = path.display().to_string();
    // Step 0: the config must be what the worker would pass: a JSON object.
    if !matches!(
        serde_json::from_str(config_json),
        Ok(serde_json::Value::Object(_))
    ) {
        return Err(RuleError::Init {
            rule,
            message: "--config must be a JSON object, such as '{\"rate\": 0.5}'".to_owned(),
        });
    }
    // Step 1: a metering engine and a linker with only Waymark's interfaces.
    let engine = engine::metering().map_err(RuleError::Engine)?;
    let mut linker = Linker::new(&engine);
    Rule::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
        .map_err(|e| RuleError::Engine(e.to_string()))?;
    // Step 2: compile and check the component as the worker would.
    let bytes = std::fs::read(path).map_err(|source| RuleError::Read {
        rule: rule.clone(),
        path: path.to_owned(),
        source,
    })?;
    let component = Component::new(&engine, &bytes).map_err(|e| RuleError::Compile {
        rule: rule.clone(),
        path: path.to_owned(),
        cause: format!("{e:#}"),
    })?;
    check_imports(&engine, &component, &rule)?;
    // Step 3: instantiate with the memory cap and a fuel tank.
    let max_memory_bytes =
        usize::try_from(memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let state = RuleState::new(
        rule.as_str().into(),
        std::sync::Arc::new(LogBudget::new()),
        max_memory_bytes,
    );
    let mut store = Store::new(&engine, state);
    store.limiter(|state| &mut state.memory);
    let fuel_error = |e: wasmtime::Error| RuleError::Engine(e.to_string());
    store.set_fuel(TRIAL_FUEL).map_err(fuel_error)?;
    let instance =
        Rule::instantiate(&mut store, &component, &linker).map_err(|e| RuleError::Mismatch {
            rule: rule.clone(),
            cause: format!("{e:#}"),
        })?;
    // Step 4: init, metered.
    let init = instance.call_init(&mut store, config_json);
    let init_fuel = TRIAL_FUEL - store.get_fuel().map_err(fuel_error)?;
    match init {
        Ok(Ok(())) => {}
        Ok(Err(message)) => return Err(RuleError::Init { rule, message }),
        Err(trap) => {
            return Err(RuleError::Init {
                rule,
                message: format!("trapped: {trap:#}"),
            })
        }
    }
    // Step 5: transform, metered.
    store.set_fuel(TRIAL_FUEL).map_err(fuel_error)?;
    store.data_mut().begin(event.clone());
    let result = instance.call_transform(&mut store, Resource::new_borrow(0));
    let fuel = TRIAL_FUEL - store.get_fuel().map_err(fuel_error)?;
    let state = store.data_mut();
    let after = state.finish(result.is_err()).unwrap_or(event);
    let outcome = match result {
        Ok(WitVerdict::Keep) => TrialOutcome::Keep,
        Ok(WitVerdict::Drop(reason)) => TrialOutcome::Drop(reason),
        Err(error) => TrialOutcome::Failed(format!("{error:#}")),
    };
    Ok(Trial {
        outcome,
        event: after,
        fuel,
        init_fuel,
        refused_paths: state.refused_paths,
    })
}
