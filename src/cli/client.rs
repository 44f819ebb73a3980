//! A small client of the admin API, for `pinwheel status`, `pinwheel top`
//! and the other commands that ask a running daemon. Answers are read into
//! the server's own types ([`crate::observe::api`]).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::DaemonError;
use crate::observe::api::ErrorBody;

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

    /// `GET path`, its JSON read as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, DaemonError> {
        let response = self
            .agent
            .get(&format!("http://{}{path}", self.addr))
            .call()
            .map_err(|err| self.unreachable(&err.to_string()))?;
        self.answer(path, response)
    }

    /// `GET path` as text (`/metrics`).
    pub fn text(&self, path: &str) -> Result<String, DaemonError> {
        let mut response = self
            .agent
            .get(&format!("http://{}{path}", self.addr))
            .call()
            .map_err(|err| self.unreachable(&err.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|err| self.unreachable(&format!("{path}: {err}")))?;
        if status >= 400 {
            return Err(DaemonError::Admin {
                addr: self.addr,
                reason: format!("{path} answered {status}"),
            });
        }
        Ok(text)
    }

    /// `POST path` with a JSON body and the token from `token_file`, the
    /// answer read as `T`.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        token_file: &Path,
    ) -> Result<T, DaemonError> {
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

    fn answer<T: DeserializeOwned>(
        &self,
        path: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<T, DaemonError> {
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|err| self.unreachable(&format!("{path}: {err}")))?;
        if status >= 400 {
            let why = serde_json::from_str::<ErrorBody>(&text)
                .map_or_else(|_| text.trim().to_owned(), |body| body.error);
            return Err(DaemonError::Admin {
                addr: self.addr,
                reason: format!("{path} answered {status}: {why}"),
            });
        }
        serde_json::from_str(&text).map_err(|err| DaemonError::Admin {
            addr: self.addr,
            reason: format!(
                "{path}: unexpected answer ({err}); is the daemon the same version as this pinwheel?"
            ),
        })
    }

    fn unreachable(&self, why: &str) -> DaemonError {
        DaemonError::Admin {
            addr: self.addr,
            reason: format!("{why}; is `pinwheel run` up there? pass its address with --admin"),
        }
    }
}
