//! One process or external agent as the control side manages it: its
//! facts, its supervisor, and its current incarnation (child, pidfd, link,
//! log pipes, credentials, cgroup leaf, rings in transit).
//!
//! An incarnation goes: rings made and the child started (`launch`), the
//! hello checked and the welcome and rings sent (`handshake`), the rings'
//! daemon ends handed to the bridge through the slot; and ends in
//! `finish`, whatever ended it, which detaches the slot (the bridge fails
//! what is in flight at once), releases everything the incarnation held
//! (its model uses among it) and asks the supervisor what next.
//!
//! While an incarnation is welcomed, each tick sends it what it is owed
//! (`owed.rs`); the welcome carries the drill in force, so a `--fault`
//! given at start, or one set while the agent was down, holds from the
//! first request of every incarnation.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;

use nix::unistd::{Gid, Uid};
use pinwheel_ipc::drill::FaultSpec;
use pinwheel_ipc::link::{Facts, LinkMessage};
use pinwheel_ipc::ring::{
    Consumer, PeerLink, Producer, RingConfig, RingHandoff, export_consumer_into, export_producer,
};
use tracing::{info, warn};

use super::cgroup::{Cgroups, Leaf};
use super::link::{self, LinkFault, MethodTable, Serving};
use super::logs::LogPipe;
use super::slot::{Attachment, ProcessSlot};
use super::spawn::{Launch, Spawned, pidfd_signal};
use super::supervisor::{Decision, ExitReason, State, Supervisor};
use super::uses::ModelUses;
use super::watch::Watcher;
use super::{ProcessStatus, Spawner, credentials};
use crate::config::ProcessSpec;
use crate::observe::api::AgentState;
use crate::runtime::board::Board;
use crate::topology::CpuId;

/// Watcher token kinds, in the low byte of a token.
pub const PIDFD: u64 = 1;
/// The link.
pub const LINK: u64 = 2;
/// Standard output.
pub const STDOUT: u64 = 3;
/// Standard error.
pub const STDERR: u64 = 4;

/// What the control side lends a managed agent for one operation.
pub struct Env<'a> {
    /// Descriptor readiness.
    pub watcher: &'a mut Watcher,
    /// The host's method names.
    pub methods: &'a mut MethodTable,
    /// Forks children.
    pub spawner: &'a Spawner,
    /// Leaf cgroups.
    pub cgroups: &'a Cgroups,
    /// Where credentials go.
    pub credentials_root: &'a std::path::Path,
    /// The mesh's shared words: drills, model grants, the use desk.
    pub board: &'a Board,
}

/// Rings made for an incarnation, until its hello.
#[derive(Debug)]
struct Rings {
    inbound: RingHandoff,
    outbound: RingHandoff,
    to_agent: Producer,
    from_agent: Consumer,
}

/// One incarnation.
#[derive(Debug)]
pub struct Incarnation {
    epoch: u64,
    pid: Option<u32>,
    uid: Option<u32>,
    child: Option<Child>,
    pidfd: Option<OwnedFd>,
    link: PeerLink,
    logs: [Option<LogPipe>; 2],
    rings: Option<Rings>,
    hello_by_ns: u64,
    credentials: Option<PathBuf>,
    killed_for: Option<ExitReason>,
    link_gone_at_ns: Option<u64>,
}

