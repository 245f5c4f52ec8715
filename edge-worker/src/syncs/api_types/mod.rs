//! The shapes of Hightouch's public REST API (`/api/v1`), as Waymark
//! serves them to orchestrators (issue #18 §5): field names, id and
//! timestamp formats, statuses. Routes come later; these types are the
//! contract they answer with.
//!
//! # Design
//! Ids go out as strings of the number (`"7"`), as Hightouch sends them
//! and as its SDK types them; they come in as `7`, `7.0`, `"7"` or `"7.0"`
//! because Hightouch's Python SDK formats path and query ids as floats and
//! Airflow sends form fields as text.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{Schedule, SyncConfig};
use crate::storage::syncs::{ObjectId, RowCounts, SyncRun};

/// A numeric id as the API writes and reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiId(pub i64);

impl ApiId {
    /// Parses an id from a path or query string: `7` or `7.0`.
    pub fn parse(text: &str) -> Option<ApiId> {
        let text = text.trim();
        if let Ok(n) = text.parse::<i64>() {
            return (n >= 0).then_some(ApiId(n));
        }
        let f: f64 = text.parse().ok()?;
        ApiId::from_f64(f)
    }

    fn from_f64(f: f64) -> Option<ApiId> {
        (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 9.0e15).then_some(ApiId(f as i64))
    }
}

impl fmt::Display for ApiId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for ApiId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ApiId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ApiId, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = ApiId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative whole number such as 7, 7.0 or \"7\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ApiId, E> {
                i64::try_from(v)
                    .map(ApiId)
                    .map_err(|_| E::custom("id out of range"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ApiId, E> {
                (v >= 0)
                    .then_some(ApiId(v))
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ApiId, E> {
                ApiId::from_f64(v).ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ApiId, E> {
                ApiId::parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// A list answer: `{"data": [...], "hasMore": bool}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiList<T> {
    /// This page.
    pub data: Vec<T>,
    /// Whether more entries follow this page.
    pub has_more: bool,
}

/// Added, changed and removed counts, as Hightouch names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiRowCounts {
    /// Rows added.
    pub added_count: u64,
    /// Rows changed.
    pub changed_count: u64,
    /// Rows removed.
    pub removed_count: u64,
}

impl From<RowCounts> for ApiRowCounts {
    fn from(c: RowCounts) -> ApiRowCounts {
        ApiRowCounts {
            added_count: c.added,
            changed_count: c.changed,
            removed_count: c.removed,
        }
    }
}

/// A sync run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiSyncRun {
    /// The run's id.
    pub id: ApiId,
    /// When it was queued (RFC 3339).
    pub created_at: String,
    /// When it started (RFC 3339), null while queued.
    pub started_at: Option<String>,
    /// When it ended (RFC 3339), null while running.
    pub finished_at: Option<String>,
    /// Rows the model returned (0 until planned).
    pub query_size: u64,
    /// One of Hightouch's run statuses.
    pub status: &'static str,
    /// Share of planned rows with an outcome, 0 to 1.
    pub completion_ratio: f64,
    /// Rows planned for sending.
    pub planned_rows: ApiRowCounts,
    /// Planned rows delivered.
    pub successful_rows: ApiRowCounts,
    /// Planned rows that failed.
    pub failed_rows: ApiRowCounts,
    /// Why the run failed, only when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&SyncRun> for ApiSyncRun {
    fn from(r: &SyncRun) -> ApiSyncRun {
        ApiSyncRun {
            id: ApiId(r.id),
            created_at: rfc3339(r.created_at_ms),
            started_at: r.started_at_ms.map(rfc3339),
            finished_at: r.finished_at_ms.map(rfc3339),
            query_size: r.query_size.unwrap_or(0),
            status: r.status.as_str(),
            completion_ratio: r.completion_ratio(),
            planned_rows: r.planned.into(),
            successful_rows: r.successful.into(),
            failed_rows: r.failed.into(),
            error: r.error.clone(),
        }
    }
}

/// A sync's schedule: `{"type": "interval"|"cron"|"manual", "schedule": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiSchedule {
    /// `interval`, `cron` or `manual`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `{"interval": {"quantity", "unit"}}`, `{"expression"}` or null.
    pub schedule: serde_json::Value,
}

impl ApiSchedule {
    /// The API's form of a configured schedule (`manual` for none).
    pub fn of(schedule: Option<&Schedule>) -> ApiSchedule {
        match schedule {
            None => ApiSchedule {
                kind: "manual",
                schedule: serde_json::Value::Null,
            },
            Some(Schedule::Cron(expression)) => ApiSchedule {
                kind: "cron",
                schedule: serde_json::json!({ "expression": expression }),
            },
            Some(Schedule::EverySecs(secs)) => {
                let (quantity, unit) = [
                    (604_800, "week"),
                    (86_400, "day"),
                    (3_600, "hour"),
                    (60, "minute"),
                ]
                .into_iter()
                .find(|(n, _)| secs % n == 0)
                .map(|(n, unit)| (secs / n, unit))
                .unwrap_or((*secs, "second"));
                ApiSchedule {
                    kind: "interval",
                    schedule: serde_json::json!({ "interval": { "quantity": quantity, "unit": unit } }),
                }
            }
        }
    }
}

/// A sync.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiSync {
    /// The sync's id.
    pub id: ApiId,
    /// Its name in `waymark.toml`.
    pub slug: String,
    /// Always `"1"`: one Waymark is one workspace.
    pub workspace_id: ApiId,
    /// When the name was first seen (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339); the creation time for now.
    pub updated_at: String,
    /// The destination's id.
    pub destination_id: ApiId,
    /// The model's id.
    pub model_id: ApiId,
    /// Call, mode, mapping and event, as configured.
    pub configuration: serde_json::Value,
    /// When it runs by itself.
    pub schedule: ApiSchedule,
    /// The last run's status; `pending` before the first, `disabled` when disabled.
    pub status: &'static str,
    /// Whether runs are off.
    pub disabled: bool,
    /// When the last run started (RFC 3339), null before the first.
    pub last_run_at: Option<String>,
    /// The model columns the mapping reads.
    pub referenced_columns: Vec<String>,
    /// The model's primary key column.
    pub primary_key: String,
}

