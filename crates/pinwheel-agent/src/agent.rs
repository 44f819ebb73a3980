//! [`Agent`]: receive requests, answer them, call other agents, publish
//! and subscribe; see the crate doc for the threading design.
//!
//! Drills: the daemon sends the drill the agent is under on its link; the
//! reader keeps it in one atomic word, and [`Request::reply`] applies it
//! (see there), so an application needs no code of its own for them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pinwheel_ipc::drill::{FaultSpec, STATUS_DRILL_ERROR};
use pinwheel_ipc::link::{Facts, LinkMessage, Named};
use pinwheel_ipc::ring::{Consumer, PeerLink, Producer, RingError};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, Priority, TopicId};

use crate::AgentError;
use crate::attach::{self, Attached};
use crate::drill::{Draws, Handled, Shaped, shape};
use crate::inbox::{Frame, Incoming, Input};
use crate::park::Parker;
use crate::pending::PendingCall;

/// Longest a reader parks before it looks at the link again (a spinning
/// reader never parks, so this is how it notices a daemon that left).
const LINK_CHECK: Duration = Duration::from_millis(50);
/// Frames one reader pass takes before handing over.
const BATCH: usize = 64;
/// How long a send waits for room on the ring to the daemon.
const SEND_PATIENCE: Duration = Duration::from_secs(1);
/// Reply status the SDK answers a request with when its queue is full.
pub const STATUS_OVERLOADED: u16 = 503;
/// Reader passes that found frames after which it looks at the link even
/// though no one waits for an answer there (a drill), so a busy ring
/// cannot hold a link message off for long.
const LINK_EVERY: u32 = 64;

/// An agent attached to the daemon. Cheap to clone; every clone is the
/// same agent.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    facts: Facts,
    link: PeerLink,
    out: Mutex<Producer>,
    input: Mutex<Input>,
    arrived: Condvar,
    reader: Mutex<Reader>,
    next_correlation: AtomicU64,
    /// The drill the daemon said the agent is under, as its word.
    drill: AtomicU64,
    /// Draws for a drill's error chance.
    draws: Draws,
    /// The next model use's number.
    next_use: AtomicU32,
}

#[derive(Debug)]
struct Reader {
    consumer: Consumer,
    parker: Parker,
    /// Passes that found frames since the link was last read.
    busy_passes: u32,
}

/// A request to this agent.
#[derive(Debug)]
pub struct Request {
    agent: Agent,
    incoming: Incoming,
    method: Arc<str>,
    /// When the application got it: a drill's slow-down scales the
    /// handling from here to the reply.
    received: Instant,
}

/// The answer to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 0 for success; otherwise the callee's (or the daemon's) code.
    pub status: u16,
    /// The callee's answer.
    pub body: Vec<u8>,
}

impl Agent {
    /// Attaches as the environment says (see the crate doc).
    pub fn from_env() -> Result<Self, AgentError> {
        let (name, link) = attach::link_from_env()?;
        Self::hello(name, link)
    }

    /// Attaches as `name` through the daemon's attach socket at `path`
    /// (kind `external`).
    pub fn connect(path: &std::path::Path, name: &str) -> Result<Self, AgentError> {
        Self::hello(name.to_owned(), attach::connect_socket(path)?)
    }

