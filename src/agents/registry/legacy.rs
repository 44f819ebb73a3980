//! The seed's discovery contract, as the native registries answer it
//! (ServiceRegistry and SystemDigitalTwin on their legacy ports):
//!
//! ```text
//!  {"action": "register_agent", "registration_data": {"name": .., "host": .., "port": ..}}
//!  {"action": "get_agent_endpoint", "agent_name": ..}     -> data.endpoint "tcp://host:port"
//!  {"action": "health_check"}                              -> data.agents, data.up, data.legacy
//! ```
//!
//! A registration names its agent (`registration_data.name` or
//! `.agent_name`, or the request's `agent_name`) and its socket
//! (`registration_data.endpoint`, or `.host` and `.port`); it goes into
//! the host's [`LegacyBook`], where `/v1/agents` lists it as legacy and
//! `get_agent_endpoint` finds it before the manifests' endpoints. Every
//! answer is a whole seed reply, which the gateway passes on unchanged.
//! Requests are untrusted JSON: whatever does not fit is a `400` answer
//! naming the field.

use serde::{Deserialize, Serialize};

use crate::agents::protocol::{STATUS_BAD_REQUEST, STATUS_NOT_FOUND};
use crate::config::{ZmqEndpoint, name_problem};
use crate::runtime::legacy::{BookFull, LegacyBook, MAX_REGISTERED, Registered, SeedReply};
use crate::runtime::node::{STATUS_OK, STATUS_OVERLOADED};

/// The parts of a seed request the registry reads.
#[derive(Debug, Default, Deserialize)]
struct Request {
    #[serde(default)]
    agent_name: Option<String>,
    #[serde(default)]
    registration_data: Option<Registration>,
}

/// `registration_data`.
#[derive(Debug, Default, Deserialize)]
struct Registration {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    agent_name: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

/// `data` of `register_agent` and `get_agent_endpoint`.
#[derive(Debug, Serialize)]
struct EndpointData<'a> {
    agent_name: &'a str,
    endpoint: &'a str,
}

/// `data` of `health_check`.
#[derive(Debug, Serialize)]
struct HealthData {
    /// Agents registered with this registry.
    agents: u32,
    /// Of those, heard from recently.
    up: u32,
    /// Legacy agents registered on this host.
    legacy: usize,
}

fn value(data: impl Serialize) -> serde_json::Value {
    serde_json::to_value(data).expect("plain data serializes")
}

/// A reply: its status and its seed JSON.
pub(super) type Answer = (u16, Vec<u8>);

fn bad(message: String) -> Answer {
    (STATUS_BAD_REQUEST, SeedReply::error(message).to_bytes())
}

fn request(body: &[u8]) -> Result<Request, Answer> {
    serde_json::from_slice(body)
        .map_err(|e| bad(format!("the request is not the seed's JSON: {e}")))
}

/// `register_agent`, registered with `registry`.
pub(super) fn register(book: &LegacyBook, registry: &str, body: &[u8]) -> Answer {
    let request = match request(body) {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let data = request.registration_data.unwrap_or_default();
    let Some(name) = data.name.or(data.agent_name).or(request.agent_name) else {
        return bad("register_agent needs registration_data.name (or agent_name)".to_owned());
    };
    if let Some(problem) = name_problem(&name) {
        return bad(format!("agent name {name:?} {problem}"));
    }
    let text = match (data.endpoint, data.host, data.port) {
        (Some(endpoint), _, _) => endpoint,
        (None, Some(host), Some(port)) => format!("tcp://{host}:{port}"),
        _ => {
            return bad(format!(
                "register_agent for {name} needs registration_data.endpoint, or host and port"
            ));
        }
    };
    let endpoint = match ZmqEndpoint::parse(&text) {
        Ok(endpoint) => endpoint.to_string(),
        Err(why) => return bad(why),
    };
    let entry = Registered {
        name: name.clone(),
        endpoint: endpoint.clone(),
        registry: registry.to_owned(),
    };
    match book.register(entry) {
        Ok(()) => {
            let data = value(EndpointData {
                agent_name: &name,
                endpoint: &endpoint,
            });
            let reply = SeedReply::success(format!("agent {name} registered"), data);
            (STATUS_OK, reply.to_bytes())
        }
        Err(BookFull::Full) => (
            STATUS_OVERLOADED,
            SeedReply::error(format!(
                "the registry holds {MAX_REGISTERED} legacy agents; {name} was not registered"
            ))
            .to_bytes(),
        ),
    }
}

/// `get_agent_endpoint`.
pub(super) fn endpoint(book: &LegacyBook, body: &[u8]) -> Answer {
    let request = match request(body) {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let Some(name) = request.agent_name else {
        return bad("get_agent_endpoint needs agent_name".to_owned());
    };
    match book.endpoint(&name) {
        Some(endpoint) => {
            let data = value(EndpointData {
                agent_name: &name,
                endpoint: &endpoint,
            });
            let reply = SeedReply::success(format!("endpoint of {name}"), data);
            (STATUS_OK, reply.to_bytes())
        }
        None => (
            STATUS_NOT_FOUND,
            SeedReply::error(format!("no agent named {name:?} has a legacy endpoint")).to_bytes(),
        ),
    }
}

/// `health_check`: the registry's census.
pub(super) fn health(book: &LegacyBook, entries: u32, up: u32) -> Answer {
    let data = value(HealthData {
        agents: entries,
        up,
        legacy: book.registered().len(),
    });
    (STATUS_OK, SeedReply::success("healthy", data).to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(answer: &Answer) -> SeedReply {
        serde_json::from_slice(&answer.1).expect("a seed reply")
    }

    #[test]
    fn a_registered_agent_is_found_by_name_with_its_endpoint() {
        let book = LegacyBook::default();
        let body = br#"{"action": "register_agent", "registration_data": {"name": "Old", "host": "10.0.0.5", "port": 5999}}"#;

        let registered = register(&book, "SystemDigitalTwin", body);
        let found = endpoint(
            &book,
            br#"{"action": "get_agent_endpoint", "agent_name": "Old"}"#,
        );

        assert_eq!(registered.0, STATUS_OK);
        assert_eq!(found.0, STATUS_OK);
        assert_eq!(reply(&found).data["endpoint"], "tcp://10.0.0.5:5999");
        assert_eq!(book.registered()[0].registry, "SystemDigitalTwin");
    }

    #[test]
    fn registrations_without_a_name_or_a_socket_are_refused_naming_the_field() {
        let book = LegacyBook::default();
        let cases: [(&[u8], &str); 4] = [
            (
                br#"{"registration_data": {"port": 1}}"#,
                "registration_data.name",
            ),
            (br#"{"agent_name": "A"}"#, "host and port"),
            (
                br#"{"agent_name": "A b", "registration_data": {"endpoint": "tcp://h:1"}}"#,
                "agent name",
            ),
            (br#"[1]"#, "seed's JSON"),
        ];
        for (body, why) in cases {
            let answer = register(&book, "R", body);
            assert_eq!(answer.0, STATUS_BAD_REQUEST, "{why}");
            assert!(
                reply(&answer).message.contains(why),
                "{}",
                reply(&answer).message
            );
        }
        assert!(book.registered().is_empty());
    }

    #[test]
    fn an_unknown_agent_has_no_endpoint() {
        let answer = endpoint(&LegacyBook::default(), br#"{"agent_name": "Nobody"}"#);
        assert_eq!(answer.0, STATUS_NOT_FOUND);
        assert_eq!(reply(&answer).status, "error");
    }
}
