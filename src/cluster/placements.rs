//! The placements bucket (`pinwheel-<cluster>-placements`, key
//! `<replica>.<model>`, value an [`OwnershipRecord`](super::OwnershipRecord)
//! frame): who owns each model replica, changed only by compare-and-set.
//!
//! One task per link. Once connected it opens (or creates) the bucket,
//! says the core loop's view is not synced, and follows a watch with
//! history: every key's latest value (deletions included), then each
//! change, each as a [`ClusterEvent::Placement`]. When the replay is done
//! (the bucket was empty, or an entry arrives with nothing left behind it)
//! it says [`ClusterEvent::PlacementsSynced`]. Meanwhile it carries out
//! the scheduler's writes in the order they come:
//!
//! * `Create` is the bucket's create (fails if the key has a live value),
//! * `Update` is an update with the expected revision,
//! * `Delete` is a delete marker with the expected revision,
//!
//! and answers each with [`ClusterEvent::Written`]: the new revision, a
//! conflict (someone else wrote first), or a failure. A deletion's own
//! revision is not returned by the bucket; it is answered as revision 0
//! and the watch delivers the marker. Writes that come while the link is
//! down fail at once, so the scheduler backs off instead of waiting.
//!
//! After any connection change, or an entry the core loop's full channel
//! dropped, the task starts over (the server may have
//! restarted without its storage); the core loop's view is replaced by the
//! replay (`GpuScheduler::set_synced`). Entries are untrusted bytes like
//! any frame: a bad key or value is a bad frame, dropped and counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use rkyv::util::AlignedVec;
use tokio::sync::mpsc;

use super::ClusterEvent;
use super::bridge::{key_of, ownership_from_record, record_from_ownership, slot_of};
use super::bucket::{self, KV_TIMEOUT};
use super::link::{Shared, bad_frame, nats_error};
use super::proto::{self, FrameProblem};
use crate::gpu::sched::{Write, WriteOutcome, WriteRequest};

/// How long a watch that has not finished its replay may deliver nothing
/// before it is taken for stalled: twice what one bucket operation may
/// take.
const REPLAY_PATIENCE: Duration = KV_TIMEOUT.saturating_mul(2);

pub(super) async fn task(shared: Arc<Shared>, mut writes: mpsc::Receiver<WriteRequest>) {
    let js = jetstream::new(shared.client.clone());
    let retry = Duration::from_millis(shared.config.heartbeat_ms());
    loop {
        shared.emit(ClusterEvent::PlacementsSynced(false));
        if shared.is_connected() {
            let bucket = shared.config.placements_bucket();
            let description = "pinwheel placements: <replica>.<model> -> owner, gpu, pinned";
            match bucket::open(&js, &bucket, description, shared.config.kv_replicas()).await {
                Ok(store) => follow(&shared, &store, &mut writes, retry).await,
                Err(reason) => nats_error(&shared, "open placements bucket", &reason),
            }
        }
        // Wait for a connection change or the retry period, failing the
        // writes that come meanwhile.
        let pause = tokio::time::sleep(retry);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                () = shared.placements_restart.notified() => break,
                write = writes.recv() => match write {
                    Some(req) => answer(&shared, req, WriteOutcome::Failed),
                    None => return,
                },
            }
        }
    }
}

