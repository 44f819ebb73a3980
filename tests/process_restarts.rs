//! The process side in this test process, as the daemon's core loop
//! drives it, its clock stepped past every backoff: an agent whose
//! process exits at once is restarted a hundred times, and this process
//! (the "daemon" here) holds as many descriptors after the hundredth
//! restart as after the tenth, and has no zombie child. Then the side
//! stops and every child is reaped.

#![cfg(test)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinwheel::config::{AgentSet, SourceFile};
use pinwheel::observe::api::AgentState;
use pinwheel::observe::health::Health;
use pinwheel::plan::Plan;
use pinwheel::process::{ProcessOptions, ProcessSide, Slots};
use pinwheel::runtime::routes::Routes;
use pinwheel::test_support::HANG_GUARD;
use pinwheel::test_support::process_daemon::zombies_of;

const AGENT: &str = env!("CARGO_BIN_EXE_pinwheel-test-agent");

fn side(run_dir: &Path) -> ProcessSide {
    let topology_text = "schema = 1\n[host]\nname = \"h\"\ncpus = { uniform = \"0-1\" }\n";
    let file = SourceFile::from_text(Path::new("t.toml"), topology_text);
    let topology = pinwheel::topology::validate(file.parse().unwrap(), &file, None).unwrap();
    let manifest = format!(
        "schema = 1\n[[agent]]\nname = \"Crashy\"\nhost = \"h\"\nrole = \"r\"\nkind = \"process\"\ncpu = 1\ncommand = [\"{AGENT}\", \"exit\", \"1\"]\nuser = \"nobody\"\nrestart = \"always\"\nmax_restarts = 1000\n"
    );
    let agents =
        AgentSet::from_sources(&[SourceFile::from_text(Path::new("a.toml"), manifest)]).unwrap();
    let plan = Plan::build(&topology, &agents).unwrap();
    let routes = Routes::new(&plan, &agents);
    let slots = Slots::new(&agents).unwrap();
    ProcessSide::new(
        &agents,
        &plan,
        &routes,
        &topology,
        &slots,
        &ProcessOptions {
            run_dir: run_dir.to_path_buf(),
            attach_socket: run_dir.join("agent.sock"),
            cgroup_root: run_dir.join("no-cgroup"),
            builtin_methods: vec![("work", 1)],
        },
        Arc::new(Health::default()),
    )
    .unwrap()
}

fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn restarts(sut: &ProcessSide) -> u64 {
    sut.statuses()[0].restarts
}

/// Ticks until `done`; the clock jumps past the backoff whenever the
/// agent waits in it, and otherwise moves 2 ms a tick.
fn tick_until(sut: &mut ProcessSide, now: &mut u64, done: impl Fn(&ProcessSide) -> bool) {
    let began = Instant::now();
    while !done(sut) {
        assert!(began.elapsed() < HANG_GUARD, "{:?}", sut.statuses());
        *now += if sut.statuses()[0].state == AgentState::Backoff {
            11_000_000_000
        } else {
            2_000_000
        };
        sut.tick(*now);
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_hundred_restarts_leak_no_descriptor_and_leave_no_zombie() {
    let run_dir = tempfile::tempdir().unwrap();
    let mut sut = side(run_dir.path());
    let mut now = 1_000_000_000;
    sut.start_phase(0, now);
    let in_backoff = |s: &ProcessSide| s.statuses()[0].state == AgentState::Backoff;

    tick_until(&mut sut, &mut now, |s| restarts(s) >= 10 && in_backoff(s));
    let at_ten = descriptors();
    tick_until(&mut sut, &mut now, |s| restarts(s) >= 100 && in_backoff(s));
    assert_eq!(descriptors(), at_ten, "descriptors leaked over 90 restarts");
    assert_eq!(zombies_of(std::process::id()), Vec::<u32>::new());

    sut.stop(now);
    assert_eq!(zombies_of(std::process::id()), Vec::<u32>::new());
    let status = &sut.statuses()[0];
    assert!(status.restarts >= 100, "{status:?}");
    assert!(
        status
            .exits
            .iter()
            .any(|(reason, n)| reason == "exit_error" && *n >= 50),
        "{status:?}"
    );
}
