//! The ingest commit (dedup admission, one pack per destination, the
//! quarantine) and the dedup fold, on the embedded store.

use std::sync::Arc;

use rusqlite::{params, Connection};

use super::SqliteStorage;
use crate::storage::dedup::{self, dedup_hash, DedupHash};
use crate::storage::delivery::write_holds;
use crate::storage::outbox::{self, PackMeta, PACK_MAX};
use crate::storage::pack_cache::{CachedEvent, CachedPack};
use crate::storage::{HoldOutcome, IngestCommit, IngestOutcome, StorageError, Stored};
use crate::telemetry::storage::DedupFolded;
use crate::time::now_ms;

/// What an ingest commit wrote, for its completion hook.
struct IngestWritten {
    stored: Vec<Stored>,
    /// What the commit's holds and decisions did.
    holds: HoldOutcome,
    /// The new packs' content, for the pack cache once durable.
    packs: Vec<(i64, CachedPack)>,
    /// Ids first seen in this commit, taken back if it fails.
    new_ids: Vec<DedupHash>,
}

/// [`Storage::commit_ingest`](crate::storage::Storage::commit_ingest) on the embedded store.
pub(super) async fn commit_ingest(
    store: &Arc<SqliteStorage>,
    commit: IngestCommit,
) -> Result<IngestOutcome, StorageError> {
    // Ids are hashed here, on the caller's thread, not on the writer.
    let hashes: Vec<Option<DedupHash>> = commit
        .accepted
        .iter()
        .map(|e| e.dedup.then(|| dedup_hash(&e.source, &e.message_id)))
        .collect();
    let this = Arc::clone(store);
    // Once the group is decided: durable packs enter the cache (before
    // the ack wakes their destinations); a failed commit takes its ids back.
    let decided = move |written: &mut IngestWritten, committed: bool| {
        if committed {
            for (id, pack) in written.packs.drain(..) {
                this.packs.insert(id, pack);
            }
        } else {
            this.recent.forget(&written.new_ids);
        }
    };
    let recent = Arc::clone(&store.recent);
    let written = store
        .write_then(
            move |conn| {
                let now = now_ms();
                let (fresh, new_ids) = recent.admit(conn, &hashes, now)?;
                match write_ingest(conn, &commit, &fresh, now) {
                    Ok((packs, holds)) => Ok(IngestWritten {
                        holds,
                        stored: fresh
                            .iter()
                            .map(|&new| {
                                if new {
                                    Stored::Enqueued
                                } else {
                                    Stored::Duplicate
                                }
                            })
                            .collect(),
                        packs,
                        new_ids,
                    }),
                    Err(e) => {
                        recent.forget(&new_ids);
                        Err(e)
                    }
                }
            },
            decided,
        )
        .await?;
    Ok(IngestOutcome {
        stored: written.stored,
        holds: written.holds,
    })
}

/// [`Storage::fold_dedup`](crate::storage::Storage::fold_dedup) on the
/// embedded store: batch after batch, until one is smaller than a full one,
/// then the runs' merges and drops ([`dedup::runs`]) for a bounded number
/// of steps.
pub(super) async fn fold_dedup(store: &Arc<SqliteStorage>) -> Result<usize, StorageError> {
    let mut moved = 0;
    loop {
        let batch = fold_one_batch(store).await?;
        moved += batch;
        if batch < dedup::FOLD_BATCH_MAX {
            break;
        }
    }
    merge_runs(store).await?;
    while store.write(dedup::runs::drop_some).await? {}
    Ok(moved)
}

/// Merge steps one fold pass (once a second) runs at most: about 770 k keys
/// rewritten, more than a second's fold at the writer's top rate (about
/// 100 k keys) times the merges each key goes through over a 48 h window
/// (about six). A pass stops as soon as no merge is due.
const MERGE_STEPS_PER_PASS: usize = 400;

/// Advances the merge in progress, starting the next one when it ends.
async fn merge_runs(store: &Arc<SqliteStorage>) -> Result<(), StorageError> {
    let mut merge = store.merge.lock().ok().and_then(|mut m| m.take());
    let span = store.merge_span_ms;
    for _ in 0..MERGE_STEPS_PER_PASS {
        let current = match merge.take() {
            Some(m) => m,
            None => match store
                .write(move |conn| dedup::runs::Merge::start(conn, span))
                .await?
            {
                Some(m) => m,
                None => break,
            },
        };
        let output = current.output();
        let stepped = store
            .write(move |conn| {
                let mut m = current;
                let done = m.step(conn)?;
                Ok((!done).then_some(m))
            })
            .await;
        match stepped {
            Ok(next) => merge = next,
            Err(error) => {
                store
                    .write(move |conn| dedup::runs::abandon(conn, output))
                    .await?;
                return Err(error);
            }
        }
    }
    if let Ok(mut m) = store.merge.lock() {
        *m = merge;
    }
    Ok(())
}

