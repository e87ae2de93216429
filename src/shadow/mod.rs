//! Shadow traffic and dual-write: copies of a namespace's commands sent to a second endpoint.
//!
//! Sessions never talk to a shadow or secondary endpoint themselves. They hand a [`Job`] to
//! [`Shadow::submit`], which never waits: a job that finds its queue full, or the byte budget
//! spent, is dropped and counted. Each shadow endpoint has a few [`lane`]s, one connection
//! and one bounded queue each, and a session always uses the same lane, so its mirrored
//! writes reach the secondary in the order it sent them. A lane compares a shadowed read's
//! reply with the client's own reply (captured by the session as it streamed past) off the
//! client's path ([`compare`]) and records the outcome ([`report`]).

pub mod compare;
mod lane;
pub mod report;

use crate::command::CommandId;
use crate::config::{Config, EndpointId};
use crate::route::NsId;
use bytes::Bytes;
use report::{Outcome, Report};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The client's reply to a shadowed read, as the session saw it.
#[derive(Debug)]
pub enum Primary {
    /// The whole reply.
    Reply(Bytes),
    /// Larger than `[shadow] max_compare_bytes`: not compared.
    TooLarge,
}

/// What a lane does with a job's reply.
#[derive(Debug)]
pub enum Check {
    /// Compare it with the client's reply.
    Compare {
        /// The client's reply, once the session has it.
        primary: oneshot::Receiver<Primary>,
        /// How to normalise the two.
        how: compare::Compare,
    },
    /// A mirrored write: count the secondary's answer (`replies` replies, the last one the
    /// command's; for a replayed transaction, MULTI's and each queued command's first).
    Write {
        /// Replies the job's bytes produce.
        replies: u32,
    },
}

/// The connection state a job must run in: the session's SELECT and HELLO commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnState {
    /// The session's SELECT, if any.
    pub select: Option<Bytes>,
    /// The session's HELLO (credentials removed), if any.
    pub hello: Option<Bytes>,
}

/// One command (or replayed transaction) for a shadow or secondary endpoint.
#[derive(Debug)]
pub struct Job {
    /// Its namespace.
    pub ns: NsId,
    /// Its command, for the counters.
    pub command: CommandId,
    /// Where the command's first key lies in `frame`, for mismatch reports.
    pub key: std::ops::Range<usize>,
    /// The request bytes.
    pub frame: Bytes,
    /// The connection state it runs in.
    pub state: ConnState,
    /// What to do with the reply.
    pub check: Check,
}

/// A lane's queue, as sessions see it.
#[derive(Debug)]
struct LaneHandle {
    tx: mpsc::Sender<Vec<Job>>,
    /// Jobs sent and not yet taken by the lane.
    queued: Arc<AtomicUsize>,
}

/// Shadow and secondary connections of the whole process.
#[derive(Debug)]
pub struct Shadow {
    /// Per endpoint, one queue per lane.
    lanes: Vec<Vec<LaneHandle>>,
    /// `[shadow] queue`: most jobs waiting for one lane.
    queue: usize,
    /// Per namespace, copies handed to a lane and not yet answered, failed or dropped (a
    /// cutover waits for none to be left before it flips).
    outstanding: Arc<[AtomicU64]>,
    /// Request bytes queued or in flight on every lane together.
    queued_bytes: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    /// Counters and the mismatch log.
    pub report: Arc<Report>,
    /// `[shadow] max_compare_bytes`.
    pub max_compare_bytes: usize,
}

impl Shadow {
    /// Starts the lanes of every endpoint (they connect when their first job arrives).
    /// Must run inside a Tokio runtime.
    pub fn start(config: &Arc<Config>, routes: usize) -> Arc<Shadow> {
        let settings = &config.shadow;
        let report = Arc::new(Report::new(
            routes,
            settings.mismatch_log,
            settings.log_values,
        ));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let outstanding: Arc<[AtomicU64]> = (0..routes).map(|_| AtomicU64::new(0)).collect();
        let lanes = (0..config.endpoints.len())
            .map(|ep| {
                (0..settings.connections)
                    .map(|_| {
                        // Bounded in batches here, and in jobs by `queued`.
                        let (tx, rx) = mpsc::channel(settings.queue);
                        let queued = Arc::new(AtomicUsize::new(0));
                        let lane = lane::Lane::new(
                            ep,
                            config.clone(),
                            report.clone(),
                            queued_bytes.clone(),
                            queued.clone(),
                            outstanding.clone(),
                        )
                        .following(crate::upstream::sentinel::generation(&config.endpoints[ep]));
                        tokio::spawn(lane.run(rx));
                        LaneHandle { tx, queued }
                    })
                    .collect()
            })
            .collect();
        Arc::new(Shadow {
            lanes,
            queued_bytes,
            max_queued_bytes: settings.max_queued_bytes,
            queue: settings.queue,
            outstanding,
            report,
            max_compare_bytes: settings.max_compare_bytes,
        })
    }

    /// Queues a session's copies for `endpoint` on the session's lane, without waiting: one
    /// message per batch, so a pipeline of copies wakes the lane once. Copies that do not fit
    /// (the lane's queue or the byte budget) are dropped and counted.
    pub fn submit(&self, endpoint: EndpointId, session: u64, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let Some(lanes) = self.lanes.get(endpoint).filter(|l| !l.is_empty()) else {
            return self.drop_all(&jobs);
        };
        let lane = &lanes[(session % lanes.len() as u64) as usize];
        let count = jobs.len();
        if lane.queued.fetch_add(count, Relaxed) + count > self.queue {
            lane.queued.fetch_sub(count, Relaxed);
            return self.drop_all(&jobs);
        }
        let size: usize = jobs.iter().map(|j| j.frame.len()).sum();
        if self.queued_bytes.fetch_add(size, Relaxed) + size > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(size, Relaxed);
            lane.queued.fetch_sub(count, Relaxed);
            return self.drop_all(&jobs);
        }
        for job in &jobs {
            if let Some(n) = self.outstanding.get(usize::from(job.ns)) {
                n.fetch_add(1, Relaxed);
            }
        }
        if let Err(e) = lane.tx.try_send(jobs) {
            self.queued_bytes.fetch_sub(size, Relaxed);
            lane.queued.fetch_sub(count, Relaxed);
            let jobs = match e {
                mpsc::error::TrySendError::Full(jobs) | mpsc::error::TrySendError::Closed(jobs) => {
                    jobs
                }
            };
            for job in &jobs {
                if let Some(n) = self.outstanding.get(usize::from(job.ns)) {
                    n.fetch_sub(1, Relaxed);
                }
            }
            self.drop_all(&jobs);
        }
    }

    /// Copies of a namespace handed to a lane and not settled yet.
    pub fn outstanding(&self, ns: NsId) -> u64 {
        self.outstanding
            .get(usize::from(ns))
            .map_or(0, |n| n.load(Relaxed))
    }

    fn drop_all(&self, jobs: &[Job]) {
        for job in jobs {
            self.report.record(job.ns, job.command, Outcome::Dropped);
        }
    }

    /// Request bytes queued or in flight on every lane (for tests and metrics).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Relaxed)
    }
}