/// One process or external agent.
#[derive(Debug)]
pub struct Managed {
    /// Its position among managed agents (the high bits of its tokens).
    pub position: u64,
    /// Its name.
    pub name: String,
    /// How it is started; `None` for an external agent.
    pub spec: Option<ProcessSpec>,
    /// A legacy ZeroMQ agent: started and supervised, but given no rings
    /// (it says no hello and is up once started).
    pub ringless: bool,
    /// The account it runs as, resolved; `None`: the daemon's.
    pub ids: Option<(Uid, Gid, PathBuf)>,
    /// Why it cannot run as its manifest's account, if it cannot.
    pub account_error: Option<String>,
    /// The manifest's user name, for views.
    pub user: Option<String>,
    /// Its planned CPU.
    pub cpu: CpuId,
    /// Its nice value.
    pub nice: i32,
    /// Its start phase.
    pub phase: usize,
    /// Its rings' numbers.
    pub ring: RingConfig,
    /// Its facts, less the epoch, drill and method table.
    pub facts: Facts,
    /// Shared with its bridge.
    pub slot: Arc<ProcessSlot>,
    /// Its restart policy (process agents).
    pub supervisor: Option<Supervisor>,
    /// Incarnations so far.
    pub epoch: u64,
    /// The last incarnation's pid, uid and the CPU it was pinned to.
    pub last: (Option<u32>, Option<u32>, Option<u32>),
    /// The current incarnation.
    pub current: Option<Incarnation>,
    /// Its cgroup leaf.
    pub leaf: Option<Leaf>,
    /// Exits by reason label, in `ExitReason::LABELS` order.
    pub exits: [u64; 7],
    /// Why it last ended.
    pub last_exit: Option<ExitReason>,
    /// Its model uses (the current incarnation's).
    pub uses: ModelUses,
    /// The drill the current incarnation was last sent.
    pub drill_sent: FaultSpec,
}

fn no_rings(err: pinwheel_ipc::ring::RingError) -> ExitReason {
    warn!(error = %err, "agent rings not made");
    ExitReason::SpawnFailed
}

impl Managed {
    /// The token of one of its descriptors.
    pub fn token(&self, kind: u64) -> u64 {
        self.position << 8 | kind
    }

    /// Starts a new incarnation of a process agent.
    pub fn launch(&mut self, env: &mut Env<'_>, now_ns: u64) -> Result<(), ExitReason> {
        let Some(spec) = self.spec.clone() else {
            return Ok(());
        };
        if let Some(reason) = &self.account_error {
            warn!(agent = %self.name, %reason, "agent process not started");
            return Err(ExitReason::SpawnFailed);
        }
        self.epoch += 1;
        let rings = match self.ringless {
            true => None,
            false => Some(self.rings().map_err(no_rings)?),
        };
        let credentials = self.credentials(env, &spec)?;
        if self.leaf.is_none() {
            self.leaf = env
                .cgroups
                .leaf(&self.name, self.cpu, spec.memory_max_mib());
        }
        let launch = Launch {
            name: self.name.clone(),
            command: spec.command().to_vec(),
            env: spec.env().to_vec(),
            cwd: spec.cwd().to_path_buf(),
            cpu: self.cpu,
            nice: self.nice,
            ids: self.ids.clone(),
            credentials: credentials.clone(),
            cgroup_procs: self.leaf.as_ref().map(Leaf::procs),
        };
        let spawned = env.spawner.spawn(launch).map_err(|err| {
            warn!(agent = %self.name, error = %err, "agent process not started");
            if let Some(dir) = &credentials {
                credentials::remove(dir);
            }
            ExitReason::SpawnFailed
        })?;
        let incarnation = self.incarnation(spawned, rings, credentials, now_ns);
        self.watch(env.watcher, &incarnation);
        self.current = Some(incarnation);
        if self.ringless {
            self.up(now_ns);
        }
        Ok(())
    }

    /// New rings for the next incarnation.
    fn rings(&self) -> Result<Rings, pinwheel_ipc::ring::RingError> {
        let (to_agent, inbound) = export_producer(self.ring)?;
        let (from_agent, outbound) = export_consumer_into(self.ring, self.slot.bell())?;
        Ok(Rings {
            inbound,
            outbound,
            to_agent,
            from_agent,
        })
    }

    /// Its credentials directory for the next incarnation, if it has any.
    fn credentials(
        &self,
        env: &Env<'_>,
        spec: &ProcessSpec,
    ) -> Result<Option<PathBuf>, ExitReason> {
        if spec.credentials().is_empty() {
            return Ok(None);
        }
        let owner = self.ids.as_ref().map(|(u, g, _)| (*u, *g));
        credentials::install(env.credentials_root, &self.name, spec.credentials(), owner)
            .map(Some)
            .map_err(|reason| {
                warn!(agent = %self.name, %reason, "agent credentials not installed");
                ExitReason::SpawnFailed
            })
    }

