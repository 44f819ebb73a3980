//! What the reader found and has not been taken yet: requests for
//! `recv`, replies for waiting calls, events for subscriptions, and the
//! daemon's answers about method names and model uses. All of it sits behind one mutex
//! ([`Input`]); the reader adds, the waiting threads take.
//!
//! Everything is bounded: requests beyond [`MAX_QUEUED_REQUESTS`] are
//! answered "overloaded" by the reader instead of queued, events beyond
//! [`MAX_QUEUED_EVENTS`] per topic push out the oldest, a reply no call
//! waits for (it timed out) is dropped, and so is the answer to a model
//! use no one waits for; the method table holds the daemon's numbers only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use pinwheel_ipc::link::Named;
use pinwheel_ipc::wire::{ArchivedEnvelope, Payload, Priority};

use crate::AgentError;

/// Requests waiting for `recv` at most.
pub const MAX_QUEUED_REQUESTS: usize = 4096;
/// Events waiting per topic at most.
pub const MAX_QUEUED_EVENTS: usize = 1024;

/// A request as read from the ring, before its method has a name.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub from: u32,
    pub correlation: u64,
    pub priority: Priority,
    pub sent_ns: u64,
    pub deadline_ns: u64,
    pub method: u16,
    pub body: Vec<u8>,
}

/// What one frame was.
#[derive(Debug)]
pub(crate) enum Frame {
    Request(Incoming),
    Reply {
        correlation: u64,
        status: u16,
        body: Vec<u8>,
    },
    Event {
        topic: u32,
        body: Vec<u8>,
    },
    Other,
}

impl Frame {
    /// Copies what matters out of a checked envelope.
    pub fn of(env: &ArchivedEnvelope<'_>) -> Self {
        let native = env.to_envelope();
        match native.payload {
            Payload::Request { method, body } => Frame::Request(Incoming {
                from: native.from.0,
                correlation: native.correlation,
                priority: native.priority,
                sent_ns: native.sent_ns,
                deadline_ns: native.deadline_ns,
                method,
                body: body.to_vec(),
            }),
            Payload::Reply { status, body } => Frame::Reply {
                correlation: native.correlation,
                status,
                body: body.to_vec(),
            },
            Payload::Event { body } => Frame::Event {
                topic: native.topic.0,
                body: body.to_vec(),
            },
            _ => Frame::Other,
        }
    }
}

/// The method table: the daemon's numbers for method names.
#[derive(Debug, Default)]
pub(crate) struct Methods {
    by_name: HashMap<Arc<str>, u16>,
    by_id: HashMap<u16, Arc<str>>,
}

impl Methods {
    /// Learns `name` = `id` (ids above `u16::MAX` are ignored).
    pub fn learn(&mut self, name: &str, id: u32) {
        let Ok(id) = u16::try_from(id) else { return };
        if id == 0 || name.is_empty() {
            return;
        }
        let name: Arc<str> = name.into();
        self.by_name.insert(Arc::clone(&name), id);
        self.by_id.insert(id, name);
    }

    /// Learns the table the welcome carried.
    pub fn learn_all(&mut self, table: &[Named]) {
        for entry in table {
            self.learn(&entry.name, entry.id);
        }
    }

    pub fn id(&self, name: &str) -> Option<u16> {
        self.by_name.get(name).copied()
    }

    pub fn name(&self, id: u16) -> Option<Arc<str>> {
        self.by_id.get(&id).cloned()
    }
}

/// Everything waiting to be taken.
#[derive(Debug, Default)]
pub(crate) struct Input {
    pub requests: VecDeque<Incoming>,
    pub replies: HashMap<u64, (u16, Vec<u8>)>,
    pub waiting: HashSet<u64>,
    pub events: HashMap<u32, VecDeque<Vec<u8>>>,
    pub methods: Methods,
    /// Method numbers the daemon said it does not know.
    pub unknown_methods: HashSet<u16>,
    /// Whether a thread is reading the ring now.
    pub reading: bool,
    /// Threads waiting on the condition variable (std's `notify_all` is a
    /// system call even with none, so it is made only when one waits).
    pub waiters: usize,
    /// Waits for an answer on the link (a method's name or number, a
    /// model use): while there are any, the reader reads the link on
    /// every pass, not only when the ring is idle.
    pub link_waiters: usize,
    /// Model uses asked for and not answered yet.
    pub uses_asked: HashSet<u32>,
    /// The daemon's answers to them: granted, or denied with a reason.
    pub uses_answered: HashMap<u32, Result<(), String>>,
    /// Why the agent can no longer talk to the daemon, once it cannot.
    pub gone: Option<AgentError>,
    /// Events dropped because their topic's queue was full.
    pub dropped_events: u64,
    #[cfg(feature = "async")]
    pub wakers: Vec<std::task::Waker>,
}

