//! Topology file validation: a raw [`TopologyFile`] becomes a [`Topology`].
//!
//! Order of checks: schema, host name, the host's CPUs by class, roles,
//! per-class settings, GPUs, then the admin, tuning and cluster sections.
//! The first problem is returned with the location of the value to change.
//!
//! Roles are resolved by `roles.rs`.
//!
//! Class defaults. P and uniform CPUs wait adaptively (spin 50 us, then
//! park), preempt every 500 us, run agents in latency queues and use
//! SCHED_FIFO priority 10. E CPUs park, preempt every 2 ms, run agents in
//! share queues (100 shares) and stay SCHED_OTHER: background work there
//! should never compete with the kernel for a core.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::roles::{derive_roles, resolve_roles};
use super::vram::vram_policy;
use super::{
    ClassSettings, ClusterSpec, CpuClass, CpuSet, GpuPlan, GpuSource, GpuSpec, HostCpus, TaskQueue,
    Topology, TopologyError, WaitStrategy, detect_host,
};
use crate::config::topology_file::{
    ClassSection, ClassSections, ClusterSection, GpuEntry, HostCpusField, TopologyFile,
};
use crate::config::{SourceFile, name_problem};

/// The admin API's default address: loopback on the seed ObservabilityHub's
/// port.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9000";

/// Reads and validates a topology file. Files with `cpus = "auto"` are
/// resolved by detecting the CPUs under `sysfs_root`.
pub fn load(path: &Path, sysfs_root: &Path) -> Result<Topology, TopologyError> {
    let file = SourceFile::read(path).map_err(TopologyError::File)?;
    let raw: TopologyFile = file.parse().map_err(TopologyError::File)?;
    let host = match raw.host.cpus.get_ref() {
        HostCpusField::Auto => Some(detect_host(sysfs_root)?),
        HostCpusField::Classes(_) => None,
    };
    validate(raw, &file, host.as_ref())
}

/// Validates a parsed topology file. `host` must be given when the file
/// says `cpus = "auto"`.
pub fn validate(
    raw: TopologyFile,
    file: &SourceFile,
    host: Option<&HostCpus>,
) -> Result<Topology, TopologyError> {
    let schema = *raw.schema.get_ref();
    if schema != 1 {
        return Err(TopologyError::Schema {
            at: file.locate(raw.schema.span()),
            found: schema,
        });
    }
    let host_name = checked_name(&raw.host.name, file, "host name")?;
    let classes = host_classes(&raw.host.cpus, file, host)?;
    let ctx = Ctx {
        file,
        host: &host_name,
        classes: &classes,
    };
    let roles = match &raw.roles {
        Some(section) => resolve_roles(section.get_ref(), &ctx)?,
        None => derive_roles(&classes),
    };
    let gpu_plan = gpus(raw.host.gpus.as_ref(), &raw.gpu, file)?;
    Ok(Topology {
        path: file.path().to_path_buf(),
        host: host_name,
        isolated: raw.host.isolated,
        data_plane: roles.data_plane,
        control: roles.control,
        housekeeping: roles.housekeeping,
        settings: class_settings(&raw.class, file)?,
        vram: vram_policy(raw.vram.as_ref(), &gpu_plan, file)?,
        gpus: gpu_plan,
        admin_addr: admin_addr(raw.admin.as_ref().and_then(|a| a.addr.as_ref()), file)?,
        tuning_profile: tuning_profile(raw.tuning.as_ref().map(|t| &t.profile), file)?,
        cluster: raw.cluster.as_ref().map(|c| cluster(c, file)).transpose()?,
        legacy: raw
            .legacy
            .as_ref()
            .map(|l| super::legacy::legacy(l, file))
            .transpose()?,
        classes,
    })
}

/// The built-in settings of a class (see the module doc).
pub(super) fn default_settings(class: CpuClass) -> ClassSettings {
    match class {
        CpuClass::P | CpuClass::Uniform => ClassSettings {
            wait: WaitStrategy::Adaptive,
            spin_before_park_us: 50,
            preempt_timer_us: 500,
            task_queue: TaskQueue::Latency,
            rt_priority: 10,
        },
        CpuClass::E => ClassSettings {
            wait: WaitStrategy::Park,
            spin_before_park_us: 0,
            preempt_timer_us: 2_000,
            task_queue: TaskQueue::Shares(100),
            rt_priority: 0,
        },
    }
}

