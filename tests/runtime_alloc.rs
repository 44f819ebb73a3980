//! Routing a message allocates nothing in steady state: a request and its
//! reply through the router, on one executor and across a shared-memory
//! ring to another, and a call served by a worker on a glommio executor.
//! A counting global allocator counts the measuring thread's allocations.
//! (And the router notes a write that woke the other executor, for its
//! pump's next wait.)

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::cell::RefCell;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use pinwheel::config::{AgentSet, SourceFile};
use pinwheel::plan::Plan;
use pinwheel::runtime::RuntimeError;
use pinwheel::runtime::agent::{Agent, Message};
use pinwheel::runtime::ctx::{Ctx, Draining};
use pinwheel::runtime::layout::{INBOX_CAPACITY, MAX_FRAME, PENDING_CALLS, POOL_FRAMES};
use pinwheel::runtime::node::{Node, NodeSizes, STATUS_OK, reply_to};
use pinwheel::runtime::routes::Routes;
use pinwheel::runtime::stats::NodeStats;
use pinwheel::runtime::supervisor::{RestartPolicy, Supervisor};
use pinwheel::runtime::worker::run_worker;
use pinwheel::test_support::{Counting, CountingAlloc, allocations_during};
use pinwheel::topology;
use pinwheel_ipc::ring::{
    Consumer, ConsumerGroup, DataBell, RingConfig, WaitStrategy, shm_ring_into,
};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, Priority, TopicId};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const TOPOLOGY: &str = "schema = 1\n[host]\nname = \"t\"\ncpus = { uniform = \"0-1\" }\n";

const AGENTS: &str = r#"schema = 1
[[agent]]
name = "Caller"
host = "t"
role = "calls"
kind = "synthetic"
cpu = 0
calls = ["Far", "Near"]

[[agent]]
name = "Far"
host = "t"
role = "answers on the other CPU"
kind = "synthetic"
cpu = 1

[[agent]]
name = "Near"
host = "t"
role = "answers on the caller's CPU"
kind = "synthetic"
cpu = 0
"#;

const CALLER: AgentId = AgentId(0);
const FAR: AgentId = AgentId(1);
const NEAR: AgentId = AgentId(2);
const WARM_UP: usize = 2_000;
const MEASURED: usize = 20_000;

fn routes() -> Arc<Routes> {
    let file = SourceFile::from_text(Path::new("t.toml"), TOPOLOGY);
    let topology = topology::validate(file.parse().unwrap(), &file, None).unwrap();
    let agents =
        AgentSet::from_sources(&[SourceFile::from_text(Path::new("a.toml"), AGENTS)]).unwrap();
    let plan = Plan::build(&topology, &agents).unwrap();
    Arc::new(Routes::new(&plan, &agents))
}

fn sizes(routes: &Routes) -> NodeSizes {
    NodeSizes {
        pool_frames: POOL_FRAMES,
        frame_bytes: MAX_FRAME,
        inbox_capacity: INBOX_CAPACITY,
        pending_calls: PENDING_CALLS,
        workers: vec![1; routes.agent_count()],
    }
}

/// A ring between two executors.
const RING: RingConfig = RingConfig {
    slots: 1024,
    max_frame: MAX_FRAME,
    wait: WaitStrategy::Park,
    spin_us: 0,
};

/// Executor 0 (CPU 0) and executor 1 (CPU 1), joined by a ring each way.
fn two_nodes() -> (Node, Node, Consumer, Consumer) {
    let routes = routes();
    let (bell0, bell1) = (DataBell::new().unwrap(), DataBell::new().unwrap());
    let (to1, from0) = shm_ring_into(RING, &bell1).unwrap();
    let (to0, from1) = shm_ring_into(RING, &bell0).unwrap();
    let node0 = Node::new(
        0,
        Arc::clone(&routes),
        sizes(&routes),
        vec![None, Some(to1)],
    );
    let node1 = Node::new(
        1,
        Arc::clone(&routes),
        sizes(&routes),
        vec![Some(to0), None],
    );
    (node0, node1, from0, from1)
}

fn request(to: AgentId, correlation: u64, body: &[u8]) -> Envelope<'_> {
    Envelope {
        from: CALLER,
        to,
        topic: TopicId::NONE,
        correlation,
        priority: Priority::Normal,
        sent_ns: 1,
        deadline_ns: 0,
        payload: Payload::Request { method: 1, body },
    }
}

/// Serves the request waiting in `to`'s inbox on `node` with an echo.
fn answer(node: &Node, to: AgentId) {
    let msg = Message::new(node.inbox(to).try_pop().unwrap()).unwrap();
    let body = msg.body().to_owned_array();
    msg.with_envelope(|env| node.route(&reply_to(env, STATUS_OK, &body[..4])))
        .unwrap();
}

/// Copies a 4-byte body to the stack.
trait ToOwnedArray {
    fn to_owned_array(&self) -> [u8; 4];
}

impl ToOwnedArray for [u8] {
    fn to_owned_array(&self) -> [u8; 4] {
        self[..4].try_into().unwrap()
    }
}

