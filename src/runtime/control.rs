//! [`ControlRuntime`]: the daemon's one control thread, a current-thread
//! tokio runtime pinned to the topology's control CPU, and the
//! [`ControlTask`]s that run on it.
//!
//! ```text
//!  main thread ──────── signals, status line, boot and shutdown order
//!  pinwheel-ctrl ────── current-thread tokio runtime (control CPU):
//!     │                   wake-up guard, core tick, admin HTTP, NATS link,
//!     │                   GPU sampling loop
//!     └ pinwheel-block ── its blocking pool, at most one thread: NVML calls
//!                         (and async-nats's DNS and TLS file reads)
//!  pw-exec-* ────────── the glommio executors (data plane; not here)
//! ```
//!
//! Everything on the control side that used to own a thread is a task
//! here, so the daemon has three threads besides its executors (and the
//! legacy gateway's, whose ZeroMQ sockets block: `gateway`): main,
//! `pinwheel-ctrl`, and `pinwheel-block` while GPUs are sampled (tokio
//! keeps an idle blocking thread for ten seconds, longer than the sampling
//! period). The blocking pool is capped at one thread: a driver call that
//! hangs holds that thread, never the runtime, and the next sample waits
//! behind it instead of piling up threads. The control thread is pinned
//! to the topology's control CPU; the blocking thread to its housekeeping
//! CPUs when it names some (driver calls can hold a CPU for milliseconds;
//! there they stay off the core loop's CPU), else it shares the control
//! thread's. Both inherit the signal mask of the main thread that spawns
//! the control thread (SIGINT and SIGTERM are blocked before it starts,
//! so only the main thread's signalfd sees them).
//!
//! Invariants: nothing on the runtime blocks its thread (blocking work goes
//! through `spawn_blocking`); every channel between its tasks is bounded;
//! a task is stopped through its [`ControlTask`], whose `stop` waits for
//! it and is called only from outside the runtime (the main thread).
//! Dropping a [`ControlTask`] only asks it to stop, so dropping one inside
//! another task never blocks the runtime.
//!
//! What it does not do: run anything of the data plane. The executors are
//! glommio threads of their own; the wake-up guard here only writes to
//! their eventfds.

use std::future::Future;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::warn;

use super::affinity::{pin_current_thread, pin_current_thread_to};
use crate::topology::{CpuId, CpuSet};

/// The control thread's name (`comm` holds 15 bytes).
pub const CONTROL_THREAD: &str = "pinwheel-ctrl";
/// The name of the control runtime's blocking thread.
pub const BLOCKING_THREAD: &str = "pinwheel-block";
/// Longest wait at shutdown for a blocking call still running (an NVML
/// call takes milliseconds; one that hangs is left behind).
pub const BLOCKING_LIMIT: Duration = Duration::from_millis(250);

