//! The link protocol: what an agent process and the daemon say over the
//! `SOCK_SEQPACKET` link (the child's descriptor 3, or a connection to the
//! attach socket) besides handing over rings.
//!
//! ```text
//!  agent                                   daemon
//!  Hello { wire, pid, name }  ─────────▶   checks name, version (and the
//!                                          peer's uid for an attach)
//!                             ◀─────────   Welcome { agent, epoch, drill, facts }
//!                             ◀─────────   ring handoff: inbound (agent reads)
//!                             ◀─────────   ring handoff: outbound (agent writes)
//!       or                    ◀─────────   Refused { reason }, then close
//!  later, any number of:
//!  Method { name }            ─────────▶
//!  MethodName { id }          ─────────▶
//!                             ◀─────────   MethodId { id, name }
//!  ModelUse { id, model }     ─────────▶   asks the VRAM optimizer
//!                             ◀─────────   ModelGranted { id }
//!                                       or ModelDenied { id, reason }
//!  ModelRelease { id }        ─────────▶   the use is over (or given up)
//!                             ◀─────────   Drill { fault } (each change)
//! ```
//!
//! Every message is one datagram: a 8-byte header (`PWLK`, the protocol
//! version, the kind) and a body of fixed-width little-endian numbers,
//! strings (`u16` length, UTF-8 bytes) and lists (`u16` count). Decoding
//! is for untrusted bytes: every length is checked against what is left and
//! against the limits below ([`MAX_MESSAGE_BYTES`], [`MAX_NAME_BYTES`],
//! [`MAX_LIST`]), trailing bytes are refused, and nothing panics.
//!
//! Method names: the wire carries a request's method as a `u16`. The daemon
//! keeps one table of method names for the whole host, so every process
//! agrees on the numbers: the welcome carries the table as it is, and an
//! agent asks for a name it has not seen (`Method`) or a number it has not
//! seen (`MethodName`).
//!
//! Drills: the welcome carries the drill an agent is under ([`FaultSpec`],
//! one checked word), so it holds from the first request of every
//! incarnation, and a `Drill` message brings each change (`none` when it
//! ends); the SDK applies it to every reply.
//!
//! Model uses: an agent asks for a GPU model (one its manifest's `models`
//! names) before it serves with it. `id` is the agent's own number for
//! the use, unique among its uses open at once. The daemon answers each
//! `ModelUse` once, at once when the model is resident, else when the
//! VRAM optimizer has decided; a granted use is held (never evicted)
//! until `ModelRelease`, and a `ModelRelease` of a use still waiting
//! withdraws it (an agent that gave up waiting). A release of an id the
//! daemon does not know (it was denied meanwhile) is ignored. When the
//! link closes, every use it held is released.
//!
//! What this module does not do: sockets (`ring::PeerLink` sends and
//! receives the datagrams) or deciding anything (the daemon's `process`
//! module does).

use std::fmt;

use crate::drill::FaultSpec;

/// The environment variable that names the agent a process is.
pub const AGENT_ENV: &str = "PINWHEEL_AGENT";
/// The environment variable that gives a spawned agent its link's
/// descriptor (always 3).
pub const AGENT_FD_ENV: &str = "PINWHEEL_AGENT_FD";
/// The environment variable that overrides the attach socket's path.
pub const AGENT_SOCKET_ENV: &str = "PINWHEEL_AGENT_SOCKET";
/// Where the daemon listens for agents started by something else.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/pinwheel/agent.sock";
/// The descriptor a spawned agent's link is on.
pub const AGENT_FD: i32 = 3;

const MAGIC: [u8; 4] = *b"PWLK";
/// The link protocol's version; both sides must speak the same.
pub const LINK_VERSION: u16 = 2;
/// The largest link message, bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// The longest name (agent, topic, method) or reason, bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// The most entries of a list.
pub const MAX_LIST: usize = 256;
const HEADER_BYTES: usize = 8;

/// A name and the number the daemon gave it (an agent's id, a topic's id,
/// a method's number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The name.
    pub name: String,
    /// Its number.
    pub id: u32,
}

/// What the daemon tells an agent about itself: its manifest facts, with
/// the numbers the wire uses for them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// The agent's own id on the wire.
    pub agent: u32,
    /// The incarnation: counts up by one each time the daemon (re)starts or
    /// re-attaches the agent; the rings' epoch follows it.
    pub epoch: u64,
    /// The drill it is under as it starts ([`FaultSpec::NONE`]: none).
    pub drill: FaultSpec,
    /// Agents it may call, in the manifest's order.
    pub calls: Vec<Named>,
    /// Topics it may publish.
    pub publishes: Vec<Named>,
    /// Topics it hears.
    pub subscribes: Vec<Named>,
    /// The host's method table as it is now.
    pub methods: Vec<Named>,
}

