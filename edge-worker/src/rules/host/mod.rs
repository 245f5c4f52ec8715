//! The host side of the WIT imports: the per-store state a rule call runs
//! with ([`RuleState`]), the `event` resource methods (thin delegations to
//! [`Event`]'s path accessors) and the rate-limited `log`.
//!
//! # Design
//!
//! The event is moved into the store's state for the duration of one call
//! and moved back after it (a few words, no copy), and the resource handle
//! the rule gets is a borrow whose representation is ignored: there is only
//! ever one event per call, so no `ResourceTable` lookup is needed. The
//! canonical ABI ends the borrow when `transform` returns, so a rule cannot
//! keep it. Every write is journalled, so a call that traps leaves the event
//! exactly as it was before the call (issue #3: `on_error = "pass"` passes
//! the event unchanged).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Number, Value as Json};
use wasmtime::component::Resource;
use wasmtime::ResourceLimiter;

use super::bindings::waymark::rules::types::{PathError, Value};
use super::bindings::waymark::rules::{log, types};
use crate::event::Event;

/// Longest path a rule may use, in bytes.
pub(crate) const MAX_PATH_BYTES: usize = 256;
/// Most segments a rule's path may have.
pub(crate) const MAX_PATH_SEGMENTS: usize = 16;
/// Top-level fields only the worker writes.
pub(crate) const READ_ONLY: [&str; 3] = ["type", "messageId", "receivedAt"];
/// Bytes of values (and paths) one call may write into the event.
pub(crate) const MAX_WRITE_BYTES: usize = 64 * 1024;
/// Deepest nesting a `json` value may have.
pub(crate) const MAX_JSON_DEPTH: usize = 32;
/// Longest log line kept, in bytes.
pub(crate) const MAX_LOG_BYTES: usize = 1024;
/// Log lines one call may write.
pub(crate) const MAX_LOGS_PER_CALL: u32 = 10;
/// Log lines a rule may write in a burst, then per second.
const LOG_BURST: f64 = 20.0;
const LOG_PER_SEC: f64 = 10.0;

/// The host type behind the WIT `event` resource: a marker, because the
/// event being transformed lives in [`RuleState`] during the call.
#[derive(Debug)]
pub struct EventView;

/// Everything one pool slot's store carries.
pub(crate) struct RuleState {
    /// The rule's name, for logs.
    rule: Arc<str>,
    /// The event of the call in progress; `None` between calls.
    event: Option<Event>,
    /// How to undo this call's writes, in order.
    undo: Vec<Undo>,
    /// Bytes written into the event by this call.
    written: usize,
    /// Writes refused in this call.
    pub(crate) refused_paths: u32,
    /// Log lines written and dropped in this call.
    logged: u32,
    pub(crate) dropped_logs: u32,
    /// The rule's log rate limit, shared by its instances.
    log_budget: Arc<LogBudget>,
    /// The memory cap and high-water mark.
    pub(crate) memory: MemoryCap,
}

impl RuleState {
    pub(crate) fn new(
        rule: Arc<str>,
        log_budget: Arc<LogBudget>,
        max_memory_bytes: usize,
    ) -> RuleState {
        RuleState {
            rule,
            event: None,
            undo: Vec::new(),
            written: 0,
            refused_paths: 0,
            logged: 0,
            dropped_logs: 0,
            log_budget,
            memory: MemoryCap::new(max_memory_bytes),
        }
    }

    /// Moves the event in for one call and resets the per-call counters.
    pub(crate) fn begin(&mut self, event: Event) {
        self.event = Some(event);
        self.undo.clear();
        self.written = 0;
        self.refused_paths = 0;
        self.logged = 0;
        self.dropped_logs = 0;
    }

    /// Moves the event back out; with `rollback`, undoes the call's writes first.
    pub(crate) fn finish(&mut self, rollback: bool) -> Option<Event> {
        let mut event = self.event.take()?;
        if rollback {
            while let Some(undo) = self.undo.pop() {
                // Each entry restores a state the event was in, so it applies.
                let _ = match undo {
                    Undo::Restore(path, value) => event.set(&path, value),
                    Undo::Remove(path) => event.remove(&path).map(|_| ()),
                };
            }
        }
        self.undo.clear();
        Some(event)
    }

    /// The event, or a trap when the rule calls outside `transform`.
    fn event(&mut self) -> wasmtime::Result<&mut Event> {
        self.event
            .as_mut()
            .ok_or_else(|| wasmtime::Error::msg("event used outside transform"))
    }

