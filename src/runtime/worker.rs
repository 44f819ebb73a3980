//! A worker: one task that takes an agent's messages and runs its handler.
//!
//! An agent with concurrency N has N workers on its executor, sharing the
//! agent value, its inbox and its supervisor. Each message's handler runs
//! against the message's deadline (or [`DEFAULT_LIMIT`] when it has none)
//! on the worker's own reusable timer: a handler that overruns is dropped,
//! which cancels whatever it was waiting on. A request the handler did not
//! answer is answered for it: failed, or timed out. Failures go to the
//! supervisor; when it isolates the agent, the worker that saw the last
//! failure pauses the inbox, answers what was queued with "unavailable",
//! waits out the backoff, resets and restarts the agent, and resumes
//! (marked isolated on the board meanwhile, so callers' balancers skip
//! it). The
//! other workers simply wait, and the executor's other agents go on. A
//! request that waited in the inbox past its deadline is answered as timed
//! out without running the handler, and is not held against the agent.
//!
//! A message pushed while one of the agent's workers waits idle and
//! nothing is queued is served on the sender's task instead
//! ([`InlineServer`]): the same handling, on a seat reserved for it, with
//! that worker lent to it. Most handlers of a mesh finish without waiting
//! (they answer, or call agents that answer the same way), and each such
//! message then costs no task wake-up and no pass of the executor's run
//! queue, twice per local call: once for the callee's worker and once for
//! the caller's resumption. The handler runs in the sender's glommio task
//! queue, not its own agent's, until it first waits.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::agent::{Agent, Message};
use super::board::AgentFlags;
use super::ctx::Ctx;
use super::inbox::{Inline, Resume, Started, Work};
use super::node::{Node, STATUS_FAILED, STATUS_TIMEOUT, STATUS_UNAVAILABLE};
use super::pool::FrameBuf;
use super::supervisor::{Supervisor, Verdict};
use super::timers::Timer;
use pinwheel_ipc::wire::{AgentId, PayloadKind};

/// How long a handler may run on a message without a deadline.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(5);

/// How a handler ended.
enum Outcome {
    Done,
    Failed,
    Overran,
    /// The deadline had passed before the handler could start.
    Expired,
}

/// Serves the agent's inbox until it closes.
pub async fn run_worker<A: Agent>(agent: &A, ctx: &Ctx, supervisor: &RefCell<Supervisor>) {
    let mut deadline = Timer::new(ctx.node().timers());
    let inbox = ctx.node().inbox(ctx.me());
    while let Some(work) = inbox.recv().await {
        match work {
            Work::Message(frame) => serve(agent, ctx, supervisor, frame, &mut deadline).await,
            Work::Resume(rest) => rest.await,
        }
    }
}

/// Handles one message: its handler against its deadline, the agent's
/// counts, and the supervisor's verdict on a failure.
async fn serve<A: Agent>(
    agent: &A,
    ctx: &Ctx,
    supervisor: &RefCell<Supervisor>,
    frame: FrameBuf,
    deadline: &mut Timer,
) {
    let Ok(msg) = Message::new(frame) else {
        return;
    };
    ctx.node().hold();
    let began = ctx.now_ns();
    let outcome = handle_one(agent, ctx, &msg, deadline, began).await;
    ctx.stats()
        .record_service(ctx.me(), ctx.now_ns().saturating_sub(began));
    ctx.node().release();
    match outcome {
        Outcome::Done => {
            ctx.stats().update_agent(ctx.me(), |c| c.handled += 1);
            return;
        }
        Outcome::Expired => {
            ctx.stats().update_agent(ctx.me(), |c| c.expired += 1);
            return;
        }
        Outcome::Failed | Outcome::Overran => {
            ctx.stats().update_agent(ctx.me(), |c| c.handled += 1);
        }
    }
    ctx.stats().update_agent(ctx.me(), |c| c.failures += 1);
    let verdict = supervisor.borrow_mut().on_failure(ctx.now_ns());
    if let Verdict::Isolate { until_ns } = verdict {
        isolate(agent, ctx, supervisor, until_ns).await;
    }
}

