//! A small client of the admin API, for `pinwheel status` and the other
//! commands that ask a running daemon.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::error::DaemonError;

/// Longest a request to the daemon may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A running daemon's admin API.
#[derive(Debug)]
pub struct AdminClient {
    addr: SocketAddr,
    agent: ureq::Agent,
}

impl AdminClient {
    /// A client of the API at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Self { addr, agent }
    }

    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> Result<Value, DaemonError> {
        let response = self
            .agent
            .get(&format!("http://{}{path}", self.addr))
            .call()
            .map_err(|err| self.unreachable(&err.to_string()))?;
        self.answer(path, response)
    }

    /// `POST path` with a JSON body and the token from `token_file`.
    pub fn post(&self, path: &str, body: &Value, token_file: &Path) -> Result<Value, DaemonError> {
        let token = std::fs::read_to_string(token_file).map_err(|err| DaemonError::Usage {
            message: format!(
                "--token-file {}: {err}; changing a daemon needs its admin token (run as root)",
                token_file.display()
            ),
        })?;
        let response = self
            .agent
            .post(&format!("http://{}{path}", self.addr))
            .header("Authorization", &format!("Bearer {}", token.trim()))
            .send_json(body)
            .map_err(|err| self.unreachable(&err.to_string()))?;
        self.answer(path, response)
    }

    fn answer(
        &self,
        path: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<Value, DaemonError> {
        let status = response.status().as_u16();
        let body: Value = response
            .body_mut()
            .read_json()
            .map_err(|err| self.unreachable(&format!("{path}: not JSON: {err}")))?;
        if status >= 400 {
            let why = body["error"].as_str().unwrap_or("no reason given");
            return Err(DaemonError::Admin {
                addr: self.addr,
                reason: format!("{path} answered {status}: {why}"),
            });
        }
        Ok(body)
    }

    fn unreachable(&self, why: &str) -> DaemonError {
        DaemonError::Admin {
            addr: self.addr,
            reason: format!("{why}; is `pinwheel run` up there? pass its address with --admin"),
        }
    }
}