impl ApiSync {
    /// The API's view of a configured sync with its ids and last run.
    pub fn of(
        sync: &SyncConfig,
        primary_key: &str,
        id: &ObjectId,
        model: ApiId,
        destination: ApiId,
        last_run: Option<&SyncRun>,
    ) -> ApiSync {
        let status = if sync.disabled {
            "disabled"
        } else {
            last_run.map_or("pending", |r| r.status.as_str())
        };
        ApiSync {
            id: ApiId(id.id),
            slug: sync.name.clone(),
            workspace_id: ApiId(1),
            created_at: rfc3339(id.created_at_ms),
            updated_at: rfc3339(id.created_at_ms),
            destination_id: destination,
            model_id: model,
            configuration: serde_json::json!({
                "call": call_name(sync),
                "mode": mode_name(sync),
                "mapping": sync.mapping,
                "event": sync.event,
            }),
            schedule: ApiSchedule::of(sync.schedule.as_ref()),
            status,
            disabled: sync.disabled,
            last_run_at: last_run
                .and_then(|r| r.started_at_ms.or(Some(r.created_at_ms)))
                .map(rfc3339),
            referenced_columns: sync
                .referenced_columns()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            primary_key: primary_key.to_owned(),
        }
    }
}

fn call_name(sync: &SyncConfig) -> &'static str {
    match sync.call {
        crate::config::SyncCall::Identify => "identify",
        crate::config::SyncCall::Track => "track",
        crate::config::SyncCall::Group => "group",
    }
}

fn mode_name(sync: &SyncConfig) -> &'static str {
    match sync.mode {
        crate::config::SyncMode::Upsert => "upsert",
        crate::config::SyncMode::Insert => "insert",
        crate::config::SyncMode::Update => "update",
        crate::config::SyncMode::Mirror => "mirror",
    }
}

/// The answer to a trigger: `{"id": "<run id>"}`.
#[derive(Debug, Clone, Serialize)]
pub struct ApiTriggered {
    /// The queued run's id.
    pub id: ApiId,
}

/// A trigger's body, as JSON or a form: `POST /syncs/{id}/trigger` takes
/// `fullResync`; `POST /syncs/trigger` also `syncId` or `syncSlug`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTrigger {
    /// Plan every current row as added. Default: false.
    #[serde(default, deserialize_with = "flexible_bool")]
    pub full_resync: bool,
    /// The sync, by id.
    #[serde(default)]
    pub sync_id: Option<ApiId>,
    /// The sync, by slug.
    #[serde(default)]
    pub sync_slug: Option<String>,
}

/// A boolean as JSON (`true`) or form text (`"true"`, `"1"`).
fn flexible_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct BoolVisitor;
    impl Visitor<'_> for BoolVisitor {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" | "" => Ok(false),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }
    d.deserialize_any(BoolVisitor)
}

/// Unix milliseconds as RFC 3339 with milliseconds and `Z`.
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(crate::time::format_rfc3339)
        .unwrap_or_default()
}

mod query;
#[cfg(test)]
mod tests;

pub use query::{ApiRunsQuery, ApiSyncsQuery};