    /// Attaches as `name` over an already connected link.
    pub fn hello(name: String, link: PeerLink) -> Result<Self, AgentError> {
        let Attached {
            name,
            link,
            facts,
            inbound,
            outbound,
        } = attach::hello(name, link)?;
        let mut input = Input::new(&facts.subscribes);
        input.methods.learn_all(&facts.methods);
        let parker = Parker::new(link.as_fd());
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                link,
                out: Mutex::new(outbound),
                input: Mutex::new(input),
                arrived: Condvar::new(),
                reader: Mutex::new(Reader {
                    consumer: inbound,
                    parker,
                    busy_passes: 0,
                }),
                next_correlation: AtomicU64::new(1),
                drill: AtomicU64::new(facts.drill.to_bits()),
                draws: Draws::new(u64::from(std::process::id()) ^ now_ns()),
                next_use: AtomicU32::new(1),
                facts,
            }),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The agents it may call, in its manifest's order.
    pub fn calls(&self) -> impl Iterator<Item = &str> {
        self.inner.facts.calls.iter().map(|c| c.name.as_str())
    }

    /// The topics it may publish.
    pub fn publishes(&self) -> impl Iterator<Item = &str> {
        self.inner.facts.publishes.iter().map(|c| c.name.as_str())
    }

    /// The incarnation the daemon is at (counts restarts and re-attaches).
    pub fn epoch(&self) -> u64 {
        self.inner.facts.epoch
    }

    /// The drill the daemon has put the agent under
    /// ([`FaultSpec::NONE`] when none); [`Request::reply`] applies it.
    pub fn drill(&self) -> FaultSpec {
        // SYNC: Relaxed; a value on its own, read once per reply.
        let bits = self.inner.drill.load(Ordering::Relaxed);
        FaultSpec::from_bits(bits).unwrap_or(FaultSpec::NONE)
    }

    /// Its manifest facts.
    pub(crate) fn facts(&self) -> &Facts {
        &self.inner.facts
    }

    /// How the reader parks: `uring` or `poll`.
    pub fn parking(&self) -> &'static str {
        lock(&self.inner.reader).parker.name()
    }

    /// Waits up to `timeout` for the next request; `None` when none came.
    /// [`AgentError::Disconnected`] when the daemon closed the link: the
    /// agent should exit.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Request>, AgentError> {
        let deadline = Instant::now() + timeout;
        let Some(incoming) = self.wait_for(deadline, |input| input.requests.pop_front())? else {
            return Ok(None);
        };
        let method = self.method_name(incoming.method, deadline)?;
        Ok(Some(Request {
            agent: self.clone(),
            incoming,
            method,
            received: Instant::now(),
        }))
    }

    /// Calls `callee` (one of [`Agent::calls`]) and waits up to `timeout`
    /// for its reply, whatever its status.
    pub fn call(
        &self,
        callee: &str,
        method: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Reply, AgentError> {
        let pending = self.send_call(callee, method, body, timeout)?;
        loop {
            if let Some(reply) = pending.wait(timeout)? {
                return Ok(reply);
            }
        }
    }

    /// Sends a call to `callee` (one of [`Agent::calls`]) whose reply is
    /// waited for up to `timeout`, in as many pieces as the caller likes
    /// ([`PendingCall::wait`]); dropping the [`PendingCall`] gives it up.
    pub fn send_call(
        &self,
        callee: &str,
        method: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<PendingCall, AgentError> {
        let correlation = self.start_call(callee, method, body, timeout)?;
        Ok(PendingCall::new(self.clone(), correlation, timeout))
    }

    /// Sends a call's request; returns the correlation its reply will
    /// carry (registered as waited for).
    fn start_call(
        &self,
        callee: &str,
        method: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<u64, AgentError> {
        let to = find(&self.inner.facts.calls, callee).ok_or_else(|| AgentError::NotAllowed {
            reason: format!(
                "agent {} may not call {callee:?}: add it to `calls` in the manifest",
                self.inner.name
            ),
        })?;
        let method = self.method_id(method, Instant::now() + timeout)?;
        // SYNC: Relaxed; only uniqueness matters.
        let correlation = self.inner.next_correlation.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.input).waiting.insert(correlation);
        let sent_ns = now_ns();
        let sent = self.send(&Envelope {
            from: AgentId(self.inner.facts.agent),
            to: AgentId(to),
            topic: TopicId::NONE,
            priority: Priority::Normal,
            correlation,
            sent_ns,
            deadline_ns: sent_ns + timeout.as_nanos() as u64,
            payload: Payload::Request { method, body },
        });
        if let Err(err) = sent {
            lock(&self.inner.input).waiting.remove(&correlation);
            return Err(err);
        }
        Ok(correlation)
    }

    /// A request handed to the application, its method named.
    #[cfg(feature = "async")]
    pub(crate) fn request(&self, incoming: Incoming) -> Result<Request, AgentError> {
        let method = self.method_name(incoming.method, Instant::now())?;
        Ok(Request {
            agent: self.clone(),
            incoming,
            method,
            received: Instant::now(),
        })
    }

    /// Publishes `body` on `topic` (one of its manifest's `publishes`).
    pub fn publish(&self, topic: &str, body: &[u8]) -> Result<(), AgentError> {
        let id =
            find(&self.inner.facts.publishes, topic).ok_or_else(|| AgentError::NotAllowed {
                reason: format!(
                    "agent {} may not publish {topic:?}: add it to `publishes` in the manifest",
                    self.inner.name
                ),
            })?;
        let me = AgentId(self.inner.facts.agent);
        self.send(&Envelope {
            from: me,
            to: me,
            topic: TopicId(id),
            priority: Priority::Normal,
            correlation: 0,
            sent_ns: now_ns(),
            deadline_ns: 0,
            payload: Payload::Event { body },
        })
    }

    /// A number for a new model use.
    pub(crate) fn next_use_id(&self) -> u32 {
        // SYNC: Relaxed; only uniqueness matters.
        self.inner.next_use.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a message on the link.
    pub(crate) fn send_link(&self, message: &LinkMessage) -> Result<(), AgentError> {
        self.inner
            .link
            .send_message(message)
            .map_err(AgentError::link)
    }

    fn send(&self, env: &Envelope<'_>) -> Result<(), AgentError> {
        if let Some(err) = &lock(&self.inner.input).gone {
            return Err(err.clone());
        }
        lock(&self.inner.out)
            .send(env, SEND_PATIENCE)
            .map_err(AgentError::link)
    }

    /// Waits until `take` finds something, the deadline passes (`None`),
    /// or the agent can no longer talk to the daemon. One waiting thread
    /// reads the ring at a time; the others wait for what it files.
    pub(crate) fn wait_for<T>(
        &self,
        deadline: Instant,
        mut take: impl FnMut(&mut Input) -> Option<T>,
    ) -> Result<Option<T>, AgentError> {
        let inner = &*self.inner;
        let mut input = lock(&inner.input);
        loop {
            if let Some(found) = take(&mut input) {
                return Ok(Some(found));
            }
            if let Some(err) = &input.gone {
                return Err(err.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if input.reading {
                input.waiters += 1;
                input = inner
                    .arrived
                    .wait_timeout(input, deadline - now)
                    .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
                input.waiters -= 1;
                continue;
            }
            input.reading = true;
            drop(input);
            let read = self.read(deadline);
            input = lock(&inner.input);
            input.reading = false;
            if let Err(err) = read {
                input.gone.get_or_insert(err);
            }
            if input.waiters > 0 {
                inner.arrived.notify_all();
            }
        }
    }

    /// One reader pass: waits for frames (or the link) until `deadline`,
    /// at most [`LINK_CHECK`], and files what it finds.
    pub(crate) fn read(&self, deadline: Instant) -> Result<(), AgentError> {
        let inner = &*self.inner;
        let mut reader = lock(&inner.reader);
        let Reader {
            consumer,
            parker,
            busy_passes,
        } = &mut *reader;
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(LINK_CHECK);
        let ready = consumer
            .wait_with(slice, |bell, left| parker.park(bell, left))
            .map_err(AgentError::link)?;
        if !ready {
            *busy_passes = 0;
            return self.read_link();
        }
        *busy_passes += 1;
        if *busy_passes >= LINK_EVERY || lock(&inner.input).link_waiters > 0 {
            *busy_passes = 0;
            self.read_link()?;
        }
        let mut refused = Vec::new();
        for _ in 0..BATCH {
            let Some(frame) =
                consumer
                    .try_recv_envelope(Frame::of)
                    .map_err(|err| AgentError::Protocol {
                        reason: format!("the daemon's ring: {err}"),
                    })?
            else {
                break;
            };
            let mut input = lock(&inner.input);
            refused.extend(input.file(frame));
            #[cfg(feature = "async")]
            input.wake();
            if input.waiters > 0 {
                inner.arrived.notify_all();
            }
        }
        drop(reader);
        for request in refused {
            self.answer(&request, STATUS_OVERLOADED, &[])?;
        }
        Ok(())
    }

    /// Takes every message waiting on the link.
    fn read_link(&self) -> Result<(), AgentError> {
        loop {
            match self.inner.link.try_recv_message() {
                Ok(None) => return Ok(()),
                Ok(Some(LinkMessage::MethodId { id, name })) => {
                    let mut input = lock(&self.inner.input);
                    if name.is_empty() {
                        input.unknown_methods.insert(id);
                    } else {
                        input.methods.learn(&name, u32::from(id));
                    }
                    self.filed(input);
                }
                Ok(Some(LinkMessage::Drill(fault))) => {
                    // SYNC: Relaxed; see `drill`.
                    self.inner.drill.store(fault.to_bits(), Ordering::Relaxed);
                }
                Ok(Some(LinkMessage::ModelGranted { id })) => {
                    let mut input = lock(&self.inner.input);
                    input.answer_use(id, Ok(()));
                    self.filed(input);
                }
                Ok(Some(LinkMessage::ModelDenied { id, reason })) => {
                    let mut input = lock(&self.inner.input);
                    input.answer_use(id, Err(reason));
                    self.filed(input);
                }
                Ok(Some(other)) => {
                    return Err(AgentError::Protocol {
                        reason: format!("unexpected link message {other:?}"),
                    });
                }
                Err(RingError::PeerGone) => return Err(AgentError::Disconnected),
                Err(err) => return Err(AgentError::link(err)),
            }
        }
    }

    /// Wakes whoever waits for what was just filed in `input`.
    fn filed(&self, input: MutexGuard<'_, Input>) {
        #[cfg(feature = "async")]
        let input = {
            let mut input = input;
            input.wake();
            input
        };
        if input.waiters > 0 {
            self.inner.arrived.notify_all();
        }
    }

    /// The number of method `name`, asking the daemon if new.
    fn method_id(&self, name: &str, deadline: Instant) -> Result<u16, AgentError> {
        if let Some(id) = lock(&self.inner.input).methods.id(name) {
            return Ok(id);
        }
        self.send_link(&LinkMessage::Method { name: name.into() })?;
        let found = self.wait_for_link(deadline, |input| input.methods.id(name))?;
        found.ok_or(AgentError::Timeout { waited_ms: 0 })
    }

    /// The name of method number `id`, asking the daemon if new; `#id`
    /// when the daemon has no name for it.
    fn method_name(&self, id: u16, deadline: Instant) -> Result<Arc<str>, AgentError> {
        let known = |input: &mut Input| match input.methods.name(id) {
            Some(name) => Some(name),
            None if input.unknown_methods.contains(&id) => Some(format!("#{id}").into()),
            None => None,
        };
        if let Some(name) = known(&mut lock(&self.inner.input)) {
            return Ok(name);
        }
        self.send_link(&LinkMessage::MethodName { id })?;
        let deadline = deadline.max(Instant::now() + Duration::from_secs(1));
        Ok(self
            .wait_for_link(deadline, known)?
            .unwrap_or_else(|| format!("#{id}").into()))
    }

    fn answer(&self, request: &Incoming, status: u16, body: &[u8]) -> Result<(), AgentError> {
        let me = AgentId(self.inner.facts.agent);
        self.send(&Envelope {
            from: me,
            to: AgentId(request.from),
            topic: TopicId::NONE,
            priority: request.priority,
            correlation: request.correlation,
            sent_ns: request.sent_ns,
            deadline_ns: request.deadline_ns,
            payload: Payload::Reply { status, body },
        })
    }

    /// Like `wait_for`, for an answer that comes on the link: while it
    /// waits, the reader reads the link on every pass.
    pub(crate) fn wait_for_link<T>(
        &self,
        deadline: Instant,
        take: impl FnMut(&mut Input) -> Option<T>,
    ) -> Result<Option<T>, AgentError> {
        self.input().link_waiters += 1;
        let found = self.wait_for(deadline, take);
        self.input().link_waiters -= 1;
        found
    }

    pub(crate) fn input(&self) -> MutexGuard<'_, Input> {
        lock(&self.inner.input)
    }
}

impl Request {
    /// The method called.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The arguments.
    pub fn body(&self) -> &[u8] {
        &self.incoming.body
    }

    /// When the caller stops waiting (CLOCK_MONOTONIC ns; 0: never).
    pub fn deadline_ns(&self) -> u64 {
        self.incoming.deadline_ns
    }

    /// Answers the request: `status` 0 for success.
    ///
    /// Under a drill ([`Agent::drill`]) the answer is what the drill
    /// says: `stall` sends nothing (the caller times out); `error=P`
    /// answers a share P with [`STATUS_DRILL_ERROR`] and no body instead,
    /// at once; `slow=Kx` first waits, on this thread, until the request
    /// has taken K times as long as its handling (from `recv` to this
    /// call), and sends nothing if that is past its deadline (the daemon
    /// has answered the caller "timed out" by then).
    pub fn reply(self, status: u16, body: &[u8]) -> Result<(), AgentError> {
        let drill = self.agent.drill();
        if drill.is_none() {
            return self.agent.answer(&self.incoming, status, body);
        }
        let deadline = self.incoming.deadline_ns;
        let handled = Handled {
            handled: self.received.elapsed(),
            left: (deadline != 0).then(|| Duration::from_nanos(deadline.saturating_sub(now_ns()))),
        };
        match shape(drill, self.agent.inner.draws.next(), handled) {
            Shaped::Send { after } => {
                std::thread::sleep(after);
                self.agent.answer(&self.incoming, status, body)
            }
            Shaped::Fail => self.agent.answer(&self.incoming, STATUS_DRILL_ERROR, &[]),
            Shaped::Withhold { after } => {
                std::thread::sleep(after);
                Ok(())
            }
        }
    }
}

/// The number of `name` in `list`.
pub(crate) fn find(list: &[Named], name: &str) -> Option<u32> {
    list.iter().find(|n| n.name == name).map(|n| n.id)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these leaves plain data behind, never a
    // broken invariant worth refusing service over.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// CLOCK_MONOTONIC now, nanoseconds: the clock envelopes carry.
pub fn now_ns() -> u64 {
    let time = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC always exists");
    (time.tv_sec() as u64).saturating_mul(1_000_000_000) + time.tv_nsec() as u64
}
