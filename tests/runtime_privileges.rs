//! The privileges steps applied for real. The thread step runs on spawned
//! threads of this test process: SCHED_FIFO must show up in
//! `sched_getscheduler` and in `/proc/thread-self/stat`, timer slack must
//! read back 1 ns, a spin wait must stay SCHED_OTHER. The process step
//! (`mlockall(MCL_FUTURE)`, a raised RLIMIT_MEMLOCK) would change the test
//! harness for good, so it runs in a child: this binary started again on
//! one test, marked by an environment variable. Without the variable the
//! child tests return at once.
//!
//! The assertions that need privilege (SCHED_FIFO, locked memory, dropping
//! to an unprivileged uid) apply when the tests run as root, as CI does;
//! otherwise each test checks that what took effect matches the decision
//! for this process's facts.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use pinwheel::runtime::affinity::{self, SchedPolicy};
use pinwheel::runtime::privileges::{
    DegradedReason, GLOMMIO_MIN_MEMLOCK_BYTES, PrivilegesError, ProcessFacts, RtThrottling,
    ThreadFacts, ThreadPolicy, ThreadPrivileges, decide_process, decide_thread, prepare_process,
    prepare_thread,
};
use pinwheel_ipc::ring::WaitStrategy;

/// Set in a child: which child test should act.
const CHILD_ENV: &str = "PINWHEEL_PRIVILEGES_CHILD";
const NOBODY: u32 = 65_534;

fn thread_facts() -> ThreadFacts {
    ThreadFacts::detect(Path::new("/proc"))
}

/// Root with CAP_SYS_NICE on a host whose RT throttling is on: where
/// SCHED_FIFO must take effect.
fn may_run_fifo(facts: &ThreadFacts) -> bool {
    facts.creds.is_root()
        && facts.creds.caps.sys_nice
        && matches!(facts.rt_throttling, RtThrottling::Enabled { .. })
}

fn on_new_thread(policy: ThreadPolicy) -> (ThreadPrivileges, SchedPolicy, (u32, u32)) {
    std::thread::spawn(move || {
        let sut = prepare_thread(policy);
        (sut, affinity::current_policy().unwrap(), stat_policy())
    })
    .join()
    .unwrap()
}

/// `(rt_priority, policy)`: fields 40 and 41 of `/proc/thread-self/stat`.
fn stat_policy() -> (u32, u32) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The command name may hold spaces; fields after it are plain.
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state).
    (
        fields[40 - 3].parse().unwrap(),
        fields[41 - 3].parse().unwrap(),
    )
}

const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;

#[test]
fn a_data_plane_thread_runs_sched_fifo_at_its_priority() {
    let policy = ThreadPolicy {
        rt_priority: 10,
        latency: false,
        wait: WaitStrategy::Adaptive,
    };
    let facts = thread_facts();
    let (sut, kernel, stat) = on_new_thread(policy);
    assert_eq!(sut.policy, kernel);
    if may_run_fifo(&facts) {
        assert_eq!(kernel, SchedPolicy::Fifo { priority: 10 });
        assert_eq!(stat, (10, SCHED_FIFO));
        assert!(sut.degraded.is_empty(), "{:?}", sut.degraded);
    } else {
        assert_eq!(kernel, decide_thread(policy, &facts).policy);
    }
}

#[test]
fn a_latency_thread_reads_back_one_nanosecond_of_timer_slack() {
    let policy = ThreadPolicy {
        rt_priority: 0,
        latency: true,
        wait: WaitStrategy::Park,
    };
    let (sut, slack_ns) = std::thread::spawn(move || {
        let sut = prepare_thread(policy);
        (sut, nix::sys::prctl::get_timerslack().unwrap())
    })
    .join()
    .unwrap();
    assert_eq!(slack_ns, 1);
    assert_eq!(sut.timer_slack_ns, Some(1));
    assert_eq!(sut.policy, SchedPolicy::Other);
    assert!(sut.degraded.is_empty(), "{:?}", sut.degraded);
}

#[test]
fn a_real_time_latency_thread_has_at_most_one_nanosecond_of_timer_slack() {
    // Kernels from 6.11 give real-time threads no slack at all (0).
    let policy = ThreadPolicy {
        rt_priority: 10,
        latency: true,
        wait: WaitStrategy::Park,
    };
    let (sut, _, _) = on_new_thread(policy);
    assert!(sut.timer_slack_ns.unwrap() <= 1, "{:?}", sut.timer_slack_ns);
    assert!(!sut.degraded.contains(&DegradedReason::NoTimerSlack));
}

#[test]
fn a_spinning_thread_with_a_real_time_priority_stays_sched_other() {
    let policy = ThreadPolicy {
        rt_priority: 10,
        latency: true,
        wait: WaitStrategy::Spin,
    };
    let (sut, kernel, stat) = on_new_thread(policy);
    assert_eq!(kernel, SchedPolicy::Other);
    assert_eq!(stat, (0, SCHED_OTHER));
    assert_eq!(sut.degraded, vec![DegradedReason::SpinUnderFifo]);
}

#[test]
fn a_spinning_thread_that_inherited_sched_fifo_falls_back_to_sched_other() {
    if !may_run_fifo(&thread_facts()) {
        return;
    }
    let policy = ThreadPolicy {
        rt_priority: 10,
        latency: false,
        wait: WaitStrategy::Spin,
    };
    let (sut, stat) = std::thread::spawn(move || {
        affinity::set_fifo(5).unwrap();
        (prepare_thread(policy), stat_policy())
    })
    .join()
    .unwrap();
    assert_eq!(sut.policy, SchedPolicy::Other);
    assert_eq!(stat, (0, SCHED_OTHER));
}

