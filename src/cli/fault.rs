//! `pinwheel fault Name#1 --slow 10x --for 30s`: puts an agent or a
//! replica of a running daemon under a fault drill, or ends one
//! (`--clear`), through `POST /v1/agents/{name}/fault`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::client::AdminClient;
use crate::error::DaemonError;
use crate::observe::admin::{DEFAULT_TOKEN_FILE, parse_fault};
use crate::observe::api::{FaultAnswer, FaultRequest};
use crate::topology::DEFAULT_ADMIN_ADDR;

/// `pinwheel fault`.
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// The agent, or one replica of it (`STTService#1`).
    pub name: String,
    /// Serve each request this many times slower (`10x`).
    #[arg(long, value_name = "FACTOR")]
    pub slow: Option<String>,
    /// Fail each request with this chance (0 to 1).
    #[arg(long, value_name = "CHANCE")]
    pub error: Option<f64>,
    /// Answer nothing: each request waits out its deadline.
    #[arg(long)]
    pub stall: bool,
    /// End the drill the agent is under.
    #[arg(long, conflicts_with_all = ["slow", "error", "stall"])]
    pub clear: bool,
    /// End it after this long (`30s`, `500ms`, `2m`); default: until
    /// changed.
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
    /// The daemon's admin API.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin: SocketAddr,
    /// File holding the daemon's admin token.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_TOKEN_FILE)]
    pub token_file: PathBuf,
}

impl FaultArgs {
    /// The request body, checked.
    pub fn request(&self) -> Result<FaultRequest, DaemonError> {
        let usage = |message: String| DaemonError::Usage { message };
        let mut parts = Vec::new();
        if let Some(slow) = &self.slow {
            parts.push(format!("slow={slow}"));
        }
        if let Some(error) = self.error {
            parts.push(format!("error={error}"));
        }
        if self.stall {
            parts.push("stall".to_owned());
        }
        let fault = match (self.clear, parts.is_empty()) {
            (true, _) => "none".to_owned(),
            (false, true) => {
                return Err(usage(
                    "say what to inject (--slow 10x, --error 0.2, --stall) or --clear".to_owned(),
                ));
            }
            (false, false) => parts.join(","),
        };
        parse_fault(&fault).map_err(usage)?;
        let for_s = self
            .for_
            .as_deref()
            .map(|d| {
                parse_seconds(d)
                    .ok_or_else(|| usage(format!("--for {d:?}: write 30s, 500ms or 2m")))
            })
            .transpose()?;
        Ok(FaultRequest { fault, for_s })
    }
}

/// `30s`, `500ms`, `2m` or plain seconds, as seconds.
fn parse_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|s| s.is_finite() && *s > 0.0)
}

pub(super) fn run(args: &FaultArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    let body = args.request()?;
    let path = format!("/v1/agents/{}/fault", encode(&args.name));
    let answer: FaultAnswer = AdminClient::new(args.admin).post(&path, &body, &args.token_file)?;
    let until = answer
        .for_s
        .map_or_else(String::new, |s| format!(" for {s} s"));
    writeln!(out, "{}: {}{until}", answer.agent, answer.fault)?;
    Ok(())
}

/// An agent name in a URL path: `#` must be escaped.
fn encode(name: &str) -> String {
    name.replace('%', "%25").replace('#', "%23")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn request(args: &[&str]) -> Result<crate::observe::api::FaultRequest, String> {
        let cli = Cli::try_parse_from(["pinwheel", "fault"].iter().chain(args)).unwrap();
        let Command::Fault(sut) = cli.command else {
            panic!("not a fault command");
        };
        sut.request().map_err(|e| e.to_string())
    }

    #[test]
    fn flags_become_one_drill_and_a_duration_in_seconds() {
        let sut = request(&["A#1", "--slow", "10x", "--error", "0.2", "--for", "500ms"]).unwrap();
        assert_eq!(sut.fault, "slow=10x,error=0.2");
        assert_eq!(sut.for_s, Some(0.5));
        assert_eq!(request(&["A#1", "--clear"]).unwrap().fault, "none");
    }

    #[test]
    fn no_drill_or_a_bad_one_or_a_bad_duration_is_rejected() {
        assert!(request(&["A#1"]).unwrap_err().contains("--clear"));
        assert!(
            request(&["A#1", "--slow", "0x"])
                .unwrap_err()
                .contains("1x to 1000x")
        );
        let err = request(&["A#1", "--stall", "--for", "soon"]).unwrap_err();
        assert!(err.contains("--for \"soon\""), "{err}");
    }
}
