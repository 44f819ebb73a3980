//! `pinwheel run`: the daemon's flags, checked, turned into
//! [`RunOptions`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use pinwheel_ipc::drill::FaultSpec;

use super::{CliError, SysfsArg};
use crate::bench::html::render_html;
use crate::daemon::{self, RunOptions};
use crate::error::DaemonError;

/// Highest `--rate` accepted, requests a second.
pub const MAX_RATE: f64 = 1e6;

/// Checks a request rate given as `flag`: 0 (no requests) to [`MAX_RATE`].
pub(super) fn check_rate(flag: &str, rate: f64) -> Result<(), DaemonError> {
    if rate.is_finite() && (0.0..=MAX_RATE).contains(&rate) {
        return Ok(());
    }
    Err(DaemonError::Usage {
        message: format!(
            "{flag} {rate} is out of range; pass 0 (no requests) to {MAX_RATE} requests a second"
        ),
    })
}

/// `pinwheel run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Topology file of this host.
    #[arg(long, value_name = "FILE", default_value = "topology/auto.toml")]
    pub topology: PathBuf,
    /// Agent manifests (with no cluster, every agent runs here, whatever
    /// its host).
    #[arg(long, value_name = "FILE", num_args = 1.., default_values = ["agents/mainpc.toml"])]
    pub agents: Vec<PathBuf>,
    /// Stop after this many seconds of running (default: until SIGINT or
    /// SIGTERM).
    // Negative numbers reach `options()`, whose message says what to pass,
    // instead of clap's "unexpected argument '-1'", which names no flag.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Requests a second the load generator sends the coordinator (0: none).
    #[arg(
        long,
        value_name = "REQ_PER_S",
        default_value_t = 100.0,
        allow_negative_numbers = true
    )]
    pub rate: f64,
    /// Deadline of each generated request, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    pub timeout_ms: u64,
    /// Write the final report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the final report as one self-contained HTML page (tables and
    /// SVG percentile plots) to this file.
    #[arg(long, value_name = "FILE")]
    pub report_html: Option<PathBuf>,
    /// Directory for state that survives a restart (registry snapshots).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Do not ask for SCHED_FIFO, locked memory or timer slack.
    #[arg(long)]
    pub unprivileged: bool,
    /// Admin API address (default: the topology's `[admin] addr`; port 0
    /// picks a free one, logged at start).
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<std::net::SocketAddr>,
    /// This host's name in the cluster, over the topology's `[host] name`
    /// (one topology file can serve several alike hosts). With a cluster,
    /// only the agents whose manifest `host` is this name run here.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// NATS server of the cluster, over the topology's `[cluster]
    /// nats_url`; without a `[cluster]` section it joins the cluster
    /// "pinwheel". With neither, the daemon runs alone and off the network.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// This host's NATS identity: an nkey seed file (`pinwheel cluster
    /// init` writes one per host; root-owned, mode 600), over the
    /// topology's `[cluster] nkey_file`.
    #[arg(long, value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
    /// Run directory: the attach socket for external agents
    /// (`<DIR>/agent.sock`) and process agents' credentials.
    #[arg(long, value_name = "DIR", default_value = crate::daemon::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// File holding the admin API's bearer token (root-owned, mode 600).
    #[arg(long, value_name = "FILE", default_value = crate::observe::admin::DEFAULT_TOKEN_FILE)]
    pub admin_token_file: PathBuf,
    /// Where sysfs is.
    #[command(flatten)]
    pub sysfs: SysfsArg,
    /// Apply the topology's tuning profile under DIR instead of / (its
    /// /proc, /sys, /dev and /run; a test tree, as `pinwheel tune
    /// --root`). Still needs root and no --unprivileged.
    #[arg(long, value_name = "DIR")]
    pub tuning_root: Option<PathBuf>,
    /// Put an agent or replica under a fault drill from the start:
    /// `Name#1:slow=10x`, `Name:error=0.2`, `Name#0:stall` (parts joined
    /// by commas); repeat for several.
    #[arg(long, value_name = "NAME:FAULT")]
    pub fault: Vec<String>,
    /// Bind the legacy ZeroMQ gateway on this IP address, over the
    /// topology's `[legacy] bind`: every agent with `legacy_rep` (or
    /// `legacy_pub`) in its manifest gets the seed's port there.
    #[arg(long, value_name = "ADDR")]
    pub legacy_bind: Option<std::net::IpAddr>,
}

