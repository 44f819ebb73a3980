//! Starting one agent process: everything between `fork` and `exec`, and
//! the pidfd it is watched and signalled through.
//!
//! In the child, before `exec`, in this order (each a plain system call,
//! async-signal-safe, allocating nothing: every argument is prepared
//! before the fork):
//!
//! 0. The signal mask emptied: the daemon blocks SIGINT and SIGTERM in all
//!    its threads, and a mask survives `exec`.
//! 1. `setsid`: its own session and process group, so a terminal's
//!    Ctrl-C reaches the daemon only, and the daemon decides.
//! 2. `PR_SET_PDEATHSIG(SIGKILL)`, then a check that the parent is still
//!    there: if the daemon dies, however it dies, its children die too.
//!    The signal follows the *thread* that forked, so the children are
//!    forked by the spawner thread (`side.rs`), which lives until they are
//!    all reaped.
//! 3. `sched_setaffinity` to its planned CPU and `setpriority` to its
//!    priority's nice value (while still root, so a negative nice works).
//! 4. Joins its cgroup (writes 0 to `cgroup.procs`), when it has one.
//! 5. The link onto descriptor 3, and `close_range(4, ~0, CLOEXEC)`: no
//!    other descriptor of the daemon survives `exec`.
//! 6. `setgroups([gid])`, `setgid`, `setuid`: its manifest's account.
//!
//! Before the hook, std has set up stdin (`/dev/null`), stdout and stderr
//! (pipes the log capture reads), the working directory and the
//! environment, which is built from nothing: `PATH`, `HOME`, `USER`,
//! `LANG`, the manifest's `env`, `PINWHEEL_AGENT`, `PINWHEEL_AGENT_FD=3`
//! and `CREDENTIALS_DIRECTORY` when it has credentials. Nothing of the
//! daemon's own environment is passed on.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};

use nix::libc;
use nix::unistd::{Gid, Uid};
use pinwheel_ipc::link::{AGENT_ENV, AGENT_FD, AGENT_FD_ENV};
use pinwheel_ipc::ring::PeerLink;

use super::ProcessError;
use crate::config::Priority;
use crate::topology::CpuId;

/// The `PATH` a child gets.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start one incarnation.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The agent's name.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// The manifest's environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Its planned CPU.
    pub cpu: CpuId,
    /// Its nice value.
    pub nice: i32,
    /// Who it runs as; `None` keeps the daemon's account.
    pub ids: Option<(Uid, Gid, PathBuf)>,
    /// `$CREDENTIALS_DIRECTORY`, when it has credentials.
    pub credentials: Option<PathBuf>,
    /// Its cgroup's `cgroup.procs`, when it has a cgroup.
    pub cgroup_procs: Option<PathBuf>,
}

/// A started incarnation.
#[derive(Debug)]
pub struct Spawned {
    /// The process (reaped through it).
    pub child: Child,
    /// Its pidfd: watched for its exit, signalled through.
    pub pidfd: OwnedFd,
    /// The daemon's end of its link.
    pub link: PeerLink,
    /// Its standard output.
    pub stdout: Option<ChildStdout>,
    /// Its standard error.
    pub stderr: Option<ChildStderr>,
}

/// The nice value of a priority class.
pub fn nice_of(priority: Priority) -> i32 {
    match priority {
        Priority::Critical => -10,
        Priority::High => -5,
        Priority::Normal => 0,
        Priority::Low => 10,
    }
}

/// Starts `launch`. Must run on the thread whose exit should kill the
/// child (`PR_SET_PDEATHSIG`).
pub fn spawn(launch: &Launch) -> Result<Spawned, ProcessError> {
    let failed = |what: &str, err: std::io::Error| ProcessError::Spawn {
        agent: launch.name.clone(),
        reason: format!("{what}: {err}"),
    };
    let (ours, theirs) = PeerLink::pair().map_err(|err| ProcessError::Spawn {
        agent: launch.name.clone(),
        reason: err.to_string(),
    })?;
    let mut command = Command::new(&launch.command[0]);
    command
        .args(&launch.command[1..])
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("LANG", "C.UTF-8")
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .env(AGENT_ENV, &launch.name)
        .env(AGENT_FD_ENV, AGENT_FD.to_string())
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, _, home)) = &launch.ids {
        command.env("HOME", home).env("USER", uid.to_string());
    }
    if let Some(dir) = &launch.credentials {
        command.env("CREDENTIALS_DIRECTORY", dir);
    }
    let hook = Hook::new(launch, theirs.raw_fd()).map_err(|e| failed("prepare", e))?;
    // SAFETY: the hook runs between fork and exec and makes only plain
    // system calls on values prepared before the fork (see `Hook::run`);
    // it allocates nothing and takes no lock.
    unsafe { command.pre_exec(move || hook.run()) };
    let mut child = command.spawn().map_err(|e| failed("exec", e))?;
    drop(theirs);
    let pidfd = pidfd_open(child.id()).map_err(|e| failed("pidfd_open", e))?;
    Ok(Spawned {
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        child,
        pidfd,
        link: ours,
    })
}

