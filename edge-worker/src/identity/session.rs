//! Sessions: a session id and count per visitor, ended by inactivity.

use crate::storage::identity::SessionRow;

/// A visitor's session as stamped on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Session {
    /// Start of the session, in Unix milliseconds; stable for its length.
    pub id: i64,
    /// How many sessions the visitor has had, this one included.
    pub count: i64,
    /// Whether this event started the session.
    pub start: bool,
}

/// Moves a visitor's session to an event at `ts_ms`: the same session within
/// the timeout (out-of-order events included), else a new one.
pub(crate) fn advance_session(
    previous: Option<SessionRow>,
    ts_ms: i64,
    timeout_ms: i64,
) -> (SessionRow, bool) {
    match previous {
        Some(s) if ts_ms - s.last_activity_ms <= timeout_ms => (
            SessionRow {
                last_activity_ms: s.last_activity_ms.max(ts_ms),
                ..s
            },
            false,
        ),
        Some(s) => (
            SessionRow {
                session_id: ts_ms,
                count: s.count + 1,
                last_activity_ms: ts_ms,
            },
            true,
        ),
        None => (
            SessionRow {
                session_id: ts_ms,
                count: 1,
                last_activity_ms: ts_ms,
            },
            true,
        ),
    }
}
