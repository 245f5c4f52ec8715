//! Hot reload on file change: a watcher thread polls each rule's file and
//! swaps in the new version when its content changes.
//!
//! # Design
//!
//! Polling (size, mtime, then SHA-256 when those move) needs no platform
//! file-notification API and handles editors that replace files by rename.
//! The new version is fully built (compiled, checked, a warm instance
//! initialised) before it is swapped in, so events never wait on a
//! compile and never see a half-loaded rule. A broken replacement leaves
//! the old version running and is logged once per distinct broken file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::cache::content_hash;
use super::{RuleError, RuleHandle, RuleHost};
use crate::telemetry::rules::{RuleLoadError, RuleReloaded};

/// Polls rule files in the background until dropped.
#[derive(Debug)]
pub struct RuleWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RuleWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl RuleHost {
    /// Starts a thread that checks every rule's file each `every` and
    /// reloads changed ones. Stops when the returned watcher is dropped.
    pub fn watch(&self, every: Duration) -> RuleWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let host = self.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("waymark-rules-watch".to_owned())
            .spawn(move || {
                // Sleep in short steps so dropping the watcher is prompt.
                let step = Duration::from_millis(50).min(every);
                let mut waited = Duration::ZERO;
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited >= every {
                        waited = Duration::ZERO;
                        let _ = host.check_files();
                    }
                }
            })
            .map_err(|error| tracing::error!(error = %error, "Cannot start the rule file watcher."))
            .ok();
        RuleWatcher { stop, thread }
    }

    /// One pass of the watcher: reloads every rule whose file content
    /// changed. Returns the errors of replacements that were refused (the
    /// old versions keep running).
    pub fn check_files(&self) -> Vec<RuleError> {
        self.handles()
            .into_iter()
            .filter_map(|handle| self.check_file(&handle).err())
            .collect()
    }

    fn check_file(&self, handle: &RuleHandle) -> Result<(), RuleError> {
        let current = handle.current();
        let path = &current.config.path;
        // Step 1: cheap check of size and mtime.
        let Ok(meta) = std::fs::metadata(path) else {
            // A file being replaced may be briefly missing; the old version runs on.
            return Ok(());
        };
        let modified = meta.modified().ok();
        {
            let Ok(stamp) = current.stamp.lock() else {
                return Ok(());
            };
            if stamp.modified == modified && stamp.len == meta.len() {
                return Ok(());
            }
        }
        // Step 2: the content, which decides.
        let Ok(bytes) = std::fs::read(path) else {
            return Ok(());
        };
        let sha256 = content_hash(&bytes);
        if let Ok(mut stamp) = current.stamp.lock() {
            if stamp.sha256 == sha256 {
                // Touched, not changed.
                stamp.modified = modified;
                stamp.len = meta.len();
                return Ok(());
            }
        }
        if let Ok(last) = handle.last_failure.lock() {
            if last.as_deref() == Some(sha256.as_str()) {
                return Ok(());
            }
        }
        // Step 3: build the new version fully, then swap.
        match self.load_one(&current.config) {
            Ok(next) => {
                RuleReloaded {
                    rule: &handle.name,
                    cause: "file",
                }
                .emit();
                handle.swap(next);
                if let Ok(mut last) = handle.last_failure.lock() {
                    *last = None;
                }
                Ok(())
            }
            Err(error) => {
                RuleLoadError {
                    rule: &handle.name,
                    error: &error,
                    keeping_old: true,
                }
                .emit();
                if let Ok(mut last) = handle.last_failure.lock() {
                    *last = Some(sha256);
                }
                Err(error)
            }
        }
    }
}
