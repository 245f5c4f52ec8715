//! The single SQLite writer and its group commit.
//!
//! # Design
//! SQLite allows one writer at a time, and an fsync per event would cap
//! ingest at the disk's sync rate. So every write in the process is a job
//! sent to one thread, which takes all the jobs that are waiting, runs each
//! in its own savepoint inside one transaction, commits once (one fsync for
//! the whole group), and only then answers each job. A job that fails rolls
//! back its savepoint alone; the others still commit (issue #2). A job may
//! bring a hook that runs on the writer thread once its group is decided,
//! before anyone is answered ([`WriteQueue::write_then`]): state kept beside
//! the database (the pack cache, the dedup set) follows the commit exactly.

use std::any::Any;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::StorageError;
use crate::telemetry::storage::{StoreCommitError, StoreCommitted};

type JobResult = Result<Box<dyn Any + Send>, StorageError>;
type JobFn = Box<dyn FnOnce(&Connection) -> JobResult + Send>;
type AfterFn = Box<dyn FnOnce(&mut (dyn Any + Send), bool) + Send>;

struct Job {
    run: JobFn,
    /// Runs on a successful job's result once its group is decided.
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

    /// Like [`write`](Self::write); when `job` succeeds, `after` runs on its
    /// result on the writer thread once the group is decided, before any
    /// job of the group is answered: with `true` when the commit is durable,
    /// `false` when it failed and the job's writes were rolled back. A job
    /// that fails itself is rolled back at once and gets no call: it undoes
    /// its own side effects before returning. `after` must be quick: the
    /// writer waits for it.
    pub(crate) async fn write_then<R, F, A>(&self, job: F, after: A) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
        A: FnOnce(&mut R, bool) + Send + 'static,
    {
        let after: AfterFn = Box::new(move |result, committed| {
            if let Some(r) = result.downcast_mut::<R>() {
                after(r, committed);
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
        let (mut results, outcome) = commit_group(&mut conn, &mut group);
        // 3. The hooks learn the group's fate before anyone is answered.
        let committed = outcome.is_ok();
        for (job, result) in group.iter_mut().zip(results.iter_mut()) {
            if let (Some(after), Ok(r)) = (job.after.take(), result.as_mut()) {
                after(r.as_mut(), committed);
            }
        }
        match outcome {
            Ok(()) => {
                StoreCommitted {
                    jobs: results.len(),
                    duration: started.elapsed(),
                }
                .emit();
                // 4. Answer only after COMMIT returned: the writes are durable.
                for (job, result) in group.drain(..).zip(results) {
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

/// Runs the group's jobs in one transaction and commits it. Returns the
/// results of the jobs that ran (in order; on an early failure, fewer than
/// the group) and whether the transaction committed.
fn commit_group(
    conn: &mut Connection,
    group: &mut [Job],
) -> (Vec<JobResult>, Result<(), rusqlite::Error>) {
    let mut results = Vec::with_capacity(group.len());
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return (results, Err(e)),
    };
    for job in group.iter_mut() {
        // Take the closure out; the reply sender stays for after the commit.
        let run = std::mem::replace(&mut job.run, Box::new(|_| Err(StorageError::Closed)));
        // Cached statements: a group runs thousands of these.
        if let Err(e) = tx
            .prepare_cached("SAVEPOINT job")
            .and_then(|mut s| s.execute([]))
        {
            return (results, Err(e));
        }
        let result = run(&tx);
        let failed = result.is_err();
        results.push(result);
        if failed {
            if let Err(e) = tx
                .prepare_cached("ROLLBACK TO job")
                .and_then(|mut s| s.execute([]))
            {
                return (results, Err(e));
            }
        }
        if let Err(e) = tx
            .prepare_cached("RELEASE job")
            .and_then(|mut s| s.execute([]))
        {
            return (results, Err(e));
        }
    }
    let outcome = tx.commit();
    (results, outcome)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn queue() -> WriteQueue {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        WriteQueue::start(conn, 16).unwrap()
    }

    async fn count(q: &WriteQueue) -> i64 {
        q.write(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn hooks_learn_whether_the_group_committed() {
        let q = queue();
        let seen = Arc::new(Mutex::new(Vec::new()));
        // 1. A commit: the hook runs with `true` before the answer.
        let log = Arc::clone(&seen);
        let r = q
            .write_then(
                |conn| Ok(conn.execute("INSERT INTO t VALUES (1)", [])?),
                move |n: &mut usize, committed| log.lock().unwrap().push((*n, committed)),
            )
            .await
            .unwrap();
        assert_eq!(r, 1);
        assert_eq!(*seen.lock().unwrap(), [(1, true)]);
        // 2. A commit that fails (the job ended the transaction under the
        //    writer): the hook runs with `false` and the caller gets an error.
        let log = Arc::clone(&seen);
        let r = q
            .write_then(
                |conn| {
                    conn.execute("INSERT INTO t VALUES (2)", [])?;
                    conn.execute_batch("ROLLBACK")?;
                    Ok(2usize)
                },
                move |n: &mut usize, committed| log.lock().unwrap().push((*n, committed)),
            )
            .await;
        assert!(matches!(r, Err(StorageError::Commit(_))), "{r:?}");
        assert_eq!(*seen.lock().unwrap(), [(1, true), (2, false)]);
        // 3. A job that fails is rolled back alone and gets no call.
        let log = Arc::clone(&seen);
        let r = q
            .write_then(
                |conn| {
                    conn.execute("INSERT INTO t VALUES (3)", [])?;
                    Err::<usize, _>(StorageError::Sql("refused".into()))
                },
                move |n: &mut usize, committed| log.lock().unwrap().push((*n, committed)),
            )
            .await;
        assert!(r.is_err());
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(count(&q).await, 1);
    }
}
