//! The daemon's side of the link protocol (`pinwheel_ipc::link`): the
//! hello check, the welcome with the agent's facts and rings, and what an
//! attached agent says later: method-name questions and model uses
//! (`uses.rs` keeps those).
//!
//! The hello is untrusted: it must come within [`HELLO_TIMEOUT`], name the
//! agent the link is for, speak this build's wire version, and carry the
//! pid the kernel reports for the socket's peer. Anything else is answered
//! with `Refused` and the link is closed. After the welcome, an agent may
//! ask about method names; at most [`MAX_QUESTIONS_PER_TICK`] questions are
//! answered per core-loop tick, and one more in the same tick is a flood:
//! the agent is disconnected as corrupt. After the welcome the daemon
//! never blocks on the link: it sends with `try_send_message`, and an
//! agent that lets its link fill up with answers it does not read is
//! disconnected as corrupt too (a drill that does not fit is sent again
//! next tick).
//!
//! The method table is the host's: names get numbers in the order they are
//! first asked for, after the native agents' own (`work` = 1, ...), at
//! most [`MAX_METHODS`] of them.

use std::collections::HashMap;
use std::time::Duration;

use pinwheel_ipc::link::{Facts, LinkMessage, MAX_NAME_BYTES, Named};
use pinwheel_ipc::ring::{PeerLink, RingError, RingHandoff};
use pinwheel_ipc::wire::WIRE_VERSION;

use super::uses::ModelUses;
use crate::runtime::board::Board;

/// How long an agent has to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Questions answered per agent per tick.
pub const MAX_QUESTIONS_PER_TICK: usize = 64;
/// Method names a host may have.
pub const MAX_METHODS: usize = 4096;

/// Why a link was refused or dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFault {
    /// The peer closed it.
    Gone,
    /// No hello in time.
    NoHello,
    /// A hello, but not an acceptable one (told to the peer).
    Refused(String),
    /// The peer broke the protocol.
    Corrupt(String),
}

impl std::fmt::Display for LinkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkFault::Gone => f.write_str("the agent closed its link"),
            LinkFault::NoHello => f.write_str("the agent did not say hello in time"),
            LinkFault::Refused(why) => write!(f, "refused: {why}"),
            LinkFault::Corrupt(why) => write!(f, "broke the link protocol: {why}"),
        }
    }
}

/// The host's method names and numbers.
#[derive(Debug, Clone, Default)]
pub struct MethodTable {
    names: Vec<String>,
    ids: HashMap<String, u16>,
}

impl MethodTable {
    /// A table that starts with `builtin` names at their numbers.
    pub fn new(builtin: &[(&str, u16)]) -> Self {
        let mut table = Self::default();
        for &(name, id) in builtin {
            let index = usize::from(id);
            if table.names.len() < index {
                table.names.resize(index, String::new());
            }
            table.names[index - 1] = name.to_owned();
            table.ids.insert(name.to_owned(), id);
        }
        table
    }

    /// The number of `name`, if the table has it.
    pub fn find(&self, name: &str) -> Option<u16> {
        self.ids.get(name).copied()
    }

    /// The number of `name`, added if new; 0 when the table is full or
    /// the name unusable.
    pub fn intern(&mut self, name: &str) -> u16 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        if name.is_empty() || name.len() > MAX_NAME_BYTES || self.names.len() >= MAX_METHODS {
            return 0;
        }
        self.names.push(name.to_owned());
        let id = self.names.len() as u16;
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// The name of number `id`.
    pub fn name(&self, id: u16) -> Option<&str> {
        let index = usize::from(id).checked_sub(1)?;
        self.names
            .get(index)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    /// The whole table, for a welcome.
    pub fn all(&self) -> Vec<Named> {
        self.names
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_empty())
            .map(|(i, n)| Named {
                name: n.clone(),
                id: i as u32 + 1,
            })
            .collect()
    }
}

/// Waits for the hello and checks it (see [`check_hello`]).
pub fn expect_hello(link: &PeerLink, name: &str, pid: Option<u32>) -> Result<u32, LinkFault> {
    let message = match link.recv_message(HELLO_TIMEOUT) {
        Ok(message) => message,
        Err(RingError::Timeout { .. }) => return Err(LinkFault::NoHello),
        Err(RingError::PeerGone) => return Err(LinkFault::Gone),
        Err(err) => return Err(LinkFault::Corrupt(err.to_string())),
    };
    check_hello(link, message, name, pid)
}

