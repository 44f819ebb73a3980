#![cfg(test)]
//! `pinwheel top` in a pseudo-terminal, its screen parsed by `vt100`, as
//! an operator sees it: against a daemon running both seed manifests (79
//! agents on this 2-CPU VM and its simulated GPU), the agents, a GPU bar
//! and the health line show; `s` changes the order; every agent can be
//! scrolled to; `q`, and SIGTERM, leave the alternate screen.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinwheel::observe::api::AgentsResponse;
use pinwheel::test_support::{DaemonProcess, HANG_GUARD};
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");
/// Width of an agent's name at 80 columns (see `src/cli/top/ui.rs`).
const NAME_AT_80: usize = 30;

/// `pinwheel top` in a pty, its output fed to a vt100 parser.
struct Top {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    keys: Box<dyn Write + Send>,
    parser: Arc<Mutex<vt100::Parser>>,
    _master: Box<dyn MasterPty + Send>,
}

impl Top {
    fn start(daemon: &DaemonProcess, cols: u16, rows: u16, env: &[(&str, &str)]) -> Top {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut command = CommandBuilder::new(PINWHEEL);
        command.args(["top", "--admin", &daemon.addr().to_string()]);
        command.env("TERM", "xterm-256color");
        command.env_remove("NO_COLOR");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = pair.slave.spawn_command(command).unwrap();
        drop(pair.slave);
        let parser = Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZero::new(rows).unwrap(),
            std::num::NonZero::new(cols).unwrap(),
            0,
        )));
        let mut output = pair.master.try_clone_reader().unwrap();
        let feed = Arc::clone(&parser);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = output.read(&mut buf) {
                feed.lock().unwrap().process(&buf[..n]);
            }
        });
        let keys = pair.master.take_writer().unwrap();
        Top {
            child,
            keys,
            parser,
            _master: pair.master,
        }
    }

    fn screen(&self) -> vt100::Screen {
        self.parser.lock().unwrap().screen().clone()
    }

    fn wait_for(&self, what: &str, done: impl Fn(&vt100::Screen) -> bool) -> vt100::Screen {
        let began = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                began.elapsed() < HANG_GUARD,
                "never saw {what}; the screen:\n{}",
                screen.contents()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn press(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    fn wait_exit(&mut self) -> portable_pty::ExitStatus {
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(began.elapsed() < HANG_GUARD, "pinwheel top did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The agents list now: each agent row's screen row and name (rows that
/// start with two spaces, between the column titles and the GPUs panel),
/// the name as wide as `width` allows.
fn agent_rows(screen: &vt100::Screen, width: usize) -> Vec<(u16, String)> {
    let cols = screen.size().1.get();
    screen
        .rows(0, cols)
        .enumerate()
        .skip_while(|(_, row)| !row.starts_with("  agent "))
        .skip(1)
        .take_while(|(_, row)| !row.starts_with("GPUs"))
        .filter(|(_, row)| row.starts_with("  "))
        .map(|(r, row)| {
            let name: String = row.chars().skip(2).take(width).collect();
            (u16::try_from(r).unwrap(), name.trim_end().to_owned())
        })
        .collect()
}

/// The selected agent: its row is in reverse video.
fn selected(screen: &vt100::Screen) -> Option<String> {
    agent_rows(screen, NAME_AT_80)
        .into_iter()
        .find(|(r, _)| screen.cell(*r, 2).is_some_and(|c| c.inverse()))
        .map(|(_, name)| name)
}

/// The row under the one that starts with `header` (empty if none).
fn row_after(screen: &vt100::Screen, header: &str) -> String {
    let cols = screen.size().1.get();
    let rows: Vec<String> = screen.rows(0, cols).collect();
    rows.iter()
        .position(|r| r.starts_with(header))
        .and_then(|at| rows.get(at + 1))
        .cloned()
        .unwrap_or_default()
}

fn truncated(name: &str) -> String {
    name.chars().take(NAME_AT_80).collect()
}

#[test]
fn top_shows_the_seed_mesh_sorts_scrolls_to_every_agent_and_q_restores_the_terminal() {
    let daemon = DaemonProcess::start(
        Path::new(PINWHEEL),
        Path::new(CRATE),
        &[
            "--topology",
            "topology/vm-2cpu.toml",
            "--agents",
            "agents/mainpc.toml",
            "agents/pc2.toml",
        ],
    );
    let agents: AgentsResponse = daemon.client().get("/v1/agents").unwrap();
    assert_eq!(agents.agents.len(), 79);
    let on_cpu0: Vec<&str> = agents
        .agents
        .iter()
        .filter(|a| a.cpu == 0)
        .map(|a| a.name.as_str())
        .collect();
    let mut top = Top::start(&daemon, 80, 24, &[]);

    // A frame is drawn top to bottom; the footer is its last line.
    let screen = top.wait_for("a whole frame with the agents", |s| {
        let text = s.contents();
        text.contains("79 agents on 2 CPUs") && text.contains("q quit")
    });

    let text = screen.contents();
    assert!(
        screen.alternate_screen(),
        "top draws on the alternate screen"
    );
    assert!(
        text.starts_with("host vm-2cpu: "),
        "the health line:\n{text}"
    );
    assert!(text.contains("! no_nvml: "), "its reasons:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("sim-24g") && l.contains("[") && l.contains("MiB, budget")),
        "a GPU bar:\n{text}"
    );
    assert!(text.contains("sort: plan"), "{text}");
    assert!(
        row_after(&screen, "CPU 0").starts_with(&format!("  {}", truncated(on_cpu0[0]))),
        "the plan's first agent on CPU 0 leads:\n{text}"
    );

    // The selection follows its agent through the re-sort; Home goes to
    // the top.
    top.press("s");
    top.press("g");
    let first_by_name = format!("  {}", truncated(on_cpu0.iter().min().unwrap()));
    let screen = top.wait_for("the order by name", |s| {
        s.contents().contains("sort: name") && row_after(s, "CPU 0").starts_with(&first_by_name)
    });

    let names = |s: &vt100::Screen| agent_rows(s, NAME_AT_80).into_iter().map(|(_, n)| n);
    let mut seen: BTreeSet<String> = names(&screen).collect();
    loop {
        let before = selected(&top.screen());
        assert!(
            before.is_some(),
            "an agent is selected:\n{}",
            top.screen().contents()
        );
        top.press("\x1b[6~"); // Page Down
        let moved = Instant::now();
        let mut screen = top.screen();
        while selected(&screen) == before && moved.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(50));
            screen = top.screen();
        }
        seen.extend(names(&screen));
        if selected(&screen) == before {
            break;
        }
    }
    let all: BTreeSet<String> = agents.agents.iter().map(|a| truncated(&a.name)).collect();
    let missed: Vec<&String> = all.difference(&seen).collect();
    assert!(missed.is_empty(), "never scrolled to {missed:?}");

    top.press("q");
    let status = top.wait_exit();

    assert!(status.success(), "{status:?}");
    let screen = top.wait_for("the normal screen", |s| !s.alternate_screen());
    assert!(!screen.contents().contains("79 agents on 2 CPUs"));
}

#[test]
fn top_reads_without_colour_adapts_to_a_wide_terminal_and_sigterm_restores_the_terminal() {
    let daemon = DaemonProcess::start(
        Path::new(PINWHEEL),
        Path::new(CRATE),
        &[
            "--topology",
            "topology/vm-2cpu.toml",
            "--agents",
            "agents/voice-pipeline.toml",
        ],
    );
    let mut top = Top::start(&daemon, 160, 48, &[("NO_COLOR", "1")]);

    let screen = top.wait_for("the wide layout", |s| {
        let text = s.contents();
        text.contains("VRAM decisions, newest first") && text.contains("q quit")
    });

    let (rows, cols) = (screen.size().0.get(), screen.size().1.get());
    let coloured = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .filter_map(|(r, c)| screen.cell(r, c))
        .filter(|cell| {
            cell.fgcolor() != vt100::Color::Default || cell.bgcolor() != vt100::Color::Default
        })
        .count();
    assert_eq!(
        coloured,
        0,
        "NO_COLOR: no colour at all\n{}",
        screen.contents()
    );
    assert!(screen.contents().contains("cluster: single host"));
    top.press("\r");
    top.wait_for("the selected agent's routes", |s| {
        s.contents().contains("routes of ")
    });

    let pid = top.child.process_id().unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let status = top.wait_exit();

    assert!(status.success(), "SIGTERM ends top like q: {status:?}");
    top.wait_for("the normal screen", |s| !s.alternate_screen());
}
