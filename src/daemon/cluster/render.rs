//! The JSON the admin API serves for the cluster: `GET /v1/cluster`, and
//! the placements in the answers of `POST /v1/gpu/place`,
//! `/v1/models/pin` and `unpin`.
//!
//! ```json
//! {"cluster": "home", "host": "mainpc",
//!  "hosts": [{"host": "mainpc", "state": "up", "last_seen_ms": 0, "latency_us": 0}, ...],
//!  "placements": [{"model": "whisper", "host": "pc2", "gpu": 0, "vram_mib": 3100,
//!                  "pinned": true, "replica": 0, "loaded": true, "revision": 2}],
//!  "agents": [{"agent": "STTService", "host": "mainpc", "ports": [5800], "health": "healthy"}]}
//! ```
//!
//! `hosts` lists this host first; `last_seen_ms` is how long ago its last
//! heartbeat arrived (0 for this host). A placement that is not `loaded`
//! is assigned to its host and loading; `revision` is its entry's in the
//! placement store (0 while this host's write of it is in flight). `agents` is the cluster registry
//! (an agent of a lost host shows `lost`). On a single host `cluster` is
//! `null` and `agents` empty.

use crate::cluster::{AgentRecord, Health};
use crate::gpu::sched::{HostState, HostStatus, Placement};
use crate::observe::api::{self, ClusterHost, ClusterResponse, PlacementView, RegistryAgent};

/// `GET /v1/cluster`.
pub(super) fn cluster<'a>(
    name: Option<&str>,
    me: &str,
    hosts: &[HostStatus],
    placements: &[Placement],
    agents: impl Iterator<Item = &'a AgentRecord>,
    now_ms: u64,
) -> ClusterResponse {
    ClusterResponse {
        cluster: name.map(str::to_owned),
        host: me.to_owned(),
        hosts: hosts.iter().map(|h| host(h, now_ms)).collect(),
        placements: placements.iter().map(placement).collect(),
        agents: agents.map(|a| agent(a, hosts)).collect(),
    }
}

/// Placements as `/v1/cluster` lists them, for the commands' answers.
pub(super) fn placements(placements: &[Placement]) -> Vec<PlacementView> {
    placements.iter().map(placement).collect()
}

fn host(h: &HostStatus, now_ms: u64) -> ClusterHost {
    ClusterHost {
        host: h.host.0.clone(),
        state: match h.state {
            HostState::Up => api::HostState::Up,
            HostState::Degraded => api::HostState::Degraded,
            HostState::Lost => api::HostState::Lost,
        },
        last_seen_ms: h.last_seen_ms.map_or(0, |seen| now_ms.saturating_sub(seen)),
        latency_us: h.latency_us,
    }
}

fn placement(p: &Placement) -> PlacementView {
    PlacementView {
        model: p.slot.model.0.clone(),
        host: p.host.0.clone(),
        gpu: p.gpu.0,
        vram_mib: p.vram_mib,
        pinned: p.pinned,
        replica: u32::from(p.slot.replica),
        loaded: p.loaded,
        revision: p.revision,
        state: None,
    }
}

/// A registry record; an agent of a lost host shows `lost`, since its
/// record says how it was when last written.
fn agent(record: &AgentRecord, hosts: &[HostStatus]) -> RegistryAgent {
    let lost = hosts
        .iter()
        .any(|h| h.host.0 == record.host && h.state == HostState::Lost);
    RegistryAgent {
        agent: record.agent.clone(),
        host: record.host.clone(),
        ports: record.ports.clone(),
        health: if lost { "lost" } else { health(record.health) }.to_owned(),
    }
}

fn health(health: Health) -> &'static str {
    match health {
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
        Health::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::sched::{GpuIndex, HostName, ModelName, Slot};

    #[test]
    fn hosts_show_how_long_ago_they_were_seen_placements_the_issues_fields_and_lost_hosts_agents_lost()
     {
        let hosts = [
            HostStatus {
                host: HostName::from("a"),
                state: HostState::Up,
                last_seen_ms: None,
                latency_us: 0,
            },
            HostStatus {
                host: HostName::from("b"),
                state: HostState::Lost,
                last_seen_ms: Some(1_000),
                latency_us: 420,
            },
        ];
        let placed = [Placement {
            slot: Slot {
                model: ModelName::from("tts"),
                replica: 0,
            },
            host: HostName::from("a"),
            gpu: GpuIndex(1),
            vram_mib: 2048,
            pinned: true,
            revision: 3,
            loaded: true,
        }];

        let records = [("a", "Stt"), ("b", "Tts")].map(|(host, agent)| AgentRecord {
            agent: agent.to_owned(),
            host: host.to_owned(),
            ports: vec![5800],
            health: Health::Healthy,
        });

        let sut = cluster(Some("home"), "a", &hosts, &placed, records.iter(), 4_500);

        assert_eq!(
            sut.hosts[1],
            ClusterHost {
                host: "b".into(),
                state: api::HostState::Lost,
                last_seen_ms: 3_500,
                latency_us: 420
            }
        );
        assert_eq!(sut.hosts[0].last_seen_ms, 0);
        let p = &sut.placements[0];
        assert_eq!(
            (
                p.model.as_str(),
                p.host.as_str(),
                p.gpu,
                p.vram_mib,
                p.pinned
            ),
            ("tts", "a", 1, 2048, true)
        );
        assert_eq!(sut.agents[0].health, "healthy");
        assert_eq!(sut.agents[1].health, "lost", "b is lost");
    }
}
