//! Logging into the worker's log.
//!
//! Lines are tagged with the rule's name, rate-limited per rule (a burst of
//! 20, then 10 per second, at most 10 per call) and cut at 1 KiB; lines over
//! the limit are dropped and counted. Outside the worker (unit tests) lines
//! go to standard error.

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Detail for rule authors.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the rule handled.
    Warn,
    /// Something the rule could not handle.
    Error,
}

/// Writes one line at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::waymark::rules::log as wit;
        let level = match level {
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Writes a debug line.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes an info line.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes a warning.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes an error line.
pub fn error(message: &str) {
    log(Level::Error, message);
}