/// One link message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMessage {
    /// Agent -> daemon, first: who it is.
    Hello {
        /// The wire version it speaks.
        wire: u16,
        /// Its process id (the daemon checks it against the socket's peer).
        pid: u32,
        /// The agent name it claims.
        name: String,
    },
    /// Daemon -> agent: accepted; the rings follow.
    Welcome(Facts),
    /// Daemon -> agent: not accepted; the daemon closes the link.
    Refused {
        /// Why, for the agent's error message.
        reason: String,
    },
    /// Agent -> daemon: the number of a method name (added if new).
    Method {
        /// The method's name.
        name: String,
    },
    /// Agent -> daemon: the name of a method number.
    MethodName {
        /// The number.
        id: u16,
    },
    /// Daemon -> agent: a method's number and name (an empty name: no
    /// such number; number 0: the table is full).
    MethodId {
        /// The number.
        id: u16,
        /// The name.
        name: String,
    },
    /// Daemon -> agent: the drill it is under from now on
    /// ([`FaultSpec::NONE`]: none).
    Drill(FaultSpec),
    /// Agent -> daemon: asks for a GPU model for use `id`.
    ModelUse {
        /// The agent's number for the use.
        id: u32,
        /// The model, as the manifest's `models` names it.
        model: String,
    },
    /// Daemon -> agent: use `id` may start; the model is held for it.
    ModelGranted {
        /// The use.
        id: u32,
    },
    /// Daemon -> agent: use `id` is refused.
    ModelDenied {
        /// The use.
        id: u32,
        /// Why, for the agent's error.
        reason: String,
    },
    /// Agent -> daemon: use `id` is over, or no longer wanted.
    ModelRelease {
        /// The use.
        id: u32,
    },
}

/// Why bytes are not a link message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Too short, too long, or a length that runs past the end.
    #[error("link message is malformed: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// Another protocol or version.
    #[error("link message of protocol version {found}; this build speaks {LINK_VERSION}")]
    Version {
        /// What the peer sent.
        found: u16,
    },
    /// An unknown message kind.
    #[error("unknown link message kind {kind}")]
    Kind {
        /// The kind byte.
        kind: u8,
    },
    /// A string or list over its limit, or a string that is not UTF-8.
    #[error("link message field {what} is over its limit or not UTF-8")]
    Field {
        /// Which field.
        what: &'static str,
    },
}

impl LinkMessage {
    fn kind(&self) -> u8 {
        match self {
            LinkMessage::Hello { .. } => 1,
            LinkMessage::Welcome(_) => 2,
            LinkMessage::Refused { .. } => 3,
            LinkMessage::Method { .. } => 4,
            LinkMessage::MethodName { .. } => 5,
            LinkMessage::MethodId { .. } => 6,
            LinkMessage::Drill(_) => 7,
            LinkMessage::ModelUse { .. } => 8,
            LinkMessage::ModelGranted { .. } => 9,
            LinkMessage::ModelDenied { .. } => 10,
            LinkMessage::ModelRelease { .. } => 11,
        }
    }

    /// Encodes the message; fails only when a field is over its limit.
    pub fn encode(&self) -> Result<Vec<u8>, LinkError> {
        let mut out = Writer(Vec::with_capacity(64));
        out.0.extend_from_slice(&MAGIC);
        out.u16(LINK_VERSION);
        out.0.push(self.kind());
        out.0.push(0);
        match self {
            LinkMessage::Hello { wire, pid, name } => {
                out.u16(*wire);
                out.u32(*pid);
                out.str(name, "name")?;
            }
            LinkMessage::Welcome(facts) => {
                out.u32(facts.agent);
                out.u64(facts.epoch);
                out.u64(facts.drill.to_bits());
                for list in [
                    &facts.calls,
                    &facts.publishes,
                    &facts.subscribes,
                    &facts.methods,
                ] {
                    out.list(list)?;
                }
            }
            LinkMessage::Refused { reason } => {
                let cut = truncate(reason, MAX_NAME_BYTES);
                out.str(cut, "reason")?;
            }
            LinkMessage::Method { name } => out.str(name, "method")?,
            LinkMessage::MethodName { id } => out.u16(*id),
            LinkMessage::MethodId { id, name } => {
                out.u16(*id);
                out.str(name, "method")?;
            }
            LinkMessage::Drill(fault) => out.u64(fault.to_bits()),
            LinkMessage::ModelUse { id, model } => {
                out.u32(*id);
                out.str(model, "model")?;
            }
            LinkMessage::ModelGranted { id } | LinkMessage::ModelRelease { id } => out.u32(*id),
            LinkMessage::ModelDenied { id, reason } => {
                out.u32(*id);
                out.str(truncate(reason, MAX_NAME_BYTES), "reason")?;
            }
        }
        if out.0.len() > MAX_MESSAGE_BYTES {
            return Err(LinkError::Field { what: "message" });
        }
        Ok(out.0)
    }

