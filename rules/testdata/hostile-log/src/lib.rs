//! Hostile test rule: logs `lines` lines per event in a tight loop (forever
//! when `lines` is 0), then keeps the event. The host's log rate limit must
//! hold the worker's log steady.
//!
//! Config: `lines` (integer, default 1000). Build: `cargo xtask build-rules`.

use serde::Deserialize;
use waymark_rules_sdk::{export_rule, log, parse_config, Event, Rule, Verdict};

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_lines")]
    lines: u64,
}

fn default_lines() -> u64 {
    1000
}

/// Floods the log.
pub struct Flood {
    lines: u64,
}

impl Rule for Flood {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        Ok(Flood {
            lines: config.lines,
        })
    }

    fn transform(&mut self, _event: &mut dyn Event) -> Verdict {
        let mut i: u64 = 0;
        while self.lines == 0 || i < self.lines {
            log::info("flood");
            i += 1;
        }
        Verdict::Keep
    }
}

export_rule!(Flood);
