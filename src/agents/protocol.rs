//! What the mesh's agents say to each other: request methods, reply
//! statuses of their own, and the [`Trace`] every synthetic request and
//! event carries.
//!
//! A trace is where a piece of work started and which agents it passed
//! through. Its origin time lets the agent at the end of a flow (the
//! coordinator, for the voice path) measure the flow end to end across
//! executors, since every executor reads the same `CLOCK_MONOTONIC`. Its
//! path is how cycles in `calls` are handled: an agent never calls one
//! already on the path of the request it serves. In the seed's synchronous
//! REQ/REP a cycle such as TTSService -> StreamingTTSAgent -> TTSService
//! deadlocks until a timeout; here the call is skipped. The path is also a
//! depth limit: a trace holds at most [`MAX_PATH`] agents, and an agent
//! whose trace is full makes no further calls.
//!
//! A trace may carry a session (a user's conversation, as the load
//! generator numbers them): agents pass it on, and call with it as their
//! affinity key, so a session's calls to a `consistent_hash` agent stick
//! to one replica all along the flow.
//!
//! Bodies come from other agents and, later, other processes: [`Trace::decode`]
//! checks every length and refuses what does not fit, and a request whose
//! body is not a trace is served as the start of a new one.
//!
//! ```text
//! byte 0       8       9      10                 10 + 4 * len
//!      +-------+-------+------+------------------+
//!      | origin| flags | len  | path: len x u32  |   little-endian
//!      +-------+-------+------+------------------+
//!  with flag 2 (session), 8 bytes of session follow the path
//! ```

use pinwheel_ipc::wire::AgentId;

/// Synthetic work: serve, make your calls, answer.
pub const METHOD_WORK: u16 = 1;
/// A frame of a stream (audio capture), sent by the load generator.
pub const METHOD_FRAME: u16 = 2;
/// Registry: find an agent by name (the body is the name).
pub const METHOD_LOOKUP: u16 = 3;
/// Registry, the seed's action: a legacy agent registers itself (the body
/// is the seed's JSON request).
pub const METHOD_REGISTER_AGENT: u16 = 4;
/// Registry, the seed's action: where an agent's legacy socket is.
pub const METHOD_GET_AGENT_ENDPOINT: u16 = 5;
/// Registry, the seed's action: is the registry well.
pub const METHOD_HEALTH_CHECK: u16 = 6;

/// The methods above by name, as agent processes and legacy clients see
/// them (the first entries of the host's method table).
pub const BUILTIN_METHODS: [(&str, u16); 6] = [
    ("work", METHOD_WORK),
    ("frame", METHOD_FRAME),
    ("lookup", METHOD_LOOKUP),
    ("register_agent", METHOD_REGISTER_AGENT),
    ("get_agent_endpoint", METHOD_GET_AGENT_ENDPOINT),
    ("health_check", METHOD_HEALTH_CHECK),
];

/// Reply status: a circuit breaker or a bulkhead refused the call.
pub const STATUS_REJECTED: u16 = 429;
/// Reply status: no such agent (registry lookup).
pub const STATUS_NOT_FOUND: u16 = 404;
/// Reply status: a request the agent cannot use (a registration without
/// a name or an endpoint).
pub const STATUS_BAD_REQUEST: u16 = 400;

/// Most agents a trace's path holds.
pub const MAX_PATH: usize = 12;
/// Bytes of the largest encoded trace.
pub const TRACE_BYTES: usize = 10 + 4 * MAX_PATH + 8;

const FLAG_VOICE: u8 = 1;
const FLAG_SESSION: u8 = 2;

/// The body of synthetic traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    origin_ns: u64,
    voice: bool,
    len: u8,
    path: [u32; MAX_PATH],
    session: Option<u64>,
}

impl Trace {
    /// A new trace that started at `origin_ns`; `voice` marks the voice
    /// path (it started as an audio frame).
    pub fn new(origin_ns: u64, voice: bool) -> Self {
        Self {
            origin_ns,
            voice,
            len: 0,
            path: [0; MAX_PATH],
            session: None,
        }
    }

    /// This trace as part of session `session`.
    pub fn with_session(self, session: u64) -> Self {
        Self {
            session: Some(session),
            ..self
        }
    }

    /// The session it belongs to, if any.
    pub fn session(&self) -> Option<u64> {
        self.session
    }

