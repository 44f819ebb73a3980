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

use std::cell::RefCell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use super::agent::{Agent, Message};
use super::board::AgentFlags;
use super::ctx::Ctx;
use super::node::{STATUS_FAILED, STATUS_TIMEOUT, STATUS_UNAVAILABLE};
use super::supervisor::{Supervisor, Verdict};
use super::timers::Timer;
use pinwheel_ipc::wire::PayloadKind;

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
    while let Some(frame) = inbox.recv().await {
        let Ok(msg) = Message::new(frame) else {
            continue;
        };
        ctx.node().hold();
        let began = ctx.now_ns();
        let outcome = handle_one(agent, ctx, &msg, &mut deadline, began).await;
        ctx.stats()
            .record_service(ctx.me(), ctx.now_ns().saturating_sub(began));
        ctx.node().release();
        match outcome {
            Outcome::Done => {
                ctx.stats().update_agent(ctx.me(), |c| c.handled += 1);
                continue;
            }
            Outcome::Expired => {
                ctx.stats().update_agent(ctx.me(), |c| c.expired += 1);
                continue;
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
