//! Attaching to the daemon: finding the link (descriptor 3 for a spawned
//! agent, the attach socket for one started by something else), saying
//! hello, and taking the facts and the two rings the daemon answers with.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use pinwheel_ipc::link::{
    AGENT_ENV, AGENT_FD_ENV, AGENT_SOCKET_ENV, DEFAULT_AGENT_SOCKET, Facts, LinkMessage,
};
use pinwheel_ipc::ring::{Consumer, PeerLink, Producer};
use pinwheel_ipc::wire::WIRE_VERSION;

use crate::AgentError;

/// How long the daemon may take to answer the hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What attaching yields.
#[derive(Debug)]
pub(crate) struct Attached {
    pub name: String,
    pub link: PeerLink,
    pub facts: Facts,
    pub inbound: Consumer,
    pub outbound: Producer,
}

/// The link and name the environment gives this process.
pub(crate) fn link_from_env() -> Result<(String, PeerLink), AgentError> {
    let name = std::env::var(AGENT_ENV).map_err(|_| AgentError::Environment {
        reason: format!("{AGENT_ENV} is not set: start this program as a pinwheel agent (kind \"process\"), or set {AGENT_ENV} to the name of a kind \"external\" agent"),
    })?;
    if let Ok(text) = std::env::var(AGENT_FD_ENV) {
        let fd: i32 = text.parse().map_err(|_| AgentError::Environment {
            reason: format!("{AGENT_FD_ENV}={text:?} is not a descriptor number"),
        })?;
        let link = PeerLink::inherited(fd).map_err(|err| AgentError::Environment {
            reason: format!("{AGENT_FD_ENV}={fd}: {err}"),
        })?;
        return Ok((name, link));
    }
    let path = std::env::var(AGENT_SOCKET_ENV).unwrap_or_else(|_| DEFAULT_AGENT_SOCKET.into());
    Ok((name, connect_socket(Path::new(&path))?))
}

/// Connects to the daemon's attach socket at `path`.
pub(crate) fn connect_socket(path: &Path) -> Result<PeerLink, AgentError> {
    let failed = |reason: String| AgentError::Environment {
        reason: format!("cannot reach the daemon at {}: {reason}", path.display()),
    };
    let fd: OwnedFd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| failed(e.to_string()))?;
    let addr = UnixAddr::new(path).map_err(|e| failed(e.to_string()))?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).map_err(|e| failed(e.to_string()))?;
    Ok(PeerLink::from_socket(fd))
}

/// Says hello as `name` and takes the daemon's answer.
pub(crate) fn hello(name: String, link: PeerLink) -> Result<Attached, AgentError> {
    link.send_message(&LinkMessage::Hello {
        wire: WIRE_VERSION,
        pid: std::process::id(),
        name: name.clone(),
    })
    .map_err(AgentError::link)?;
    let facts = match link.recv_message(HELLO_TIMEOUT).map_err(AgentError::link)? {
        LinkMessage::Welcome(facts) => facts,
        LinkMessage::Refused { reason } => return Err(AgentError::Refused { reason }),
        other => {
            return Err(AgentError::Protocol {
                reason: format!("expected a welcome, got {other:?}"),
            });
        }
    };
    let inbound = link
        .recv(HELLO_TIMEOUT)
        .and_then(|h| h.into_consumer())
        .map_err(AgentError::link)?;
    let outbound = link
        .recv(HELLO_TIMEOUT)
        .and_then(|h| h.into_producer())
        .map_err(AgentError::link)?;
    Ok(Attached {
        name,
        link,
        facts,
        inbound,
        outbound,
    })
}