/// Checks a hello: the agent `name`, this wire version, and `pid` when
/// the caller knows it. A bad hello is answered with `Refused`.
pub fn check_hello(
    link: &PeerLink,
    message: LinkMessage,
    name: &str,
    pid: Option<u32>,
) -> Result<u32, LinkFault> {
    let LinkMessage::Hello {
        wire,
        pid: said,
        name: claimed,
    } = message
    else {
        return Err(refuse(link, "the first message must be a hello".into()));
    };
    if claimed != name {
        return Err(refuse(
            link,
            format!("this link is for agent {name}, not {claimed:?}"),
        ));
    }
    if wire != WIRE_VERSION {
        return Err(refuse(
            link,
            format!(
                "the daemon speaks wire version {WIRE_VERSION}, the agent {wire}; rebuild it against this pinwheel"
            ),
        ));
    }
    if pid.is_some_and(|pid| pid != said) {
        return Err(refuse(
            link,
            format!("the hello says pid {said}, the socket says otherwise"),
        ));
    }
    Ok(said)
}

/// Refuses the peer with `reason` (best effort) and returns the fault.
pub fn refuse(link: &PeerLink, reason: String) -> LinkFault {
    let _ = link.send_message(&LinkMessage::Refused {
        reason: reason.clone(),
    });
    LinkFault::Refused(reason)
}

/// Sends the welcome and the two rings.
pub fn welcome(
    link: &PeerLink,
    facts: Facts,
    inbound: &RingHandoff,
    outbound: &RingHandoff,
) -> Result<(), LinkFault> {
    let sent = link
        .send_message(&LinkMessage::Welcome(facts))
        .and_then(|()| link.send(inbound))
        .and_then(|()| link.send(outbound));
    match sent {
        Ok(()) => Ok(()),
        Err(RingError::PeerGone) => Err(LinkFault::Gone),
        Err(err) => Err(LinkFault::Corrupt(err.to_string())),
    }
}

/// What serving a welcomed agent's link needs: the host's method table,
/// the agent's model uses and the board they go through.
pub struct Serving<'a> {
    /// The host's method names.
    pub methods: &'a mut MethodTable,
    /// The agent's model uses.
    pub uses: &'a mut ModelUses,
    /// The mesh's shared words.
    pub board: &'a Board,
}

/// Answers what an attached agent said since the last tick.
pub fn serve(link: &PeerLink, serving: Serving<'_>) -> Result<(), LinkFault> {
    let Serving {
        methods,
        uses,
        board,
    } = serving;
    for _ in 0..=MAX_QUESTIONS_PER_TICK {
        let message = match link.try_recv_message() {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(RingError::PeerGone) => return Err(LinkFault::Gone),
            Err(err) => return Err(LinkFault::Corrupt(err.to_string())),
        };
        let answer = match message {
            LinkMessage::Method { name } => Some(LinkMessage::MethodId {
                id: methods.intern(&name),
                name,
            }),
            LinkMessage::MethodName { id } => Some(LinkMessage::MethodId {
                id,
                name: methods.name(id).unwrap_or_default().to_owned(),
            }),
            LinkMessage::ModelUse { id, model } => uses
                .ask(board, id, &model)
                .map_err(|fault| LinkFault::Corrupt(fault.0))?,
            LinkMessage::ModelRelease { id } => {
                uses.release(board, id);
                None
            }
            other => {
                return Err(LinkFault::Corrupt(format!(
                    "unexpected {} after the welcome",
                    kind_name(&other)
                )));
            }
        };
        if let Some(answer) = answer {
            send(link, &answer)?;
        }
    }
    Err(LinkFault::Corrupt(format!(
        "more than {MAX_QUESTIONS_PER_TICK} questions in one tick"
    )))
}

/// Sends `message` to a welcomed agent without blocking; a link full of
/// what the agent did not read is a fault.
pub fn send(link: &PeerLink, message: &LinkMessage) -> Result<(), LinkFault> {
    match link.try_send_message(message) {
        Ok(true) => Ok(()),
        Ok(false) => Err(LinkFault::Corrupt(
            "its link is full: it does not read the daemon's answers".into(),
        )),
        Err(RingError::PeerGone) => Err(LinkFault::Gone),
        Err(err) => Err(LinkFault::Corrupt(err.to_string())),
    }
}

