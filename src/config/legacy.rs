//! The manifest fields of the legacy ZeroMQ edge: `legacy_rep` and
//! `legacy_pub` (the seed's ports, which the gateway binds for an agent
//! on pinwheel's rings) and `endpoint` (where an unchanged seed agent of
//! kind `zmq` listens), validated into a [`LegacySpec`].
//!
//! * `legacy_rep` and `legacy_pub` go on any kind but `zmq`, whose own
//!   socket is its REP; on a `zmq` agent `legacy_pub` names its own PUB
//!   port, on its endpoint's host, which the gateway subscribes to.
//! * `endpoint` is `tcp://HOST:PORT` (a name or an IPv4 address; no
//!   wildcard: the gateway connects to it), required on kind `zmq` and an
//!   error elsewhere.
//! * A `zmq` agent has one instance: a legacy REP socket is one process.
//! * No two agents of one host give the gateway the same port
//!   ([`check_ports`]), and one agent's REP and PUB ports differ.
//!
//! What it does not check: whether the port is free on the host (the
//! gateway binds at start and reports a port it cannot have).

use toml::Spanned;

use super::agents_file::{AgentEntry, KindName};
use super::{AgentSpec, ConfigError, SourceFile};

/// Longest host name of an `endpoint`.
pub const MAX_ENDPOINT_HOST: usize = 253;

/// A legacy agent's REP socket: `tcp://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZmqEndpoint {
    host: String,
    port: u16,
}

impl ZmqEndpoint {
    /// Its host (a name or an IPv4 address).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The same host at another port (the agent's PUB socket).
    pub fn at_port(&self, port: u16) -> ZmqEndpoint {
        ZmqEndpoint {
            host: self.host.clone(),
            port,
        }
    }

    /// Parses `tcp://host:port`; the reason when it is not one.
    pub fn parse(text: &str) -> Result<ZmqEndpoint, String> {
        let rest = text
            .strip_prefix("tcp://")
            .ok_or_else(|| format!("endpoint {text:?} must start with tcp://"))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("endpoint {text:?} needs a port: tcp://host:port"))?;
        let host_ok = !host.is_empty()
            && host.len() <= MAX_ENDPOINT_HOST
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        if !host_ok {
            return Err(format!(
                "endpoint {text:?}: the host may hold only letters, digits, '.' and '-' (no wildcard: the gateway connects to it)"
            ));
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(ZmqEndpoint {
                host: host.to_owned(),
                port,
            }),
            _ => Err(format!("endpoint {text:?}: the port must be 1 to 65535")),
        }
    }
}

impl std::fmt::Display for ZmqEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tcp://{}:{}", self.host, self.port)
    }
}

/// An agent's place on the legacy edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacySpec {
    rep: Option<u16>,
    publish: Option<u16>,
    endpoint: Option<ZmqEndpoint>,
}

impl LegacySpec {
    /// The REP port the gateway binds for it.
    pub fn rep(&self) -> Option<u16> {
        self.rep
    }

    /// The PUB port of its topics: the gateway's for an agent on the
    /// rings, the agent's own for a `zmq` agent.
    pub fn publish(&self) -> Option<u16> {
        self.publish
    }

    /// A `zmq` agent's REP socket.
    pub fn endpoint(&self) -> Option<&ZmqEndpoint> {
        self.endpoint.as_ref()
    }
}

