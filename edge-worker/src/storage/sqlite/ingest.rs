//! The ingest commit (dedup admission, one pack per destination, the
//! quarantine) and the dedup fold, on the embedded store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rusqlite::{params, Connection};

use super::SqliteStorage;
use crate::storage::dedup::runs::NewRun;
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
    let runs = Arc::clone(&store.runs);
    let written = store
        .write_then(
            move |conn| {
                let now = now_ms();
                let (fresh, new_ids) = recent.admit(conn, &runs, &hashes, now)?;
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
/// embedded store: batch after batch, until one is smaller than a full one;
/// then, unless they are running already, the runs' merges
/// ([`dedup::runs`]) start in a task of their own, so a long merge never
/// holds up the next fold.
pub(super) async fn fold_dedup(store: &Arc<SqliteStorage>) -> Result<usize, StorageError> {
    let mut moved = 0;
    loop {
        let batch = fold_one_batch(store).await?;
        moved += batch;
        if batch < dedup::FOLD_BATCH_MAX {
            break;
        }
    }
    if !store.merging.swap(true, Ordering::AcqRel) {
        let this = Arc::clone(store);
        tokio::spawn(async move {
            // Cleared however the task ends, a panic included.
            let _merging = ClearOnDrop(&this.merging);
            if let Err(error) = merge_runs(&this).await {
                tracing::warn!(error = %error, "Merging dedup runs failed; the next fold retries.");
            }
        });
    }
    DedupFolded {
        moved,
        recent: store.recent.len(),
        filter_bytes: store.recent.filter_bytes(),
        runs: store.runs.infos().len(),
    }
    .emit();
    Ok(moved)
}

/// Clears its flag when dropped.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Merges runs, one merge at a time, until none is due: each merge is read
/// and written off the writer, and swapped in by one short writer job.
async fn merge_runs(store: &Arc<SqliteStorage>) -> Result<(), StorageError> {
    let span = store.merge_span_ms;
    while let Some(inputs) = store.runs.plan_merge(span) {
        let runs = Arc::clone(&store.runs);
        let planned = inputs.clone();
        let Some(new) = in_background(move || runs.merge(&planned)).await? else {
            continue;
        };
        let runs = Arc::clone(&store.runs);
        let replaces: Vec<i64> = inputs.iter().map(|r| r.run).collect();
        make_live(
            store,
            new,
            move |conn, new| dedup::runs::record_merge(conn, &inputs, new),
            move |new| runs.publish(new, &replaces),
        )
        .await?;
    }
    Ok(())
}

/// Makes a written run live: `record` lists it in a writer job (`false`:
/// it is not to go live), and once that commits, `live` runs in the job's
/// hook. A run that does not go live is deleted.
async fn make_live<J, L>(
    store: &Arc<SqliteStorage>,
    new: NewRun,
    record: J,
    live: L,
) -> Result<(), StorageError>
where
    J: FnOnce(&Connection, &NewRun) -> Result<bool, StorageError> + Send + 'static,
    L: FnOnce(NewRun) + Send + 'static,
{
    let (job_new, hook_new) = (new.clone(), new.clone());
    let recorded = store
        .write_then(
            move |conn| record(conn, &job_new),
            move |listed, committed| {
                if committed && *listed {
                    live(hook_new);
                }
            },
        )
        .await;
    if !matches!(recorded, Ok(true)) {
        store.runs.discard(new);
    }
    recorded.map(drop)
}

/// Runs `work` on a thread of its own at the lowest CPU priority, so a
/// merge of millions of keys takes the CPU ingest leaves idle rather than
/// delaying requests (a merge is a few a minute at most under load).
async fn in_background<R: Send + 'static>(
    work: impl FnOnce() -> Result<R, StorageError> + Send + 'static,
) -> Result<R, StorageError> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("waymark-dedup-merge".into())
        .spawn(move || {
            lowest_priority();
            let _ = done.send(work());
        })
        .map_err(|e| StorageError::Sql(format!("dedup: starting a merge thread failed: {e}")))?;
    result.await.map_err(|_| StorageError::Closed)?
}

/// Lowers the calling thread to nice 19 (Linux sets it per thread);
/// best effort, and nothing elsewhere.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id, no memory
    // passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Folds one [`dedup::fold_batch`] into a new run; returns how many keys
/// it moved.
async fn fold_one_batch(store: &Arc<SqliteStorage>) -> Result<usize, StorageError> {
    // 1. The batch is read off the writer; 2. written to a run file off
    //    the writer; 3. the run goes live and its log rows go in one job,
    //    and then its ids leave memory.
    let Some(batch) = store.read(dedup::fold_batch).await? else {
        return Ok(0);
    };
    let (oldest, newest, last_log_id) = (batch.oldest_ms, batch.newest_ms, batch.last_log_id);
    let keys = Arc::new(batch.keys);
    let runs = Arc::clone(&store.runs);
    let to_write = Arc::clone(&keys);
    let new =
        tokio::task::spawn_blocking(move || runs.write(to_write.iter().copied(), oldest, newest))
            .await
            .map_err(|_| StorageError::Closed)??;
    let this = Arc::clone(store);
    let folded = Arc::clone(&keys);
    make_live(
        store,
        new,
        move |conn, new| dedup::seal_folded(conn, new, last_log_id).map(|()| true),
        move |new| {
            // Live before the ids leave memory: always in one of them.
            this.runs.publish(new, &[]);
            this.recent.forget(&folded);
        },
    )
    .await?;
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
