//! Raw serde form of a topology file (`topology/*.toml`, schema 1).
//!
//! These structs mirror the file exactly and reject unknown keys. Values that
//! validation may reject are `Spanned`, so its errors can name the line.
//! `topology::validate` turns a [`TopologyFile`] into a `Topology`; nothing
//! else reads these structs.
//!
//! ```toml
//! schema = 1
//!
//! [host]
//! name = "mainpc"
//! cpus = { P = "0-15", E = "16-31" }   # or cpus = "auto"
//! isolated = false
//! gpus = "declared"                    # or "nvml": every GPU NVML finds
//!
//! [roles]                              # leave out to derive roles
//! data_plane = { cpus = "0-29" }       # or { class = "P", count = 8 }
//! control = { cpus = "30" }            # leave out: core loop shares CPU 0
//! housekeeping = { cpus = "31" }       # leave out: floats off the data plane
//!
//! [class.P]
//! wait = "adaptive"                    # spin | park | adaptive
//! spin_before_park_us = 50
//! preempt_timer_us = 500
//! task_queue = "latency"               # latency | shares
//! rt_priority = 10                     # SCHED_FIFO 1-99; 0 = SCHED_OTHER
//!
//! [[gpu]]
//! nvml_index = 0                       # or uuid = "GPU-...", or simulated = true
//! name = "NVIDIA GeForce RTX 4090"
//! vram_mib = 24564
//!
//! [vram]                               # VRAM optimizer policy; all optional
//! budget_fraction = 0.95               # of each GPU's total VRAM
//! reserve_mib = 512                    # always left free
//! high_water = 1.0                     # of the budget: loads fill to it, evict above
//! low_water = 0.9                      # of the budget: shed cold models to, preload below
//! min_residency_s = 30
//! keep_alive_s = 0                     # 0: idle models stay until VRAM is needed
//! pin = [{ model = "whisper-large-v3", vram_mib = 3100, gpu = 0 }]
//!
//! [admin]
//! addr = "127.0.0.1:9000"
//!
//! [tuning]
//! profile = "../tuning/latency-performance.toml"
//!
//! [cluster]
//! name = "home"
//! nats_url = "nats://127.0.0.1:4222"
//! heartbeat_ms = 250                   # host state period
//! missed_heartbeats = 4                # silent this long: host lost
//! nkey_file = "/etc/pinwheel/mainpc.nk" # this host's NATS identity (0600, root's)
//! # password_file = "/etc/pinwheel/nats.pass"  # or "user:password", 0600
//! # tls_ca = "/etc/pinwheel/nats-ca.pem"       # with a tls:// URL
//! # tls_cert = "..."  tls_key = "..."          # a client certificate, optional
//! kv_replicas = 3                      # JetStream replicas of the buckets
//!
//! [legacy]                             # the ZeroMQ gateway for unchanged seed agents
//! bind = "127.0.0.1"                   # where agents' legacy_rep/legacy_pub ports are bound
//! max_message_bytes = 1048576          # larger requests get an error reply
//! timeout_ms = 5000                    # a legacy request's deadline (the seed's ZMQ_REQUEST_TIMEOUT)
//! ```

use std::fmt;

use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use pinwheel_ipc::ring::WaitStrategy;

/// A whole topology file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    /// Schema version; must be 1.
    pub schema: Spanned<i64>,
    /// The host the file describes.
    pub host: HostSection,
    /// CPU roles; absent means derive them from the host's CPUs.
    pub roles: Option<Spanned<RolesSection>>,
    /// Per-class executor settings.
    #[serde(default)]
    pub class: ClassSections,
    /// Declared GPUs.
    #[serde(default)]
    pub gpu: Vec<Spanned<GpuEntry>>,
    /// Admin API.
    pub admin: Option<AdminSection>,
    /// Tuning profile.
    pub tuning: Option<TuningSection>,
    /// Cluster link.
    pub cluster: Option<ClusterSection>,
    /// VRAM optimizer policy.
    pub vram: Option<VramSection>,
    /// The legacy ZeroMQ gateway.
    pub legacy: Option<LegacySection>,
}

/// `[legacy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacySection {
    /// The IP address the gateway binds its ports on.
    pub bind: Spanned<String>,
    /// Largest request accepted, bytes.
    pub max_message_bytes: Option<Spanned<u64>>,
    /// Deadline of a legacy request, and of a call to a `zmq` agent
    /// whose caller gave none, milliseconds.
    pub timeout_ms: Option<Spanned<u64>>,
}

/// `[host]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Host name (`mainpc`, `pc2`); agents name it in `host`.
    pub name: Spanned<String>,
    /// The host's CPUs by class, or `"auto"`.
    pub cpus: Spanned<HostCpusField>,
    /// Whether the data-plane CPUs are isolated (`isolcpus`, `nohz_full`).
    #[serde(default)]
    pub isolated: bool,
    /// `"declared"` (default): the `[[gpu]]` entries; `"nvml"`: discover.
    pub gpus: Option<Spanned<String>>,
}

/// `cpus = "auto"` or `cpus = { P = "0-15", E = "16-31" }`.
#[derive(Debug)]
pub enum HostCpusField {
    /// Detect the classes from sysfs.
    Auto,
    /// Listed by class.
    Classes(ClassLists),
}

