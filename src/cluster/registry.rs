//! The cross-host agent registry: a JetStream KV bucket
//! (`pinwheel-<cluster>-registry`, key `<host>.<agent>`, value an
//! [`AgentRecord`] frame) and each link's full local copy of it. The host
//! comes first in the key, so the NATS server can let each host write
//! only its own keys (`$KV.<bucket>.<host>.>`).
//!
//! One task per link: once connected it opens (or creates) the bucket,
//! writes this host's own records, and follows a watch with history, which
//! first replays every key's latest value and then each change. After a
//! reconnect it starts over, since the server may have restarted without
//! its storage: writing the own records again refills it. Records read
//! from the bucket are untrusted bytes like any other frame, and the copy
//! holds at most [`MAX_REGISTRY_ENTRIES`] of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};

use super::bucket::{self, KV_TIMEOUT};
use futures_util::StreamExt;
use rkyv::util::AlignedVec;
use tracing::debug;

use super::link::{Shared, bad_frame, lock, nats_error};
use super::proto::{self, AgentRecord, FrameProblem};
use super::{ClusterConfig, ClusterError, ClusterEvent};
use crate::config::limits::MAX_AGENTS;
use crate::config::name_problem;

/// The most agents the registry's local copies hold: every host's
/// [`MAX_AGENTS`], sixteen hosts' worth. A new key past it is a bad frame,
/// so whoever can write the bucket cannot grow every host's memory
/// without bound.
pub const MAX_REGISTRY_ENTRIES: usize = 16 * MAX_AGENTS;

/// Checks that `record` is one of this host's, with usable names.
pub(super) fn check_own(config: &ClusterConfig, record: &AgentRecord) -> Result<(), ClusterError> {
    let problem = if record.host == config.host() {
        name_problem(&record.agent)
    } else {
        Some("is not this host's name; register only this host's agents")
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(ClusterError::Name {
            what: if record.host == config.host() {
                "agent"
            } else {
                "host"
            },
            name: if record.host == config.host() {
                record.agent.clone()
            } else {
                record.host.clone()
            },
            problem,
        }),
    }
}

pub(super) async fn task(shared: Arc<Shared>) {
    let js = jetstream::new(shared.client.clone());
    let retry = Duration::from_millis(shared.config.heartbeat_ms());
    loop {
        while !shared.is_connected() {
            shared.reconnected.notified().await;
        }
        match open(&js, &shared).await {
            Ok(store) => follow(&shared, &store).await,
            Err(reason) => nats_error(&shared, "open registry bucket", &reason),
        }
        tokio::time::sleep(retry).await;
    }
}

/// Opens the bucket, creating it if missing.
async fn open(js: &jetstream::Context, shared: &Shared) -> Result<kv::Store, String> {
    bucket::open(
        js,
        &shared.config.registry_bucket(),
        "pinwheel agents: <host>.<agent> -> host, ports, health",
        shared.config.kv_replicas(),
    )
    .await
}

/// Writes the own records, then applies the bucket's changes until the
/// watch ends or the link reconnects.
async fn follow(shared: &Shared, store: &kv::Store) {
    write_own(shared, store).await;
    let mut watch = match tokio::time::timeout(KV_TIMEOUT, store.watch_with_history(">")).await {
        Ok(Ok(watch)) => watch,
        Ok(Err(e)) => return nats_error(shared, "watch registry", &e.to_string()),
        Err(_) => return nats_error(shared, "watch registry", "timed out"),
    };
    let mut aligned = AlignedVec::new();
    let mut last_warn: Option<Instant> = None;
    loop {
        tokio::select! {
            entry = watch.next() => match entry {
                Some(Ok(entry)) => apply(shared, entry, &mut aligned, &mut last_warn),
                Some(Err(e)) => return nats_error(shared, "watch registry", &e.to_string()),
                None => return,
            },
            // Woken by a connection change (start over) or by `register`
            // (write the new record).
            () = shared.reconnected.notified() => {
                if !shared.is_connected() {
                    return;
                }
                write_own(shared, store).await;
            }
        }
    }
}

async fn write_own(shared: &Shared, store: &kv::Store) {
    let own: Vec<AgentRecord> = lock(&shared.own_records).values().cloned().collect();
    for record in own {
        let frame = match proto::encode_record(&record) {
            Ok(frame) => frame,
            Err(problem) => {
                nats_error(shared, "encode agent record", &problem.to_string());
                continue;
            }
        };
        match tokio::time::timeout(KV_TIMEOUT, store.put(record.key(), frame.into())).await {
            Ok(Ok(_)) => debug!(agent = %record.agent, "agent registered"),
            Ok(Err(e)) => nats_error(shared, "write agent record", &e.to_string()),
            Err(_) => nats_error(shared, "write agent record", "timed out"),
        }
    }
}

fn apply(
    shared: &Shared,
    entry: kv::Entry,
    aligned: &mut AlignedVec,
    last_warn: &mut Option<Instant>,
) {
    if entry.operation != kv::Operation::Put {
        lock(&shared.registry).remove(&entry.key);
        return;
    }
    let record = proto::decode_record(&entry.value, aligned).and_then(|r| {
        if r.key() == entry.key {
            Ok(r)
        } else {
            Err(FrameProblem::Name {
                what: "registry key",
                name: entry.key.chars().take(64).collect(),
                problem: "does not match its record's host.agent",
            })
        }
    });
    let record = record.and_then(|record| {
        let mut registry = lock(&shared.registry);
        if !registry.contains_key(&entry.key) && registry.len() >= MAX_REGISTRY_ENTRIES {
            return Err(FrameProblem::TooMany {
                what: "registry",
                len: registry.len() + 1,
                max: MAX_REGISTRY_ENTRIES,
            });
        }
        registry.insert(entry.key.clone(), record.clone());
        Ok(record)
    });
    match record {
        Ok(record) => {
            shared.emit(ClusterEvent::Agent(record));
        }
        Err(problem) => bad_frame(shared, last_warn, &entry.key, &problem),
    }
}
