//! The async API (feature `async`): [`AsyncAgent`], whose `recv`, `call`
//! and `model` are futures any executor can poll.
//!
//! No runtime is assumed: a reader thread the agent owns does the blocking
//! part (it is the ring's reader, as a blocking `recv` would be) and wakes
//! the futures whenever it files something, and at least every 50 ms so
//! that a call notices its deadline. A future never blocks its executor,
//! except on the first use of a method name the daemon's table did not
//! carry (one question on the link). `Request::reply` stays blocking: under
//! a `slow` drill it sleeps the thread that calls it.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::model::Asking;
use crate::{Agent, AgentError, ModelGuard, Reply, Request};

const TICK: Duration = Duration::from_millis(50);

/// An [`Agent`] with futures for waiting.
#[derive(Debug)]
pub struct AsyncAgent {
    agent: Agent,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl AsyncAgent {
    /// Wraps `agent` and starts its reader thread.
    pub fn new(agent: Agent) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (agent, stop) = (agent.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("pinwheel-agent-reader".into())
                .spawn(move || {
                    // SYNC: Relaxed; the flag only asks the loop to end.
                    while !stop.load(Ordering::Relaxed) {
                        let read = agent.wait_for(Instant::now() + TICK, |_| None::<()>);
                        let mut input = agent.input();
                        input.wake();
                        if read.is_err() {
                            break;
                        }
                    }
                })?
        };
        Ok(Self {
            agent,
            stop,
            reader: Some(reader),
        })
    }

    /// The blocking agent underneath.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The next request; [`AgentError::Disconnected`] once the daemon
    /// closed the link.
    pub async fn recv(&self) -> Result<Request, AgentError> {
        loop {
            let got = poll_fn(|cx| {
                let mut input = self.agent.input();
                if let Some(request) = input.requests.pop_front() {
                    return Poll::Ready(Ok(Some(request)));
                }
                if let Some(err) = &input.gone {
                    return Poll::Ready(Err(err.clone()));
                }
                input.wakers.push(cx.waker().clone());
                Poll::Pending
            })
            .await?;
            if let Some(incoming) = got {
                return self.agent.request(incoming);
            }
        }
    }

    /// Calls `callee` and waits up to `timeout` for its reply.
    pub async fn call(
        &self,
        callee: &str,
        method: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Reply, AgentError> {
        let pending = self.agent.send_call(callee, method, body, timeout)?;
        poll_fn(|cx| {
            let mut input = self.agent.input();
            match pending.check(&mut input) {
                Some(answer) => Poll::Ready(answer),
                None => {
                    input.wakers.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl AsyncAgent {
    /// Asks for GPU model `model` and waits up to `timeout` for the VRAM
    /// optimizer (see [`Agent::model`]); dropping the future gives the use
    /// up.
    pub async fn model(&self, model: &str, timeout: Duration) -> Result<ModelGuard, AgentError> {
        let deadline = Instant::now() + timeout;
        let asking = Asking::start(&self.agent, model)?;
        let id = asking.id();
        let answer = poll_fn(|cx| {
            let mut input = self.agent.input();
            if let Some(answer) = input.uses_answered.remove(&id) {
                return Poll::Ready(Ok(Some(answer)));
            }
            if let Some(err) = &input.gone {
                return Poll::Ready(Err(err.clone()));
            }
            if Instant::now() >= deadline {
                return Poll::Ready(Ok(None));
            }
            input.wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        match answer {
            Some(answer) => asking.finish(answer),
            None => Err(AgentError::Timeout {
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }
}

impl Drop for AsyncAgent {
    fn drop(&mut self) {
        // SYNC: Relaxed; see the reader loop.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_agent_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<AsyncAgent>();
        check::<Agent>();
    }
}