    /// Checks a path a rule wants to write, counting refusals.
    fn check_writable(&mut self, path: &str) -> Result<(), PathError> {
        let result = check_path(path);
        if result.is_err() {
            self.refused_paths += 1;
        }
        result
    }

    /// Charges `bytes` against the call's write budget.
    fn charge(&mut self, bytes: usize) -> Result<(), PathError> {
        let total = self.written.saturating_add(bytes);
        if total > MAX_WRITE_BYTES {
            self.refused_paths += 1;
            return Err(PathError::TooLarge);
        }
        self.written = total;
        Ok(())
    }
}

/// One journalled write, undone in reverse order after a failed call.
enum Undo {
    /// Put this value back at this path.
    Restore(String, Json),
    /// Remove this path (a field or the first object a write created).
    Remove(String),
}

/// Checks a path against the rules' limits and the read-only fields, in
/// one pass over its bytes.
pub(crate) fn check_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(PathError::Malformed);
    }
    let mut segments = 1;
    let mut after_dot = true;
    for byte in path.bytes() {
        if byte == b'.' {
            if after_dot {
                return Err(PathError::Malformed);
            }
            segments += 1;
            after_dot = true;
        } else {
            after_dot = false;
        }
    }
    if after_dot || segments > MAX_PATH_SEGMENTS {
        return Err(PathError::Malformed);
    }
    if READ_ONLY.contains(&path) {
        return Err(PathError::ReadOnly);
    }
    Ok(())
}

/// A JSON value as it crosses to a rule.
pub(crate) fn to_wit(value: &Json) -> Value {
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => Value::Json(value.to_string()),
    }
}

/// A rule's value as it goes into the event, with its size for the write budget.
pub(crate) fn from_wit(value: Value) -> Result<(Json, usize), PathError> {
    Ok(match value {
        Value::Null => (Json::Null, 4),
        Value::Boolean(b) => (Json::Bool(b), 5),
        Value::Integer(i) => (Json::Number(i.into()), 8),
        Value::Float(f) => (
            Json::Number(Number::from_f64(f).ok_or(PathError::InvalidValue)?),
            8,
        ),
        Value::Text(s) => {
            let len = s.len();
            (Json::String(s), len)
        }
        Value::Json(text) => {
            if text.len() > MAX_WRITE_BYTES {
                return Err(PathError::TooLarge);
            }
            let parsed: Json = serde_json::from_str(&text).map_err(|_| PathError::InvalidValue)?;
            if depth(&parsed) > MAX_JSON_DEPTH {
                return Err(PathError::InvalidValue);
            }
            (parsed, text.len())
        }
    })
}

