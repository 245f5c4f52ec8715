//! A planned row as a Segment call (issue 18 §3): the sync's `call` type,
//! the mapped fields, a deterministic `messageId`, and
//! `context.waymark.sync` naming the sync, run, key, hash and change so the
//! delivery hook can recover the row when its outbox entry settles.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{SyncCall, SyncConfig};
use crate::storage::syncs::{Change, RowHash};
use crate::syncs::plan::PlannedRow;
use crate::syncs::Mapping;

/// The source name prefix of every sync's events (`sync:<name>`).
pub const SYNC_SOURCE_PREFIX: &str = "sync:";

/// The row identity carried in `context.waymark.sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMark {
    /// The sync's id.
    pub sync: i64,
    /// The run that planned the row.
    pub run: i64,
    /// The primary key.
    pub key: String,
    /// The row's hash.
    pub hash: RowHash,
    /// What the row was to the plan.
    pub change: Change,
}

fn change_name(change: Change) -> &'static str {
    match change {
        Change::Added => "added",
        Change::Changed => "changed",
        Change::Removed => "removed",
    }
}

impl SyncMark {
    /// As the JSON object put in `context.waymark.sync`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "sync": self.sync,
            "run": self.run,
            "key": self.key,
            "hash": self.hash.to_hex(),
            "change": change_name(self.change),
        })
    }

    /// Reads the mark back from an event's JSON; `None` when the event is
    /// not a sync's (or the mark is malformed).
    pub fn from_event(event: &Value) -> Option<SyncMark> {
        let mark = event.pointer("/context/waymark/sync")?;
        let hash = hex::decode(mark.get("hash")?.as_str()?).ok()?;
        let change = match mark.get("change")?.as_str()? {
            "added" => Change::Added,
            "changed" => Change::Changed,
            "removed" => Change::Removed,
            _ => return None,
        };
        Some(SyncMark {
            sync: mark.get("sync")?.as_i64()?,
            run: mark.get("run")?.as_i64()?,
            key: mark.get("key")?.as_str()?.to_owned(),
            hash: RowHash::from_slice(&hash)?,
            change,
        })
    }
}

/// The deterministic `messageId` of a row: a hash of the sync's name, the
/// key and the row hash, so a resent unchanged row deduplicates.
pub fn message_id(sync: &str, key: &str, hash: &RowHash) -> String {
    let mut digest = Sha256::new();
    for part in [sync.as_bytes(), key.as_bytes(), &hash.0] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    let out = digest.finalize();
    format!("sync-{}", hex::encode(&out[..16]))
}

/// Sets `path` (dot-separated) in `root`, creating objects on the way.
fn set_path(root: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut node = root;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            node.insert(part.to_owned(), value);
            return;
        }
        let entry = node
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        node = next;
    }
}

/// The Segment call `row` becomes for `sync` (id `sync_id`) in `run`. A
/// removed row (mirror) keeps its key only and is marked
/// `context.waymark.delete = true`, the delete marker destinations that
/// support removal act on.
pub fn row_call(
    sync: &SyncConfig,
    sync_id: i64,
    run: i64,
    mapping: &Mapping,
    row: &PlannedRow,
) -> Value {
    let mut call = Map::new();
    let kind = match sync.call {
        SyncCall::Identify => "identify",
        SyncCall::Track => "track",
        SyncCall::Group => "group",
    };
    call.insert("type".into(), Value::from(kind));
    if row.change != Change::Removed {
        for (field, value) in mapping.fields(&row.row) {
            set_path(&mut call, field, value.clone());
        }
    }
    if sync.call == SyncCall::Track {
        let event = sync.event.clone().unwrap_or_else(|| sync.name.clone());
        call.insert("event".into(), Value::from(event));
    }
    call.insert(
        "messageId".into(),
        Value::from(message_id(&sync.name, &row.key, &row.hash)),
    );
    let mark = SyncMark {
        sync: sync_id,
        run,
        key: row.key.clone(),
        hash: row.hash,
        change: row.change,
    };
    set_path(&mut call, "context.waymark.sync", mark.to_json());
    if row.change == Change::Removed {
        set_path(&mut call, "context.waymark.delete", Value::Bool(true));
    }
    Value::Object(call)
}
