//! The outbox table: events waiting for a destination, packed one row per
//! request and destination.
//!
//! # Design
//! A row per event made every accepted event two B-tree inserts (the row and
//! its `(destination, id)` index) and two deletes once delivered, on the
//! single writer thread. A pack holds one request's events for one
//! destination (at most [`PACK_MAX`]), so a 20-event request costs one insert
//! and one delete per destination. Delivery still sees single events: an
//! event's key is its pack's id shifted left by [`INDEX_BITS`] plus its index
//! in the pack, so keys grow with commit order within a destination, as the
//! delivery cursor needs. Events leave a pack one by one (delivered,
//! dead-lettered, deleted for privacy); `indices` lists those still in it,
//! so a fully delivered pack is deleted without reading its events, and a
//! partly failed one is split so each part keeps its own retry schedule.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::pack_cache::PackCache;
use super::{OutboxEntry, StorageError};
use crate::consent::GrantedPurposes;

/// Events per pack at most; a larger request is split into several packs.
pub(crate) const PACK_MAX: usize = 4_096;

/// Bits of an event key that hold its index in the pack.
pub(crate) const INDEX_BITS: u32 = 16;

/// The key of the `index`th event of pack `pack`.
pub(crate) fn key(pack: i64, index: u32) -> i64 {
    (pack << INDEX_BITS) | i64::from(index)
}

pub(crate) fn pack_of(key: i64) -> i64 {
    key >> INDEX_BITS
}

pub(crate) fn index_of(key: i64) -> u32 {
    (key & ((1 << INDEX_BITS) - 1)) as u32
}

/// One event as stored in a pack:
/// `{"i": index, "m": messageId, "g": "granted,purposes", "e": event}`
/// (`g` is absent in packs written before the consent decision was stored:
/// nothing granted).
#[derive(Debug, Deserialize)]
pub(crate) struct Packed<'a> {
    /// Index in the pack, stable while the event waits.
    pub i: u32,
    /// The event's `messageId`.
    pub m: String,
    /// The purposes the edge granted ([`GrantedPurposes`]'s stored form).
    #[serde(default)]
    pub g: String,
    /// The event as JSON.
    #[serde(borrow)]
    pub e: &'a RawValue,
}

/// Reads a pack's `events` column.
pub(crate) fn decode(events: &str) -> Result<Vec<Packed<'_>>, StorageError> {
    serde_json::from_str(events)
        .map_err(|e| StorageError::Sql(format!("outbox: a pack is not valid: {e}")))
}