/// Follows the bucket and carries out writes until the watch ends, stalls,
/// or the connection changes.
///
/// A watch is an ordered consumer on one server of the stream's peers; if
/// that server dies while the client stays connected to another, the
/// consumer notices only after two missed idle heartbeats (10 s in
/// async-nats), longer than an assignment may wait to be loaded. So every
/// `check` period the bucket's last sequence is read: a watch that has not
/// delivered, one period later, what the bucket already held is stalled,
/// and the task starts over with a new watch. The last sequence is asked
/// of the stream each time: `Store::status` only repeats the stream info
/// fetched when the bucket was opened, which made the check compare
/// against a stale number and never fire.
///
/// That check needs the stream to answer. Right after a node of the
/// cluster dies it may not (its stream leader is being elected again),
/// while a watch made in that window can stay silent for good: so a
/// watch that has not finished its replay starts over when it has
/// delivered nothing for [`REPLAY_PATIENCE`] (time spent carrying out
/// writes meanwhile not counted), and the stream is asked only once the
/// replay has ended.
async fn follow(
    shared: &Shared,
    store: &kv::Store,
    writes: &mut mpsc::Receiver<WriteRequest>,
    check: Duration,
) {
    let empty = store.status().await.is_ok_and(|s| s.values() == 0);
    let mut watch = match tokio::time::timeout(KV_TIMEOUT, store.watch_with_history(">")).await {
        Ok(Ok(watch)) => watch,
        Ok(Err(e)) => return nats_error(shared, "watch placements", &e.to_string()),
        Err(_) => return nats_error(shared, "watch placements", "timed out"),
    };
    let mut progress = Progress::new(empty);
    if progress.synced {
        shared.emit(ClusterEvent::PlacementsSynced(true));
    }
    let mut aligned = AlignedVec::new();
    let mut last_warn: Option<Instant> = None;
    // A handle of its own to ask the stream for fresh info
    // (`Store::status` answers what was known when the bucket was opened).
    let mut stream = store.stream.clone();
    let mut checks = tokio::time::interval(check);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = checks.tick() => {
                if !progress.check(shared, &mut stream).await {
                    return;
                }
            }
            entry = watch.next() => match entry {
                Some(Ok(entry)) => {
                    progress.delivered(entry.revision);
                    let caught_up = entry.delta == 0 || entry.seen_current;
                    apply(shared, &entry, &mut aligned, &mut last_warn);
                    if caught_up && !progress.synced {
                        progress.synced = true;
                        shared.emit(ClusterEvent::PlacementsSynced(true));
                    }
                }
                Some(Err(e)) => return nats_error(shared, "watch placements", &e.to_string()),
                None => return,
            },
            write = writes.recv() => match write {
                Some(req) => {
                    let began = Instant::now();
                    let outcome = if shared.is_connected() {
                        execute(shared, store, &req).await
                    } else {
                        WriteOutcome::Failed
                    };
                    answer(shared, req, outcome);
                    progress.busy(began.elapsed());
                }
                None => return,
            },
            () = shared.placements_restart.notified() => return,
        }
    }
}

/// Where a watch stands: whether it has replayed the bucket, what it
/// delivered and when.
struct Progress {
    synced: bool,
    /// When the watch last delivered, moved on by the time spent carrying
    /// out writes since (that is not the watch's silence), at most
    /// [`REPLAY_PATIENCE`] of it: a stream of writes cannot put a restart
    /// off for ever.
    last: Instant,
    /// How far `last` was moved on.
    credit: Duration,
    /// The highest revision delivered.
    delivered: u64,
    /// The bucket's last revision at the previous check, when the watch
    /// was behind it.
    held: Option<u64>,
}

impl Progress {
    fn new(synced: bool) -> Self {
        Self {
            synced,
            last: Instant::now(),
            credit: Duration::ZERO,
            delivered: 0,
            held: None,
        }
    }

    fn delivered(&mut self, revision: u64) {
        self.delivered = self.delivered.max(revision);
        (self.last, self.credit) = (Instant::now(), Duration::ZERO);
    }

    fn busy(&mut self, spent: Duration) {
        let spent = spent.min(REPLAY_PATIENCE.saturating_sub(self.credit));
        (self.last, self.credit) = (self.last + spent, self.credit + spent);
    }

    /// The periodic check; false when the watch must start over: it
    /// stalled behind the bucket, or its replay stayed silent too long.
    /// The stream is asked only after the replay (an awaited info is time
    /// the watch is not read, which would count as silence).
    async fn check(&mut self, shared: &Shared, stream: &mut jetstream::stream::Stream) -> bool {
        if self.held.is_some_and(|h| self.delivered < h) {
            tracing::warn!("placements watch stalled; following the bucket again");
            return false;
        }
        if !self.synced {
            let silent = self.last.elapsed() >= REPLAY_PATIENCE;
            if silent {
                tracing::warn!(
                    delivered = self.delivered,
                    "placements watch silent before its replay ended; following the bucket again"
                );
            }
            return !silent;
        }
        self.held = match tokio::time::timeout(KV_TIMEOUT, stream.info()).await {
            Ok(Ok(info)) => Some(info.state.last_sequence).filter(|&last| last > self.delivered),
            Ok(Err(e)) => {
                nats_error(shared, "read placements stream info", &e.to_string());
                None
            }
            Err(_) => {
                nats_error(shared, "read placements stream info", "timed out");
                None
            }
        };
        true
    }
}

