//! The run executor (issue 18 §3–§4): one started run from its model's
//! first batch to its final status.
//!
//! The model is streamed a batch at a time through the [`Planner`]; each
//! batch's planned rows become Segment calls ([`row_call`]) committed to
//! the sync's destination through the pipeline's second producer
//! ([`Pipeline::commit_rows`]), so they take the destination's rules,
//! outbox, batching, backoff and dead letters like any event. The run then
//! waits (`reporting`) until every row it committed has an outcome, which
//! the delivery hook records, and ends `success`, `warning` or `failed`.
//!
//! # Design
//! *Bounded share.* The delivery worker takes its outbox oldest first, so a
//! run that committed a million rows at once would put every real-time
//! event behind them. A run keeps at most [`MAX_IN_FLIGHT`] rows committed
//! but unsettled: a real-time event waits behind at most that many sync
//! rows, and the sync goes as fast as the destination takes rows.
//!
//! *Crash.* Nothing here marks a key synced: only the delivery hook does,
//! in the outbox's transaction. A run's executor writes a heartbeat every
//! [`RUN_HEARTBEAT`]; a run cut off by SIGKILL stays active until its
//! heartbeat is [`RUN_LEASE`] old, when any worker's executor marks it
//! `interrupted` (on a fleet, a live run elsewhere is never taken for a
//! dead one). Its committed rows still deliver (and settle) after the
//! restart, and the next run plans whatever never settled.

use std::time::{Duration, Instant};

use serde_json::value::{to_raw_value, RawValue};
use tokio::sync::watch;

use super::call::{row_call, SYNC_SOURCE_PREFIX};
use super::prepare::{prepare, Prepared};
use super::status::final_status;
use crate::config::{Config, SyncConfig};
use crate::stages::rows::{RowFate, RowTarget};
use crate::stages::Pipeline;
use crate::storage::syncs::{Delivery, InvalidRow, RowOutcome, RunPlan, RunStatus, SyncRun};
use crate::storage::{StorageError, SyncStore};
use crate::syncs::plan::{PlannedRow, INVALID_ROWS_LISTED};
use crate::syncs::Mapping;
use crate::telemetry::syncs::{RowsNotSent, RowsPlanned, RunFinished};

/// Rows a run keeps committed but unsettled at most (the bounded share).
pub const MAX_IN_FLIGHT: u64 = 2_000;
/// Rows committed per outbox commit.
pub const COMMIT_ROWS: usize = 500;
/// How often the run's settled counts are read while it waits.
const SETTLE_POLL: Duration = Duration::from_millis(50);
/// How often a run's executor records that it is alive.
pub const RUN_HEARTBEAT: Duration = Duration::from_secs(5);
/// How old a run's heartbeat may be before any worker marks the run
/// interrupted (its worker stopped).
pub const RUN_LEASE: Duration = Duration::from_secs(30);

/// What a run needs from the worker.
pub struct RunContext<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The sync state store.
    pub store: &'a dyn SyncStore,
    /// The stages the rows go through.
    pub pipeline: &'a Pipeline,
    /// Set to true when the worker stops.
    pub shutdown: watch::Receiver<bool>,
}

/// Why a run ended early.
enum Stop {
    /// The run cannot complete; the reason goes into the run.
    Failed(String),
    /// The worker is stopping.
    Shutdown,
    /// The run was ended elsewhere (its heartbeat went stale and another
    /// worker marked it interrupted).
    Lost,
    /// The store failed.
    Storage(StorageError),
}

impl From<StorageError> for Stop {
    fn from(e: StorageError) -> Stop {
        Stop::Storage(e)
    }
}

/// The run's heartbeat, written every [`RUN_HEARTBEAT`].
struct Heartbeat {
    run: i64,
    last: Instant,
}

impl Heartbeat {
    async fn beat(&mut self, store: &dyn SyncStore) -> Result<(), Stop> {
        if self.last.elapsed() < RUN_HEARTBEAT {
            return Ok(());
        }
        self.last = Instant::now();
        match store.keep_run(self.run).await? {
            true => Ok(()),
            false => Err(Stop::Lost),
        }
    }
}