impl Input {
    /// An input that queues events of `topics`.
    pub fn new(topics: &[Named]) -> Self {
        let mut input = Self::default();
        for topic in topics {
            input.events.insert(topic.id, VecDeque::new());
        }
        input
    }

    /// Files a frame. A request that does not fit is handed back for the
    /// caller to refuse.
    pub fn file(&mut self, frame: Frame) -> Option<Incoming> {
        match frame {
            Frame::Request(request) if self.requests.len() >= MAX_QUEUED_REQUESTS => {
                return Some(request);
            }
            Frame::Request(request) => self.requests.push_back(request),
            Frame::Reply {
                correlation,
                status,
                body,
            } => {
                if self.waiting.remove(&correlation) {
                    self.replies.insert(correlation, (status, body));
                }
            }
            Frame::Event { topic, body } => {
                if let Some(queue) = self.events.get_mut(&topic) {
                    if queue.len() >= MAX_QUEUED_EVENTS {
                        queue.pop_front();
                        self.dropped_events += 1;
                    }
                    queue.push_back(body);
                }
            }
            Frame::Other => {}
        }
        None
    }

    /// Files the daemon's answer to model use `id`, if it is still asked
    /// for (one given up is released by the SDK already).
    pub fn answer_use(&mut self, id: u32, answer: Result<(), String>) {
        if self.uses_asked.remove(&id) {
            self.uses_answered.insert(id, answer);
        }
    }

    /// Wakes the futures waiting on this input.
    #[cfg(feature = "async")]
    pub fn wake(&mut self) {
        for waker in self.wakers.drain(..) {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_no_call_waits_for_is_dropped() {
        let mut sut = Input::new(&[]);
        sut.waiting.insert(7);
        sut.file(Frame::Reply {
            correlation: 8,
            status: 0,
            body: vec![],
        });
        sut.file(Frame::Reply {
            correlation: 7,
            status: 1,
            body: vec![],
        });
        assert_eq!(sut.replies.len(), 1);
        assert!(sut.waiting.is_empty());
    }

    #[test]
    fn a_full_topic_queue_drops_its_oldest_event_and_unknown_topics_are_ignored() {
        let mut sut = Input::new(&[Named {
            name: "t".into(),
            id: 1,
        }]);
        for i in 0..=MAX_QUEUED_EVENTS {
            sut.file(Frame::Event {
                topic: 1,
                body: vec![i as u8],
            });
        }
        sut.file(Frame::Event {
            topic: 2,
            body: vec![],
        });
        assert_eq!(sut.events[&1].len(), MAX_QUEUED_EVENTS);
        assert_eq!(sut.events[&1][0], vec![1u8]);
        assert_eq!(sut.dropped_events, 1);
        assert!(!sut.events.contains_key(&2));
    }

    #[test]
    fn an_answer_to_a_model_use_no_one_asked_for_is_dropped() {
        let mut sut = Input::new(&[]);
        sut.uses_asked.insert(4);
        sut.answer_use(5, Ok(()));
        sut.answer_use(4, Err("too large".into()));
        sut.answer_use(4, Ok(()));
        assert_eq!(sut.uses_answered.len(), 1);
        assert_eq!(sut.uses_answered[&4], Err("too large".into()));
        assert!(sut.uses_asked.is_empty());
    }

    #[test]
    fn the_method_table_ignores_zero_and_numbers_past_u16() {
        let mut sut = Methods::default();
        sut.learn("work", 1);
        sut.learn("x", 0);
        sut.learn("y", 70_000);
        assert_eq!(sut.id("work"), Some(1));
        assert_eq!(sut.name(1).as_deref(), Some("work"));
        assert_eq!((sut.id("x"), sut.id("y")), (None, None));
    }
}
