//! [`ProcessSide`]: every process and external agent of the daemon, as
//! the control side drives them.
//!
//! * Boot (`start_phase`, on the boot thread, before the phase opens):
//!   each process agent of the phase is started, and its hello awaited
//!   (blocking, bounded), so agents of later phases find it up.
//! * Each core-loop tick (`tick(now)`, never blocking): the watcher's
//!   ready descriptors (exits, link messages, log output, connections on
//!   the attach socket, model uses asked and released), the bridges'
//!   reports (corrupt or silent agents are killed), what each welcomed
//!   agent is owed on its link (model-use answers, a changed drill), hello
//!   and exit deadlines, due restarts, and the health reasons of failed
//!   agents.
//! * Stop (`stop`, on the boot thread after the executors drained):
//!   SIGTERM to every child, SIGKILL to those still there after their
//!   `stop_timeout_ms`, every child reaped, credentials, cgroups and the
//!   attach socket removed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tracing::{info, warn};

use super::attach::{AttachSocket, PeerCreds};
use super::cgroup::Cgroups;
use super::link::{self, LinkFault, MethodTable};
use super::managed::{Env, LINK, Managed, PIDFD, STDERR, STDOUT};
use super::spawn::pidfd_signal;
use super::supervisor::{ExitReason, State};
use super::watch::Watcher;
use super::{ProcessStatus, Spawner};
use crate::observe::health::Health;
use crate::runtime::board::Board;

const LISTENER: u64 = u64::MAX - 1;
const PENDING: u64 = 1 << 63;
/// Connections on the attach socket waiting for their hello, at most.
pub const MAX_PENDING_ATTACH: usize = 32;

/// A connection on the attach socket that has not said hello yet.
#[derive(Debug)]
struct PendingAttach {
    token: u64,
    link: pinwheel_ipc::ring::PeerLink,
    creds: PeerCreds,
    by_ns: u64,
}

/// The control side of the daemon's agent processes.
#[derive(Debug)]
pub struct ProcessSide {
    agents: Vec<Managed>,
    watcher: Watcher,
    methods: MethodTable,
    spawner: Spawner,
    cgroups: Cgroups,
    credentials_root: std::path::PathBuf,
    attach: Option<AttachSocket>,
    pending: Vec<PendingAttach>,
    next_pending: u64,
    ready: Vec<u64>,
    health: Arc<Health>,
    failed_reported: Vec<bool>,
    board: Arc<Board>,
}

/// What the process side holds for all its agents: where it starts them
/// and what it reports to.
pub(super) struct Resources {
    pub spawner: Spawner,
    pub cgroups: Cgroups,
    pub credentials_root: std::path::PathBuf,
    pub attach: Option<AttachSocket>,
    pub health: Arc<Health>,
    pub board: Arc<Board>,
}

impl ProcessSide {
    pub(super) fn assemble(agents: Vec<Managed>, methods: MethodTable, held: Resources) -> Self {
        let Resources {
            spawner,
            cgroups,
            credentials_root,
            attach,
            health,
            board,
        } = held;
        let mut watcher = Watcher::new(true);
        if let Some(socket) = &attach {
            watcher.watch(LISTENER, socket.fd());
        }
        let failed_reported = vec![false; agents.len()];
        Self {
            agents,
            watcher,
            methods,
            spawner,
            cgroups,
            credentials_root,
            attach,
            pending: Vec::new(),
            next_pending: 0,
            ready: Vec::with_capacity(64),
            health,
            failed_reported,
            board,
        }
    }

    fn split(&mut self) -> (&mut [Managed], Env<'_>) {
        (
            &mut self.agents,
            Env {
                watcher: &mut self.watcher,
                methods: &mut self.methods,
                spawner: &self.spawner,
                cgroups: &self.cgroups,
                credentials_root: &self.credentials_root,
                board: &self.board,
            },
        )
    }

    /// The host's method table, which agent processes ask and the legacy
    /// gateway shares, so one name has one number.
    pub fn methods(&mut self) -> &mut MethodTable {
        &mut self.methods
    }