fn answer(shared: &Shared, req: WriteRequest, outcome: WriteOutcome) {
    if outcome == WriteOutcome::Failed {
        tracing::debug!(slot = %req.slot, "placement write failed; the scheduler asks again");
    }
    shared.emit(ClusterEvent::Written {
        slot: req.slot,
        id: req.id,
        outcome,
    });
}

/// Carries out one write on the bucket.
async fn execute(shared: &Shared, store: &kv::Store, req: &WriteRequest) -> WriteOutcome {
    let Some(key) = key_of(&req.slot) else {
        nats_error(shared, "write placement", "model name cannot be a key");
        return WriteOutcome::Failed;
    };
    let frame = match req
        .write
        .owner()
        .map(|o| proto::encode_ownership(&record_from_ownership(o)))
    {
        Some(Ok(frame)) => Some(frame),
        Some(Err(problem)) => {
            nats_error(shared, "encode placement", &problem.to_string());
            return WriteOutcome::Failed;
        }
        None => None,
    };
    let done = match (&req.write, frame) {
        (Write::Create(_), Some(frame)) => {
            let put = store.create(&key, frame.into());
            match tokio::time::timeout(KV_TIMEOUT, put).await {
                Ok(Ok(revision)) => Ok(revision),
                Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(None),
                Ok(Err(e)) => Err(Some(e.to_string())),
                Err(_) => Err(Some("timed out".to_owned())),
            }
        }
        (Write::Update { revision, .. }, Some(frame)) => {
            let put = store.update(&key, frame.into(), *revision);
            update_result(tokio::time::timeout(KV_TIMEOUT, put).await)
        }
        (Write::Delete { revision }, _) => {
            let delete = store.delete_expect_revision(&key, Some(*revision));
            update_result(
                tokio::time::timeout(KV_TIMEOUT, delete)
                    .await
                    .map(|r| r.map(|()| 0)),
            )
        }
        _ => Err(Some("a write without a record".to_owned())),
    };
    match done {
        Ok(revision) => WriteOutcome::Written { revision },
        Err(None) => WriteOutcome::Conflict,
        Err(Some(reason)) => {
            nats_error(shared, "write placement", &reason);
            WriteOutcome::Failed
        }
    }
}

/// An update's (or a deletion's) result: the revision, a conflict
/// (`Err(None)`), or why it failed.
fn update_result(
    result: Result<Result<u64, kv::UpdateError>, tokio::time::error::Elapsed>,
) -> Result<u64, Option<String>> {
    match result {
        Ok(Ok(revision)) => Ok(revision),
        Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(None),
        Ok(Err(e)) => Err(Some(e.to_string())),
        Err(_) => Err(Some("timed out".to_owned())),
    }
}

fn apply(
    shared: &Shared,
    entry: &kv::Entry,
    aligned: &mut AlignedVec,
    last_warn: &mut Option<Instant>,
) {
    let Some(slot) = slot_of(&entry.key) else {
        let problem = FrameProblem::Name {
            what: "placement key",
            name: entry.key.chars().take(64).collect(),
            problem: "is not <replica>.<model>",
        };
        return bad_frame(shared, last_warn, &entry.key, &problem);
    };
    let owner = if entry.operation == kv::Operation::Put {
        match proto::decode_ownership(&entry.value, aligned) {
            Ok(record) => Some(ownership_from_record(&record)),
            Err(problem) => return bad_frame(shared, last_warn, &entry.key, &problem),
        }
    } else {
        None
    };
    let sent = shared.emit(ClusterEvent::Placement {
        slot,
        revision: entry.revision,
        owner,
    });
    if !sent {
        // The core loop missed an entry: its view must be replayed.
        shared.placements_restart.notify_one();
    }
}