/// The running control thread and its runtime. Dropping it stops the
/// runtime: every task still on it is dropped.
#[derive(Debug)]
pub struct ControlRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ControlRuntime {
    /// Starts the control thread, pinned to `cpu` (floating when `None`,
    /// or with a warning when the CPU refuses); its blocking thread is
    /// pinned to `blocking_cpus` (the control thread's CPU when empty).
    pub fn start(cpu: Option<CpuId>, blocking_cpus: &CpuSet) -> std::io::Result<ControlRuntime> {
        let (stop, stopped) = oneshot::channel();
        let (handle_tx, handle_rx) = mpsc::sync_channel(1);
        let blocking_cpus = blocking_cpus.clone();
        let thread = std::thread::Builder::new()
            .name(CONTROL_THREAD.into())
            .spawn(move || run(cpu, blocking_cpus, &handle_tx, stopped))?;
        match handle_rx.recv() {
            Ok(Ok(handle)) => Ok(ControlRuntime {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(std::io::Error::other("the control thread ended at start")),
        }
    }

    /// The runtime's handle, for spawning onto it.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Spawns `task`, given the receiver that says when to stop.
    pub fn spawn<F, Fut>(&self, task: F) -> ControlTask
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        ControlTask::spawn(&self.handle, task)
    }

    /// Stops the runtime (its tasks are dropped) and joins the thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ControlRuntime {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The control thread: builds the runtime, hands its handle back, runs
/// until told to stop.
fn run(
    cpu: Option<CpuId>,
    blocking_cpus: CpuSet,
    handle_tx: &mpsc::SyncSender<std::io::Result<Handle>>,
    stopped: oneshot::Receiver<()>,
) {
    if let Some(cpu) = cpu
        && let Err(err) = pin_current_thread(cpu)
    {
        warn!(cpu = cpu.0, error = %err, "control thread not pinned");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .thread_name(BLOCKING_THREAD)
        // Runs on each blocking thread as it starts (never on this one).
        .on_thread_start(move || {
            if !blocking_cpus.is_empty()
                && let Err(err) = pin_current_thread_to(&blocking_cpus)
            {
                warn!(cpus = %blocking_cpus, error = %err, "blocking thread not pinned");
            }
        })
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = handle_tx.send(Err(err));
            return;
        }
    };
    if handle_tx.send(Ok(runtime.handle().clone())).is_err() {
        return;
    }
    runtime.block_on(async move {
        let _ = stopped.await;
    });
    runtime.shutdown_timeout(BLOCKING_LIMIT);
}

/// A task on the control runtime with a stop signal. Dropping it asks the
/// task to stop without waiting.
#[derive(Debug)]
pub struct ControlTask {
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl ControlTask {
    /// Spawns `task` on `handle`, given the receiver that says when to
    /// stop; the task ends by returning (or by being dropped with the
    /// runtime).
    pub fn spawn<F, Fut>(handle: &Handle, task: F) -> ControlTask
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        let (done_tx, done) = oneshot::channel::<()>();
        let future = task(stopped);
        handle.spawn(async move {
            // Dropped when the task ends, or when the runtime drops it.
            let _done = done_tx;
            future.await;
        });
        ControlTask {
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Asks the task to stop; returns at once.
    pub fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Asks the task to stop and waits until it has ended. Call it from
    /// outside the control runtime (it blocks the calling thread).
    pub fn stop(mut self) {
        self.signal();
        self.join();
    }

    /// Waits until the task has ended (after [`ControlTask::signal`], or
    /// on its own). Call it from outside the control runtime.
    pub fn join(&mut self) {
        if let Some(done) = self.done.take() {
            // Err: the task ended and dropped its end; either way it is over.
            let _ = done.blocking_recv();
        }
    }
}

impl Drop for ControlTask {
    fn drop(&mut self) {
        self.signal();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn thread_name_of(handle: &Handle) -> String {
        let (tx, rx) = mpsc::channel();
        handle.spawn(async move {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        rx.recv().expect("the task ran").expect("a named thread")
    }

    fn cpus_allowed() -> String {
        std::fs::read_to_string("/proc/thread-self/status")
            .expect("this thread's status")
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("a CPU list")
            .trim()
            .to_owned()
    }

    #[test]
    fn the_control_thread_and_its_blocking_thread_are_pinned_where_asked() {
        let blocking = CpuSet::parse_list("0").expect("a CPU list");
        let sut = ControlRuntime::start(Some(CpuId(1)), &blocking).expect("a control thread");

        let (tx, rx) = mpsc::channel();
        sut.handle().spawn(async move {
            let blocking = tokio::task::spawn_blocking(cpus_allowed).await.ok();
            let _ = tx.send((cpus_allowed(), blocking));
        });

        assert_eq!(rx.recv().unwrap(), ("1".to_owned(), Some("0".to_owned())));
    }

    #[test]
    fn tasks_run_on_the_named_control_thread() {
        let sut = ControlRuntime::start(None, &CpuSet::default()).expect("a control thread");

        assert_eq!(thread_name_of(sut.handle()), CONTROL_THREAD);
        let (tx, rx) = mpsc::channel();
        sut.handle().spawn(async move {
            let name =
                tokio::task::spawn_blocking(|| std::thread::current().name().map(str::to_owned))
                    .await;
            let _ = tx.send(name.ok().flatten());
        });
        assert_eq!(rx.recv().unwrap().as_deref(), Some(BLOCKING_THREAD));
    }

    #[test]
    fn stop_waits_for_the_task_to_end_and_drop_only_asks() {
        let sut = ControlRuntime::start(None, &CpuSet::default()).expect("a control thread");
        let ended = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ended);
        let task = sut.spawn(|stopped| async move {
            let _ = stopped.await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.store(true, Ordering::SeqCst);
        });

        task.stop();

        assert!(ended.load(Ordering::SeqCst));
        let (tx, rx) = mpsc::channel();
        drop(sut.spawn(|stopped| async move {
            let _ = stopped.await;
            let _ = tx.send(());
        }));
        rx.recv().expect("the dropped task was told to stop");
    }

    #[test]
    fn stopping_the_runtime_ends_the_tasks_still_on_it() {
        let sut = ControlRuntime::start(None, &CpuSet::default()).expect("a control thread");
        let mut task = sut.spawn(|_stopped| std::future::pending());

        sut.stop();

        task.join();
    }
}