/// One call from the caller on node 0 to `to`, with its reply, by hand.
fn round_trip(nodes: &mut (Node, Node, Consumer, Consumer), to: AgentId, i: u32) {
    let (node0, node1, from0, from1) = nodes;
    let pending = Rc::clone(node0.pending());
    let id = pending.open(u64::MAX).unwrap();
    let mut reply = pin!(pending.wait(id));
    let body = i.to_le_bytes();
    node0
        .route(&request(to, pending.correlation(id), &body))
        .unwrap();
    if to == FAR {
        from0
            .try_recv(|bytes| node1.accept(bytes))
            .unwrap()
            .unwrap()
            .unwrap();
        answer(node1, FAR);
        from1
            .try_recv(|bytes| node0.accept(bytes))
            .unwrap()
            .unwrap()
            .unwrap();
    } else {
        answer(node0, NEAR);
    }
    let Poll::Ready(Ok(frame)) = reply.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    else {
        panic!("the reply completed the call");
    };
    let msg = Message::new(frame).unwrap();
    assert_eq!(msg.head().code, STATUS_OK);
    assert_eq!(&*msg.body(), &body);
}

#[test]
fn a_request_and_its_reply_through_the_router_allocate_nothing() {
    let mut nodes = two_nodes();
    for i in 0..WARM_UP as u32 {
        round_trip(&mut nodes, FAR, i);
        round_trip(&mut nodes, NEAR, i);
    }

    let allocations = allocations_during(|| {
        for i in 0..MEASURED as u32 {
            round_trip(&mut nodes, FAR, i);
            round_trip(&mut nodes, NEAR, i);
        }
    });

    assert_eq!(
        allocations,
        0,
        "allocations in {} round trips",
        2 * MEASURED
    );
    assert_eq!(nodes.0.counters().remote.get(), (WARM_UP + MEASURED) as u64);
}

#[test]
fn a_write_that_rings_a_parked_executor_s_bell_is_noted_once_for_the_pump() {
    let routes = routes();
    let bell = DataBell::new().unwrap();
    let (to1, from0) = shm_ring_into(RING, &bell).unwrap();
    let node0 = Node::new(
        0,
        Arc::clone(&routes),
        sizes(&routes),
        vec![None, Some(to1)],
    );
    let mut executor1 = ConsumerGroup::new(bell, WaitStrategy::Park, 0);
    executor1.add(from0).unwrap();
    node0.route(&request(FAR, 1, b"awake")).unwrap();
    assert!(!node0.take_woke_peer(), "executor 1 was awake");
    let drained = executor1.consumers_mut()[0].try_recv(|_| ()).unwrap();
    assert!(drained.is_some());
    assert!(
        executor1.arm().unwrap(),
        "executor 1 declares itself asleep"
    );
    node0.route(&request(FAR, 2, b"asleep")).unwrap();
    assert!(node0.take_woke_peer(), "the write rang its bell");
    assert!(!node0.take_woke_peer(), "noted once");
}

/// Answers every request with its body.
struct Echo;

impl Agent for Echo {
    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        let body = msg.body().to_owned_array();
        ctx.reply(msg, STATUS_OK, &body).await
    }
}

/// Calls `NEAR` `count` times and checks each answer.
async fn calls(ctx: &Ctx, count: usize) {
    for i in 0..count as u32 {
        let body = i.to_le_bytes();
        let reply = ctx
            .call(NEAR, 1, &body, Priority::Normal, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&*reply.body(), &body);
    }
}

#[test]
fn a_call_served_by_a_worker_on_an_executor_allocates_nothing_in_steady_state() {
    // glommio allocates two io_uring sources each time a task queue's time
    // slice ends and it polls for I/O (the throughput preemption timer):
    // once per `preempt_timer` of continuous running, not per call. On a
    // loaded machine the measured calls can outlast the 100 ms default and
    // meet one such poll, so the slice is made longer than the test; what
    // is measured is then what a call costs.
    let handle = LocalExecutorBuilder::new(Placement::Fixed(0))
        .preempt_timer(Duration::from_secs(60))
        .spawn(|| async {
            let routes = routes();
            let node = Rc::new(Node::new(
                0,
                Arc::clone(&routes),
                sizes(&routes),
                vec![None, None],
            ));
            let stats = Rc::new(NodeStats::new(&routes, 0));
            let draining = Draining::new();
            let ctx = |me| {
                Ctx::new(
                    Rc::clone(&node),
                    Rc::clone(&stats),
                    Rc::clone(&draining),
                    me,
                )
            };
            let (caller, server) = (ctx(CALLER), ctx(NEAR));
            let supervisor = RefCell::new(Supervisor::new(RestartPolicy::default()));
            let worker = glommio::spawn_local(async move {
                run_worker(&Echo, &server, &supervisor).await;
            });
            calls(&caller, WARM_UP).await;
            let counting = Counting::start();
            calls(&caller, MEASURED).await;
            let allocations = counting.finish();
            // The control: the counter does see an allocation across an await.
            let control = Counting::start();
            let boxed = std::hint::black_box(Box::new(7u64));
            glommio::timer::sleep(Duration::from_micros(10)).await;
            drop(boxed);
            let seen = control.finish();
            node.inbox(NEAR).close();
            worker.await;
            (allocations, seen)
        })
        .unwrap();

    let (allocations, control) = handle.join().unwrap();

    assert_eq!(allocations, 0, "allocations in {MEASURED} calls");
    assert!(control >= 1, "the counter missed a Box");
}