/// CPU lists by class.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassLists {
    /// Performance cores.
    #[serde(rename = "P")]
    pub p: Option<Spanned<String>>,
    /// Efficiency cores.
    #[serde(rename = "E")]
    pub e: Option<Spanned<String>>,
    /// CPUs of a host whose CPUs are alike.
    pub uniform: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for HostCpusField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;

        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = HostCpusField;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""auto" or a table of CPU lists by class, like { P = "0-15", E = "16-31" } or { uniform = "0-7" }"#)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                if value == "auto" {
                    Ok(HostCpusField::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(value), &self))
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ClassLists::deserialize(MapAccessDeserializer::new(map)).map(HostCpusField::Classes)
            }
        }

        deserializer.deserialize_any(FieldVisitor)
    }
}

/// `[roles]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesSection {
    /// CPUs that run agent executors.
    pub data_plane: Spanned<RoleSelector>,
    /// The core loop's CPU.
    pub control: Option<Spanned<RoleSelector>>,
    /// The control thread's CPUs.
    pub housekeeping: Option<Spanned<RoleSelector>>,
}

/// CPUs for a role: an explicit list, or a class and a count.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSelector {
    /// Explicit CPU list.
    pub cpus: Option<Spanned<String>>,
    /// A class to take CPUs from: `P`, `E`, `uniform` or `any`.
    pub class: Option<Spanned<String>>,
    /// How many CPUs of `class`; all unclaimed ones if absent.
    pub count: Option<Spanned<u32>>,
}

/// `[class.P]`, `[class.E]`, `[class.uniform]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSections {
    /// Settings for P-cores.
    #[serde(rename = "P")]
    pub p: Option<ClassSection>,
    /// Settings for E-cores.
    #[serde(rename = "E")]
    pub e: Option<ClassSection>,
    /// Settings for uniform CPUs.
    pub uniform: Option<ClassSection>,
}

/// Executor settings for one class; absent keys take the class's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSection {
    /// How consumers wait.
    pub wait: Option<Spanned<WaitStrategy>>,
    /// Longest spin before parking, microseconds.
    pub spin_before_park_us: Option<Spanned<u32>>,
    /// glommio preempt timer, microseconds.
    pub preempt_timer_us: Option<Spanned<u32>>,
    /// `"latency"` or `"shares"`.
    pub task_queue: Option<Spanned<String>>,
    /// Shares for `task_queue = "shares"`.
    pub shares: Option<Spanned<u32>>,
    /// SCHED_FIFO priority, 0-99.
    pub rt_priority: Option<Spanned<u32>>,
}

/// One `[[gpu]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuEntry {
    /// NVML device index.
    pub nvml_index: Option<u32>,
    /// NVML device UUID.
    pub uuid: Option<String>,
    /// A simulated GPU.
    pub simulated: Option<bool>,
    /// Display name.
    pub name: Option<String>,
    /// Total VRAM, MiB.
    pub vram_mib: Option<Spanned<u64>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Listen address, `ip:port`.
    pub addr: Option<Spanned<String>>,
}

/// `[tuning]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningSection {
    /// Profile path, relative to the topology file's directory.
    pub profile: Spanned<String>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Cluster name.
    pub name: Spanned<String>,
    /// NATS server URL.
    pub nats_url: Spanned<String>,
    /// Host state period, ms (default 250).
    pub heartbeat_ms: Option<Spanned<u64>>,
    /// Heartbeats a host may miss before it is lost (default 4).
    pub missed_heartbeats: Option<Spanned<u32>>,
    /// This host's NATS nkey seed file.
    pub nkey_file: Option<Spanned<String>>,
    /// A `user:password` file for NATS.
    pub password_file: Option<Spanned<String>>,
    /// The CA that signs the NATS server's certificate (tls:// URLs).
    pub tls_ca: Option<Spanned<String>>,
    /// A client certificate for NATS.
    pub tls_cert: Option<Spanned<String>>,
    /// Its key.
    pub tls_key: Option<Spanned<String>>,
    /// JetStream replicas of the cluster's KV buckets (default 1).
    pub kv_replicas: Option<Spanned<u8>>,
}

/// `[vram]`: the VRAM optimizer's policy. Absent keys take the defaults
/// `topology::VramPolicy::default()` documents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VramSection {
    /// Share of each GPU's total VRAM the optimizer may fill, (0, 1].
    pub budget_fraction: Option<Spanned<f64>>,
    /// MiB of each GPU always left free.
    pub reserve_mib: Option<Spanned<u64>>,
    /// Share of the budget above which idle models are evicted.
    pub high_water: Option<Spanned<f64>>,
    /// Share of the budget eviction brings usage back under; loads after
    /// pressure, and preloads, wait for it.
    pub low_water: Option<Spanned<f64>>,
    /// Seconds a loaded model stays before it may be evicted.
    pub min_residency_s: Option<Spanned<u64>>,
    /// Seconds an idle model stays when no use of it is expected; 0 keeps
    /// idle models until VRAM is needed.
    pub keep_alive_s: Option<Spanned<u64>>,
    /// Load models that history predicts into idle VRAM.
    pub preload: Option<bool>,
    /// Expected load speed, MiB/s (reload cost before loads are measured).
    pub load_mib_per_s: Option<Spanned<u64>>,
    /// Fixed cost of each load, milliseconds.
    pub load_overhead_ms: Option<Spanned<u64>>,
    /// Most `use` requests waiting at once.
    pub queue_len: Option<Spanned<u32>>,
    /// Core-loop tick period, milliseconds.
    pub tick_ms: Option<Spanned<u64>>,
    /// Models that stay resident.
    #[serde(default)]
    pub pin: Vec<Spanned<PinEntry>>,
}

/// One pinned model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinEntry {
    /// Model name, as `use` requests name it.
    pub model: Spanned<String>,
    /// Its VRAM, MiB.
    pub vram_mib: Spanned<u64>,
    /// Index in the `[[gpu]]` list; 0 if absent.
    pub gpu: Option<Spanned<u32>>,
}
