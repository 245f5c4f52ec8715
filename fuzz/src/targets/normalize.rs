//! Normalize: any request body is split and each event validated or
//! rejected with a reason, never a panic; an accepted event serialises to
//! JSON that parses again.

use waymark::stages::ingest::split;
use waymark::stages::normalize::{normalize, NormalizeContext};

pub fn run(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let endpoint = match first % 8 {
        0 => Some(waymark::event::EventType::Track),
        1 => Some(waymark::event::EventType::Identify),
        2 => Some(waymark::event::EventType::Page),
        3 => Some(waymark::event::EventType::Alias),
        _ => None,
    };
    let Ok(batch) = split(body, endpoint) else {
        return;
    };
    let received_at = chrono::DateTime::from_timestamp(1_760_000_000, 0).unwrap_or_default();
    let received_at_text = received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let cx = NormalizeContext {
        received_at,
        received_at_text: &received_at_text,
        batch_sent_at: batch.sent_at.as_deref(),
        max_event_bytes: 32 * 1024,
        max_depth: 16,
        has_visitor: first & 0x80 != 0,
    };
    for raw in &batch.events {
        if let Ok(event) = normalize(raw, &cx) {
            let json = event.to_json();
            assert!(
                serde_json::from_str::<serde_json::Value>(&json).is_ok(),
                "normalize produced invalid JSON: {json}"
            );
        }
    }
}
