//! The pump: one task per executor that moves frames from the executor's
//! incoming rings into its router.
//!
//! Each pass takes at most [`BATCH`] frames per ring, so one busy ring
//! cannot starve the others, then yields so the agents' workers run. When
//! the frame pool is nearly empty the pump leaves frames in the rings:
//! producers find them full and slow down, which is the backpressure the
//! design asks for (every queue bounded, nothing dropped for lack of a
//! frame). When every ring is empty it waits on the executor's bell by the
//! class's wait strategy, waking every [`IDLE_CHECK`] to notice shutdown.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::node::Node;
use pinwheel_ipc::ring::ConsumerGroup;

/// Frames taken from one ring per pass.
pub const BATCH: usize = 32;
/// Pool frames kept free for local traffic and fan-out before the pump
/// stops draining.
pub const RESERVE: usize = 64;
/// Longest idle wait before the pump checks whether to stop.
pub const IDLE_CHECK: Duration = Duration::from_millis(20);

/// Moves frames until `stop` is set and the rings are empty.
pub async fn run_pump(node: Rc<Node>, mut group: ConsumerGroup, stop: Rc<Cell<bool>>) {
    loop {
        let moved = pass(&node, &mut group);
        let counters = node.counters();
        counters
            .ring_backlog
            .set(group.consumers_mut().iter().map(|c| c.backlog()).sum());
        counters.parks.set(group.parks());
        if moved > 0 {
            let _ = node.flush();
            YieldNow(false).await;
            continue;
        }
        if stop.get() {
            return;
        }
        if node.pool().available() < RESERVE {
            YieldNow(false).await;
            continue;
        }
        let _ = group.wait_async(IDLE_CHECK).await;
    }
}

/// One pass over the rings; returns the frames moved.
fn pass(node: &Node, group: &mut ConsumerGroup) -> usize {
    let mut moved = 0;
    for consumer in group.consumers_mut() {
        for _ in 0..BATCH {
            if node.pool().available() < RESERVE {
                return moved;
            }
            match consumer.try_recv(|bytes| node.accept(bytes)) {
                Ok(Some(_)) => moved += 1,
                Ok(None) => break,
                Err(err) => {
                    tracing::error!(executor = node.executor(), error = %err, "ring from another executor is corrupt");
                    break;
                }
            }
        }
    }
    moved
}

/// Yields once to the executor's other tasks.
pub struct YieldNow(pub bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