/// Runs an agent's handlers on the sender's task while one of its workers
/// waits idle (the inbox's [`Inline`] server; the inbox lends it that
/// worker). The handler runs against the message's deadline, counts and
/// fails exactly as on a worker.
///
/// A handler's state needs a place that outlives the sender's call when
/// the handler waits: a seat, one per worker, reserved when the agent
/// starts (a lent worker stands behind each seat in use, so there is
/// always a free one). A handler that finishes frees its seat at once;
/// one that waits travels in its seat to a worker ([`Resume`]), which
/// gives it back when the handler ends. Nothing is allocated per message.
///
/// An agent whose handlers keep waiting in their first poll gains nothing
/// here (a worker is woken for the rest all the same), so after
/// [`MISS_LIMIT`] such handlers in a row it is offered only one message in
/// [`PROBE_EVERY`], until one finishes again.
pub struct InlineServer {
    me: AgentId,
    seats: Rc<Seats>,
    node: Rc<Node>,
    misses: Cell<u32>,
    declined: Cell<u32>,
}

/// Handlers in a row that waited in their first poll before an agent is
/// offered fewer messages inline.
const MISS_LIMIT: u32 = 8;
/// One message in this many is offered inline to an agent past
/// [`MISS_LIMIT`].
const PROBE_EVERY: u32 = 64;
/// Most handlers run inline inside one another on one task (a chain of
/// local calls each answered inline).
const MAX_DEPTH: u32 = 16;

/// An inline server's free seats.
type Seats = RefCell<Vec<Box<dyn Seat>>>;

impl InlineServer {
    /// The inline server of `agent`, with a seat for each of its
    /// `workers`, which share `supervisor`; `ctx` is the agent's (each
    /// seat has a fork of it).
    pub fn new<A: Agent + 'static>(
        agent: &Rc<A>,
        supervisor: &Rc<RefCell<Supervisor>>,
        ctx: &Ctx,
        workers: usize,
    ) -> Self {
        let seats = Rc::new(RefCell::new(Vec::with_capacity(workers)));
        for _ in 0..workers {
            // Like a worker's, the seat's context serves one message after
            // another (its sleep timer too).
            let (agent, supervisor, ctx) =
                (Rc::clone(agent), Rc::clone(supervisor), Rc::new(ctx.fork()));
            let serve_one = move |frame| {
                let (agent, supervisor, ctx) =
                    (Rc::clone(&agent), Rc::clone(&supervisor), Rc::clone(&ctx));
                async move {
                    let mut deadline = Timer::new(ctx.node().timers());
                    serve(&*agent, &ctx, &supervisor, frame, &mut deadline).await;
                }
            };
            let seat: Box<dyn Seat> = Box::new(Held {
                serve_one,
                handler: Box::pin(None),
                home: Rc::downgrade(&seats),
            });
            seats.borrow_mut().push(seat);
        }
        Self {
            me: ctx.me(),
            seats,
            node: Rc::clone(ctx.node_rc()),
            misses: Cell::new(0),
            declined: Cell::new(0),
        }
    }
}

impl std::fmt::Debug for InlineServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineServer")
            .field("agent", &self.me)
            .field("free_seats", &self.seats.borrow().len())
            .field("misses", &self.misses.get())
            .finish_non_exhaustive()
    }
}

impl Inline for InlineServer {
    fn serve(&self, frame: FrameBuf) -> Result<Option<Resume>, FrameBuf> {
        if self.misses.get() >= MISS_LIMIT {
            let declined = self.declined.get() + 1;
            self.declined.set(declined % PROBE_EVERY);
            if declined < PROBE_EVERY {
                return Err(frame);
            }
        }
        let Some(_level) = self.node.enter_inline(MAX_DEPTH) else {
            return Err(frame);
        };
        let Some(mut seat) = self.seats.borrow_mut().pop() else {
            return Err(frame);
        };
        seat.start(frame);
        // No waker: a handler that waits goes to a worker, whose polls
        // register its own.
        match seat.poll_rest(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(()) => {
                self.misses.set(0);
                seat.release();
                Ok(None)
            }
            Poll::Pending => {
                self.misses.set(self.misses.get().saturating_add(1));
                Ok(Some(Resume::new(seat)))
            }
        }
    }
}