/// The legacy fields of `raw` (agent `agent` of `file`).
pub(super) fn validate(
    raw: &AgentEntry,
    file: &SourceFile,
    agent: &str,
) -> Result<LegacySpec, ConfigError> {
    let invalid = |span: std::ops::Range<usize>, message: String| ConfigError::Invalid {
        at: file.locate(span),
        message,
    };
    let zmq = *raw.kind.get_ref() == KindName::Zmq;
    let port = |field: &Option<Spanned<u16>>, what: &str| match field {
        Some(p) if *p.get_ref() == 0 => Err(invalid(
            p.span(),
            format!("agent {agent}: {what} must be a port from 1 to 65535"),
        )),
        other => Ok(other.as_ref().map(|p| *p.get_ref())),
    };
    let rep = port(&raw.legacy_rep, "legacy_rep")?;
    let publish = port(&raw.legacy_pub, "legacy_pub")?;
    if let (true, Some(field)) = (zmq, &raw.legacy_rep) {
        let message = format!(
            "agent {agent} is kind \"zmq\": its own REP socket is its endpoint; remove legacy_rep"
        );
        return Err(invalid(field.span(), message));
    }
    if let (Some(r), Some(p), Some(field)) = (rep, publish, &raw.legacy_pub)
        && r == p
    {
        let message = format!(
            "agent {agent}: legacy_rep and legacy_pub are both {r}; one port holds one socket"
        );
        return Err(invalid(field.span(), message));
    }
    let endpoint = endpoint(raw, file, agent)?;
    if let (true, Some(n)) = (zmq, &raw.replicas)
        && *n.get_ref() != 1
    {
        let message = format!(
            "agent {agent} is kind \"zmq\": a legacy agent is one process; remove replicas"
        );
        return Err(invalid(n.span(), message));
    }
    Ok(LegacySpec {
        rep,
        publish,
        endpoint,
    })
}

/// A `zmq` agent's `endpoint`, required there and an error elsewhere.
fn endpoint(
    raw: &AgentEntry,
    file: &SourceFile,
    agent: &str,
) -> Result<Option<ZmqEndpoint>, ConfigError> {
    let invalid = |span: std::ops::Range<usize>, message: String| ConfigError::Invalid {
        at: file.locate(span),
        message,
    };
    match (&raw.endpoint, *raw.kind.get_ref() == KindName::Zmq) {
        (Some(text), true) => ZmqEndpoint::parse(text.get_ref())
            .map(Some)
            .map_err(|why| invalid(text.span(), why)),
        (None, true) => Err(invalid(
            raw.kind.span(),
            format!(
                "agent {agent} is kind \"zmq\" but has no endpoint; add endpoint = \"tcp://host:port\" (its REP socket)"
            ),
        )),
        (Some(text), false) => Err(invalid(
            text.span(),
            format!("agent {agent}: `endpoint` goes with kind = \"zmq\" only"),
        )),
        (None, false) => Ok(None),
    }
}