    /// The incarnation a started child is.
    fn incarnation(
        &self,
        spawned: Spawned,
        rings: Option<Rings>,
        credentials: Option<PathBuf>,
        now_ns: u64,
    ) -> Incarnation {
        let Spawned {
            child,
            pidfd,
            link,
            stdout,
            stderr,
        } = spawned;
        let pid = child.id();
        info!(agent = %self.name, pid, cpu = self.cpu.0, epoch = self.epoch, "agent process started");
        let pipe = |fd: Option<OwnedFd>, stream| {
            fd.and_then(|fd| LogPipe::new(&self.name, stream, fd).ok())
        };
        let uid = self
            .ids
            .as_ref()
            .map_or_else(|| nix::unistd::getuid().as_raw(), |i| i.0.as_raw());
        Incarnation {
            epoch: self.epoch,
            pid: Some(pid),
            uid: Some(uid),
            child: Some(child),
            pidfd: Some(pidfd),
            link,
            logs: [
                pipe(stdout.map(OwnedFd::from), "stdout"),
                pipe(stderr.map(OwnedFd::from), "stderr"),
            ],
            rings,
            hello_by_ns: now_ns + link::HELLO_TIMEOUT.as_nanos() as u64,
            credentials,
            killed_for: None,
            link_gone_at_ns: None,
        }
    }

    /// Takes an external agent's connection as its new incarnation; the
    /// hello was already checked.
    pub fn adopt(
        &mut self,
        env: &mut Env<'_>,
        link: PeerLink,
        pid: u32,
        uid: u32,
        now_ns: u64,
    ) -> Result<(), LinkFault> {
        self.epoch += 1;
        let rings = self
            .rings()
            .map_err(|e| LinkFault::Corrupt(e.to_string()))?;
        let incarnation = Incarnation {
            epoch: self.epoch,
            pid: Some(pid),
            uid: Some(uid),
            child: None,
            pidfd: None,
            link,
            logs: [None, None],
            rings: Some(rings),
            hello_by_ns: now_ns,
            credentials: None,
            killed_for: None,
            link_gone_at_ns: None,
        };
        self.current = Some(incarnation);
        self.welcome(env)?;
        if let Some(current) = &self.current {
            self.watch(env.watcher, current);
        }
        self.last = (Some(pid), Some(uid), pinned_cpu(pid));
        info!(agent = %self.name, pid, uid, epoch = self.epoch, "external agent attached");
        Ok(())
    }

    fn watch(&self, watcher: &mut Watcher, incarnation: &Incarnation) {
        if let Some(pidfd) = &incarnation.pidfd {
            watcher.watch(self.token(PIDFD), pidfd.as_fd());
        }
        watcher.watch(self.token(LINK), incarnation.link.as_fd());
        for (kind, log) in [STDOUT, STDERR].into_iter().zip(&incarnation.logs) {
            if let Some(log) = log {
                watcher.watch(self.token(kind), log.fd());
            }
        }
    }

