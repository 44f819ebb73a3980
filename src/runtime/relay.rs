//! The pump's stand-in: a helper task in a task queue of its own, for the
//! two things the pump cannot do from the latency queue it shares with
//! the CRITICAL/HIGH agents and the ticker (`pump.rs`). The pump asks, and
//! waits until the helper says it is done.
//!
//! * Stepping behind the queue ([`Relay::behind`]). When the ready tasks
//!   are local work (a handler calling an agent of the same executor, the
//!   reply waking it), a pump that yielded as a task does would run
//!   between each of them and the next: a yielding task goes to the back
//!   of its queue. It waits instead. glommio runs the latency queue until
//!   it is empty, then the helper's queue, and the helper wakes the pump.
//! * A reactor pass ([`Relay::pass`]). The helper waits on a glommio timer,
//!   which only glommio's reactor fires. glommio arms its preempt timer
//!   for the queues ready when a pass ends; the pump's own queue would
//!   bring the latency queue's shorter timer, which would fire during the
//!   pump's waits. The helper's queue is `Latency::NotImportant`, so the
//!   pass arms the executor's default.
//!
//! The helper is spawned around the census ([`super::tasks`]), as the pump
//! is: it is the pump's own, and never ready when the pump looks.

use std::time::Duration;

use glommio::TaskQueueHandle;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

/// The glommio timer a reactor pass waits for.
pub const PASS_TIMER: Duration = Duration::from_micros(1);

/// What the pump asks of the helper.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// Wake the pump when glommio gets to the helper's queue.
    Behind,
    /// The same, after a reactor pass.
    Pass,
}

/// The pump's end of its helper.
#[derive(Debug)]
pub struct Relay {
    asks: LocalSender<Ask>,
    done: LocalReceiver<()>,
    /// Dropped with the relay, which cancels it (glommio cancels a task
    /// whose handle is dropped).
    _helper: glommio::Task<()>,
}

impl Relay {
    /// Spawns the helper into `queue` of the current executor.
    pub fn spawn(queue: TaskQueueHandle) -> Result<Self, glommio::GlommioError<()>> {
        let (asks, asked) = local_channel::new_bounded(1);
        let (finished, done) = local_channel::new_bounded(1);
        let helper = glommio::spawn_local_into(
            async move {
                while let Some(ask) = asked.recv().await {
                    if let Ask::Pass = ask {
                        glommio::timer::sleep(PASS_TIMER).await;
                    }
                    if finished.send(()).await.is_err() {
                        return;
                    }
                }
            },
            queue,
        )?;
        Ok(Self {
            asks,
            done,
            _helper: helper,
        })
    }

    /// Waits until glommio has run every ready task of the caller's queue
    /// and come to the helper's.
    pub async fn behind(&self) {
        self.ask(Ask::Behind).await;
    }

    /// Waits until glommio has run a reactor pass.
    pub async fn pass(&self) {
        self.ask(Ask::Pass).await;
    }

    /// Asks and waits for the answer. The helper lives as long as the
    /// relay, so both channels stay open while the pump can ask.
    async fn ask(&self, ask: Ask) {
        if self.asks.send(ask).await.is_ok() {
            let _ = self.done.recv().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::future::poll_fn;
    use std::rc::Rc;
    use std::task::{Poll, Waker};

    use glommio::{Latency, Shares};

    use super::*;

    /// A one-shot gate a task waits at.
    #[derive(Default)]
    struct Gate {
        open: Cell<bool>,
        waiter: RefCell<Option<Waker>>,
    }

    impl Gate {
        fn open(&self) {
            self.open.set(true);
            if let Some(waker) = self.waiter.take() {
                waker.wake();
            }
        }

        async fn wait(&self) {
            poll_fn(|cx| {
                if self.open.get() {
                    Poll::Ready(())
                } else {
                    *self.waiter.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
        }
    }

    /// Runs `test` on an executor of its own, given two task queues: the
    /// pump's, and the relay's helper's.
    fn on_executor<T, F>(
        test: impl FnOnce(TaskQueueHandle, TaskQueueHandle) -> F + Send + 'static,
    ) -> T
    where
        F: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let executor = glommio::executor();
                let own =
                    executor.create_task_queue(Shares::Static(1000), Latency::NotImportant, "own");
                let apart = executor.create_task_queue(
                    Shares::Static(1000),
                    Latency::NotImportant,
                    "passes",
                );
                test(own, apart).await
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn the_pump_steps_behind_a_chain_of_wakes_in_its_queue() {
        let order = on_executor(|own, apart| async move {
            let log: Rc<RefCell<Vec<&str>>> = Rc::default();
            let gates: Rc<[Gate; 3]> = Rc::default();
            for (i, name) in ["first", "second", "third"].into_iter().enumerate() {
                let (log, gates) = (Rc::clone(&log), Rc::clone(&gates));
                glommio::spawn_local_into(
                    async move {
                        gates[i].wait().await;
                        log.borrow_mut().push(name);
                        if let Some(next) = gates.get(i + 1) {
                            next.open();
                        }
                    },
                    own,
                )
                .unwrap()
                .detach();
            }
            let pump_log = Rc::clone(&log);
            let pump = glommio::spawn_local_into(
                async move {
                    let relay = Relay::spawn(apart).unwrap();
                    // The three wait at their gates.
                    relay.behind().await;
                    // Local work: each wakes the next.
                    gates[0].open();
                    relay.behind().await;
                    pump_log.borrow_mut().push("pump");
                    relay.pass().await;
                    pump_log.borrow_mut().push("after a pass");
                },
                own,
            )
            .unwrap();
            pump.await;
            log.take()
        });
        assert_eq!(order, ["first", "second", "third", "pump", "after a pass"]);
    }

    #[test]
    fn each_pass_lets_the_reactor_fire_the_timers_that_are_due() {
        const PASSES: u32 = 1000;
        let fired = on_executor(|own, apart| async move {
            let (fired, stop) = (Rc::new(Cell::new(0u32)), Rc::new(Cell::new(false)));
            let sleeper = {
                let (fired, stop) = (Rc::clone(&fired), Rc::clone(&stop));
                glommio::spawn_local_into(
                    async move {
                        while !stop.get() {
                            glommio::timer::sleep(PASS_TIMER).await;
                            fired.set(fired.get() + 1);
                        }
                    },
                    own,
                )
                .unwrap()
            };
            let pump = glommio::spawn_local_into(
                async move {
                    let relay = Relay::spawn(apart).unwrap();
                    for _ in 0..PASSES {
                        relay.pass().await;
                    }
                },
                own,
            )
            .unwrap();
            pump.await;
            let seen = fired.get();
            stop.set(true);
            sleeper.await;
            seen
        });
        // Only the reactor fires a timer, and with tasks ready glommio
        // passes through it only when its preempt timer (100 ms here) runs
        // out: with a relay that merely stepped behind the queue the
        // sleeper fired 0 times (checked).
        assert!(
            fired >= PASSES / 2,
            "the sleeper fired {fired} times in {PASSES} passes"
        );
    }
}