    /// Decodes one message from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, LinkError> {
        if bytes.len() < HEADER_BYTES || bytes.len() > MAX_MESSAGE_BYTES {
            return Err(LinkError::Malformed {
                what: "length out of bounds",
            });
        }
        if bytes[..4] != MAGIC {
            return Err(LinkError::Malformed {
                what: "not a pinwheel link message",
            });
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != LINK_VERSION {
            return Err(LinkError::Version { found: version });
        }
        let mut r = Reader(&bytes[HEADER_BYTES..]);
        let message = match bytes[6] {
            1 => LinkMessage::Hello {
                wire: r.u16()?,
                pid: r.u32()?,
                name: r.str("name")?,
            },
            2 => LinkMessage::Welcome(Facts {
                agent: r.u32()?,
                epoch: r.u64()?,
                drill: r.drill()?,
                calls: r.list()?,
                publishes: r.list()?,
                subscribes: r.list()?,
                methods: r.list()?,
            }),
            3 => LinkMessage::Refused {
                reason: r.str("reason")?,
            },
            4 => LinkMessage::Method {
                name: r.str("method")?,
            },
            5 => LinkMessage::MethodName { id: r.u16()? },
            6 => LinkMessage::MethodId {
                id: r.u16()?,
                name: r.str("method")?,
            },
            7 => LinkMessage::Drill(r.drill()?),
            8 => LinkMessage::ModelUse {
                id: r.u32()?,
                model: r.str("model")?,
            },
            9 => LinkMessage::ModelGranted { id: r.u32()? },
            10 => LinkMessage::ModelDenied {
                id: r.u32()?,
                reason: r.str("reason")?,
            },
            11 => LinkMessage::ModelRelease { id: r.u32()? },
            kind => return Err(LinkError::Kind { kind }),
        };
        if !r.0.is_empty() {
            return Err(LinkError::Malformed {
                what: "trailing bytes",
            });
        }
        Ok(message)
    }
}

/// The longest prefix of `text` within `max` bytes, on a char boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

struct Writer(Vec<u8>);

impl Writer {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str, what: &'static str) -> Result<(), LinkError> {
        if s.len() > MAX_NAME_BYTES {
            return Err(LinkError::Field { what });
        }
        self.u16(s.len() as u16);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
    fn list(&mut self, list: &[Named]) -> Result<(), LinkError> {
        if list.len() > MAX_LIST {
            return Err(LinkError::Field { what: "list" });
        }
        self.u16(list.len() as u16);
        for entry in list {
            self.str(&entry.name, "list entry")?;
            self.u32(entry.id);
        }
        Ok(())
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], LinkError> {
        let Some((head, rest)) = self.0.split_first_chunk::<N>() else {
            return Err(LinkError::Malformed {
                what: "field runs past the end",
            });
        };
        self.0 = rest;
        Ok(*head)
    }
    fn u16(&mut self) -> Result<u16, LinkError> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, LinkError> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, LinkError> {
        self.take().map(u64::from_le_bytes)
    }
    /// A drill word, checked: only words `FaultSpec::to_bits` makes.
    fn drill(&mut self) -> Result<FaultSpec, LinkError> {
        let bits = self.u64()?;
        FaultSpec::from_bits(bits)
            .filter(|spec| spec.to_bits() == bits)
            .ok_or(LinkError::Field { what: "drill" })
    }
    fn str(&mut self, what: &'static str) -> Result<String, LinkError> {
        let len = usize::from(self.u16()?);
        if len > MAX_NAME_BYTES || len > self.0.len() {
            return Err(LinkError::Field { what });
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(text)
            .map(str::to_owned)
            .map_err(|_| LinkError::Field { what })
    }
    fn list(&mut self) -> Result<Vec<Named>, LinkError> {
        let count = usize::from(self.u16()?);
        if count > MAX_LIST {
            return Err(LinkError::Field { what: "list" });
        }
        let mut out = Vec::with_capacity(count.min(self.0.len() / 6));
        for _ in 0..count {
            let name = self.str("list entry")?;
            out.push(Named {
                name,
                id: self.u32()?,
            });
        }
        Ok(out)
    }
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.id)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn named(name: &str, id: u32) -> Named {
        Named {
            name: name.into(),
            id,
        }
    }

