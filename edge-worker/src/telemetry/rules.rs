//! Signals of the rules stage and the rule host.
//!
//! Every failure kind moves `waymark_rule_errors_total{rule,kind}`; `kind`
//! is one of `deadline`, `memory`, `trap`, `capacity`, `bad_path`,
//! `log_flood`, `init`. The error text goes to the log, never to a label.

use std::path::Path;
use std::time::Duration;

use crate::config::OnError;
use crate::rules::{FaultKind, RuleError};

fn count_error(rule: &str, kind: FaultKind) {
    metrics::counter!("waymark_rule_errors_total", "rule" => rule.to_owned(), "kind" => kind.as_str())
        .increment(1);
}

/// A rule call failed (deadline, memory cap, trap, no instance); the rule's
/// `on_error` policy decided the event's fate.
pub(crate) struct RuleTrapped<'a> {
    pub rule: &'a str,
    pub error: &'a RuleError,
    pub policy: OnError,
}

impl RuleTrapped<'_> {
    pub(crate) fn emit(self) {
        let kind = self.error.kind();
        let policy = match self.policy {
            OnError::Pass => "pass",
            OnError::Drop => "drop",
            OnError::Quarantine => "quarantine",
        };
        tracing::warn!(rule = self.rule, kind = kind.as_str(), policy, error = %self.error, "Rule call failed.");
        count_error(self.rule, kind);
    }
}

/// A rule tried to write bad paths or values; the writes were refused and
/// the call went on. Counted once per call.
pub(crate) struct RulePathsRefused<'a> {
    pub rule: &'a str,
    pub count: u32,
}

impl RulePathsRefused<'_> {
    pub(crate) fn emit(self) {
        tracing::debug!(rule = self.rule, count = self.count, "Rule writes refused.");
        count_error(self.rule, FaultKind::BadPath);
    }
}

/// A rule logged past its rate limit; the extra lines were dropped.
pub(crate) struct RuleLogsDropped<'a> {
    pub rule: &'a str,
    pub count: u32,
}

impl RuleLogsDropped<'_> {
    pub(crate) fn emit(self) {
        metrics::counter!("waymark_rule_logs_dropped_total", "rule" => self.rule.to_owned())
            .increment(u64::from(self.count));
        count_error(self.rule, FaultKind::LogFlood);
    }
}

/// A rule was loaded (at start or on reload).
pub(crate) struct RuleLoaded<'a> {
    pub rule: &'a str,
    pub path: &'a Path,
    pub cached: bool,
    pub elapsed: Duration,
}

impl RuleLoaded<'_> {
    pub(crate) fn emit(self) {
        tracing::info!(
            rule = self.rule,
            path = %self.path.display(),
            cached = self.cached,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "Rule loaded."
        );
    }
}

/// A new version of a rule replaced the running one.
pub(crate) struct RuleReloaded<'a> {
    pub rule: &'a str,
    /// `file` or `config`.
    pub cause: &'static str,
}

impl RuleReloaded<'_> {
    pub(crate) fn emit(self) {
        tracing::info!(rule = self.rule, cause = self.cause, "Rule reloaded.");
        metrics::counter!("waymark_rule_reloads_total", "rule" => self.rule.to_owned(), "result" => "ok")
            .increment(1);
    }
}

/// A rule (or a replacement) could not be loaded.
pub(crate) struct RuleLoadError<'a> {
    pub rule: &'a str,
    pub error: &'a RuleError,
    /// Whether an older version keeps running.
    pub keeping_old: bool,
}

impl RuleLoadError<'_> {
    pub(crate) fn emit(self) {
        if self.keeping_old {
            tracing::error!(rule = self.rule, error = %self.error, "Rule reload failed; the previous version keeps running.");
        } else {
            tracing::error!(rule = self.rule, error = %self.error, "Rule cannot be loaded.");
        }
        metrics::counter!("waymark_rule_reloads_total", "rule" => self.rule.to_owned(), "result" => "error")
            .increment(1);
        count_error(self.rule, FaultKind::Init);
    }
}
