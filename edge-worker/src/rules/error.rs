//! What can go wrong with a rule: at load (reading, compiling, refused
//! imports, init) and per call (deadline, memory, trap).

use std::path::PathBuf;

/// Why a rule call failed; the `kind` label of `waymark_rule_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// The call ran past its deadline (`timeout_ms`).
    Deadline,
    /// The instance tried to grow its memory past `memory_mb`.
    Memory,
    /// The rule trapped: a panic, `unreachable`, out-of-bounds access.
    Trap,
    /// No instance could be made: the pooling allocator is full, or
    /// re-instantiating the rule failed.
    Capacity,
    /// The rule wrote to malformed, read-only or oversized paths (the
    /// writes were refused and the call went on).
    BadPath,
    /// The rule logged over its rate limit (the lines were dropped).
    LogFlood,
    /// The rule's `init` refused its config, or it failed to load or reload.
    Init,
}

impl FaultKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Deadline => "deadline",
            FaultKind::Memory => "memory",
            FaultKind::Trap => "trap",
            FaultKind::Capacity => "capacity",
            FaultKind::BadPath => "bad_path",
            FaultKind::LogFlood => "log_flood",
            FaultKind::Init => "init",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule that could not be loaded or a call that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The `.wasm` file could not be read.
    #[error("rule {rule}: cannot read {path}: {source}")]
    Read {
        /// The rule's name.
        rule: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid WebAssembly component for this engine.
    #[error("rule {rule}: {path} is not a valid component: {cause}; build it with `cargo xtask build-rules` or `wasm-tools component new`")]
    Compile {
        /// The rule's name.
        rule: String,
        /// Its file.
        path: PathBuf,
        /// The compiler's message.
        cause: String,
    },
    /// The component imports something the worker does not grant.
    #[error("rule {rule}: imports `{import}`, which waymark does not grant; rules may import only `waymark:rules/*` (no WASI)")]
    ForbiddenImport {
        /// The rule's name.
        rule: String,
        /// The import's name.
        import: String,
    },
    /// The component does not match the `waymark:rules` world.
    #[error("rule {rule}: does not fit the waymark:rules@0.1.0 `rule` world: {cause}")]
    Mismatch {
        /// The rule's name.
        rule: String,
        /// What does not fit.
        cause: String,
    },
    /// The rule's `init` refused its config (or trapped).
    #[error("rule {rule}: init failed: {message}")]
    Init {
        /// The rule's name.
        rule: String,
        /// The rule's own message, or the trap.
        message: String,
    },
    /// A `transform` call failed; the rule's `on_error` decides the event's fate.
    #[error("rule {rule}: {kind}: {cause}")]
    Call {
        /// The rule's name.
        rule: String,
        /// What kind of failure.
        kind: FaultKind,
        /// Detail for the log (never a metric label).
        cause: String,
    },
    /// The rule engine could not be created.
    #[error("rules engine: {0}")]
    Engine(String),
    /// An event given to `waymark rule test` is not a JSON object.
    #[error("event: {0}")]
    Event(String),
    /// A chain names a rule that is not configured.
    #[error("rule chain: no rule named `{0}`; add a [[rules]] table with that name")]
    Unknown(String),
}

impl RuleError {
    /// The metric label for this error.
    pub fn kind(&self) -> FaultKind {
        match self {
            RuleError::Call { kind, .. } => *kind,
            _ => FaultKind::Init,
        }
    }

    /// A failed call.
    #[cold]
    pub(crate) fn call(
        rule: &str,
        kind: FaultKind,
        cause: impl std::fmt::Display,
    ) -> Box<RuleError> {
        Box::new(RuleError::Call {
            rule: rule.to_owned(),
            kind,
            cause: cause.to_string(),
        })
    }
}
