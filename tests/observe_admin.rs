#![cfg(test)]
//! The admin API of a running `pinwheel run`, from outside: what
//! Prometheus, an operator and `pinwheel status` see.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinwheel::observe::api::GpusResponse;
use serde_json::{Value, json};

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");
/// Longest wait for anything a daemon should do within a second or two;
/// only a hang reaches it.
const HANG_GUARD: Duration = Duration::from_secs(60);

struct Daemon {
    child: Child,
    addr: String,
    report: tempfile::NamedTempFile,
}

impl Daemon {
    fn start(token_file: &Path) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let report = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(PINWHEEL)
            .current_dir(CRATE)
            .args([
                "run",
                "--topology",
                "topology/vm-2cpu.toml",
                "--rate",
                "200",
            ])
            .args(["--duration", "120", "--admin-addr", &addr])
            .arg("--admin-token-file")
            .arg(token_file)
            .arg("--report")
            .arg(report.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child,
            addr,
            report,
        };
        daemon.wait_for(|d| {
            d.get("/v1/agents")
                .ok()
                .is_some_and(|v| v["agents"][0]["state"] == "up")
        });
        daemon
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent()
    }

    fn get_text(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        let mut response = Self::agent().get(&self.url(path)).call()?;
        let status = response.status().as_u16();
        Ok((status, response.body_mut().read_to_string()?))
    }

    fn get(&self, path: &str) -> Result<Value, ureq::Error> {
        let (_, text) = self.get_text(path)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = Self::agent().post(&self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.send_json(body).unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_json().unwrap())
    }

    fn wait_for(&self, done: impl Fn(&Daemon) -> bool) {
        let began = Instant::now();
        while !done(self) {
            assert!(began.elapsed() < HANG_GUARD, "daemon never got there");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM; the exit code and the report.
    fn terminate(mut self) -> (Option<i32>, Value) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let began = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(began.elapsed() < HANG_GUARD, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let report = std::fs::read_to_string(self.report.path()).unwrap();
        (status.code(), serde_json::from_str(&report).unwrap())
    }
}

/// The degraded reasons this host should show: no NVML (the topology's
/// GPU is simulated), and no PMU where hardware events do not open.
fn expected_reasons() -> Vec<String> {
    let mut reasons = vec!["no_nvml".to_owned()];
    if !pinwheel::observe::perf::probe().has_pmu() {
        reasons.push("no_pmu".to_owned());
    }
    reasons
}

fn samples<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &str,
) -> Vec<&'a prometheus_parse::Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .collect()
}

#[test]
fn metrics_parse_as_prometheus_text_health_names_its_reasons_and_sigterm_reports() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("no-token"));
    daemon.wait_for(|d| {
        d.get("/v1/agents").ok().is_some_and(|v| {
            v["agents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["name"] == "RequestCoordinator" && a["handled"].as_u64() > Some(0))
        })
    });
    let (status, text) = daemon.get_text("/metrics").unwrap();
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let sent = samples(&scrape, "pinwheel_requests_total")
        .into_iter()
        .find(|s| s.labels.get("outcome") == Some("sent"))
        .expect("requests by outcome");
    // OpenMetrics names a counter family without `_total`; a 0.0.4 text
    // parser therefore reads its samples as untyped. The value is the test.
    let sent_value = match sent.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("requests sent is {other:?}"),
    };
    assert!(sent_value > 0.0);
    let handler = samples(&scrape, "pinwheel_agent_handler_seconds");
    let coordinator = handler
        .iter()
        .find(|s| s.labels.get("agent") == Some("RequestCoordinator"))
        .expect("the coordinator's handler histogram");
    let prometheus_parse::Value::Histogram(buckets) = &coordinator.value else {
        panic!("not a histogram: {:?}", coordinator.value);
    };
    assert!(buckets.last().unwrap().count > 0.0);
    for metric in [
        "pinwheel_route_call_seconds",
        "pinwheel_executor_busy_seconds_total",
        "pinwheel_ring_parks_total",
        "pinwheel_perf_task_clock_ns_total",
        "pinwheel_perf_cpu_migrations_total",
        "pinwheel_executor_nudges_total",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "pinwheel_vram_loads_total",
    ] {
        assert!(
            !samples(&scrape, metric).is_empty(),
            "no {metric} in\n{text}"
        );
    }

    let health = daemon.get("/health").unwrap();
    let reasons: Vec<String> = health["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons, expected_reasons(), "{health}");
    let expected_status = if reasons.is_empty() { "ok" } else { "degraded" };
    assert_eq!(health["status"], expected_status);

    let status = Command::new(PINWHEEL)
        .args(["status", "--admin", &daemon.addr])
        .output()
        .unwrap();
    assert!(status.status.success());
    let table = String::from_utf8(status.stdout).unwrap();
    assert!(table.contains("RequestCoordinator"), "{table}");
    assert!(table.starts_with("host vm-2cpu: "), "{table}");

    let (code, report) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert!(report["requests"]["sent"].as_u64() > Some(0), "{report}");
}

#[test]
fn changing_endpoints_need_the_bearer_token_from_a_root_only_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let daemon = Daemon::start(&token_file);
    let body = json!({"model": "whisper-large-v3"});
    let (status, answer) = daemon.post("/v1/models/pin", None, &body);
    assert_eq!(status, 401, "{answer}");
    let (status, _) = daemon.post("/v1/models/pin", Some("s3cre"), &body);
    assert_eq!(status, 401);
    let (status, answer) = daemon.post("/v1/models/pin", Some("s3cret"), &json!([1]));
    assert_eq!(status, 400, "{answer}");
    let unknown = json!({"model": "no-such-model"});
    let (status, answer) = daemon.post("/v1/models/pin", Some("s3cret"), &unknown);
    assert_eq!(status, 404, "an unknown model: {answer}");
    let placed = json!({"model": "whisper-large-v3", "vram_mib": 3100, "pin": true});
    let (status, answer) = daemon.post("/v1/gpu/place", Some("s3cret"), &placed);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["gpu"], 0, "{answer}");
    assert_eq!(answer["pinned"], true, "{answer}");
    // The agents' own model uses load models too, so the pinned one is
    // one resident model among others.
    daemon.wait_for(|d| {
        let gpus = d.get("/v1/gpus").ok();
        gpus.and_then(|v| serde_json::from_value::<GpusResponse>(v).ok())
            .is_some_and(|g| {
                g.gpus[0]
                    .resident
                    .iter()
                    .any(|r| r.model == "whisper-large-v3" && r.pinned)
                    && g.gpus[0].used_mib >= 3100
            })
    });
    let (status, answer) = daemon.post("/v1/models/unpin", Some("s3cret"), &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pinned"], false, "{answer}");
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    // A token file others can read stops the daemon at boot (exit 2):
    // tests/config_trust.rs.
}
