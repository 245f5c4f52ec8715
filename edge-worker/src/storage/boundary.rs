//! The storage boundary, in the pipeline's words: the ingest commit, the
//! delivery queue, quarantine and dead-letter replay, and (through
//! [`Storage::identity_store`]) the identity store. Each backend implements
//! all of them; nothing outside `storage/` names a backend.

use std::sync::Arc;

use super::identity;
use super::syncs::{
    ObjectId, ObjectKind, RowHash, RowOutcome, RunFilter, RunPlan, RunStatus, SettledRow, SyncRun,
    TrackedKey,
};
use super::{
    DeadLetter, HoldCommit, HoldOutcome, IngestCommit, IngestOutcome, OutboxEntry, QuarantineEntry,
    RuleQuarantine, StorageError,
};

/// The ingest commit: what a producer (an ingest request) makes durable
/// before it answers, and the dedup upkeep behind it.
#[async_trait::async_trait]
pub trait IngestStore: Send + Sync + 'static {
    /// Dedups, enqueues and quarantines one request's events, holds those
    /// waiting for consent and applies its consent decisions, in one durable
    /// commit. Returns, per accepted event in order, whether it was enqueued
    /// or a duplicate, and what the holds did. Called by ingest before it
    /// answers.
    async fn commit_ingest(&self, commit: IngestCommit) -> Result<IngestOutcome, StorageError>;

    /// Forgets dedup entries older than `cutoff_ms`. Called periodically.
    async fn prune_dedup(&self, cutoff_ms: i64) -> Result<u64, StorageError>;

    /// Moves the recently seen dedup keys to long-term storage; returns how
    /// many moved. Called every second. Backends that keep dedup keys in
    /// one place need not implement it.
    async fn fold_dedup(&self) -> Result<usize, StorageError> {
        Ok(0)
    }

    /// Proves the store accepts a durable write. Used by `/readyz`.
    async fn check_writable(&self) -> Result<(), StorageError>;

    /// Applies consent decisions (release to the outbox or drop) and adds
    /// new holds, in one durable write of their own. Ingest does both inside
    /// its commit ([`IngestCommit::holds`]); this is for writes outside a
    /// request.
    async fn commit_holds(&self, commit: HoldCommit) -> Result<HoldOutcome, StorageError>;
}