/// What role resolution needs of the file being validated.
pub(super) struct Ctx<'a> {
    pub file: &'a SourceFile,
    pub host: &'a str,
    pub classes: &'a [(CpuClass, CpuSet)],
}

impl Ctx<'_> {
    /// Every CPU of the host.
    pub fn all_cpus(&self) -> CpuSet {
        self.classes
            .iter()
            .fold(CpuSet::new(), |all, (_, s)| all.union(s))
    }

    /// An `Invalid` error at `span`.
    pub fn invalid(&self, span: Range<usize>, message: impl Into<String>) -> TopologyError {
        invalid(self.file, span, message)
    }
}

/// An `Invalid` error at `span` of `file`.
pub(super) fn invalid(
    file: &SourceFile,
    span: Range<usize>,
    message: impl Into<String>,
) -> TopologyError {
    TopologyError::Invalid {
        at: file.locate(span),
        message: message.into(),
    }
}

fn checked_name(
    name: &Spanned<String>,
    file: &SourceFile,
    what: &str,
) -> Result<String, TopologyError> {
    match name_problem(name.get_ref()) {
        None => Ok(name.get_ref().clone()),
        Some(problem) => Err(invalid(
            file,
            name.span(),
            format!("{what} {:?} {problem}", name.get_ref()),
        )),
    }
}

/// Parses a CPU list value, pointing at it on error.
pub(super) fn parse_cpus(
    text: &Spanned<String>,
    file: &SourceFile,
) -> Result<CpuSet, TopologyError> {
    CpuSet::parse_list(text.get_ref()).map_err(|err| invalid(file, text.span(), err.to_string()))
}

/// The classes of a file with `cpus = "auto"`: what detection found.
fn detected_classes(
    field: &Spanned<HostCpusField>,
    file: &SourceFile,
    host: Option<&HostCpus>,
) -> Result<Vec<(CpuClass, CpuSet)>, TopologyError> {
    let host = host.ok_or_else(|| {
        invalid(
            file,
            field.span(),
            "cpus = \"auto\" needs CPU detection, which was not run",
        )
    })?;
    Ok([CpuClass::P, CpuClass::E, CpuClass::Uniform]
        .into_iter()
        .map(|class| (class, host.class_set(class)))
        .filter(|(_, set)| !set.is_empty())
        .collect())
}

fn host_classes(
    field: &Spanned<HostCpusField>,
    file: &SourceFile,
    host: Option<&HostCpus>,
) -> Result<Vec<(CpuClass, CpuSet)>, TopologyError> {
    let lists = match field.get_ref() {
        HostCpusField::Auto => return detected_classes(field, file, host),
        HostCpusField::Classes(lists) => lists,
    };
    let mut classes: Vec<(CpuClass, CpuSet)> = Vec::new();
    for (class, list) in [
        (CpuClass::P, &lists.p),
        (CpuClass::E, &lists.e),
        (CpuClass::Uniform, &lists.uniform),
    ] {
        let Some(list) = list else { continue };
        let set = parse_cpus(list, file)?;
        if set.is_empty() {
            return Err(invalid(
                file,
                list.span(),
                format!("class {class} lists no CPU; remove it or list its CPUs"),
            ));
        }
        if let Some((other, cpu)) = classes
            .iter()
            .find_map(|(other, s)| s.intersection(&set).first().map(|cpu| (*other, cpu)))
        {
            return Err(invalid(
                file,
                list.span(),
                format!("CPU {cpu} is listed under both {other} and {class}; a CPU has one class"),
            ));
        }
        classes.push((class, set));
    }
    let has = |c: CpuClass| classes.iter().any(|(class, _)| *class == c);
    if has(CpuClass::Uniform) && (has(CpuClass::P) || has(CpuClass::E)) {
        return Err(invalid(
            file,
            field.span(),
            "a host's CPUs are either P and E, or uniform; list them as { P = .., E = .. } or { uniform = .. }",
        ));
    }
    if classes.is_empty() {
        return Err(invalid(
            file,
            field.span(),
            "no CPUs listed; write e.g. { uniform = \"0-7\" } or \"auto\"",
        ));
    }
    Ok(classes)
}

fn class_settings(
    sections: &ClassSections,
    file: &SourceFile,
) -> Result<Vec<(CpuClass, ClassSettings)>, TopologyError> {
    [
        (CpuClass::P, &sections.p),
        (CpuClass::E, &sections.e),
        (CpuClass::Uniform, &sections.uniform),
    ]
    .into_iter()
    .map(|(class, section)| {
        let defaults = default_settings(class);
        let settings = match section {
            Some(section) => one_class(class, section, defaults, file)?,
            None => defaults,
        };
        Ok((class, settings))
    })
    .collect()
}

