//! bot-filter: drops events whose user agent (`context.userAgent`) belongs
//! to a known crawler, monitor or headless browser, with the reason `bot`.
//!
//! Matching is a case-insensitive substring test against a built-in list
//! (Googlebot, bingbot, HeadlessChrome, curl, python-requests, …) plus any
//! extra patterns. Events without a user agent are kept (server-side
//! sources rarely send one).
//!
//! Config keys:
//! - `extra_patterns` (list of strings, default `[]`): more substrings that mark a bot.
//! - `drop_missing_user_agent` (bool, default `false`): drop events without a user agent.
//!
//! Build: `cargo xtask build-rules` (writes `target/rules/components/bot-filter.wasm`).

use serde::Deserialize;
use waymark_rules_sdk::{export_rule, parse_config, Event, Rule, Verdict};

/// Lowercase substrings that mark a bot user agent.
pub const BUILT_IN: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "headlesschrome",
    "phantomjs",
    "lighthouse",
    "pingdom",
    "uptimerobot",
    "facebookexternalhit",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "java/",
    "okhttp",
    "axios/",
    "node-fetch",
    "scrapy",
    "httpclient",
    "bytespider",
    "gptbot",
    "ccbot",
    "petalbot",
];

/// The rule's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// More substrings that mark a bot (case-insensitive).
    #[serde(default)]
    pub extra_patterns: Vec<String>,
    /// Drop events with no user agent.
    #[serde(default)]
    pub drop_missing_user_agent: bool,
}

/// Drops bot traffic.
pub struct BotFilter {
    patterns: Vec<String>,
    drop_missing: bool,
}

impl BotFilter {
    /// Whether `user_agent` matches a pattern.
    pub fn is_bot(&self, user_agent: &str) -> bool {
        let ua = user_agent.to_ascii_lowercase();
        self.patterns.iter().any(|p| ua.contains(p.as_str()))
    }
}

impl Rule for BotFilter {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        let mut patterns: Vec<String> = BUILT_IN.iter().map(|p| (*p).to_owned()).collect();
        patterns.extend(config.extra_patterns.iter().map(|p| p.to_ascii_lowercase()));
        if patterns.iter().any(String::is_empty) {
            return Err("extra_patterns: an empty pattern would match everything".to_owned());
        }
        Ok(BotFilter {
            patterns,
            drop_missing: config.drop_missing_user_agent,
        })
    }

    fn transform(&mut self, event: &mut dyn Event) -> Verdict {
        match event.get_str("context.userAgent") {
            Some(ua) if self.is_bot(&ua) => Verdict::Drop("bot".to_owned()),
            None if self.drop_missing => Verdict::Drop("no-user-agent".to_owned()),
            _ => Verdict::Keep,
        }
    }
}

export_rule!(BotFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use waymark_rules_sdk::JsonEvent;

    fn ua_event(ua: &str) -> JsonEvent {
        JsonEvent::from_json(&format!(
            r#"{{"type":"page","context":{{"userAgent":"{ua}"}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn crawlers_are_dropped_and_browsers_kept() {
        let mut rule = BotFilter::init("{}").unwrap();
        let bots = [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
            "curl/8.4.0",
            "python-requests/2.31.0",
        ];
        for ua in bots {
            assert_eq!(
                rule.transform(&mut ua_event(ua)),
                Verdict::Drop("bot".into()),
                "{ua}"
            );
        }
        let browser = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15";
        assert_eq!(rule.transform(&mut ua_event(browser)), Verdict::Keep);
    }

    #[test]
    fn extra_patterns_and_missing_user_agent() {
        let mut rule = BotFilter::init(
            r#"{"extra_patterns":["InternalMonitor"],"drop_missing_user_agent":true}"#,
        )
        .unwrap();
        assert_eq!(
            rule.transform(&mut ua_event("internalmonitor/1")),
            Verdict::Drop("bot".into())
        );
        let mut bare = JsonEvent::from_json(r#"{"type":"track"}"#).unwrap();
        assert_eq!(
            rule.transform(&mut bare),
            Verdict::Drop("no-user-agent".into())
        );
        assert!(BotFilter::init(r#"{"extra_patterns":[""]}"#).is_err());
    }
}