/// Folds one [`dedup::fold_batch`] into a new run; returns how many keys
/// it moved.
async fn fold_one_batch(store: &Arc<SqliteStorage>) -> Result<usize, StorageError> {
    // 1. The batch is read off the writer; 2. written as a run in steps,
    //    each a short job; 3. the run goes live and its log rows go in one
    //    job, and then its ids leave memory.
    let Some(batch) = store.read(dedup::fold_batch).await? else {
        return Ok(0);
    };
    let (n, oldest, newest) = (batch.keys.len(), batch.oldest_ms, batch.newest_ms);
    let run = store
        .write(move |conn| dedup::runs::start_run(conn, n, oldest, newest))
        .await?;
    let keys = Arc::new(batch.keys);
    for start in (0..keys.len()).step_by(dedup::FOLD_STEP) {
        let keys = Arc::clone(&keys);
        store
            .write(move |conn| {
                let end = (start + dedup::FOLD_STEP).min(keys.len());
                dedup::runs::write_blocks(conn, run, &keys[start..end])
            })
            .await?;
    }
    let this = Arc::clone(store);
    let last_log_id = batch.last_log_id;
    let folded = Arc::clone(&keys);
    store
        .write_then(
            move |conn| dedup::seal_folded(conn, run, last_log_id),
            move |_, committed| {
                if committed {
                    this.recent.forget(&folded);
                }
            },
        )
        .await?;
    DedupFolded {
        moved: keys.len(),
        recent: store.recent.len(),
    }
    .emit();
    Ok(keys.len())
}

/// Writes one request's accepted events (those `fresh` says are new) into
/// one pack per destination, its quarantined events, the holds of its new
/// events and its consent decisions. Returns the new packs' content for the
/// pack cache, and what the holds did.
fn write_ingest(
    conn: &Connection,
    commit: &IngestCommit,
    fresh: &[bool],
    now: i64,
) -> Result<(Vec<(i64, CachedPack)>, HoldOutcome), StorageError> {
    // One pack per destination (and source) for the whole request,
    // listing indices into `commit.accepted`.
    let mut packs: Vec<(&str, &str, Vec<usize>)> = Vec::new();
    for (i, event) in commit.accepted.iter().enumerate() {
        if !fresh.get(i).copied().unwrap_or(false) {
            continue;
        }
        for destination in &event.destinations {
            match packs
                .iter_mut()
                .find(|(d, s, _)| *d == &**destination && *s == &*event.source)
            {
                Some((_, _, events)) => events.push(i),
                None => packs.push((destination, &event.source, vec![i])),
            }
        }
    }
    let mut cached: Vec<(i64, CachedPack)> = Vec::with_capacity(packs.len());
    if !packs.is_empty() {
        let message_ids: Vec<Arc<str>> = commit
            .accepted
            .iter()
            .map(|e| Arc::from(e.message_id.as_str()))
            .collect();
        for (destination, source, members) in &packs {
            let events: Vec<(&str, &str, &str)> = members
                .iter()
                .map(|&i| {
                    let e = &commit.accepted[i];
                    (e.message_id.as_str(), e.granted.as_str(), &*e.json)
                })
                .collect();
            let ids = outbox::enqueue(conn, &PackMeta::new(destination, source, now), &events)?;
            for (id, chunk) in ids.into_iter().zip(members.chunks(PACK_MAX)) {
                let pack = chunk
                    .iter()
                    .map(|&i| CachedEvent {
                        message_id: Arc::clone(&message_ids[i]),
                        granted: commit.accepted[i].granted.clone(),
                        json: Arc::clone(&commit.accepted[i].json),
                    })
                    .collect();
                cached.push((id, pack));
            }
        }
    }
    let mut quarantine = conn.prepare_cached(
        "INSERT INTO quarantine (source, received_at_ms, reason, detail, raw)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for q in &commit.quarantined {
        quarantine.execute(params![&*q.source, now, q.reason, q.detail, q.raw])?;
    }
    let holds = if commit.holds.is_empty() {
        HoldOutcome::default()
    } else {
        let held = commit.holds.of_fresh(&commit.accepted, fresh);
        write_holds(conn, held.into_iter(), &commit.holds, now)?
    };
    Ok((cached, holds))
}
