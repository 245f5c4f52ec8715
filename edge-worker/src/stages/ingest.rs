//! Ingest: turn an HTTP body into raw events, the way Segment's HTTP
//! Tracking API reads it.
//!
//! Handles gzip, `text/plain` bodies holding JSON (the tag sends those to
//! avoid a CORS preflight), the batch limit, UTF-8, the write key in the
//! body, and the split of `/v1/batch` into its events. Each event keeps its
//! raw JSON text so that a rejected one is quarantined exactly as received.

use std::io::Read;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::EventType;

/// Why a request body was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The body (after decompression) is over the batch limit. Answered 413.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// `Content-Encoding` is not one we read. Answered 415.
    UnsupportedEncoding(String),
    /// `Content-Type` is not JSON or text. Answered 415.
    UnsupportedMediaType(String),
    /// The gzip stream is corrupt. Answered 400.
    BadGzip,
    /// The body is not UTF-8. Answered 400.
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        at: usize,
    },
    /// The body is not the JSON object the endpoint expects. Answered 400.
    NotJson(String),
    /// `/v1/batch` without a `batch` array, or an empty one. Answered 400.
    NoBatch,
}

impl BodyError {
    /// The field at fault and what is wrong, for the error body.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            BodyError::TooLarge { limit } => (
                "body",
                format!("request body is over the {limit}-byte batch limit; send smaller batches"),
            ),
            BodyError::UnsupportedEncoding(e) => (
                "Content-Encoding",
                format!("`{e}` is not supported; send identity or gzip"),
            ),
            BodyError::UnsupportedMediaType(t) => (
                "Content-Type",
                format!("`{t}` is not supported; send application/json or text/plain holding JSON"),
            ),
            BodyError::BadGzip => (
                "body",
                "the gzip stream is corrupt or truncated; check the Content-Encoding header".into(),
            ),
            BodyError::NotUtf8 { at } => (
                "body",
                format!("invalid UTF-8 at byte {at}; JSON must be UTF-8"),
            ),
            BodyError::NotJson(why) => ("body", format!("not valid JSON: {why}")),
            BodyError::NoBatch => (
                "batch",
                "expected a non-empty `batch` array of events".into(),
            ),
        }
    }
}

/// How a request declared its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyHeaders<'a> {
    /// `Content-Type`, if sent.
    pub content_type: Option<&'a str>,
    /// `Content-Encoding`, if sent.
    pub content_encoding: Option<&'a str>,
}

/// One event as received, before normalization.
#[derive(Debug)]
pub struct RawEvent<'a> {
    /// The event's JSON text exactly as sent.
    pub raw: &'a RawValue,
    /// The call type the endpoint implies (`/v1/track`), or `None` for a batch
    /// item, which carries its own `type`.
    pub endpoint_type: Option<EventType>,
}

/// A decoded request: its events and the request-level fields.
#[derive(Debug)]
pub struct RawBatch<'a> {
    /// Events in request order.
    pub events: Vec<RawEvent<'a>>,
    /// `writeKey` from the body, if present.
    pub write_key: Option<String>,
    /// `sentAt` from the body of a batch, applied to events that lack their own.
    pub sent_at: Option<String>,
}

/// Checks the headers and returns the JSON bytes, inflating gzip within `limit`.
pub fn body_bytes<'b>(
    body: &'b [u8],
    headers: BodyHeaders<'_>,
    limit: usize,
) -> Result<std::borrow::Cow<'b, [u8]>, BodyError> {
    if let Some(ct) = headers.content_type {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let json_like = essence == "application/json"
            || essence == "text/plain"
            || essence.ends_with("+json")
            || essence.is_empty();
        if !json_like {
            return Err(BodyError::UnsupportedMediaType(essence));
        }
    }
    let bytes = match headers
        .content_encoding
        .map(|e| e.trim().to_ascii_lowercase())
    {
        None => std::borrow::Cow::Borrowed(body),
        Some(e) if e.is_empty() || e == "identity" => std::borrow::Cow::Borrowed(body),
        Some(e) if e == "gzip" || e == "x-gzip" => std::borrow::Cow::Owned(gunzip(body, limit)?),
        Some(e) => return Err(BodyError::UnsupportedEncoding(e)),
    };
    if bytes.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(BodyError::NotUtf8 {
            at: e.valid_up_to(),
        });
    }
    Ok(bytes)
}

