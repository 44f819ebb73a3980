//! The SDK an agent process links to talk to the pinwheel daemon over the
//! rings it hands the process.
//!
//! It depends on `pinwheel-ipc` only, so an agent built on it carries no
//! async runtime, HTTP server or NATS client. The API (attach from the
//! environment, receive requests, call other agents, publish and
//! subscribe) is filled in with process agents (issue 12).

pub use pinwheel_ipc::wire::WIRE_VERSION;