fn one_class(
    class: CpuClass,
    raw: &ClassSection,
    defaults: ClassSettings,
    file: &SourceFile,
) -> Result<ClassSettings, TopologyError> {
    let within = |value: &Option<Spanned<u32>>, default: u32, max: u32, what: &str| match value {
        Some(v) if *v.get_ref() > max => Err(invalid(
            file,
            v.span(),
            format!("{what} must be at most {max}"),
        )),
        Some(v) => Ok(*v.get_ref()),
        None => Ok(default),
    };
    let rt_priority = within(
        &raw.rt_priority,
        u32::from(defaults.rt_priority),
        99,
        "rt_priority (SCHED_FIFO 1-99, 0 = SCHED_OTHER)",
    )?;
    let preempt_timer_us = within(
        &raw.preempt_timer_us,
        defaults.preempt_timer_us,
        1_000_000,
        "preempt_timer_us",
    )?;
    if let Some(p) = raw.preempt_timer_us.as_ref().filter(|p| *p.get_ref() < 10) {
        return Err(invalid(
            file,
            p.span(),
            "preempt_timer_us must be at least 10",
        ));
    }
    let wait = raw.wait.as_ref().map_or(defaults.wait, |w| *w.get_ref());
    if wait == WaitStrategy::Spin && rt_priority > 0 {
        let span = raw.wait.as_ref().map_or(0..0, Spanned::span);
        return Err(invalid(
            file,
            span,
            format!(
                "class {class}: wait = \"spin\" under SCHED_FIFO (rt_priority {rt_priority}) can starve the host; use wait = \"adaptive\", or set rt_priority = 0"
            ),
        ));
    }
    Ok(ClassSettings {
        wait,
        spin_before_park_us: within(
            &raw.spin_before_park_us,
            defaults.spin_before_park_us,
            1_000_000,
            "spin_before_park_us",
        )?,
        preempt_timer_us,
        task_queue: task_queue(raw, defaults.task_queue, file)?,
        rt_priority: u8::try_from(rt_priority).expect("checked at most 99 above"),
    })
}

fn task_queue(
    raw: &ClassSection,
    default: TaskQueue,
    file: &SourceFile,
) -> Result<TaskQueue, TopologyError> {
    let shares = match &raw.shares {
        Some(s) if !(1..=1000).contains(s.get_ref()) => {
            return Err(invalid(file, s.span(), "shares must be between 1 and 1000"));
        }
        Some(s) => Some(u16::try_from(*s.get_ref()).expect("checked at most 1000 above")),
        None => None,
    };
    match raw
        .task_queue
        .as_ref()
        .map(|q| (q.get_ref().as_str(), q.span()))
    {
        Some(("latency", span)) if shares.is_some() => Err(invalid(
            file,
            span,
            "task_queue = \"latency\" takes no `shares`; remove them or use \"shares\"",
        )),
        Some(("latency", _)) => Ok(TaskQueue::Latency),
        Some(("shares", _)) => Ok(TaskQueue::Shares(shares.unwrap_or(100))),
        Some((other, span)) => Err(invalid(
            file,
            span,
            format!("unknown task_queue {other:?}; use \"latency\" or \"shares\""),
        )),
        None => Ok(match (default, shares) {
            (_, Some(s)) => TaskQueue::Shares(s),
            (default, None) => default,
        }),
    }
}

pub(super) fn gpus(
    mode: Option<&Spanned<String>>,
    entries: &[Spanned<GpuEntry>],
    file: &SourceFile,
) -> Result<GpuPlan, TopologyError> {
    match mode.map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("declared", _)) => {}
        Some(("nvml", span)) => {
            if !entries.is_empty() {
                return Err(invalid(
                    file,
                    span,
                    "gpus = \"nvml\" discovers GPUs; remove the [[gpu]] entries or use gpus = \"declared\"",
                ));
            }
            return Ok(GpuPlan::Nvml);
        }
        Some((other, span)) => {
            return Err(invalid(
                file,
                span,
                format!("unknown gpus mode {other:?}; use \"declared\" or \"nvml\""),
            ));
        }
    }
    let mut specs: Vec<GpuSpec> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let spec = gpu(index, entry, file)?;
        if spec.source != GpuSource::Simulated && specs.iter().any(|s| s.source == spec.source) {
            return Err(invalid(
                file,
                entry.span(),
                format!("GPU {index} names the same NVML device as an earlier entry"),
            ));
        }
        specs.push(spec);
    }
    Ok(GpuPlan::Declared(specs))
}