    /// Whether the current incarnation still waits for its hello.
    pub fn awaiting_hello(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.rings.is_some())
    }

    /// Waits (blocking, at boot) for the current incarnation's hello.
    pub fn hello_blocking(&mut self, env: &mut Env<'_>, now_ns: u64) -> Result<(), LinkFault> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        link::expect_hello(&current.link, &self.name, current.pid)?;
        self.welcome(env)?;
        self.up(now_ns);
        Ok(())
    }

    /// The link of the current incarnation has something.
    pub fn on_link(&mut self, env: &mut Env<'_>, now_ns: u64) -> Result<(), LinkFault> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        if current.rings.is_none() {
            let serving = Serving {
                methods: env.methods,
                uses: &mut self.uses,
                board: env.board,
            };
            return link::serve(&current.link, serving);
        }
        let message = match current.link.try_recv_message() {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(pinwheel_ipc::ring::RingError::PeerGone) => return Err(LinkFault::Gone),
            Err(err) => return Err(LinkFault::Corrupt(err.to_string())),
        };
        link::check_hello(&current.link, message, &self.name, current.pid)?;
        self.welcome(env)?;
        self.up(now_ns);
        Ok(())
    }

    fn up(&mut self, now_ns: u64) {
        if let Some(supervisor) = &mut self.supervisor {
            supervisor.on_up(now_ns);
        }
        if let Some(current) = &self.current {
            self.last = (current.pid, current.uid, current.pid.and_then(pinned_cpu));
        }
        info!(agent = %self.name, epoch = self.epoch, "agent process attached");
    }

    /// Sends the welcome and the rings, and gives the bridge its ends.
    fn welcome(&mut self, env: &mut Env<'_>) -> Result<(), LinkFault> {
        let Some(current) = &mut self.current else {
            return Ok(());
        };
        let Some(rings) = current.rings.take() else {
            return Ok(());
        };
        let drill = env
            .board
            .drill(pinwheel_ipc::wire::AgentId(self.facts.agent));
        let facts = Facts {
            epoch: current.epoch,
            methods: env.methods.all(),
            drill,
            ..self.facts.clone()
        };
        link::welcome(&current.link, facts, &rings.inbound, &rings.outbound)?;
        self.slot.attach(Attachment {
            epoch: current.epoch,
            to_agent: rings.to_agent,
            from_agent: rings.from_agent,
        });
        self.drill_sent = drill;
        Ok(())
    }

    /// The link of the current incarnation once it is welcomed.
    pub fn welcomed_link(&self) -> Option<&PeerLink> {
        self.current
            .as_ref()
            .filter(|c| c.rings.is_none())
            .map(|c| &c.link)
    }

    /// Drains its log pipes; `kind` is STDOUT or STDERR.
    pub fn on_log(&mut self, watcher: &mut Watcher, kind: u64) {
        let token = self.token(kind);
        let Some(current) = &mut self.current else {
            return;
        };
        let index = usize::from(kind == STDERR);
        if let Some(pipe) = &mut current.logs[index]
            && pipe.drain()
        {
            watcher.forget(token);
            current.logs[index] = None;
        }
    }

    /// Kills the current incarnation for `reason` (a process: SIGKILL
    /// through its pidfd, the exit follows; an external agent: its link is
    /// closed now).
    pub fn kill(&mut self, env: &mut Env<'_>, reason: ExitReason, now_ns: u64) {
        let Some(current) = &mut self.current else {
            return;
        };
        warn!(agent = %self.name, epoch = current.epoch, %reason, "disconnecting agent");
        self.slot.detach(current.epoch);
        self.uses.release_all(env.board);
        match &current.pidfd {
            Some(pidfd) => {
                current.killed_for.get_or_insert(reason);
                let _ = pidfd_signal(pidfd, nix::libc::SIGKILL);
            }
            None => self.finish(env, reason, now_ns),
        }
    }

    /// Its link closed: an external agent is gone now; a child gets a
    /// moment to exit by itself before it is killed.
    pub fn on_link_gone(&mut self, env: &mut Env<'_>, now_ns: u64) {
        env.watcher.forget(self.token(LINK));
        let Some(current) = &mut self.current else {
            return;
        };
        if current.child.is_none() {
            self.slot.detach(current.epoch);
            info!(agent = %self.name, "external agent detached");
            self.finish(env, ExitReason::Exited(0), now_ns);
        } else if !self.ringless {
            // A legacy agent may close the descriptor it never uses.
            current.link_gone_at_ns.get_or_insert(now_ns);
        }
    }

    /// Checks deadlines: a hello that did not come, a child that closed
    /// its link and did not exit.
    pub fn check_deadlines(&mut self, env: &mut Env<'_>, now_ns: u64) {
        let Some(current) = &self.current else {
            return;
        };
        if current.rings.is_some() && now_ns >= current.hello_by_ns {
            self.kill(env, ExitReason::NoHello, now_ns);
        } else if current
            .link_gone_at_ns
            .is_some_and(|at| now_ns >= at + link::HELLO_TIMEOUT.as_nanos() as u64 / 10)
            && current.killed_for.is_none()
        {
            self.kill(env, ExitReason::Corrupt, now_ns);
        }
    }

    /// Its pidfd is readable: reaps the child if it has exited.
    pub fn on_exit_ready(&mut self, env: &mut Env<'_>, now_ns: u64) {
        let Some(current) = &mut self.current else {
            return;
        };
        let Some(child) = &mut current.child else {
            return;
        };
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return,
            Err(err) => {
                warn!(agent = %self.name, error = %err, "agent process not reaped");
                return;
            }
        };
        use std::os::unix::process::ExitStatusExt;
        let observed = match (status.code(), status.signal()) {
            (Some(code), _) => ExitReason::Exited(code),
            (None, Some(signal)) => ExitReason::Signaled(signal),
            (None, None) => ExitReason::Exited(-1),
        };
        let reason = current.killed_for.unwrap_or(observed);
        self.finish(env, reason, now_ns);
    }

    /// Ends the current incarnation: releases it and asks the supervisor.
    pub fn finish(&mut self, env: &mut Env<'_>, reason: ExitReason, now_ns: u64) {
        let Some(mut current) = self.current.take() else {
            return;
        };
        for kind in [PIDFD, LINK, STDOUT, STDERR] {
            env.watcher.forget(self.token(kind));
        }
        for log in current.logs.iter_mut().flatten() {
            log.drain();
        }
        self.slot.detach(current.epoch);
        self.uses.release_all(env.board);
        if let Some(dir) = &current.credentials {
            credentials::remove(dir);
        }
        if current.child.is_none() && reason == ExitReason::Exited(0) {
            return;
        }
        if let Some(i) = ExitReason::LABELS.iter().position(|l| *l == reason.label()) {
            self.exits[i] += 1;
        }
        self.last_exit = Some(reason);
        let Some(supervisor) = &mut self.supervisor else {
            return;
        };
        match supervisor.on_exit(now_ns, reason) {
            Decision::RestartAt(at_ns) => {
                warn!(agent = %self.name, %reason, restart_in_ms = at_ns.saturating_sub(now_ns) / 1_000_000, "agent process ended; restarting")
            }
            Decision::StayDown => info!(agent = %self.name, %reason, "agent process ended"),
            Decision::Fail => {
                tracing::error!(agent = %self.name, %reason, restarts = supervisor.restarts(), "agent process restarted too often; giving up")
            }
        }
        if matches!(supervisor.state(), State::Failed | State::Exited)
            && let Some(leaf) = self.leaf.take()
        {
            leaf.remove();
        }
    }

    /// Whether a restart is due.
    pub fn restart_due(&self, now_ns: u64) -> bool {
        self.current.is_none() && self.supervisor.as_ref().is_some_and(|s| s.due(now_ns))
    }

    /// The current child's pidfd (for stopping).
    pub fn pidfd(&self) -> Option<&OwnedFd> {
        self.current.as_ref().and_then(|c| c.pidfd.as_ref())
    }

    /// What views show.
    pub fn status(&self) -> ProcessStatus {
        let state = match (&self.supervisor, &self.current) {
            (Some(s), _) => s.state().into(),
            (None, Some(c)) if c.rings.is_none() => AgentState::Attached,
            (None, _) => AgentState::Detached,
        };
        ProcessStatus {
            agent: self.name.clone(),
            kind: match (&self.spec, self.ringless) {
                (Some(_), true) => "zmq",
                (Some(_), false) => "process",
                (None, _) => "external",
            }
            .into(),
            pid: self.current.as_ref().and_then(|c| c.pid).or(self.last.0),
            cpu: self.cpu.0,
            cpu_seen: self.last.2,
            user: self.user.clone(),
            uid: self.current.as_ref().and_then(|c| c.uid).or(self.last.1),
            state,
            restarts: self.supervisor.as_ref().map_or(0, Supervisor::restarts),
            last_exit: self.last_exit.map(|r| r.to_string()),
            exits: ExitReason::LABELS
                .iter()
                .zip(self.exits)
                .map(|(l, n)| ((*l).to_owned(), n))
                .collect(),
        }
    }
}

/// The one CPU process `pid` may run on, from `/proc/PID/status`; `None`
/// when it may run on several or is gone.
fn pinned_cpu(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    list.parse().ok()
}

/// A hello that is not for any known agent, or a connection that never
/// said one, on the attach socket.
pub fn hello_name(message: &LinkMessage) -> Option<&str> {
    match message {
        LinkMessage::Hello { name, .. } => Some(name),
        _ => None,
    }
}