/// What the child does between fork and exec; plain values only.
struct Hook {
    parent: libc::pid_t,
    cpu: libc::cpu_set_t,
    nice: i32,
    link: RawFd,
    cgroup_procs: Option<CString>,
    ids: Option<(libc::uid_t, libc::gid_t)>,
    no_signals: libc::sigset_t,
}

impl Hook {
    fn new(launch: &Launch, link: RawFd) -> std::io::Result<Self> {
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut cpu: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let index = launch.cpu.0 as usize;
        if index >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::other(format!("CPU {index} out of range")));
        }
        // SAFETY: `index` was checked against CPU_SETSIZE just above.
        unsafe { libc::CPU_SET(index, &mut cpu) };
        let cgroup_procs = launch
            .cgroup_procs
            .as_deref()
            .map(path_cstring)
            .transpose()?;
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut no_signals: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a local sigset_t.
        unsafe { libc::sigemptyset(&mut no_signals) };
        Ok(Self {
            no_signals,
            parent: nix::unistd::getpid().as_raw(),
            cpu,
            nice: launch.nice,
            link,
            cgroup_procs,
            ids: launch
                .ids
                .as_ref()
                .map(|(u, g, _)| (u.as_raw(), g.as_raw())),
        })
    }

    /// Runs in the child. Every step is a system call; a failure ends the
    /// spawn with that error (std reports it to the parent).
    fn run(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_long| {
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // Every call below is a plain system call on this (single-threaded,
        // just forked) process, with arguments prepared before the fork.
        // SAFETY: `no_signals` is an initialised sigset_t; no old mask wanted.
        let unmasked =
            unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.no_signals, std::ptr::null_mut()) };
        check(unmasked.into())?;
        // SAFETY: no arguments.
        check(unsafe { libc::setsid() }.into())?;
        // SAFETY: integer arguments only.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) }.into())?;
        // SAFETY: no arguments.
        if unsafe { libc::getppid() } != self.parent {
            // The daemon died between fork and prctl: nobody would kill us.
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: `cpu` is a cpu_set_t of `size` bytes.
        check(unsafe { libc::sched_setaffinity(0, size, &self.cpu) }.into())?;
        // SAFETY: integer arguments only.
        check(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, self.nice) }.into())?;
        if let Some(procs) = &self.cgroup_procs {
            // SAFETY: `procs` is a NUL-terminated path made before the fork.
            let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            check(fd.into())?;
            // SAFETY: one byte from a static buffer to the descriptor just opened.
            let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            // SAFETY: closes the descriptor opened above, which nothing else uses.
            unsafe { libc::close(fd) };
            check(written as libc::c_long)?;
        }
        if self.link == AGENT_FD {
            // SAFETY: integer arguments; clears close-on-exec of descriptor 3.
            check(unsafe { libc::fcntl(AGENT_FD, libc::F_SETFD, 0) }.into())?;
        } else {
            // SAFETY: integer arguments; the link is open in this process.
            check(unsafe { libc::dup2(self.link, AGENT_FD) }.into())?;
        }
        let cloexec = libc::CLOSE_RANGE_CLOEXEC as i32;
        // SAFETY: integer arguments; marks every descriptor above 3 close-on-exec.
        check(unsafe { libc::close_range(4, u32::MAX, cloexec) }.into())?;
        if let Some((uid, gid)) = self.ids {
            // SAFETY: a one-element list that lives on this stack frame.
            check(unsafe { libc::setgroups(1, &gid) }.into())?;
            // SAFETY: an integer argument.
            check(unsafe { libc::setgid(gid) }.into())?;
            // SAFETY: an integer argument.
            check(unsafe { libc::setuid(uid) }.into())?;
        }
        Ok(())
    }
}

fn path_cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::other("path holds a NUL byte"))
}

/// A pidfd for `pid` (a child of this process, not yet reaped).
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` through a pidfd (never to a recycled pid).
pub fn pidfd_signal(pidfd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: a system call on a descriptor we own, with no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_values_follow_priority() {
        assert!(nice_of(Priority::Critical) < nice_of(Priority::High));
        assert_eq!(nice_of(Priority::Normal), 0);
        assert!(nice_of(Priority::Low) > 0);
    }
}