/// Rows committed and settled by the executor itself.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    /// Rows in the outbox (their delivery settles them).
    committed: u64,
    /// Rows the pipeline did not take, recorded as failed at once.
    not_sent: u64,
}

/// Runs the started `run` of `sync` to its end and returns it as stored.
pub async fn execute(mut cx: RunContext<'_>, sync: &SyncConfig, run: SyncRun) -> Option<SyncRun> {
    let started = Instant::now();
    let (status, error) = match drive(&mut cx, sync, &run).await {
        Ok((status, error)) => (status, error),
        Err(Stop::Failed(reason)) => (RunStatus::Failed, Some(reason)),
        Err(Stop::Shutdown) => (
            RunStatus::Interrupted,
            Some("the worker stopped during the run; the next run sends what was missed".into()),
        ),
        Err(Stop::Storage(e)) => (
            RunStatus::Failed,
            Some(format!("the store failed during the run: {e}")),
        ),
        Err(Stop::Lost) => {
            tracing::warn!(sync = %sync.name, run = run.id, "The run was marked interrupted by another worker (its heartbeat went stale); this worker stops sending it.");
            return cx.store.run(run.id).await.ok().flatten();
        }
    };
    if let Err(e) = cx.store.finish_run(run.id, status, error.clone()).await {
        tracing::error!(sync = %sync.name, run = run.id, error = %e, "Cannot record the run's end; the next start marks it interrupted.");
    }
    let finished = cx.store.run(run.id).await.ok().flatten();
    RunFinished {
        sync: &sync.name,
        status,
        run: finished.as_ref(),
        duration: started.elapsed(),
    }
    .emit();
    match &error {
        Some(error) if status == RunStatus::Failed => {
            tracing::warn!(sync = %sync.name, run = run.id, %error, "Sync run failed.")
        }
        _ => {
            tracing::info!(sync = %sync.name, run = run.id, status = status.as_str(), "Sync run ended.")
        }
    }
    finished
}

async fn drive(
    cx: &mut RunContext<'_>,
    sync: &SyncConfig,
    run: &SyncRun,
) -> Result<(RunStatus, Option<String>), Stop> {
    let Prepared {
        id,
        mut rows,
        mut planner,
        ..
    } = prepare(cx.config, cx.store, &sync.name, run.full_resync)
        .await
        .map_err(|e| Stop::Failed(e.to_string()))?;
    let destination = cx
        .config
        .destinations
        .iter()
        .find(|d| d.name == sync.destination)
        .ok_or_else(|| Stop::Failed(format!("no destination named `{}`", sync.destination)))?;
    let target = RowTarget::new(&format!("{SYNC_SOURCE_PREFIX}{}", sync.name), destination);
    cx.store
        .set_run_status(run.id, RunStatus::Processing)
        .await?;
    let mut beat = Heartbeat {
        run: run.id,
        last: Instant::now(),
    };
    let mut sent = Sent::default();
    let mut invalid_rows: Vec<InvalidRow> = Vec::new();
    loop {
        let batch = tokio::select! {
            batch = rows.next_batch() => batch.map_err(|e| Stop::Failed(e.to_string()))?,
            _ = cx.shutdown.changed() => return Err(Stop::Shutdown),
        };
        let Some(batch) = batch else { break };
        beat.beat(cx.store).await?;
        let plan = planner.plan_batch(batch);
        if !plan.baseline.is_empty() {
            cx.store.record_baseline(id, run.id, plan.baseline).await?;
        }
        let room = INVALID_ROWS_LISTED.saturating_sub(invalid_rows.len());
        invalid_rows.extend(plan.invalid.into_iter().take(room));
        send(
            cx,
            sync,
            id,
            run.id,
            planner.mapping(),
            &target,
            plan.send,
            &mut sent,
            &mut beat,
        )
        .await?;
    }
    let mapping = planner.mapping().clone();
    let plan = planner.finish().map_err(|e| Stop::Failed(e.to_string()))?;
    send(
        cx,
        sync,
        id,
        run.id,
        &mapping,
        &target,
        plan.removed,
        &mut sent,
        &mut beat,
    )
    .await?;
    let counts = plan.counts;
    RowsPlanned {
        sync: &sync.name,
        count: counts.planned.total(),
    }
    .emit();
    cx.store
        .record_plan(
            run.id,
            RunPlan {
                query_size: counts.rows,
                planned: counts.planned,
                invalid: counts.invalid,
                invalid_rows,
            },
        )
        .await?;
    cx.store
        .set_run_status(run.id, RunStatus::Reporting)
        .await?;
    let planned = counts.planned.total();
    let report_timeout = Duration::from_secs(sync.report_timeout_secs);
    let deadline = Instant::now() + report_timeout;
    let settled = loop {
        let settled = settled_of(cx.store, run.id).await?;
        if settled.0 + settled.1 >= planned || Instant::now() >= deadline {
            break settled;
        }
        beat.beat(cx.store).await?;
        tokio::select! {
            _ = tokio::time::sleep(SETTLE_POLL) => {}
            _ = cx.shutdown.changed() => return Err(Stop::Shutdown),
        }
    };
    let (succeeded, failed) = settled;
    let status = final_status(planned, succeeded, failed);
    let pending = planned.saturating_sub(succeeded + failed);
    let error = match status {
        RunStatus::Success => None,
        _ if pending > 0 => Some(format!(
            "{failed} of {planned} row(s) failed and {pending} had no outcome after {} s; their state moves when they settle, and the next run retries what failed",
            report_timeout.as_secs()
        )),
        _ => Some(format!(
            "{failed} of {planned} row(s) failed; the next run retries them"
        )),
    };
    Ok((status, error))
}