#[test]
fn threads_spawned_by_a_fifo_executor_start_sched_other() {
    if !may_run_fifo(&thread_facts()) {
        return;
    }
    let policy = ThreadPolicy {
        rt_priority: 10,
        latency: false,
        wait: WaitStrategy::Park,
    };
    let (parent, child) = std::thread::spawn(move || {
        let parent = prepare_thread(policy).policy;
        let child = std::thread::spawn(|| affinity::current_policy().unwrap())
            .join()
            .unwrap();
        (parent, child)
    })
    .join()
    .unwrap();
    assert_eq!(parent, SchedPolicy::Fifo { priority: 10 });
    assert_eq!(child, SchedPolicy::Other);
}

/// Runs `test` from this binary in a child process with `CHILD_ENV` set,
/// through `sh -c "<shell_prefix> exec ..."`.
fn run_child(test: &str, binary: &Path, shell_prefix: &str, uid: Option<u32>) -> Output {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "{shell_prefix} exec \"$0\" --exact {test} --test-threads=1"
        ))
        .arg(binary)
        .env(CHILD_ENV, test);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    command.output().unwrap()
}

fn assert_child_passed(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
}

fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|name| name == test)
}

#[test]
fn the_process_step_locks_memory_in_a_child_process() {
    let binary = std::env::current_exe().unwrap();
    let output = run_child("child_applies_the_process_step", &binary, "", None);
    assert_child_passed(&output);
}

#[test]
fn child_applies_the_process_step() {
    if !is_child("child_applies_the_process_step") {
        return;
    }
    const NEEDED: u64 = 1024 * 1024;
    let facts = ProcessFacts::detect(Path::new("/proc")).unwrap();
    let Ok(plan) = decide_process(&facts, NEEDED) else {
        // A limit that cannot reach 1 MiB: the step must refuse too.
        assert!(prepare_process(NEEDED).is_err());
        return;
    };
    let sut = prepare_process(NEEDED).unwrap();
    assert_eq!(sut.mlocked, plan.mlockall);
    assert_eq!(sut.root, facts.creds.is_root());
    assert!(facts.creds.caps.ipc_lock || sut.memlock.soft_bytes >= NEEDED);
    if facts.creds.is_root() && facts.creds.caps.ipc_lock {
        assert!(sut.mlocked);
        assert!(sut.degraded.is_empty(), "{:?}", sut.degraded);
        assert!(locked_kib() > 0);
    }
}

/// `VmLck` from `/proc/self/status`, KiB.
fn locked_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A copy of this binary that an unprivileged uid may run: the build
/// directory may sit under a home only root can enter.
fn world_runnable_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("runtime_privileges");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, copy)
}

#[test]
fn an_unprivileged_process_below_glommios_minimum_gets_an_error_saying_how_to_fix_it() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs a child as another user: run the tests as root, as CI does"
    );
    let (_dir, binary) = world_runnable_copy();
    let test = "child_fails_under_a_64_kib_memlock_limit";
    let output = run_child(test, &binary, "ulimit -l 64 &&", Some(NOBODY));
    assert_child_passed(&output);
}

#[test]
fn child_fails_under_a_64_kib_memlock_limit() {
    if !is_child("child_fails_under_a_64_kib_memlock_limit") {
        return;
    }
    let sut = prepare_process(0).unwrap_err();
    assert!(matches!(
        sut,
        PrivilegesError::MemlockTooLow {
            soft_bytes: 65_536,
            hard_bytes: 65_536,
            needed_bytes: GLOMMIO_MIN_MEMLOCK_BYTES,
        }
    ));
    let message = sut.to_string();
    for hint in [
        "LimitMEMLOCK=infinity",
        "ulimit -l unlimited",
        "CAP_IPC_LOCK",
    ] {
        assert!(message.contains(hint), "{message:?} lacks {hint:?}");
    }
}

#[test]
fn an_unprivileged_process_runs_degraded() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs a child as another user: run the tests as root, as CI does"
    );
    let (_dir, binary) = world_runnable_copy();
    let test = "child_runs_without_privileges";
    let output = run_child(test, &binary, "", Some(NOBODY));
    assert_child_passed(&output);
}

#[test]
fn child_runs_without_privileges() {
    if !is_child("child_runs_without_privileges") {
        return;
    }
    let facts = ProcessFacts::detect(Path::new("/proc")).unwrap();
    assert!(!facts.creds.is_root());
    match decide_process(&facts, 0) {
        Ok(plan) => {
            let sut = prepare_process(0).unwrap();
            assert!(sut.degraded.contains(&DegradedReason::NotRoot));
            assert_eq!(sut.mlocked, plan.mlockall);
            assert_eq!(
                sut.degraded.contains(&DegradedReason::NoMlock),
                !sut.mlocked
            );
        }
        // The limit inherited from the parent is below glommio's minimum.
        Err(_) => assert!(prepare_process(0).is_err()),
    }
    let policy = ThreadPolicy {
        rt_priority: 10,
        latency: true,
        wait: WaitStrategy::Park,
    };
    let thread_facts = thread_facts();
    let (sut, kernel, _) = on_new_thread(policy);
    assert_eq!(sut.timer_slack_ns, Some(1));
    if !thread_facts.creds.caps.sys_nice && thread_facts.rtprio_limit < 10 {
        assert_eq!(kernel, SchedPolicy::Other);
        assert_eq!(sut.degraded, vec![DegradedReason::NoRtPriority]);
    }
}