/// Writes a pack's `events` column and its `indices`. Runs on the writer
/// for every pack, so it appends bytes rather than formatting.
fn encode<'a>(
    events: impl Iterator<Item = (u32, &'a str, &'a str, &'a str)>,
) -> (String, String, usize) {
    let mut text: Vec<u8> = Vec::with_capacity(4_096);
    text.push(b'[');
    let mut indices: Vec<u8> = Vec::new();
    let mut n = 0;
    for (i, message_id, granted, json) in events {
        if n > 0 {
            text.push(b',');
            indices.push(b',');
        }
        text.extend_from_slice(br#"{"i":"#);
        push_decimal(&mut text, i);
        text.extend_from_slice(br#","m":"#);
        // NOTE: writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut text, message_id);
        if !granted.is_empty() {
            text.extend_from_slice(br#","g":"#);
            let _ = serde_json::to_writer(&mut text, granted);
        }
        text.extend_from_slice(br#","e":"#);
        text.extend_from_slice(json.as_bytes());
        text.push(b'}');
        push_decimal(&mut indices, i);
        n += 1;
    }
    text.push(b']');
    // NOTE: UTF-8 pieces joined by ASCII, and ASCII digits.
    let text = String::from_utf8(text).unwrap_or_default();
    (text, String::from_utf8(indices).unwrap_or_default(), n)
}

/// Appends `i` in decimal, without the formatting machinery.
fn push_decimal(out: &mut Vec<u8>, mut i: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (i % 10) as u8;
        i /= 10;
        if i == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The indices listed in a pack's `indices` column.
pub(crate) fn parse_indices(indices: &str) -> Vec<u32> {
    indices.split(',').filter_map(|i| i.parse().ok()).collect()
}

/// What a new pack starts with besides its events.
pub(crate) struct PackMeta<'a> {
    pub destination: &'a str,
    pub source: &'a str,
    pub enqueued_at_ms: i64,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<&'a str>,
}

impl<'a> PackMeta<'a> {
    /// A fresh pack: no attempts, due now.
    pub(crate) fn new(destination: &'a str, source: &'a str, now_ms: i64) -> PackMeta<'a> {
        PackMeta {
            destination,
            source,
            enqueued_at_ms: now_ms,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
        }
    }
}

/// Enqueues `(messageId, granted purposes, event JSON)` triples, in packs of at most
/// [`PACK_MAX`]; returns the new packs' ids, one per chunk of [`PACK_MAX`]
/// events in order.
pub(crate) fn enqueue(
    conn: &Connection,
    meta: &PackMeta<'_>,
    events: &[(&str, &str, &str)],
) -> Result<Vec<i64>, StorageError> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO outbox_packs
           (destination, source, events, indices, remaining, enqueued_at_ms, attempts, next_attempt_ms, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut ids = Vec::with_capacity(events.len().div_ceil(PACK_MAX));
    for chunk in events.chunks(PACK_MAX) {
        let (text, indices, n) = encode(
            chunk
                .iter()
                .enumerate()
                .map(|(i, (m, g, e))| (i as u32, *m, *g, *e)),
        );
        insert.execute(params![
            meta.destination,
            meta.source,
            text,
            indices,
            n as i64,
            meta.enqueued_at_ms,
            meta.attempts,
            meta.next_attempt_ms,
            meta.last_error
        ])?;
        ids.push(conn.last_insert_rowid());
    }
    Ok(ids)
}

/// Up to `limit` events of `destination` due at `now_ms` with a key above
/// `after_key`, oldest first. Event text comes from `cache` when it holds
/// the pack; only the pack's small columns are read then.
pub(crate) fn due(
    conn: &Connection,
    cache: &PackCache,
    destination: &str,
    now_ms: i64,
    after_key: i64,
    limit: usize,
) -> Result<Vec<OutboxEntry>, StorageError> {
    // NOTE: `INDEXED BY` keeps the plan a walk in id order that stops at
    // `limit`; each pack holds at least one event, so `limit` packs suffice.
    // `events` is not read here: it is the last column, so the row's other
    // columns sit in its first page and its overflow pages stay unread.
    let mut stmt = conn.prepare_cached(
        "SELECT id, source, indices, enqueued_at_ms, attempts
         FROM outbox_packs INDEXED BY outbox_packs_order
         WHERE destination = ?1 AND id >= ?2 AND next_attempt_ms <= ?3
         ORDER BY id LIMIT ?4",
    )?;
    let mut rows = stmt.query(params![
        destination,
        pack_of(after_key),
        now_ms,
        limit as i64
    ])?;
    let mut out = Vec::with_capacity(limit.min(1_024));
    while let Some(row) = rows.next()? {
        let pack: i64 = row.get(0)?;
        let source: String = row.get(1)?;
        let indices: String = row.get(2)?;
        let enqueued_at_ms: i64 = row.get(3)?;
        let attempts: u32 = row.get(4)?;
        let waiting: Vec<u32> = parse_indices(&indices)
            .into_iter()
            .filter(|&i| key(pack, i) > after_key)
            .collect();
        let entry =
            |i: u32, message_id: String, granted: GrantedPurposes, json: Arc<str>| OutboxEntry {
                id: key(pack, i),
                source: source.clone(),
                message_id,
                granted,
                json,
                enqueued_at_ms,
                attempts,
            };
        let cached = cache
            .get(pack)
            .filter(|c| waiting.iter().all(|&i| (i as usize) < c.len()));
        match cached {
            Some(events) => {
                for i in waiting {
                    let e = &events[i as usize];
                    out.push(entry(
                        i,
                        e.message_id.to_string(),
                        e.granted.clone(),
                        Arc::clone(&e.json),
                    ));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            None => {
                let text: String = conn
                    .prepare_cached("SELECT events FROM outbox_packs WHERE id = ?1")?
                    .query_row([pack], |r| r.get(0))?;
                for p in decode(&text)? {
                    if key(pack, p.i) <= after_key {
                        continue;
                    }
                    let granted = GrantedPurposes::from_stored(&p.g);
                    out.push(entry(p.i, p.m, granted, Arc::from(p.e.get())));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// An event taken out of its pack.
pub(crate) struct Taken {
    pub destination: String,
    pub source: String,
    pub message_id: String,
    pub granted: String,
    pub json: String,
    pub enqueued_at_ms: i64,
    pub attempts: u32,
}

/// Groups event keys by pack, each pack's indices in order.
fn by_pack(keys: &[i64]) -> BTreeMap<i64, Vec<u32>> {
    let mut packs: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for &k in keys {
        packs.entry(pack_of(k)).or_default().push(index_of(k));
    }
    for indices in packs.values_mut() {
        indices.sort_unstable();
        indices.dedup();
    }
    packs
}

/// What [`remove`] took out of the outbox.
#[derive(Default)]
pub(crate) struct Removed {
    /// The removed events, when asked to keep them.
    pub taken: Vec<Taken>,
    /// Packs deleted because no event was left in them.
    pub emptied: Vec<i64>,
}

/// Removes the events `keys` from their packs (deleting packs left empty).
/// With `keep`, returns the removed events; keys no longer in the outbox
/// are skipped.
pub(crate) fn remove(conn: &Connection, keys: &[i64], keep: bool) -> Result<Removed, StorageError> {
    let mut removed = Removed::default();
    for (pack, gone) in by_pack(keys) {
        let mut select = conn.prepare_cached(
            "SELECT indices, destination, source, enqueued_at_ms, attempts FROM outbox_packs WHERE id = ?1",
        )?;
        let Some((indices, destination, source, enqueued_at_ms, attempts)) = select
            .query_row([pack], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, u32>(4)?,
                ))
            })
            .optional()?
        else {
            continue;
        };
        let left: Vec<u32> = parse_indices(&indices)
            .into_iter()
            .filter(|i| gone.binary_search(i).is_err())
            .collect();
        // The common case: the whole pack went, and its events are not needed.
        if left.is_empty() && !keep {
            conn.prepare_cached("DELETE FROM outbox_packs WHERE id = ?1")?
                .execute([pack])?;
            removed.emptied.push(pack);
            continue;
        }
        let text: String = conn
            .prepare_cached("SELECT events FROM outbox_packs WHERE id = ?1")?
            .query_row([pack], |r| r.get(0))?;
        let events = decode(&text)?;
        if keep {
            for p in events.iter().filter(|p| gone.binary_search(&p.i).is_ok()) {
                removed.taken.push(Taken {
                    destination: destination.clone(),
                    source: source.clone(),
                    message_id: p.m.clone(),
                    granted: p.g.clone(),
                    json: p.e.get().to_owned(),
                    enqueued_at_ms,
                    attempts,
                });
            }
        }
        if left.is_empty() {
            conn.prepare_cached("DELETE FROM outbox_packs WHERE id = ?1")?
                .execute([pack])?;
            removed.emptied.push(pack);
            continue;
        }
        let (text, indices, n) = encode(
            events
                .iter()
                .filter(|p| gone.binary_search(&p.i).is_err())
                .map(|p| (p.i, p.m.as_str(), p.g.as_str(), p.e.get())),
        );
        conn.prepare_cached(
            "UPDATE outbox_packs SET events = ?2, indices = ?3, remaining = ?4 WHERE id = ?1",
        )?
        .execute(params![pack, text, indices, n as i64])?;
    }
    Ok(removed)
}

/// Schedules the events `keys` for another attempt. A pack retried whole is
/// updated in place; the retried part of a pack moves to a new pack.
pub(crate) fn retry(
    conn: &Connection,
    keys: &[i64],
    next_attempt_ms: i64,
    error: &str,
) -> Result<(), StorageError> {
    for (pack, retried) in by_pack(keys) {
        let indices: Option<String> = conn
            .prepare_cached("SELECT indices FROM outbox_packs WHERE id = ?1")?
            .query_row([pack], |r| r.get(0))
            .optional()?;
        let Some(indices) = indices else { continue };
        if parse_indices(&indices) == retried {
            conn.prepare_cached(
                "UPDATE outbox_packs SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3
                 WHERE id = ?1",
            )?
            .execute(params![pack, next_attempt_ms, error])?;
            continue;
        }
        let keys: Vec<i64> = retried.iter().map(|&i| key(pack, i)).collect();
        let taken = remove(conn, &keys, true)?.taken;
        let Some(first) = taken.first() else { continue };
        let meta = PackMeta {
            destination: &first.destination,
            source: &first.source,
            enqueued_at_ms: first.enqueued_at_ms,
            attempts: first.attempts + 1,
            next_attempt_ms,
            last_error: Some(error),
        };
        let events: Vec<(&str, &str, &str)> = taken
            .iter()
            .map(|t| (t.message_id.as_str(), t.granted.as_str(), t.json.as_str()))
            .collect();
        enqueue(conn, &meta, &events)?;
    }
    Ok(())
}

/// Events waiting for `destination`.
pub(crate) fn depth(conn: &Connection, destination: &str) -> Result<u64, StorageError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(remaining), 0) FROM outbox_packs WHERE destination = ?1",
        [destination],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// An event's JSON inside a pack, as a SQL expression for [`matching`]'s filter.
pub(crate) const EVENT_SQL: &str = "json_extract(j.value, '$.e')";

/// Every waiting event whose JSON matches `filter`, a SQL condition over
/// [`EVENT_SQL`] with parameters `args`: its key, destination, enqueue time
/// and JSON, in key order (for privacy export and deletion).
pub(crate) fn matching(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<(i64, String, i64, String)>, StorageError> {
    let sql = format!(
        "SELECT o.id, json_extract(j.value, '$.i'), o.destination, o.enqueued_at_ms, {EVENT_SQL}
         FROM outbox_packs o, json_each(o.events) j
         WHERE {filter}
         ORDER BY o.id, 2"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok((
            key(r.get(0)?, r.get(1)?),
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests;