    /// How descriptors are watched: `uring` or `poll`.
    pub fn watcher_name(&self) -> &'static str {
        self.watcher.name()
    }

    /// Starts the process agents of start phase `phase` and waits for
    /// each one's hello (boot thread).
    pub fn start_phase(&mut self, phase: usize, now_ns: u64) {
        let (agents, mut env) = self.split();
        for agent in agents
            .iter_mut()
            .filter(|a| a.phase == phase && a.spec.is_some())
        {
            if let Err(reason) = agent.launch(&mut env, now_ns) {
                agent.finish(&mut env, reason, now_ns);
            }
        }
        for agent in agents
            .iter_mut()
            .filter(|a| a.phase == phase && a.awaiting_hello())
        {
            if let Err(fault) = agent.hello_blocking(&mut env, now_ns) {
                warn!(agent = %agent.name, %fault, "agent process did not attach");
                let reason = fault_reason(&fault);
                agent.kill(&mut env, reason, now_ns);
            }
        }
    }

    /// One core-loop tick.
    pub fn tick(&mut self, now_ns: u64) {
        for agent in &mut self.agents {
            agent.uses.new_tick();
        }
        self.ready.clear();
        let mut ready = std::mem::take(&mut self.ready);
        if let Err(err) = self.watcher.ready(&mut ready) {
            warn!(error = %err, "agent descriptors not checked");
        }
        for &token in &ready {
            self.dispatch(token, now_ns);
        }
        self.ready = ready;
        let (agents, mut env) = self.split();
        for agent in agents.iter_mut() {
            if let Some((epoch, reason)) = agent.slot.take_report()
                && epoch == agent.epoch
            {
                agent.kill(&mut env, reason, now_ns);
            }
            match agent.sync(&mut env) {
                Ok(()) => {}
                Err(LinkFault::Gone) => agent.on_link_gone(&mut env, now_ns),
                Err(fault) => {
                    warn!(agent = %agent.name, %fault, "agent link");
                    agent.kill(&mut env, fault_reason(&fault), now_ns);
                }
            }
            agent.check_deadlines(&mut env, now_ns);
            if agent.restart_due(now_ns) {
                if let Some(s) = &mut agent.supervisor {
                    s.on_restarted();
                }
                if let Err(reason) = agent.launch(&mut env, now_ns) {
                    agent.finish(&mut env, reason, now_ns);
                }
            }
        }
        self.expire_pending(now_ns);
        self.report_failures();
    }

    fn dispatch(&mut self, token: u64, now_ns: u64) {
        if token == LISTENER {
            return self.accept(now_ns);
        }
        if token & PENDING != 0 {
            return self.pending_hello(token, now_ns);
        }
        let position = (token >> 8) as usize;
        let (agents, mut env) = self.split();
        let Some(agent) = agents.get_mut(position) else {
            return;
        };
        match token & 0xff {
            PIDFD => agent.on_exit_ready(&mut env, now_ns),
            LINK => match agent.on_link(&mut env, now_ns) {
                Ok(()) => {}
                Err(LinkFault::Gone) => agent.on_link_gone(&mut env, now_ns),
                Err(fault) => {
                    warn!(agent = %agent.name, %fault, "agent link");
                    agent.kill(&mut env, fault_reason(&fault), now_ns);
                }
            },
            kind @ (STDOUT | STDERR) => agent.on_log(env.watcher, kind),
            _ => {}
        }
    }

    fn accept(&mut self, now_ns: u64) {
        let Some(socket) = &self.attach else { return };
        while let Some((link, creds)) = socket.accept() {
            if self.pending.len() >= MAX_PENDING_ATTACH {
                let _ = link::refuse(&link, "too many agents attaching at once; retry".into());
                continue;
            }
            let token = PENDING | self.next_pending;
            self.next_pending += 1;
            self.watcher.watch(token, link.as_fd());
            self.pending.push(PendingAttach {
                token,
                link,
                creds,
                by_ns: now_ns + link::HELLO_TIMEOUT.as_nanos() as u64,
            });
        }
    }

    /// A connection on the attach socket spoke: its hello decides.
    fn pending_hello(&mut self, token: u64, now_ns: u64) {
        let Some(i) = self.pending.iter().position(|p| p.token == token) else {
            return;
        };
        let message = match self.pending[i].link.try_recv_message() {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(_) => {
                self.watcher.forget(token);
                self.pending.swap_remove(i);
                return;
            }
        };
        self.watcher.forget(token);
        let pending = self.pending.swap_remove(i);
        let name = super::managed::hello_name(&message)
            .unwrap_or_default()
            .to_owned();
        let (agents, mut env) = self.split();
        let Some(agent) = agents
            .iter_mut()
            .find(|a| a.name == name && a.spec.is_none())
        else {
            let _ = link::refuse(
                &pending.link,
                format!("no external agent named {name:?} in the manifests"),
            );
            return;
        };
        if let Err(reason) = check_peer(agent, pending.creds) {
            warn!(agent = %agent.name, uid = pending.creds.uid, %reason, "attach refused");
            let _ = link::refuse(&pending.link, reason);
            return;
        }
        if agent.current.is_some() {
            let _ = link::refuse(&pending.link, format!("agent {name} is already attached"));
            return;
        }
        let checked = link::check_hello(&pending.link, message, &name, Some(pending.creds.pid));
        if checked.is_ok()
            && let Err(fault) = agent.adopt(
                &mut env,
                pending.link,
                pending.creds.pid,
                pending.creds.uid,
                now_ns,
            )
        {
            warn!(agent = %name, %fault, "external agent not attached");
        }
    }

    fn expire_pending(&mut self, now_ns: u64) {
        while let Some(i) = self.pending.iter().position(|p| now_ns >= p.by_ns) {
            let pending = self.pending.swap_remove(i);
            self.watcher.forget(pending.token);
        }
    }

    /// Raises a health reason for each agent that failed (once).
    fn report_failures(&mut self) {
        for (agent, reported) in self.agents.iter().zip(self.failed_reported.iter_mut()) {
            let failed = agent
                .supervisor
                .as_ref()
                .is_some_and(|s| s.state() == State::Failed);
            if failed && !*reported {
                *reported = true;
                let spec = agent.spec.as_ref();
                self.health.raise(
                    &format!("agent_failed:{}", agent.name),
                    format!(
                        "agent process {} failed: restarted {} times within {} s (max_restarts); last: {}",
                        agent.name,
                        spec.map_or(0, |s| s.max_restarts()),
                        spec.map_or(0, |s| s.restart_window_s()),
                        agent.last_exit.map_or_else(String::new, |r| r.to_string())
                    ),
                );
            }
        }
    }

    /// What views show, one entry per agent.
    pub fn statuses(&self) -> Vec<ProcessStatus> {
        self.agents.iter().map(Managed::status).collect()
    }

    /// Stops every agent process: SIGTERM, SIGKILL after its
    /// `stop_timeout_ms`, all reaped; then removes what they held.
    pub fn stop(&mut self, now_ns: u64) {
        let started = Instant::now();
        for agent in &mut self.agents {
            if let Some(s) = &mut agent.supervisor {
                s.on_stop();
            }
            if let Some(pidfd) = agent.pidfd() {
                let _ = pidfd_signal(pidfd, nix::libc::SIGTERM);
            }
        }
        loop {
            let waiting: Vec<usize> = (0..self.agents.len())
                .filter(|&i| self.agents[i].pidfd().is_some())
                .collect();
            if waiting.is_empty() {
                break;
            }
            let elapsed = started.elapsed();
            for &i in &waiting {
                let timeout = self.agents[i].spec.as_ref().map_or(Duration::ZERO, |s| {
                    Duration::from_millis(u64::from(s.stop_timeout_ms()))
                });
                if elapsed >= timeout
                    && let Some(pidfd) = self.agents[i].pidfd()
                {
                    let _ = pidfd_signal(pidfd, nix::libc::SIGKILL);
                }
            }
            self.wait_exits(&waiting, Duration::from_millis(20));
            let (agents, mut env) = self.split();
            for &i in &waiting {
                agents[i].on_exit_ready(&mut env, now_ns + started.elapsed().as_nanos() as u64);
            }
        }
        let (agents, mut env) = self.split();
        for agent in agents.iter_mut() {
            agent.finish(&mut env, ExitReason::Exited(0), now_ns);
            if let Some(leaf) = agent.leaf.take() {
                leaf.remove();
            }
        }
        self.cgroups.remove_slice();
        self.attach = None;
        info!(
            stop_ms = started.elapsed().as_millis() as u64,
            "agent processes stopped"
        );
    }

    /// Blocks up to `timeout` until one of `agents`' children exits.
    fn wait_exits(&self, agents: &[usize], timeout: Duration) {
        let mut fds: Vec<PollFd<'_>> = agents
            .iter()
            .filter_map(|&i| self.agents[i].pidfd())
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let _ = poll(&mut fds, PollTimeout::from(millis));
    }
}

use std::os::fd::AsFd;

/// Whether the peer's credentials match the agent's manifest account.
fn check_peer(agent: &Managed, creds: PeerCreds) -> Result<(), String> {
    if let Some(reason) = &agent.account_error {
        return Err(reason.clone());
    }
    let Some((uid, gid, _)) = &agent.ids else {
        return Err(format!(
            "agent {} has no `user` in its manifest, so no process may attach as it",
            agent.name
        ));
    };
    if creds.uid != uid.as_raw() {
        return Err(format!(
            "uid {} may not attach as agent {} (the manifest's user is uid {uid})",
            creds.uid, agent.name
        ));
    }
    if agent.user.is_some() && creds.gid != gid.as_raw() && creds.uid != 0 {
        return Err(format!(
            "gid {} may not attach as agent {} (the manifest's group is gid {gid})",
            creds.gid, agent.name
        ));
    }
    Ok(())
}

/// The exit reason a link fault kills an agent with.
fn fault_reason(fault: &LinkFault) -> ExitReason {
    match fault {
        LinkFault::NoHello | LinkFault::Gone => ExitReason::NoHello,
        LinkFault::Refused(_) | LinkFault::Corrupt(_) => ExitReason::Corrupt,
    }
}