/// The run's settled rows: (successful, failed).
async fn settled_of(store: &dyn SyncStore, run: i64) -> Result<(u64, u64), StorageError> {
    Ok(store
        .run(run)
        .await?
        .map_or((0, 0), |r| (r.successful.total(), r.failed.total())))
}

/// Commits `rows` in chunks, records those the pipeline did not take as
/// failed, and waits while the run has more than [`MAX_IN_FLIGHT`] rows
/// unsettled.
#[allow(clippy::too_many_arguments)]
async fn send(
    cx: &mut RunContext<'_>,
    sync: &SyncConfig,
    sync_id: i64,
    run: i64,
    mapping: &Mapping,
    target: &RowTarget,
    rows: Vec<PlannedRow>,
    sent: &mut Sent,
    beat: &mut Heartbeat,
) -> Result<(), Stop> {
    for chunk in rows.chunks(COMMIT_ROWS) {
        let calls: Vec<Box<RawValue>> = chunk
            .iter()
            .map(|row| to_raw_value(&row_call(sync, sync_id, run, mapping, row)))
            .collect::<Result<_, _>>()
            .map_err(|e| Stop::Failed(format!("a row cannot be written as JSON: {e}")))?;
        let fates = cx.pipeline.commit_rows(target, &calls).await?;
        let mut refused = Vec::new();
        for (row, fate) in chunk.iter().zip(fates) {
            match fate {
                RowFate::Committed => sent.committed += 1,
                RowFate::NotSent(reason) => refused.push(RowOutcome {
                    sync: sync_id,
                    run,
                    key: row.key.clone(),
                    hash: row.hash,
                    change: row.change,
                    delivery: Delivery::DeadLettered { reason },
                }),
            }
        }
        if !refused.is_empty() {
            sent.not_sent += refused.len() as u64;
            RowsNotSent {
                sync: &sync.name,
                count: refused.len() as u64,
            }
            .emit();
            cx.store.record_outcomes(refused).await?;
        }
        // The bounded share: wait for the destination to take rows.
        loop {
            let (ok, failed) = settled_of(cx.store, run).await?;
            let in_flight = (sent.committed + sent.not_sent).saturating_sub(ok + failed);
            if in_flight <= MAX_IN_FLIGHT {
                break;
            }
            beat.beat(cx.store).await?;
            tokio::select! {
                _ = tokio::time::sleep(SETTLE_POLL) => {}
                _ = cx.shutdown.changed() => return Err(Stop::Shutdown),
            }
        }
    }
    Ok(())
}
