//! The single SQLite writer and its group commit.
//!
//! # Design
//! SQLite allows one writer at a time, and an fsync per event would cap
//! ingest at the disk's sync rate. So every write in the process is a job
//! sent to one thread, which takes all the jobs that are waiting, runs each
//! in its own savepoint inside one transaction, commits once (one fsync for
//! the whole group), and only then answers each job. A job that fails rolls
//! back its savepoint alone; the others still commit (issue #2). A job may
//! bring a hook that runs on the writer thread right after its group
//! committed, before anyone is answered ([`WriteQueue::write_then`]).

use std::any::Any;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::StorageError;
use crate::telemetry::storage::{StoreCommitError, StoreCommitted};

type JobResult = Result<Box<dyn Any + Send>, StorageError>;
type JobFn = Box<dyn FnOnce(&Connection) -> JobResult + Send>;
type AfterFn = Box<dyn FnOnce(&mut (dyn Any + Send)) + Send>;

struct Job {
    run: JobFn,
    /// Runs on the job's result once its group is durable.
    after: Option<AfterFn>,
    reply: oneshot::Sender<JobResult>,
}

/// A handle that queues write jobs for the writer thread.
#[derive(Clone)]
pub(crate) struct WriteQueue {
    tx: mpsc::Sender<Job>,
}

impl WriteQueue {
    /// Starts the writer thread on `conn`. At most `max_group` jobs share a commit.
    pub(crate) fn start(conn: Connection, max_group: usize) -> std::io::Result<WriteQueue> {
        let (tx, rx) = mpsc::channel::<Job>(max_group.max(1) * 4);
        std::thread::Builder::new()
            .name("waymark-store-writer".into())
            .spawn(move || run_writer(conn, rx, max_group.max(1)))?;
        Ok(WriteQueue { tx })
    }

    /// Runs `job` inside the next group commit and resolves once that commit is durable.
    pub(crate) async fn write<R, F>(&self, job: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        self.submit(job, None).await
    }

    /// Like [`write`](Self::write), and runs `after` on the job's result on
    /// the writer thread as soon as the commit is durable, before any job of
    /// the group is answered. `after` must be quick: the writer waits for it.
    pub(crate) async fn write_then<R, F, A>(&self, job: F, after: A) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        A: FnOnce(&mut R) + Send + 'static,
    {
        let after: AfterFn = Box::new(move |result| {
            if let Some(r) = result.downcast_mut::<R>() {
                after(r);
            }
        });
        self.submit(job, Some(after)).await
    }

    async fn submit<R, F>(&self, job: F, after: Option<AfterFn>) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let run: JobFn =
            Box::new(move |conn| job(conn).map(|r| Box::new(r) as Box<dyn Any + Send>));
        self.tx
            .send(Job { run, after, reply })
            .await
            .map_err(|_| StorageError::Closed)?;
        let result = rx.await.map_err(|_| StorageError::Closed)??;
        result
            .downcast::<R>()
            .map(|r| *r)
            .map_err(|_| StorageError::Closed)
    }
}

fn run_writer(mut conn: Connection, mut rx: mpsc::Receiver<Job>, max_group: usize) {
    let mut group: Vec<Job> = Vec::with_capacity(max_group);
    // 1. Block for the first job, then take whatever else is already queued.
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        // 2. One transaction for the group; one savepoint per job.
        let outcome = commit_group(&mut conn, &mut group);
        match outcome {
            Ok(results) => {
                StoreCommitted {
                    jobs: results.len(),
                    duration: started.elapsed(),
                }
                .emit();
                // 3. Answer only after COMMIT returned: the writes are durable.
                for (job, mut result) in group.drain(..).zip(results) {
                    if let (Some(after), Ok(r)) = (job.after, result.as_mut()) {
                        after(r.as_mut());
                    }
                    let _ = job.reply.send(result);
                }
            }
            Err(error) => {
                StoreCommitError { error: &error }.emit();
                for job in group.drain(..) {
                    let _ = job.reply.send(Err(StorageError::Commit(error.to_string())));
                }
            }
        }
    }
}

fn commit_group(
    conn: &mut Connection,
    group: &mut [Job],
) -> Result<Vec<JobResult>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        // Take the closure out; the reply sender stays for after the commit.
        let run = std::mem::replace(&mut job.run, Box::new(|_| Err(StorageError::Closed)));
        // Cached statements: a group runs thousands of these.
        tx.prepare_cached("SAVEPOINT job")?.execute([])?;
        let result = run(&tx);
        if result.is_err() {
            tx.prepare_cached("ROLLBACK TO job")?.execute([])?;
        }
        tx.prepare_cached("RELEASE job")?.execute([])?;
        results.push(result);
    }
    tx.commit()?;
    Ok(results)
}
