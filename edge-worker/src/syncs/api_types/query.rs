//! The query strings of the list routes: `GET /syncs` and
//! `GET /syncs/{id}/runs`, with the store filter they become.

use serde::Deserialize;

use super::ApiId;

/// `GET /syncs/{id}/runs` query: `runId`, `limit`, `offset`, `after`,
/// `before` (RFC 3339, or without an offset for UTC) and `within` (minutes).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiRunsQuery {
    /// Only this run.
    #[serde(default)]
    pub run_id: Option<ApiId>,
    /// At most this many. Default: 5, as Hightouch.
    #[serde(default)]
    pub limit: Option<ApiId>,
    /// Skip this many.
    #[serde(default)]
    pub offset: Option<ApiId>,
    /// Only runs created after this time.
    #[serde(default)]
    pub after: Option<String>,
    /// Only runs created before this time.
    #[serde(default)]
    pub before: Option<String>,
    /// Only runs created within this many minutes before now.
    #[serde(default)]
    pub within: Option<ApiId>,
}

impl ApiRunsQuery {
    /// The store filter, or the name of the parameter that does not parse.
    pub fn filter(&self) -> Result<crate::storage::syncs::RunFilter, &'static str> {
        let time = |t: &Option<String>, name| match t {
            None => Ok(None),
            Some(text) => parse_time(text).map(Some).ok_or(name),
        };
        let within = self
            .within
            .map(|minutes| crate::time::now_ms().saturating_sub(minutes.0.saturating_mul(60_000)));
        let after_ms = match (time(&self.after, "after")?, within) {
            (Some(a), Some(w)) => Some(a.max(w)),
            (a, w) => a.or(w),
        };
        Ok(crate::storage::syncs::RunFilter {
            run: self.run_id.map(|id| id.0),
            limit: self.limit.map_or(5, |n| n.0.clamp(1, 1_000) as usize),
            offset: self.offset.map_or(0, |n| n.0 as usize),
            after_ms,
            before_ms: time(&self.before, "before")?,
        })
    }
}

/// `GET /syncs` query: `slug`, `modelId`, `limit`, `offset`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiSyncsQuery {
    /// Only the sync with this slug.
    #[serde(default)]
    pub slug: Option<String>,
    /// Only syncs of this model.
    #[serde(default)]
    pub model_id: Option<ApiId>,
    /// At most this many. Default: 100, as Hightouch.
    #[serde(default)]
    pub limit: Option<ApiId>,
    /// Skip this many.
    #[serde(default)]
    pub offset: Option<ApiId>,
}

/// A query's timestamp in Unix milliseconds: RFC 3339, or without an
/// offset (read as UTC), the way Python's `datetime.isoformat()` writes a
/// naive time.
fn parse_time(text: &str) -> Option<i64> {
    if let Some(t) = crate::time::parse_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}