/// The delivery queue: claim due entries of a destination, record each
/// entry's outcome, and the consent holds waiting in front of it.
#[async_trait::async_trait]
pub trait DeliveryQueue: Send + Sync + 'static {
    /// Up to `limit` entries of `destination` due at `now_ms` with an id
    /// above `after_id`, oldest first. Called by the destination's delivery
    /// worker, which passes the highest id it has in flight (or 0) so rows
    /// being sent are not read again.
    async fn outbox_due(
        &self,
        destination: &str,
        now_ms: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError>;

    /// Removes delivered entries (delivered, skipped, or dropped on purpose
    /// by the destination's rules).
    ///
    /// `rows` are the outcomes of the sync rows among those entries
    /// (issue #18), recorded in the same transaction as the removal: each
    /// key's state and its run's counters move exactly when the entry
    /// leaves the outbox, so a crash never marks as synced what was not
    /// sent. A row whose entry is not among `ids`, or is no longer in the
    /// outbox (already settled), records nothing. Empty for entries of
    /// other sources, which costs nothing.
    async fn outbox_delivered(
        &self,
        ids: Vec<i64>,
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError>;

    /// Schedules entries for another attempt at `next_attempt_ms`, recording the error.
    async fn outbox_retry(
        &self,
        ids: Vec<i64>,
        next_attempt_ms: i64,
        error: String,
    ) -> Result<(), StorageError>;

    /// Moves entries to the dead-letter store with a reason.
    ///
    /// `rows` are the (dead-lettered) outcomes of the sync rows among
    /// those entries, recorded in the same transaction, as for
    /// [`outbox_delivered`](Self::outbox_delivered): their keys are marked
    /// failed and retried next run. A replayed dead letter that is later
    /// delivered records its outcome again.
    async fn outbox_dead_letter(
        &self,
        ids: Vec<i64>,
        reason: String,
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError>;

    /// Entries waiting for `destination`.
    async fn outbox_depth(&self, destination: &str) -> Result<u64, StorageError>;

    /// Moves outbox entries to the quarantine store, each with the rule and
    /// reason its destination's rule chain gave (reason code `rule`, the
    /// destination and `messageId` kept). Called by the destination's
    /// delivery worker; on error the entries stay in the outbox and are
    /// tried again.
    ///
    /// `rows` are the outcomes of the sync rows among those entries
    /// (dead-lettered, with the quarantine reason: the destination did not
    /// get them), recorded in the same transaction, as for
    /// [`outbox_delivered`](Self::outbox_delivered).
    async fn outbox_quarantine(
        &self,
        entries: Vec<RuleQuarantine>,
        rows: Vec<SettledRow>,
    ) -> Result<(), StorageError>;

    /// Drops holds of `destination` that expired by `now_ms`; returns how many.
    async fn expire_holds(&self, destination: &str, now_ms: i64) -> Result<u64, StorageError>;

    /// Events held for `destination`.
    async fn held_count(&self, destination: &str) -> Result<u64, StorageError>;

    /// Destinations with entries or holds in the store (on PostgreSQL also
    /// those whose entries are all done but not yet dropped with their
    /// dataset). Used to find the entries of destinations removed from the
    /// configuration.
    async fn outbox_destinations(&self) -> Result<Vec<String>, StorageError>;

    /// Moves every entry waiting for `destination`, due or not, to the dead
    /// letters with `reason`, and drops its consent holds; returns how many
    /// entries moved. For a destination removed from the configuration:
    /// nothing is lost, and a dead-letter replay sends them once it is
    /// back. On a shared store it takes the destination's lease, so it
    /// moves nothing while another worker delivers the destination.
    async fn outbox_abandon(&self, destination: &str, reason: &str) -> Result<u64, StorageError> {
        abandon_through_due(self, destination, reason).await
    }

    /// Gives up what this worker holds in a shared store (delivery leases)
    /// so other workers take over at once. Called at graceful shutdown.
    async fn close(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// [`DeliveryQueue::outbox_abandon`] through the queue's own reads and
/// dead-letter writes, a page at a time.
pub(crate) async fn abandon_through_due<Q: DeliveryQueue + ?Sized>(
    queue: &Q,
    destination: &str,
    reason: &str,
) -> Result<u64, StorageError> {
    const PAGE: usize = 500;
    let mut moved = 0u64;
    let mut seen = std::collections::HashSet::new();
    loop {
        // Due at the end of time: entries waiting on a retry move too.
        let due = queue.outbox_due(destination, i64::MAX, 0, PAGE).await?;
        let ids: Vec<i64> = due.iter().map(|e| e.id).collect();
        // NOTE: stop when a page brings nothing new, so a store that keeps
        // an entry (its dataset being removed) cannot hold this loop.
        let fresh = ids.iter().filter(|id| seen.insert(**id)).count();
        if fresh == 0 {
            break;
        }
        moved += fresh as u64;
        queue
            .outbox_dead_letter(ids, reason.to_owned(), Vec::new())
            .await?;
    }
    queue.expire_holds(destination, i64::MAX).await?;
    Ok(moved)
}

/// Quarantine and dead letters: listing and replay for operators.
#[async_trait::async_trait]
pub trait ReplayStore: Send + Sync + 'static {
    /// The most recent quarantined events, newest first.
    async fn quarantine_list(&self, limit: usize) -> Result<Vec<QuarantineEntry>, StorageError>;

    /// Quarantined events by id (missing ids are skipped), for replay.
    async fn quarantine_get(&self, ids: Vec<i64>) -> Result<Vec<QuarantineEntry>, StorageError>;

    /// Removes quarantined events once replayed.
    async fn quarantine_remove(&self, ids: Vec<i64>) -> Result<(), StorageError>;

    /// Moves the quarantined events among `ids` that a destination's rules
    /// put there back to that destination's outbox, with a fresh age, in
    /// one durable write; returns the ids moved. Events quarantined at
    /// ingest (no destination) are left alone. Called by the admin replay.
    async fn quarantine_requeue(&self, ids: Vec<i64>) -> Result<Vec<i64>, StorageError>;

    // Delivery (issue #5): dead letters and consent holds.

    /// Up to `limit` dead letters of `destination`, oldest first. Called by
    /// `waymark dlq list` and `GET /admin/dlq`.
    async fn dead_letters(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StorageError>;

    /// Moves dead letters of `destination` (all, or those with `ids`) back
    /// to its outbox with a fresh age. Returns how many moved.
    async fn replay_dead_letters(
        &self,
        destination: &str,
        ids: Option<Vec<i64>>,
    ) -> Result<u64, StorageError>;

    /// Dead letters waiting for `destination`.
    async fn dead_letter_count(&self, destination: &str) -> Result<u64, StorageError>;
}

/// Sync state (issue #18): stable ids, per-key state and the runs of each
/// sync. One run per sync is active at a time; the run executor drives a
/// run through its statuses and the outbox reports each row's outcome.
///
/// # Design
/// A key's state moves only when its destination settled the row, so a
/// crash never marks as synced what was not sent. The delivery queue
/// records those outcomes itself, in the transaction that settles the
/// entries ([`DeliveryQueue::outbox_delivered`]'s `rows`);
/// [`record_outcomes`](SyncStore::record_outcomes) is the same write on
/// its own.
#[async_trait::async_trait]
pub trait SyncStore: Send + Sync + 'static {
    /// The numeric ids of `names` of `kind`, in order, created for names
    /// not seen before; an id never changes or is reused. Called at start
    /// for every configured sync, model and destination.
    async fn object_ids(
        &self,
        kind: ObjectKind,
        names: Vec<String>,
    ) -> Result<Vec<ObjectId>, StorageError>;

    /// Up to `limit` tracked keys of `sync` after `after` (in key order, from
    /// the first when `None`). The planner reads the state page by page at
    /// the start of a run; an empty page is the end.
    async fn state_page(
        &self,
        sync: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<TrackedKey>, StorageError>;

    /// Keys of `sync` whose last delivery was dead-lettered, at most `limit`.
    async fn failed_keys(&self, sync: i64, limit: usize) -> Result<Vec<TrackedKey>, StorageError>;

    /// Queues a run of `sync` and returns its id. A sync has at most one
    /// queued run: a trigger while one waits returns that one (asking a
    /// full resync makes it one). Called by the API, the CLI and schedules.
    async fn queue_run(&self, sync: i64, full_resync: bool) -> Result<i64, StorageError>;

    /// Starts the oldest queued run of `sync` (status `querying`, start time
    /// set) unless a run of it is active; `None` when one is, or when none
    /// is queued. Called by the run executor.
    async fn start_run(&self, sync: i64) -> Result<Option<SyncRun>, StorageError>;

    /// Moves an active run to another active status (`processing`,
    /// `reporting`). Returns false when the run is not active.
    async fn set_run_status(&self, run: i64, status: RunStatus) -> Result<bool, StorageError>;

    /// Records what a run planned once its model has been read: query
    /// size, planned counts and invalid rows.
    async fn record_plan(&self, run: i64, plan: RunPlan) -> Result<(), StorageError>;

    /// Records keys as synced without sending them (`update` mode's first
    /// sight of a key: the destination is taken to have it).
    async fn record_baseline(
        &self,
        sync: i64,
        run: i64,
        keys: Vec<(String, RowHash)>,
    ) -> Result<(), StorageError>;

    /// The delivery hook: moves each row's key state (delivered: synced
    /// with its hash, or forgotten for a removal; dead-lettered: failed,
    /// retried next run) and adds to its run's successful and failed
    /// counts, in one durable write. An outcome older than the key's state
    /// (a lower run) only counts.
    async fn record_outcomes(&self, outcomes: Vec<RowOutcome>) -> Result<(), StorageError>;

    /// Ends a queued or active run with a final status and, for `failed`,
    /// the reason. Returns false when the run had already ended.
    async fn finish_run(
        &self,
        run: i64,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<bool, StorageError>;

    /// Records that `run`'s executor is alive now (its heartbeat). Returns
    /// false when the run is no longer active (another worker found its
    /// heartbeat stale and interrupted it, or it ended): the executor stops.
    async fn keep_run(&self, run: i64) -> Result<bool, StorageError>;

    /// Marks `interrupted` every active run whose heartbeat (or start) is
    /// older than `stale_before_ms`: the worker running it stopped. Queued
    /// runs stay queued. Called at start and periodically by every worker's
    /// executor; returns how many.
    async fn interrupt_runs(&self, stale_before_ms: i64) -> Result<u64, StorageError>;

    /// Runs of `sync`, newest first, as `filter` says.
    async fn runs(&self, sync: i64, filter: RunFilter) -> Result<Vec<SyncRun>, StorageError>;

    /// One run by id.
    async fn run(&self, run: i64) -> Result<Option<SyncRun>, StorageError>;

    /// Invalid rows a run recorded, at most `limit`.
    async fn invalid_rows(
        &self,
        run: i64,
        limit: usize,
    ) -> Result<Vec<super::syncs::InvalidRow>, StorageError>;
}

/// Everything the worker persists, one value per backend: the ingest
/// commit, the delivery queue, quarantine and dead-letter replay, the
/// identity store and the sync state store.
///
/// Every write resolves only once it is durable. Errors mean the write did
/// not happen; the caller answers 503 (ingest) or retries later (delivery).
pub trait Storage: IngestStore + DeliveryQueue + ReplayStore {
    /// The identity store on this backend (`crate::identity` keeps its
    /// graph, profiles and privacy log there).
    fn identity_store(&self) -> Arc<dyn identity::IdentityStore>;

    /// The sync state store on this backend (issue #18).
    fn sync_store(&self) -> Arc<dyn SyncStore>;
}