/// Nesting depth of a JSON value (a scalar is 0). serde_json's parser caps
/// nesting at 128, so the recursion is bounded.
fn depth(value: &Json) -> usize {
    match value {
        Json::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Json::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

impl types::Host for RuleState {}

impl types::HostEvent for RuleState {
    fn event_type(&mut self, _event: Resource<EventView>) -> wasmtime::Result<String> {
        Ok(self.event()?.event_type().as_str().to_owned())
    }

    fn name(&mut self, _event: Resource<EventView>) -> wasmtime::Result<Option<String>> {
        Ok(self.event()?.name().map(str::to_owned))
    }

    fn message_id(&mut self, _event: Resource<EventView>) -> wasmtime::Result<String> {
        Ok(self.event()?.message_id().to_owned())
    }

    fn get(
        &mut self,
        _event: Resource<EventView>,
        path: String,
    ) -> wasmtime::Result<Option<Value>> {
        Ok(self.event()?.get(&path).map(to_wit))
    }

    fn set(
        &mut self,
        _event: Resource<EventView>,
        path: String,
        value: Value,
    ) -> wasmtime::Result<Result<(), PathError>> {
        // Step 1: refuse bad paths and values before touching the event.
        if let Err(e) = self.check_writable(&path) {
            return Ok(Err(e));
        }
        let (json, bytes) = match from_wit(value) {
            Ok(converted) => converted,
            Err(e) => {
                self.refused_paths += 1;
                return Ok(Err(e));
            }
        };
        if let Err(e) = self.charge(bytes + path.len()) {
            return Ok(Err(e));
        }
        // Step 2: write in one walk, and journal how to undo it.
        match self.event()?.replace(&path, json) {
            Ok(replaced) => {
                let mut path = path;
                self.undo.push(match (replaced.created, replaced.old) {
                    (Some(created), _) => {
                        path.truncate(created);
                        Undo::Remove(path)
                    }
                    (None, Some(old)) => Undo::Restore(path, old),
                    (None, None) => Undo::Remove(path),
                });
                Ok(Ok(()))
            }
            Err(e) => {
                self.refused_paths += 1;
                Ok(Err(path_error(e)))
            }
        }
    }

    fn remove(
        &mut self,
        _event: Resource<EventView>,
        path: String,
    ) -> wasmtime::Result<Result<bool, PathError>> {
        if let Err(e) = self.check_writable(&path) {
            return Ok(Err(e));
        }
        match self.event()?.remove(&path) {
            Ok(Some(old)) => {
                self.undo.push(Undo::Restore(path, old));
                Ok(Ok(true))
            }
            Ok(None) => Ok(Ok(false)),
            Err(e) => {
                self.refused_paths += 1;
                Ok(Err(path_error(e)))
            }
        }
    }

    fn consent(
        &mut self,
        _event: Resource<EventView>,
        purpose: String,
    ) -> wasmtime::Result<Option<bool>> {
        Ok(self.event()?.consent(&purpose))
    }

    fn drop(&mut self, _event: Resource<EventView>) -> wasmtime::Result<()> {
        // The host owns the event; rules only ever hold borrows.
        Ok(())
    }
}

/// The WIT error for an [`Event`] path error.
fn path_error(e: crate::event::PathError) -> PathError {
    match e {
        crate::event::PathError::Malformed(_) => PathError::Malformed,
        crate::event::PathError::NotAnObject { segment, .. } => PathError::NotAnObject(segment),
        crate::event::PathError::ReadOnly(_) => PathError::ReadOnly,
    }
}

impl log::Host for RuleState {
    fn log(&mut self, level: log::Level, mut message: String) -> wasmtime::Result<()> {
        // Step 1: per-call cap, then the rule's shared token bucket.
        if self.logged >= MAX_LOGS_PER_CALL || !self.log_budget.take() {
            self.dropped_logs += 1;
            return Ok(());
        }
        self.logged += 1;
        // Step 2: cut long lines at a character boundary.
        if message.len() > MAX_LOG_BYTES {
            let mut end = MAX_LOG_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let rule = &*self.rule;
        match level {
            log::Level::Debug => tracing::debug!(rule, message, "Rule logged."),
            log::Level::Info => tracing::info!(rule, message, "Rule logged."),
            log::Level::Warn => tracing::warn!(rule, message, "Rule logged."),
            log::Level::Error => tracing::error!(rule, message, "Rule logged."),
        }
        Ok(())
    }
}

/// A token bucket for one rule's log lines, shared by its instances.
#[derive(Debug)]
pub(crate) struct LogBudget {
    state: Mutex<(f64, Instant)>,
}

impl LogBudget {
    pub(crate) fn new() -> LogBudget {
        LogBudget {
            state: Mutex::new((LOG_BURST, Instant::now())),
        }
    }

    /// Takes one token, refilled at `LOG_PER_SEC` up to `LOG_BURST`.
    fn take(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled =
            (tokens + now.duration_since(last).as_secs_f64() * LOG_PER_SEC).min(LOG_BURST);
        if refilled < 1.0 {
            *state = (refilled, now);
            return false;
        }
        *state = (refilled - 1.0, now);
        true
    }
}

/// The per-instance memory cap (`memory_mb`) and the high-water mark that
/// decides recycling.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    max_bytes: usize,
    /// Largest linear memory size granted so far (wasm memory never shrinks).
    pub(crate) peak_bytes: usize,
    /// Whether a growth past the cap was refused.
    pub(crate) exceeded: bool,
}

impl MemoryCap {
    fn new(max_bytes: usize) -> MemoryCap {
        MemoryCap {
            max_bytes,
            peak_bytes: 0,
            exceeded: false,
        }
    }
}

/// A growth past `memory_mb`; the call traps with it.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {max_bytes} bytes exceeded (asked for {desired} bytes)")]
pub(crate) struct MemoryCapExceeded {
    max_bytes: usize,
    desired: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            // An error (not `false`) traps at once, so the cause is exact.
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                max_bytes: self.max_bytes,
                desired,
            }));
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; rules need a few hundred at most.
        Ok(desired <= 100_000)
    }
}

#[cfg(test)]
mod tests;
