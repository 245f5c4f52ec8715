//! Shared plumbing of the HTTP destinations: the client, response
//! classification and `Retry-After`, and the few event readings every
//! vendor mapping needs.
//!
//! # Design
//! Retry decisions belong to the error type (STYLE §1): a vendor answer is
//! turned into a [`DeliveryError`] here, once, so every destination agrees
//! on what is retriable: 408, 429, 5xx and connection failures are; other
//! 4xx answers are the vendor refusing the payload and go to the
//! dead-letter store. Backoff itself lives in `stages/deliver/`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Map, Value};
use url::Url;

use super::DeliveryError;
use crate::config::ConfigError;
use crate::storage::OutboxEntry;

/// Default time a vendor call may take, in milliseconds.
pub(crate) fn default_timeout_ms() -> u64 {
    10_000
}

/// Builds the one client a destination keeps for its lifetime.
pub(crate) fn client(timeout_ms: u64, key: &str) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms.max(1)))
        .connect_timeout(Duration::from_millis(timeout_ms.clamp(1, 5_000)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("waymark/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::invalid(key, format!("cannot build an HTTP client: {e}")))
}

/// Joins `path` onto a configured base URL, checking the result at build.
pub(crate) fn endpoint(base: &str, path: &str, key: &str) -> Result<Url, ConfigError> {
    let base = Url::parse(base).map_err(|e| {
        ConfigError::invalid(
            key,
            format!("`{base}` is not a URL ({e}); use e.g. \"https://api.example.com\""),
        )
    })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(
            key,
            "must be an http:// or https:// URL",
        ));
    }
    let joined = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    Url::parse(&joined).map_err(|e| ConfigError::invalid(key, format!("cannot join {path}: {e}")))
}

/// Resolves a required secret given inline or through an environment variable.
pub(crate) fn required_secret(
    key: &str,
    inline: Option<&str>,
    env: Option<&str>,
) -> Result<String, ConfigError> {
    crate::config::secret(key, inline, env)?.ok_or_else(|| {
        ConfigError::invalid(
            key,
            format!(
                "missing; set `{key}_env` to the name of an environment variable that holds it"
            ),
        )
    })
}

/// A vendor's answer: status, `Retry-After` and body.
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The vendor's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The body (empty when it could not be read).
    pub body: Vec<u8>,
}

impl Answer {
    /// `Ok` for 2xx, else the classified error.
    pub(crate) fn classify(&self, vendor: &str) -> Result<(), DeliveryError> {
        classify(vendor, self.status, self.retry_after, &self.body)
    }

    /// The body as JSON, when it is.
    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Sends a prepared request and returns the answer, whatever its status.
/// Only a request that got no answer is an error (retriable).
pub(crate) async fn send_raw(
    request: RequestBuilder,
    vendor: &str,
) -> Result<Answer, DeliveryError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(vendor, &e))?;
    let status = response.status();
    let retry_after = parse_retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// Turns a status into `Ok` or a classified error.
pub(crate) fn classify(
    vendor: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(), DeliveryError> {
    if status.is_success() {
        return Ok(());
    }
    let message = format!("{vendor}: HTTP {}: {}", status.as_u16(), snippet(body));
    let retriable = status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error();
    let mut error = if retriable {
        DeliveryError::retriable(message)
    } else {
        DeliveryError::permanent(message)
    };
    if retriable {
        error.retry_after = retry_after;
    }
    Err(error)
}

#[cold]
fn transport_error(vendor: &str, e: &reqwest::Error) -> DeliveryError {
    // Connect failures, timeouts and resets may all pass later. The URL is
    // left out: it may carry a secret in its query (GA4, Meta).
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    DeliveryError::retriable(format!("{vendor}: {kind}"))
}

/// The first 200 characters of a response body, for logs and dead letters.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(86_400)));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    let wait = (at - Utc::now()).num_milliseconds().max(0) as u64;
    Some(Duration::from_millis(wait.min(86_400_000)))
}

/// Parses an outbox entry's JSON. An entry that is not a JSON object can
/// never be sent, so the error is permanent.
pub(crate) fn parse_event(entry: &OutboxEntry) -> Result<Map<String, Value>, DeliveryError> {
    match serde_json::from_str::<Value>(&entry.json) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(DeliveryError::permanent(format!(
            "outbox entry {} is not a JSON object",
            entry.id
        ))),
    }
}

/// The value at a dotted path of a JSON object.
pub(crate) fn at<'a>(map: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut cur = map.get(segments.next()?)?;
    for s in segments {
        cur = cur.as_object()?.get(s)?;
    }
    Some(cur)
}

/// A string at a dotted path, when non-empty.
pub(crate) fn str_at<'a>(map: &'a Map<String, Value>, path: &str) -> Option<&'a str> {
    at(map, path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The event time in Unix milliseconds: `timestamp`, else `receivedAt`, else now.
pub(crate) fn event_time_ms(map: &Map<String, Value>) -> i64 {
    ["timestamp", "originalTimestamp", "receivedAt"]
        .iter()
        .filter_map(|k| str_at(map, k))
        .find_map(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(crate::time::now_ms)
}

/// The visitor: `context.waymark.visitorId`, else `anonymousId`.
pub(crate) fn visitor_id(map: &Map<String, Value>) -> Option<&str> {
    str_at(map, "context.waymark.visitorId").or_else(|| str_at(map, "anonymousId"))
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(input: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(input.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        let later = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let d = parse_retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn statuses_are_classified() {
        let ok = classify("x", StatusCode::NO_CONTENT, None, b"");
        assert!(ok.is_ok());
        let e = classify(
            "x",
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            b"slow",
        )
        .unwrap_err();
        assert!(e.is_retriable());
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        assert!(classify("x", StatusCode::BAD_GATEWAY, None, b"")
            .unwrap_err()
            .is_retriable());
        let e = classify(
            "x",
            StatusCode::BAD_REQUEST,
            Some(Duration::from_secs(3)),
            b"bad",
        )
        .unwrap_err();
        assert!(!e.is_retriable());
        assert_eq!(e.retry_after, None);
        assert!(e.message.contains("HTTP 400: bad"), "{e}");
    }

    #[test]
    fn endpoints_join_and_refuse_bad_urls() {
        let u = endpoint("http://127.0.0.1:9/", "/v1/batch", "k").unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:9/v1/batch");
        assert!(endpoint("ftp://x", "/a", "k").is_err());
        assert!(endpoint("not a url", "/a", "k").is_err());
    }
}