fn kind_name(message: &LinkMessage) -> &'static str {
    match message {
        LinkMessage::Hello { .. } => "hello",
        LinkMessage::Welcome(_) => "welcome",
        LinkMessage::Refused { .. } => "refusal",
        LinkMessage::Method { .. } => "method",
        LinkMessage::MethodName { .. } => "method name",
        LinkMessage::MethodId { .. } => "method id",
        LinkMessage::Drill(_) => "drill",
        LinkMessage::ModelUse { .. } => "model use",
        LinkMessage::ModelGranted { .. } => "model grant",
        LinkMessage::ModelDenied { .. } => "model denial",
        LinkMessage::ModelRelease { .. } => "model release",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_builtin_numbers_and_numbers_new_names_after_them() {
        let mut sut = MethodTable::new(&[("work", 1), ("frame", 2), ("lookup", 3)]);
        assert_eq!(sut.intern("work"), 1);
        assert_eq!(sut.intern("translate"), 4);
        assert_eq!(sut.intern("translate"), 4);
        assert_eq!(sut.name(4), Some("translate"));
        assert_eq!(sut.name(0), None);
        assert_eq!(sut.name(99), None);
        assert_eq!(sut.intern(""), 0);
        assert_eq!(sut.all().len(), 4);
    }

    #[test]
    fn a_hello_for_another_agent_is_refused_with_a_reason() {
        let (daemon, agent) = PeerLink::pair().unwrap();
        agent
            .send_message(&LinkMessage::Hello {
                wire: WIRE_VERSION,
                pid: 1,
                name: "Other".into(),
            })
            .unwrap();
        let fault = expect_hello(&daemon, "Echo", None).unwrap_err();
        assert!(matches!(fault, LinkFault::Refused(ref why) if why.contains("not \"Other\"")));
        assert!(matches!(
            agent.recv_message(Duration::from_secs(1)).unwrap(),
            LinkMessage::Refused { .. }
        ));
    }

    fn serving<'a>(
        methods: &'a mut MethodTable,
        uses: &'a mut ModelUses,
        board: &'a Board,
    ) -> Serving<'a> {
        Serving {
            methods,
            uses,
            board,
        }
    }

    #[test]
    fn a_model_use_is_answered_and_daemon_messages_from_an_agent_are_corrupt() {
        let (daemon, agent) = PeerLink::pair().unwrap();
        let mut table = MethodTable::new(&[]);
        let board = Board::new(1, Vec::new(), &[], 0);
        let mut uses = ModelUses::default();
        agent
            .send_message(&LinkMessage::ModelUse {
                id: 1,
                model: "nope".into(),
            })
            .unwrap();
        agent
            .send_message(&LinkMessage::ModelRelease { id: 1 })
            .unwrap();
        serve(&daemon, serving(&mut table, &mut uses, &board)).unwrap();
        let answer = agent.recv_message(Duration::from_secs(1)).unwrap();
        assert!(
            matches!(answer, LinkMessage::ModelDenied { id: 1, ref reason } if reason.contains("nope")),
            "{answer:?}"
        );
        agent
            .send_message(&LinkMessage::ModelGranted { id: 1 })
            .unwrap();
        assert!(matches!(
            serve(&daemon, serving(&mut table, &mut uses, &board)),
            Err(LinkFault::Corrupt(ref why)) if why.contains("model grant")
        ));
    }

    #[test]
    fn an_agent_that_does_not_read_its_link_is_a_fault_not_a_block() {
        let (daemon, _agent) = PeerLink::pair().unwrap();
        let message = LinkMessage::Drill(pinwheel_ipc::drill::FaultSpec::slow(2.0));
        let fault = (0..1_000_000)
            .find_map(|_| send(&daemon, &message).err())
            .expect("the link fills up");
        assert!(matches!(fault, LinkFault::Corrupt(ref why) if why.contains("full")));
    }

    #[test]
    fn questions_are_answered_and_a_flood_is_corrupt() {
        let (daemon, agent) = PeerLink::pair().unwrap();
        let mut table = MethodTable::new(&[("work", 1)]);
        let board = Board::new(1, Vec::new(), &[], 0);
        let mut uses = ModelUses::default();
        agent
            .send_message(&LinkMessage::Method { name: "x".into() })
            .unwrap();
        agent
            .send_message(&LinkMessage::MethodName { id: 1 })
            .unwrap();
        serve(&daemon, serving(&mut table, &mut uses, &board)).unwrap();
        let first = agent.recv_message(Duration::from_secs(1)).unwrap();
        assert_eq!(
            first,
            LinkMessage::MethodId {
                id: 2,
                name: "x".into()
            }
        );
        let second = agent.recv_message(Duration::from_secs(1)).unwrap();
        assert_eq!(
            second,
            LinkMessage::MethodId {
                id: 1,
                name: "work".into()
            }
        );
        for _ in 0..=MAX_QUESTIONS_PER_TICK {
            agent
                .send_message(&LinkMessage::MethodName { id: 1 })
                .unwrap();
        }
        assert!(matches!(
            serve(&daemon, serving(&mut table, &mut uses, &board)),
            Err(LinkFault::Corrupt(_))
        ));
    }
}