fn gpu(
    index: usize,
    entry: &Spanned<GpuEntry>,
    file: &SourceFile,
) -> Result<GpuSpec, TopologyError> {
    let raw = entry.get_ref();
    let source = match (raw.nvml_index, &raw.uuid, raw.simulated.unwrap_or(false)) {
        (Some(i), None, false) => GpuSource::NvmlIndex(i),
        (None, Some(uuid), false) => GpuSource::NvmlUuid(uuid.clone()),
        (None, None, true) => GpuSource::Simulated,
        _ => {
            return Err(invalid(
                file,
                entry.span(),
                format!(
                    "GPU {index} needs exactly one of `nvml_index`, `uuid` or `simulated = true`"
                ),
            ));
        }
    };
    let name = raw.name.clone().unwrap_or_else(|| match &source {
        GpuSource::NvmlIndex(i) => format!("nvml:{i}"),
        GpuSource::NvmlUuid(uuid) => uuid.clone(),
        GpuSource::Simulated => format!("simulated-{index}"),
    });
    let vram_mib = raw.vram_mib.as_ref().map(|v| *v.get_ref());
    if vram_mib == Some(0) || (source == GpuSource::Simulated && vram_mib.is_none()) {
        let span = raw.vram_mib.as_ref().map_or(entry.span(), Spanned::span);
        return Err(TopologyError::GpuWithoutVram {
            at: file.locate(span),
            gpu: index,
            name,
        });
    }
    Ok(GpuSpec {
        source,
        name,
        vram_mib,
    })
}

fn admin_addr(
    addr: Option<&Spanned<String>>,
    file: &SourceFile,
) -> Result<SocketAddr, TopologyError> {
    match addr {
        None => Ok(DEFAULT_ADMIN_ADDR
            .parse()
            .expect("the default admin address parses")),
        Some(addr) => addr.get_ref().parse().map_err(|_| {
            invalid(
                file,
                addr.span(),
                format!(
                    "{:?} is not an ip:port address; write e.g. \"{DEFAULT_ADMIN_ADDR}\"",
                    addr.get_ref()
                ),
            )
        }),
    }
}

fn tuning_profile(
    profile: Option<&Spanned<String>>,
    file: &SourceFile,
) -> Result<Option<PathBuf>, TopologyError> {
    let Some(profile) = profile else {
        return Ok(None);
    };
    let base = file.path().parent().unwrap_or(Path::new("."));
    let path = base.join(profile.get_ref());
    if !path.is_file() {
        return Err(invalid(
            file,
            profile.span(),
            format!(
                "tuning profile {} not found (paths are relative to the topology file's directory)",
                path.display()
            ),
        ));
    }
    Ok(Some(path))
}