/// No two agents of one host give the gateway one port. Replicas share
/// their entry's ports (the gateway binds them once, for the service).
pub(super) fn check_ports(agents: &[AgentSpec]) -> Result<(), ConfigError> {
    let mut seen: Vec<(&str, u16, &AgentSpec)> = Vec::new();
    for agent in agents.iter().filter(|a| a.replica() == 0) {
        let bound = [agent.legacy().rep(), agent.legacy().publish()];
        // A zmq agent's PUB port is on its own host, not the gateway's.
        let bound = bound
            .into_iter()
            .take(if agent.legacy().endpoint().is_some() {
                1
            } else {
                2
            })
            .flatten();
        for port in bound {
            if let Some((_, _, first)) = seen
                .iter()
                .find(|(host, p, _)| *host == agent.host() && *p == port)
            {
                return Err(ConfigError::Invalid {
                    at: agent.location().clone(),
                    message: format!(
                        "agent {} on {} asks the gateway for port {port}, which {} ({}) has; give one of them another port",
                        agent.service(),
                        agent.host(),
                        first.service(),
                        first.location()
                    ),
                });
            }
            seen.push((agent.host(), port, agent));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{AgentKind, AgentSet};

    fn sut(entries: &str) -> Result<AgentSet, ConfigError> {
        let text = format!("schema = 1\n{entries}");
        AgentSet::from_sources(&[SourceFile::from_text(Path::new("a.toml"), text)])
    }

    fn agent(name: &str, kind: &str, extra: &str) -> String {
        format!(
            "[[agent]]\nname = \"{name}\"\nhost = \"h\"\nrole = \"r\"\nkind = \"{kind}\"\n{extra}\n"
        )
    }

    fn refused(entries: &str, why: &str) {
        let err = sut(entries).expect_err(why).to_string();
        assert!(err.contains(why), "{err}");
    }

    #[test]
    fn a_zmq_agent_has_its_endpoint_and_agents_on_rings_their_ports() {
        let set = sut(&(agent(
            "Old",
            "zmq",
            "endpoint = \"tcp://10.0.0.2:7140\"\nlegacy_pub = 7150",
        ) + &agent("New", "synthetic", "legacy_rep = 5800\nlegacy_pub = 5801")))
        .expect("valid");

        let old = &set.agents()[0];
        assert_eq!(old.kind(), AgentKind::Zmq);
        assert_eq!(
            old.legacy().endpoint().map(ToString::to_string).as_deref(),
            Some("tcp://10.0.0.2:7140")
        );
        assert_eq!(old.legacy().publish(), Some(7150));
        assert_eq!(
            (
                set.agents()[1].legacy().rep(),
                set.agents()[1].legacy().publish()
            ),
            (Some(5800), Some(5801))
        );
    }

    #[test]
    fn legacy_fields_in_the_wrong_place_are_errors_naming_the_fix() {
        refused(&agent("Old", "zmq", ""), "has no endpoint");
        refused(
            &agent("Old", "zmq", "endpoint = \"tcp://h:1\"\nlegacy_rep = 2"),
            "remove legacy_rep",
        );
        refused(
            &agent("Old", "zmq", "endpoint = \"tcp://h:1\"\nreplicas = 2"),
            "remove replicas",
        );
        refused(
            &agent("New", "synthetic", "endpoint = \"tcp://h:1\""),
            "kind = \"zmq\" only",
        );
        refused(&agent("New", "synthetic", "legacy_rep = 0"), "1 to 65535");
        refused(
            &agent("New", "synthetic", "legacy_rep = 5\nlegacy_pub = 5"),
            "one port holds one socket",
        );
        refused(
            &agent("Old", "zmq", "endpoint = \"tcp://*:1\""),
            "no wildcard",
        );
    }

    #[test]
    fn two_agents_of_a_host_cannot_share_a_gateway_port_but_two_hosts_can() {
        refused(
            &(agent("A", "synthetic", "legacy_rep = 7000")
                + &agent("B", "synthetic", "legacy_pub = 7000")),
            "asks the gateway for port 7000, which A",
        );
        let two_hosts = agent("A", "synthetic", "legacy_rep = 7000")
            + &agent("B", "synthetic", "legacy_rep = 7000").replace("host = \"h\"", "host = \"g\"");
        assert!(sut(&two_hosts).is_ok());
        let replicated = agent("R", "synthetic", "legacy_rep = 7001\nreplicas = 3");
        assert!(
            sut(&replicated).is_ok(),
            "replicas share their entry's port"
        );
    }

    #[test]
    fn an_endpoint_parses_a_host_and_a_port_and_prints_back() {
        let sut = ZmqEndpoint::parse("tcp://10.0.0.2:7140").expect("valid");
        assert_eq!((sut.host(), sut.port()), ("10.0.0.2", 7140));
        assert_eq!(sut.to_string(), "tcp://10.0.0.2:7140");
        assert_eq!(sut.at_port(7150).to_string(), "tcp://10.0.0.2:7150");
    }

    #[test]
    fn endpoints_without_tcp_a_port_or_with_a_wildcard_are_refused_with_the_reason() {
        for (text, why) in [
            ("ipc:///tmp/x", "tcp://"),
            ("tcp://host", "needs a port"),
            ("tcp://*:5555", "no wildcard"),
            ("tcp://host:0", "1 to 65535"),
            ("tcp://host:70000", "1 to 65535"),
            ("tcp://:5555", "the host"),
        ] {
            let err = ZmqEndpoint::parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
