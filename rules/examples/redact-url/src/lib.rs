//! redact-url: strips configured query parameters (tokens, emails, click
//! ids…) from page URLs and referrers before events leave the worker.
//!
//! Parameter names match case-insensitively; a trailing `*` matches a
//! prefix (`utm_*`). The rest of the URL, including the order of the kept
//! parameters and the fragment, is left as it was. `context.page.search`
//! is rewritten to match.
//!
//! Config keys:
//! - `params` (list of names, default `["token", "access_token", "email", "password", "code", "session", "sid"]`)
//! - `fields` (list of paths, default `["context.page.url", "context.page.referrer", "context.page.search", "properties.url", "properties.referrer"]`)
//!
//! Build: `cargo xtask build-rules` (writes `target/rules/components/redact-url.wasm`).

use serde::Deserialize;
use waymark_rules_sdk::{export_rule, parse_config, Event, Rule, Value, Verdict};

/// The rule's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Query parameter names to remove; `prefix*` matches a prefix.
    #[serde(default = "default_params")]
    pub params: Vec<String>,
    /// Paths holding URLs (or a bare `?query`).
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
}

fn default_params() -> Vec<String> {
    [
        "token",
        "access_token",
        "email",
        "password",
        "code",
        "session",
        "sid",
    ]
    .map(String::from)
    .to_vec()
}

fn default_fields() -> Vec<String> {
    [
        "context.page.url",
        "context.page.referrer",
        "context.page.search",
        "properties.url",
        "properties.referrer",
    ]
    .map(String::from)
    .to_vec()
}

/// Removes query parameters whose names match `params` (lowercase, `x*` for
/// a prefix). Returns `None` when nothing changed.
pub fn redact(url: &str, params: &[String]) -> Option<String> {
    let (before_fragment, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (base, query) = before_fragment.split_once('?')?;
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("").to_ascii_lowercase();
            let hit = params.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == *p,
            });
            removed |= hit;
            !hit
        })
        .collect();
    if !removed {
        return None;
    }
    let mut out = String::with_capacity(url.len());
    out.push_str(base);
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    out.push_str(fragment);
    Some(out)
}

/// Strips query parameters from URL fields.
pub struct RedactUrl {
    params: Vec<String>,
    fields: Vec<String>,
}

impl Rule for RedactUrl {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = parse_config(config)?;
        if config.params.iter().any(|p| p.is_empty() || p == "*") {
            return Err(
                "params: an empty name or a bare `*` would strip every parameter; list names"
                    .to_owned(),
            );
        }
        Ok(RedactUrl {
            params: config
                .params
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
            fields: config.fields,
        })
    }

    fn transform(&mut self, event: &mut dyn Event) -> Verdict {
        for path in &self.fields {
            let Some(url) = event.get_str(path) else {
                continue;
            };
            if let Some(clean) = redact(&url, &self.params) {
                let _ = event.set(path, Value::Text(clean));
            }
        }
        Verdict::Keep
    }
}

export_rule!(RedactUrl);

#[cfg(test)]
mod tests {
    use super::*;
    use waymark_rules_sdk::JsonEvent;

    fn params(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn named_and_prefixed_parameters_are_removed() {
        let p = params(&["token", "utm_*"]);
        assert_eq!(
            redact("https://a.example/p?x=1&TOKEN=abc&utm_source=n&y=2#top", &p).as_deref(),
            Some("https://a.example/p?x=1&y=2#top")
        );
        assert_eq!(
            redact("https://a.example/p?token=1", &p).as_deref(),
            Some("https://a.example/p")
        );
        assert_eq!(redact("https://a.example/p?x=1", &p), None);
        assert_eq!(redact("https://a.example/p", &p), None);
        assert_eq!(redact("?token=1&q=2", &p).as_deref(), Some("?q=2"));
    }

    #[test]
    fn page_url_referrer_and_search_are_rewritten() {
        let mut rule = RedactUrl::init("{}").unwrap();
        let mut e = JsonEvent::from_json(
            r#"{"type":"page","context":{"page":{"url":"https://s.example/reset?email=a%40b.c&step=2","referrer":"https://m.example/?session=9","search":"?email=a%40b.c&step=2"}}}"#,
        )
        .unwrap();
        rule.transform(&mut e);
        assert_eq!(
            e.get_str("context.page.url").as_deref(),
            Some("https://s.example/reset?step=2")
        );
        assert_eq!(
            e.get_str("context.page.referrer").as_deref(),
            Some("https://m.example/")
        );
        assert_eq!(e.get_str("context.page.search").as_deref(), Some("?step=2"));
        assert!(RedactUrl::init(r#"{"params":["*"]}"#).is_err());
    }
}
