//! PUB/SUB across the edge, both ways, as the seed frames it: a topic
//! frame, then a JSON frame.
//!
//! * **Out.** An agent here with `legacy_pub` gets a PUB socket on that
//!   port; every event it publishes in the mesh also reaches the gateway
//!   (the router sends it up the legacy uplink) and goes out there, its
//!   body as JSON (see `contract::as_data`). A PUB socket drops what slow
//!   subscribers cannot take; it never blocks the gateway.
//! * **In.** A `zmq` agent with `publishes` and `legacy_pub` is subscribed
//!   to at its endpoint's host on that port, for the topics agents here
//!   hear; each message on one of them (the topic frame must match
//!   exactly: ZeroMQ filters by prefix) is injected into the mesh as an
//!   event from the `zmq` agent, once per executor with subscribers, which
//!   fans it out on arrival. A `zmq` agent that subscribes to topics hears
//!   them on their publishers' PUB ports, as in the seed.
//!
//! Bounds: the SUB socket's receive queue (`RCVHWM`), [`BATCH`] messages
//! per wake-up, frames past the second are refused.

use std::collections::HashMap;

use super::contract::as_data;
use super::plan::{PubPort, ZmqTarget};
use super::poller::Edge;
use crate::runtime::ctx::now_ns;
use crate::runtime::legacy::bump;
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, Priority, TopicId};

/// Messages taken from one SUB socket before the others get a turn.
const BATCH: usize = 64;
/// Messages a SUB socket queues before it drops.
const SUB_HWM: i32 = 1000;

/// A PUB port.
pub(super) struct Pub {
    socket: zmq::Socket,
    port: PubPort,
    stats: usize,
}

impl Pub {
    pub fn new(socket: zmq::Socket, port: PubPort, stats: usize) -> Self {
        Pub {
            socket,
            port,
            stats,
        }
    }
}

/// A subscription to a `zmq` agent's PUB socket.
pub(super) struct Sub {
    pub socket: zmq::Socket,
    from: AgentId,
    topics: Vec<(String, TopicId)>,
}

impl Sub {
    /// Subscribes to `target`'s topics at its PUB endpoint.
    pub fn connect(context: &zmq::Context, target: &ZmqTarget) -> Option<Result<Sub, zmq::Error>> {
        let endpoint = target.publish.as_ref()?;
        if target.topics.is_empty() {
            return None;
        }
        let made = context.socket(zmq::SUB).and_then(|socket| {
            socket.set_linger(0)?;
            socket.set_rcvhwm(SUB_HWM)?;
            for (name, _) in &target.topics {
                socket.set_subscribe(name.as_bytes())?;
            }
            socket.connect(endpoint)?;
            Ok(Sub {
                socket,
                from: target.id,
                topics: target.topics.clone(),
            })
        });
        Some(made)
    }
}

/// Both ways.
pub(super) struct PubSub {
    pubs: Vec<Pub>,
    pub subs: Vec<Sub>,
    by_publisher: HashMap<u32, usize>,
}

impl PubSub {
    pub fn new(pubs: Vec<Pub>, subs: Vec<Sub>) -> Self {
        let by_publisher = pubs
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.port.publishers.iter().map(move |a| (a.0, i)))
            .collect();
        PubSub {
            pubs,
            subs,
            by_publisher,
        }
    }

    /// An event an agent here published: out on its PUB port.
    pub fn publish(&mut self, from: AgentId, topic: TopicId, body: &[u8], edge: &mut Edge) {
        // No port: the gateway has no bind address, its ports are dormant.
        let Some(&i) = self.by_publisher.get(&from.0) else {
            return;
        };
        let publisher = &self.pubs[i];
        let stats = &edge.stats.ports[publisher.stats];
        let Some(name) = edge.routes.topic_name(topic) else {
            return bump(&stats.errors);
        };
        let json = serde_json::to_vec(&as_data(body)).expect("a JSON value serializes");
        match publisher
            .socket
            .send_multipart([name.as_bytes(), json.as_slice()], zmq::DONTWAIT)
        {
            Ok(()) => bump(&stats.messages),
            Err(_) => bump(&stats.errors),
        }
    }

    /// Messages on subscription `i`: into the mesh.
    pub fn drain(&mut self, i: usize, edge: &mut Edge) {
        let sub = &self.subs[i];
        for _ in 0..BATCH {
            let frames = match sub.socket.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(_) => return,
            };
            let [topic, body] = frames.as_slice() else {
                bump(&edge.stats.bad);
                continue;
            };
            let Some(&(_, id)) = sub
                .topics
                .iter()
                .find(|(n, _)| n.as_bytes() == topic.as_slice())
            else {
                continue;
            };
            let now = now_ns();
            let env = Envelope {
                from: sub.from,
                to: sub.from,
                topic: id,
                correlation: 0,
                priority: Priority::Normal,
                sent_ns: now,
                deadline_ns: 0,
                payload: Payload::Event { body },
            };
            let executors: Vec<u16> = edge
                .routes
                .subscribers(id)
                .iter()
                .map(|(e, _)| *e)
                .collect();
            for executor in executors {
                if edge.deliver_to(executor, &env).is_err() {
                    bump(&edge.stats.bad);
                }
            }
            bump(&edge.stats.events_in);
        }
    }
}