    /// Reads a trace from untrusted bytes; `None` if they are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let origin_ns = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let flags = *bytes.get(8)?;
        let len = *bytes.get(9)?;
        if flags & !(FLAG_VOICE | FLAG_SESSION) != 0 || usize::from(len) > MAX_PATH {
            return None;
        }
        let path_end = 10 + 4 * usize::from(len);
        let session = if flags & FLAG_SESSION != 0 {
            let tail = bytes.get(path_end..)?;
            Some(u64::from_le_bytes(tail.try_into().ok()?))
        } else if bytes.len() == path_end {
            None
        } else {
            return None;
        };
        let ids = bytes.get(10..path_end)?;
        let mut path = [0; MAX_PATH];
        for (slot, chunk) in path.iter_mut().zip(ids.chunks_exact(4)) {
            *slot = u32::from_le_bytes(chunk.try_into().ok()?);
        }
        Some(Self {
            origin_ns,
            voice: flags & FLAG_VOICE != 0,
            len,
            path,
            session,
        })
    }

    /// Writes the trace into `out`; returns the bytes used.
    pub fn encode<'a>(&self, out: &'a mut [u8; TRACE_BYTES]) -> &'a [u8] {
        out[..8].copy_from_slice(&self.origin_ns.to_le_bytes());
        let session = if self.session.is_some() {
            FLAG_SESSION
        } else {
            0
        };
        out[8] = session | if self.voice { FLAG_VOICE } else { 0 };
        out[9] = self.len;
        for (i, id) in self.path().iter().enumerate() {
            out[10 + 4 * i..14 + 4 * i].copy_from_slice(&id.to_le_bytes());
        }
        let end = 10 + 4 * usize::from(self.len);
        match self.session {
            Some(key) => {
                out[end..end + 8].copy_from_slice(&key.to_le_bytes());
                &out[..end + 8]
            }
            None => &out[..end],
        }
    }

    /// When the work started (CLOCK_MONOTONIC ns).
    pub fn origin_ns(&self) -> u64 {
        self.origin_ns
    }

    /// Whether it is on the voice path.
    pub fn voice(&self) -> bool {
        self.voice
    }

    /// The agents it passed through, first to last.
    pub fn path(&self) -> &[u32] {
        &self.path[..usize::from(self.len)]
    }

    /// Whether `agent` is on the path.
    pub fn visited(&self, agent: AgentId) -> bool {
        self.path().contains(&agent.0)
    }

    /// The trace `agent` passes on to its calls and events: this one with
    /// `agent` added; `None` once the path is full (no deeper calls).
    pub fn through(&self, agent: AgentId) -> Option<Self> {
        let len = usize::from(self.len);
        if len == MAX_PATH {
            return None;
        }
        let mut next = *self;
        next.path[len] = agent.0;
        next.len += 1;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_trace_round_trips_with_its_path() {
        let sut = Trace::new(42, true)
            .through(AgentId(7))
            .and_then(|t| t.through(AgentId(9)))
            .unwrap();
        let mut buf = [0; TRACE_BYTES];
        let back = Trace::decode(sut.encode(&mut buf)).unwrap();
        assert_eq!(back, sut);
        assert_eq!(back.path(), &[7, 9]);
        assert!(back.voice() && back.visited(AgentId(9)) && !back.visited(AgentId(8)));
        assert_eq!(back.origin_ns(), 42);
    }

    #[test]
    fn a_session_rides_after_the_path_and_passes_through() {
        let sut = Trace::new(5, false)
            .with_session(77)
            .through(AgentId(3))
            .unwrap();
        let mut buf = [0; TRACE_BYTES];
        let bytes = sut.encode(&mut buf).to_vec();
        assert_eq!(bytes.len(), 10 + 4 + 8);
        let back = Trace::decode(&bytes).unwrap();
        assert_eq!((back.session(), back.path()), (Some(77), &[3][..]));
        assert!(Trace::decode(&bytes[..bytes.len() - 1]).is_none());
        assert_eq!(Trace::new(0, false).session(), None);
    }

    #[test]
    fn a_full_path_goes_no_deeper() {
        let mut sut = Trace::new(0, false);
        for id in 0..MAX_PATH as u32 {
            sut = sut.through(AgentId(id)).unwrap();
        }
        assert_eq!(sut.through(AgentId(99)), None);
    }

    #[test]
    fn lengths_that_disagree_and_unknown_flags_are_refused() {
        let mut buf = [0; TRACE_BYTES];
        let good = Trace::new(1, false).through(AgentId(3)).unwrap();
        let bytes = good.encode(&mut buf).to_vec();
        assert!(Trace::decode(&bytes[..bytes.len() - 1]).is_none());
        let mut long = bytes.clone();
        long.push(0);
        assert!(Trace::decode(&long).is_none());
        let mut flags = bytes.clone();
        flags[8] = 0x80;
        assert!(Trace::decode(&flags).is_none());
        let mut deep = bytes;
        deep[9] = MAX_PATH as u8 + 1;
        assert!(Trace::decode(&deep).is_none());
        assert!(Trace::decode(&[]).is_none());
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic_and_what_decodes_re_encodes(
            bytes in proptest::collection::vec(any::<u8>(), 0..80)
        ) {
            if let Some(trace) = Trace::decode(&bytes) {
                let mut buf = [0; TRACE_BYTES];
                prop_assert_eq!(trace.encode(&mut buf), bytes.as_slice());
            }
        }
    }
}