/// Inflates a gzip body, stopping one byte past `limit` so a zip bomb costs nothing.
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit + 1));
    let decoder = flate2::read::MultiGzDecoder::new(body);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| BodyError::BadGzip)?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow, default)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<serde_json::Value>,
    #[serde(rename = "sentAt", default)]
    sent_at: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SingleBody {
    #[serde(rename = "writeKey", default)]
    write_key: Option<serde_json::Value>,
}

/// Splits a JSON body into raw events. `endpoint` is the call type of a
/// single-event endpoint, or `None` for `/v1/batch`.
pub fn split<'a>(json: &'a [u8], endpoint: Option<EventType>) -> Result<RawBatch<'a>, BodyError> {
    let text = std::str::from_utf8(json).map_err(|e| BodyError::NotUtf8 {
        at: e.valid_up_to(),
    })?;
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Err(BodyError::NotJson("the body must be a JSON object".into()));
    }
    match endpoint {
        None => {
            let body: BatchBody<'a> =
                serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
            let events = body
                .batch
                .filter(|b| !b.is_empty())
                .ok_or(BodyError::NoBatch)?;
            Ok(RawBatch {
                events: events
                    .into_iter()
                    .map(|raw| RawEvent {
                        raw,
                        endpoint_type: None,
                    })
                    .collect(),
                write_key: string_field(body.write_key),
                sent_at: string_field(body.sent_at),
            })
        }
        Some(kind) => {
            let raw: &'a RawValue =
                serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
            let single: SingleBody =
                serde_json::from_str(raw.get()).map_err(|e| BodyError::NotJson(e.to_string()))?;
            Ok(RawBatch {
                events: vec![RawEvent {
                    raw,
                    endpoint_type: Some(kind),
                }],
                write_key: string_field(single.write_key),
                sent_at: None,
            })
        }
    }
}

fn string_field(v: Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn batch_splits_into_raw_events_and_keeps_request_fields() {
        let body = br#"{"batch":[{"type":"track","event":"A"},{"type":"page"}],"writeKey":"wk","sentAt":"2024-01-01T00:00:00Z"}"#;
        let batch = split(body, None).unwrap();
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[0].raw.get(), r#"{"type":"track","event":"A"}"#);
        assert_eq!(batch.write_key.as_deref(), Some("wk"));
        assert_eq!(batch.sent_at.as_deref(), Some("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn single_endpoint_takes_the_whole_body() {
        let body = br#"{"event":"A","userId":"u","writeKey":"wk"}"#;
        let batch = split(body, Some(EventType::Track)).unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.events[0].endpoint_type, Some(EventType::Track));
        assert_eq!(batch.write_key.as_deref(), Some("wk"));
    }

    #[test]
    fn bad_bodies_are_named() {
        assert!(matches!(split(b"[1,2]", None), Err(BodyError::NotJson(_))));
        assert!(matches!(
            split(b"{\"batch\":[", None),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(
            split(b"{\"batch\":[]}", None),
            Err(BodyError::NoBatch)
        ));
        assert!(matches!(split(b"{}", None), Err(BodyError::NoBatch)));
    }

    #[test]
    fn gzip_is_inflated_within_the_limit() {
        let json = br#"{"batch":[{"type":"page","anonymousId":"a"}]}"#;
        let headers = BodyHeaders {
            content_type: Some("application/json"),
            content_encoding: Some("gzip"),
        };
        let zipped = gz(json);
        let out = body_bytes(&zipped, headers, 1024).unwrap();
        assert_eq!(&*out, json);
        let bomb = gz(&vec![b' '; 100_000]);
        assert_eq!(
            body_bytes(&bomb, headers, 1024),
            Err(BodyError::TooLarge { limit: 1024 })
        );
        assert_eq!(
            body_bytes(b"not gzip", headers, 1024),
            Err(BodyError::BadGzip)
        );
    }

    #[test]
    fn headers_are_checked() {
        let xml = BodyHeaders {
            content_type: Some("application/xml"),
            content_encoding: None,
        };
        assert!(matches!(
            body_bytes(b"{}", xml, 10),
            Err(BodyError::UnsupportedMediaType(_))
        ));
        let text = BodyHeaders {
            content_type: Some("text/plain;charset=UTF-8"),
            content_encoding: None,
        };
        assert!(body_bytes(b"{}", text, 10).is_ok());
        let br = BodyHeaders {
            content_type: None,
            content_encoding: Some("br"),
        };
        assert!(matches!(
            body_bytes(b"{}", br, 10),
            Err(BodyError::UnsupportedEncoding(_))
        ));
        assert_eq!(
            body_bytes(b"{\"a\":\"\xff\"}", BodyHeaders::default(), 100),
            Err(BodyError::NotUtf8 { at: 6 })
        );
    }
}
