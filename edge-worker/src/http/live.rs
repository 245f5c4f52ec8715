//! `GET /admin/live`: a server-sent-events stream of events as they pass
//! the stages (accepted, transformed, routed, held, delivered, failed),
//! behind the admin token or the read-only `live_token`.
//!
//! Each frame is one JSON `data:` line shaped
//! `{"stage","messageId","type","event","destination","visitorId","payload"}`
//! (the demo site's live view reads exactly this), plus `source` where the
//! stage knows it and `error` (the vendor's answer) on `failed` frames. `?visitor=` and
//! `?event=` filter; the token may come as `?token=` because a browser's
//! `EventSource` cannot send headers.
//!
//! # Design
//! The pipeline publishes into a bounded [`tokio::sync::broadcast`]
//! channel and never waits: a slow viewer lags, is told how many frames it
//! missed, and goes on from the newest. Frames are built only while someone
//! watches, so the stream costs nothing otherwise (issue #5).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::broadcast;

use super::error::ApiError;
use super::AppState;

/// Frames buffered per viewer before it starts to lag.
pub const LIVE_BUFFER: usize = 1_024;

/// One stage passage of one event.
#[derive(Debug, Clone)]
pub struct LiveFrame {
    /// The visitor, for `?visitor=`.
    pub visitor_id: Option<String>,
    /// The event name, for `?event=`.
    pub event: Option<String>,
    /// The rendered JSON of the frame.
    pub data: String,
}

#[derive(Serialize)]
struct FrameJson<'a> {
    stage: &'a str,
    #[serde(rename = "messageId")]
    message_id: &'a str,
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    event: Option<&'a str>,
    destination: Option<&'a str>,
    #[serde(rename = "visitorId")]
    visitor_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    payload: &'a RawValue,
}

/// The hub the stages publish to and viewers subscribe to.
#[derive(Debug, Clone)]
pub struct LiveStream {
    tx: broadcast::Sender<Arc<LiveFrame>>,
}

impl Default for LiveStream {
    fn default() -> Self {
        LiveStream::new()
    }
}

impl LiveStream {
    /// A hub with [`LIVE_BUFFER`] frames of room per viewer.
    pub fn new() -> LiveStream {
        let (tx, _) = broadcast::channel(LIVE_BUFFER);
        LiveStream { tx }
    }

    /// Whether anyone watches. Publishers check this before building frames.
    pub fn is_watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A new viewer.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveFrame>> {
        self.tx.subscribe()
    }

    /// Publishes one frame for an event given as stored JSON. Never waits;
    /// does nothing when nobody watches.
    pub fn publish_json(
        &self,
        stage: &str,
        json: &str,
        destination: Option<&str>,
        error: Option<&str>,
    ) {
        self.publish_json_from(None, stage, json, destination, error);
    }

    /// [`publish_json`](Self::publish_json), naming the event's source
    /// (the frame's `source`, which the console filters on).
    pub fn publish_json_from(
        &self,
        source: Option<&str>,
        stage: &str,
        json: &str,
        destination: Option<&str>,
        error: Option<&str>,
    ) {
        if !self.is_watched() {
            return;
        }
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(rename = "messageId", borrow)]
            message_id: Option<std::borrow::Cow<'a, str>>,
            #[serde(rename = "type", borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow)]
            event: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow)]
            name: Option<std::borrow::Cow<'a, str>>,
            #[serde(rename = "anonymousId", borrow)]
            anonymous_id: Option<std::borrow::Cow<'a, str>>,
            context: Option<Context>,
        }
        #[derive(serde::Deserialize)]
        struct Context {
            waymark: Option<Waymark>,
        }
        #[derive(serde::Deserialize)]
        struct Waymark {
            #[serde(rename = "visitorId")]
            visitor_id: Option<String>,
        }
        let Ok(payload) = serde_json::from_str::<&RawValue>(json) else {
            return;
        };
        let Ok(head) = serde_json::from_str::<Head<'_>>(json) else {
            return;
        };
        let visitor = head
            .context
            .and_then(|c| c.waymark)
            .and_then(|w| w.visitor_id)
            .or_else(|| head.anonymous_id.as_deref().map(str::to_owned));
        let name = head.event.as_deref().or(head.name.as_deref());
        let frame = FrameJson {
            stage,
            message_id: head.message_id.as_deref().unwrap_or(""),
            kind: head.kind.as_deref(),
            event: name,
            destination,
            visitor_id: visitor.as_deref(),
            source,
            error,
            payload,
        };
        let Ok(data) = serde_json::to_string(&frame) else {
            return;
        };
        let frame = LiveFrame {
            event: name.map(str::to_owned),
            visitor_id: visitor,
            data,
        };
        // An error only means every viewer left meanwhile.
        let _ = self.tx.send(Arc::new(frame));
    }

    /// Publishes one frame for an [`Event`](crate::Event) (for stages that
    /// hold one, such as rules: stage `transformed`).
    pub fn publish_event(&self, stage: &str, event: &crate::Event, destination: Option<&str>) {
        if self.is_watched() {
            self.publish_json(stage, &event.to_json(), destination, None);
        }
    }

    /// [`publish_event`](Self::publish_event), naming the event's source.
    pub fn publish_event_from(
        &self,
        source: &str,
        stage: &str,
        event: &crate::Event,
        destination: Option<&str>,
    ) {
        if self.is_watched() {
            self.publish_json_from(Some(source), stage, &event.to_json(), destination, None);
        }
    }
}

/// The live route. Mounted at the top level because it has its own auth.
pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/live", get(live))
}

#[derive(serde::Deserialize)]
struct LiveQuery {
    token: Option<String>,
    visitor: Option<String>,
    event: Option<String>,
}

async fn live(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LiveQuery>,
) -> Response {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or(q.token.as_deref());
    if !presented.is_some_and(|t| state.admin.may_watch(t)) {
        return ApiError::client(
            StatusCode::UNAUTHORIZED,
            "token",
            "missing or wrong token; send `Authorization: Bearer <token>` or `?token=` with the admin or live token",
        )
        .into_response();
    }
    let rx = state.pipeline.outbox().live().subscribe();
    let stream = frames(rx, q.visitor, q.event);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The viewer's stream: filtered frames, plus a `lagged` comment when it fell behind.
fn frames(
    rx: broadcast::Receiver<Arc<LiveFrame>>,
    visitor: Option<String>,
    event: Option<String>,
) -> impl futures_util::Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(rx, move |mut rx| {
        let visitor = visitor.clone();
        let event = event.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(frame) => {
                        if visitor
                            .as_deref()
                            .is_some_and(|v| frame.visitor_id.as_deref() != Some(v))
                            || event
                                .as_deref()
                                .is_some_and(|e| frame.event.as_deref() != Some(e))
                        {
                            continue;
                        }
                        return Some((Ok(SseEvent::default().data(frame.data.clone())), rx));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        crate::telemetry::deliver::LiveFramesSkipped { count: missed }.emit();
                        return Some((
                            Ok(SseEvent::default().comment(format!("lagged {missed}"))),
                            rx,
                        ));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
}