fn cluster(section: &ClusterSection, file: &SourceFile) -> Result<ClusterSpec, TopologyError> {
    let name = checked_name(&section.name, file, "cluster name")?;
    let url = section.nats_url.get_ref();
    let rest = ["nats://", "tls://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme));
    if rest.is_none_or(|rest| rest.is_empty()) {
        return Err(invalid(
            file,
            section.nats_url.span(),
            format!("{url:?} is not a NATS URL; write e.g. \"nats://127.0.0.1:4222\""),
        ));
    }
    let heartbeat_ms = match &section.heartbeat_ms {
        Some(ms) if !(10..=60_000).contains(ms.get_ref()) => {
            return Err(invalid(
                file,
                ms.span(),
                "heartbeat_ms must be between 10 and 60000",
            ));
        }
        Some(ms) => *ms.get_ref(),
        None => 250,
    };
    let missed_heartbeats = match &section.missed_heartbeats {
        Some(n) if !(1..=1000).contains(n.get_ref()) => {
            return Err(invalid(
                file,
                n.span(),
                "missed_heartbeats must be between 1 and 1000",
            ));
        }
        Some(n) => *n.get_ref(),
        None => 4,
    };
    let kv_replicas = match &section.kv_replicas {
        Some(n) if !(1..=5).contains(n.get_ref()) => {
            return Err(invalid(
                file,
                n.span(),
                "kv_replicas must be between 1 and 5 (JetStream's limit)",
            ));
        }
        Some(n) => *n.get_ref(),
        None => 1,
    };
    Ok(ClusterSpec {
        name,
        nats_url: url.clone(),
        heartbeat_ms,
        missed_heartbeats,
        auth: cluster_auth(section, file)?,
        tls: cluster_tls(section, file)?,
        kv_replicas,
    })
}

/// A path of the cluster section, relative to the topology file's
/// directory. Only its form is checked here: the files are secrets, read
/// (and checked) when the link starts.
fn cluster_path(value: &Spanned<String>, file: &SourceFile) -> PathBuf {
    let base = file.path().parent().unwrap_or(Path::new("."));
    base.join(value.get_ref())
}

fn cluster_auth(
    section: &ClusterSection,
    file: &SourceFile,
) -> Result<super::ClusterAuth, TopologyError> {
    match (&section.nkey_file, &section.password_file) {
        (Some(_), Some(password)) => Err(invalid(
            file,
            password.span(),
            "give nkey_file or password_file, not both",
        )),
        (Some(nkey), None) => Ok(super::ClusterAuth::Nkey(cluster_path(nkey, file))),
        (None, Some(password)) => Ok(super::ClusterAuth::Password(cluster_path(password, file))),
        (None, None) => Ok(super::ClusterAuth::None),
    }
}

fn cluster_tls(
    section: &ClusterSection,
    file: &SourceFile,
) -> Result<super::ClusterTls, TopologyError> {
    let client = match (&section.tls_cert, &section.tls_key) {
        (Some(cert), Some(key)) => Some((cluster_path(cert, file), cluster_path(key, file))),
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => {
            return Err(invalid(
                file,
                one.span(),
                "a client certificate needs both tls_cert and tls_key",
            ));
        }
    };
    Ok(super::ClusterTls {
        ca: section.tls_ca.as_ref().map(|ca| cluster_path(ca, file)),
        client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::CpuId;

    fn sut(text: &str) -> Result<Topology, TopologyError> {
        let file = SourceFile::from_text(Path::new("t.toml"), text);
        validate(file.parse().map_err(TopologyError::File)?, &file, None)
    }

    const HYBRID: &str = "schema = 1\n[host]\nname = \"h\"\ncpus = { P = \"0-7\", E = \"8-15\" }\n";

    #[test]
    fn derived_roles_put_control_and_housekeeping_on_the_last_e_cores() {
        let topo = sut(HYBRID).unwrap();
        assert_eq!(topo.control(), Some(CpuId(15)));
        assert_eq!(topo.housekeeping().to_string(), "14");
        assert_eq!(topo.data_plane().to_string(), "0-13");
    }

    #[test]
    fn derived_roles_on_two_cpus_keep_both_in_the_data_plane() {
        let topo =
            sut("schema = 1\n[host]\nname = \"vm\"\ncpus = { uniform = \"0-1\" }\n").unwrap();
        assert_eq!(topo.control(), None);
        assert_eq!(topo.data_plane().to_string(), "0-1");
        assert!(topo.housekeeping().is_empty());
    }

    #[test]
    fn class_selectors_take_control_from_the_top_and_data_from_the_bottom() {
        let text = format!(
            "{HYBRID}[roles]\ndata_plane = {{ class = \"P\", count = 4 }}\ncontrol = {{ class = \"E\" }}\nhousekeeping = {{ class = \"E\", count = 2 }}\n"
        );
        let topo = sut(&text).unwrap();
        assert_eq!(topo.data_plane().to_string(), "0-3");
        assert_eq!(topo.control(), Some(CpuId(15)));
        assert_eq!(topo.housekeeping().to_string(), "13-14");
    }

    #[test]
    fn two_roles_claiming_one_cpu_is_an_error_at_the_second_claim() {
        let text = format!(
            "{HYBRID}[roles]\ndata_plane = {{ cpus = \"0-8\" }}\ncontrol = {{ cpus = \"8\" }}\n"
        );
        let err = sut(&text).unwrap_err();
        assert!(
            matches!(err, TopologyError::RoleOverlap { cpu: CpuId(8), .. }),
            "{err}"
        );
        assert_eq!(err.location().unwrap().line(), 7);
    }

    #[test]
    fn a_cpu_the_host_lacks_is_an_error() {
        let text = format!("{HYBRID}[roles]\ndata_plane = {{ cpus = \"0-31\" }}\n");
        let err = sut(&text).unwrap_err();
        assert!(
            matches!(err, TopologyError::CpuNotOnHost { cpu: CpuId(16), .. }),
            "{err}"
        );
        assert!(err.to_string().contains("P 0-7, E 8-15"), "{err}");
    }

    #[test]
    fn a_class_selector_asking_for_too_many_cpus_is_an_error() {
        let text = format!("{HYBRID}[roles]\ndata_plane = {{ class = \"P\", count = 9 }}\n");
        assert!(matches!(
            sut(&text).unwrap_err(),
            TopologyError::RoleShort {
                wanted: 9,
                available: 8,
                ..
            }
        ));
    }

    #[test]
    fn cpus_listed_under_two_classes_are_an_error() {
        let err = sut("schema = 1\n[host]\nname = \"h\"\ncpus = { P = \"0-3\", E = \"3-5\" }\n")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("CPU 3 is listed under both P and E"),
            "{err}"
        );
    }

    #[test]
    fn a_simulated_gpu_without_vram_is_an_error() {
        let text = format!("{HYBRID}[[gpu]]\nsimulated = true\nname = \"sim\"\n");
        assert!(matches!(
            sut(&text).unwrap_err(),
            TopologyError::GpuWithoutVram { gpu: 0, .. }
        ));
        let text = format!("{HYBRID}[[gpu]]\nnvml_index = 0\nvram_mib = 0\n");
        assert!(matches!(
            sut(&text).unwrap_err(),
            TopologyError::GpuWithoutVram { gpu: 0, .. }
        ));
    }

    #[test]
    fn spin_under_sched_fifo_is_rejected() {
        let text = format!("{HYBRID}[class.P]\nwait = \"spin\"\n");
        let err = sut(&text).unwrap_err();
        assert!(err.to_string().contains("can starve the host"), "{err}");
        let text = format!("{HYBRID}[class.P]\nwait = \"spin\"\nrt_priority = 0\n");
        assert_eq!(
            sut(&text).unwrap().settings(CpuClass::P).wait,
            WaitStrategy::Spin
        );
    }

    #[test]
    fn class_defaults_fill_keys_left_out() {
        let text = format!("{HYBRID}[class.E]\nshares = 250\n");
        let topo = sut(&text).unwrap();
        assert_eq!(
            topo.settings(CpuClass::E).task_queue,
            TaskQueue::Shares(250)
        );
        assert_eq!(topo.settings(CpuClass::E).wait, WaitStrategy::Park);
        assert_eq!(topo.settings(CpuClass::P), default_settings(CpuClass::P));
    }

    #[test]
    fn unknown_schema_version_is_an_error() {
        let err =
            sut("schema = 2\n[host]\nname = \"h\"\ncpus = { uniform = \"0\" }\n").unwrap_err();
        assert!(matches!(err, TopologyError::Schema { found: 2, .. }));
    }

    #[test]
    fn cluster_heartbeats_default_to_250_ms_and_4_missed_and_are_range_checked() {
        let plain = format!("{HYBRID}[cluster]\nname = \"home\"\nnats_url = \"nats://a:4222\"\n");
        let spec = sut(&plain).unwrap().cluster().cloned().unwrap();
        assert_eq!((spec.heartbeat_ms, spec.missed_heartbeats), (250, 4));

        let fast = format!("{plain}heartbeat_ms = 100\nmissed_heartbeats = 6\n");
        let spec = sut(&fast).unwrap().cluster().cloned().unwrap();
        assert_eq!((spec.heartbeat_ms, spec.missed_heartbeats), (100, 6));

        let zero = format!("{plain}missed_heartbeats = 0\n");
        let err = sut(&zero).unwrap_err().to_string();
        assert!(
            err.contains("t.toml:") && err.contains("missed_heartbeats must be"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_admin_address_and_a_bad_nats_url_are_errors() {
        let text = format!("{HYBRID}[admin]\naddr = \"localhost\"\n");
        assert!(
            sut(&text)
                .unwrap_err()
                .to_string()
                .contains("is not an ip:port address")
        );
        let text = format!("{HYBRID}[cluster]\nname = \"home\"\nnats_url = \"http://x\"\n");
        assert!(
            sut(&text)
                .unwrap_err()
                .to_string()
                .contains("is not a NATS URL")
        );
    }

    #[test]
    fn nvml_discovery_excludes_declared_gpus() {
        let text =
            HYBRID.replace("cpus =", "gpus = \"nvml\"\ncpus =") + "[[gpu]]\nnvml_index = 0\n";
        assert!(
            sut(&text)
                .unwrap_err()
                .to_string()
                .contains("remove the [[gpu]] entries")
        );
    }
}