    #[test]
    fn every_message_round_trips() {
        let all = [
            LinkMessage::Hello {
                wire: 3,
                pid: 77,
                name: "Echo".into(),
            },
            LinkMessage::Welcome(Facts {
                agent: 4,
                epoch: 9,
                drill: FaultSpec::NONE.with_stall(),
                calls: vec![named("Back", 5)],
                publishes: vec![named("audio.raw", 1)],
                subscribes: vec![],
                methods: vec![named("work", 1), named("translate", 300)],
            }),
            LinkMessage::Refused {
                reason: "no such agent".into(),
            },
            LinkMessage::Method {
                name: "generate_text".into(),
            },
            LinkMessage::MethodName { id: 12 },
            LinkMessage::MethodId {
                id: 12,
                name: "x".into(),
            },
            LinkMessage::Drill(FaultSpec::slow(10.0).with_error(0.25)),
            LinkMessage::Drill(FaultSpec::NONE),
            LinkMessage::ModelUse {
                id: 3,
                model: "whisper-large-v3".into(),
            },
            LinkMessage::ModelGranted { id: 3 },
            LinkMessage::ModelDenied {
                id: 4,
                reason: "too large".into(),
            },
            LinkMessage::ModelRelease { id: 3 },
        ];
        for message in all {
            let bytes = message.encode().unwrap();
            assert_eq!(LinkMessage::decode(&bytes).unwrap(), message);
        }
    }

    #[test]
    fn over_long_names_are_refused_when_encoding() {
        let sut = LinkMessage::Method {
            name: "m".repeat(MAX_NAME_BYTES + 1),
        };
        assert!(sut.encode().is_err());
    }

    #[test]
    fn a_long_refusal_is_cut_to_fit() {
        let sut = LinkMessage::Refused {
            reason: "é".repeat(MAX_NAME_BYTES),
        };
        let back = LinkMessage::decode(&sut.encode().unwrap()).unwrap();
        let LinkMessage::Refused { reason } = back else {
            panic!("{back:?}")
        };
        assert!(reason.len() <= MAX_NAME_BYTES && reason.starts_with('é'));
    }

    #[test]
    fn another_version_trailing_bytes_and_unknown_kinds_are_refused() {
        let mut bytes = LinkMessage::MethodName { id: 1 }.encode().unwrap();
        bytes.push(0);
        assert!(matches!(
            LinkMessage::decode(&bytes),
            Err(LinkError::Malformed { .. })
        ));
        bytes.pop();
        bytes[4] = 9;
        assert!(matches!(
            LinkMessage::decode(&bytes),
            Err(LinkError::Version { found: 9 })
        ));
        bytes[4] = LINK_VERSION as u8;
        bytes[6] = 42;
        assert!(matches!(
            LinkMessage::decode(&bytes),
            Err(LinkError::Kind { kind: 42 })
        ));
    }

    #[test]
    fn a_drill_word_no_drill_makes_is_refused() {
        let mut bytes = LinkMessage::Drill(FaultSpec::slow(2.0)).encode().unwrap();
        let at = bytes.len() - 8;
        for bad in [0u64, 1, u64::MAX, 1 << 60] {
            bytes[at..].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(
                LinkMessage::decode(&bytes),
                Err(LinkError::Field { what: "drill" }),
                "{bad:#x}"
            );
        }
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = LinkMessage::decode(&bytes);
        }

        #[test]
        fn hostile_bodies_behind_a_valid_header_never_panic(
            kind in 0u8..13,
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut bytes = b"PWLK".to_vec();
            bytes.extend_from_slice(&LINK_VERSION.to_le_bytes());
            bytes.extend_from_slice(&[kind, 0]);
            bytes.extend_from_slice(&body);
            if let Ok(message) = LinkMessage::decode(&bytes) {
                prop_assert_eq!(message.encode().unwrap(), bytes);
            }
        }
    }
}