/// A seat of an inline server: room for one handler.
trait Seat: Started {
    /// Starts the handler of `frame` in the empty seat.
    fn start(&mut self, frame: FrameBuf);
}

/// A seat: the function that starts a handler, and the handler's place.
struct Held<S, F> {
    serve_one: S,
    handler: Pin<Box<Option<F>>>,
    home: Weak<Seats>,
}

impl<S: Fn(FrameBuf) -> F + 'static, F: Future<Output = ()> + 'static> Seat for Held<S, F> {
    fn start(&mut self, frame: FrameBuf) {
        self.handler.set(Some((self.serve_one)(frame)));
    }
}

impl<S: Fn(FrameBuf) -> F + 'static, F: Future<Output = ()> + 'static> Started for Held<S, F> {
    fn poll_rest(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(handler) = self.handler.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let polled = handler.poll(cx);
        if polled.is_ready() {
            self.handler.set(None);
        }
        polled
    }

    fn release(mut self: Box<Self>) {
        self.handler.set(None);
        if let Some(home) = self.home.upgrade() {
            home.borrow_mut().push(self);
        }
    }
}

async fn handle_one<A: Agent>(
    agent: &A,
    ctx: &Ctx,
    msg: &Message,
    deadline: &mut Timer,
    now: u64,
) -> Outcome {
    let head = *msg.head();
    let limit = match head.deadline_ns {
        0 => DEFAULT_LIMIT,
        end if end > now => Duration::from_nanos(end - now),
        _ => Duration::ZERO,
    };
    ctx.begin();
    let outcome = if limit.is_zero() {
        Outcome::Expired
    } else {
        let outcome = match (Race {
            work: pin!(agent.handle(ctx, msg)),
            timer: deadline,
            due_ns: Some(now.saturating_add(u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX))),
        })
        .await
        {
            Some(Ok(())) => Outcome::Done,
            Some(Err(_)) => Outcome::Failed,
            None => Outcome::Overran,
        };
        deadline.disarm();
        outcome
    };
    if head.kind == PayloadKind::Request && !ctx.replied() {
        let status = match outcome {
            Outcome::Done | Outcome::Failed => STATUS_FAILED,
            Outcome::Overran | Outcome::Expired => STATUS_TIMEOUT,
        };
        let _ = ctx.reply(msg, status, &[]).await;
    }
    outcome
}

async fn isolate<A: Agent>(agent: &A, ctx: &Ctx, supervisor: &RefCell<Supervisor>, until_ns: u64) {
    let inbox = ctx.node().inbox(ctx.me());
    inbox.pause();
    let board = ctx.node().routes().board();
    board.set_flag(ctx.me(), AgentFlags::ISOLATED, true);
    ctx.stats().update_agent(ctx.me(), |c| c.isolated = true);
    while let Some(frame) = inbox.try_pop() {
        if let Ok(msg) = Message::new(frame)
            && msg.head().kind == PayloadKind::Request
        {
            let _ = ctx.reply(&msg, STATUS_UNAVAILABLE, &[]).await;
        }
    }
    ctx.sleep(Duration::from_nanos(until_ns.saturating_sub(ctx.now_ns())))
        .await;
    agent.reset();
    let _ = agent.start(ctx).await;
    supervisor.borrow_mut().on_restarted(ctx.now_ns());
    ctx.stats().update_agent(ctx.me(), |c| {
        c.restarts += 1;
        c.isolated = false;
    });
    board.set_flag(ctx.me(), AgentFlags::ISOLATED, false);
    inbox.resume();
}

/// Runs `work` until done or until `timer` fires (`None`). The timer is
/// armed for `due_ns` only when the work first waits: a handler that
/// finishes in its first poll (most do) costs no timer.
struct Race<'a, F> {
    work: Pin<&'a mut F>,
    timer: &'a mut Timer,
    due_ns: Option<u64>,
}

impl<F: Future> Future for Race<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(out) = self.work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if let Some(due_ns) = self.due_ns.take() {
            self.timer.arm(due_ns);
        }
        match Pin::new(&mut self.timer.wait()).poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