impl RunArgs {
    /// The checked options.
    pub fn options(&self) -> Result<RunOptions, DaemonError> {
        let usage = |message: String| DaemonError::Usage { message };
        check_rate("--rate", self.rate)?;
        let duration = match self.duration {
            Some(s) if !(s.is_finite() && s > 0.0 && s <= 1e9) => {
                return Err(usage(format!(
                    "--duration {s} is not a positive number of seconds; leave it out to run until interrupted"
                )));
            }
            Some(s) => Some(Duration::from_secs_f64(s)),
            None => None,
        };
        if self.timeout_ms == 0 {
            return Err(usage(
                "--timeout-ms 0 would fail every request; pass at least 1".to_owned(),
            ));
        }
        let faults = self
            .fault
            .iter()
            .map(|f| parse_fault_arg(f).map_err(usage))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RunOptions {
            faults,
            topology: self.topology.clone(),
            agents: self.agents.clone(),
            sysfs_root: self.sysfs.sysfs_root.clone(),
            tuning_root: self.tuning_root.clone(),
            duration,
            rate_per_s: self.rate,
            request_timeout: Duration::from_millis(self.timeout_ms),
            report: self.report.clone(),
            state_dir: self.state_dir.clone(),
            privileged: !self.unprivileged,
            admin_addr: self.admin_addr,
            admin_token_file: self.admin_token_file.clone(),
            host: self.host.clone(),
            nats_url: self.nats.clone(),
            overhead: false,
            nats_nkey: self.nats_nkey.clone(),
            run_dir: self.run_dir.clone(),
            legacy_bind: self.legacy_bind,
        })
    }
}

pub(super) fn run(args: &RunArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let options = args.options()?;
    if let Some(path) = &args.report_html {
        check_dir(path)?;
    }
    let report = daemon::run(&options, out)?;
    if let Some(path) = &args.report_html {
        let page = render_html(&report)?;
        std::fs::write(path, page).map_err(|source| DaemonError::Report {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `Name#1:slow=10x` as an agent's name and its drill.
fn parse_fault_arg(text: &str) -> Result<(String, FaultSpec), String> {
    let (name, fault) = text.split_once(':').ok_or_else(|| {
        format!("--fault {text:?}: write NAME:FAULT, e.g. \"STTService#1:slow=10x\"")
    })?;
    let spec = FaultSpec::parse(fault).map_err(|err| format!("--fault {text:?}: {err}"))?;
    Ok((name.trim().to_owned(), spec))
}

/// Bad input before anything starts: the page's directory must exist.
fn check_dir(path: &Path) -> Result<(), DaemonError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        return Ok(());
    }
    Err(DaemonError::Usage {
        message: format!(
            "--report-html {}: directory {} does not exist; create it or write the page elsewhere",
            path.display(),
            dir.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn options_error(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(["pinwheel", "run"].iter().chain(args)).unwrap();
        let Command::Run(sut) = cli.command else {
            panic!("not a run command");
        };
        sut.options().unwrap_err().to_string()
    }

    #[test]
    fn a_negative_rate_is_rejected_naming_the_flag() {
        let message = options_error(&["--rate", "-1"]);
        assert!(message.contains("--rate -1 is out of range"), "{message}");
    }

    #[test]
    fn a_fault_without_a_name_or_with_a_bad_drill_is_rejected_naming_the_flag() {
        let message = options_error(&["--fault", "slow=10x"]);
        assert!(message.contains("write NAME:FAULT"), "{message}");
        let message = options_error(&["--fault", "A#1:slow=0x"]);
        assert!(message.contains("--fault \"A#1:slow=0x\""), "{message}");
    }

    #[test]
    fn a_negative_duration_is_rejected_naming_the_flag() {
        let message = options_error(&["--duration", "-2"]);
        assert!(
            message.contains("--duration -2 is not a positive number of seconds"),
            "{message}"
        );
    }
}
