//! What both ends of a pinwheel ring need, and nothing more: the
//! shared-memory SPSC [`ring`] (layout and index protocol, doorbells, wait
//! strategies, memfd, handing rings to another process) and the [`wire`]
//! format (the rkyv [`wire::Envelope`], encoding, checked decoding, the
//! wire version).
//!
//! The daemon links it, and so do agent processes (`pinwheel-agent`, the
//! Python package), which is why it depends on rkyv, nix and thiserror
//! only: no async runtime, HTTP or NATS crate. The `glommio` feature adds
//! the doorbell awaitable on a glommio executor for the daemon's data
//! plane; `serde` lets configuration files name a [`ring::WaitStrategy`].
//!
//! The [`link`] protocol is what an agent process and the daemon say on
//! the socket its rings are handed over on (hello, facts, method names).
//! A [`drill`] (an injected fault: slow, failing or stalled service) is
//! here too, so the daemon and an agent's SDK apply it alike.
//!
//! Dependencies point one way: `ring` uses `wire` to encode and check the
//! envelopes it carries; `wire` knows nothing of rings.

pub mod drill;
pub mod link;
pub mod ring;
pub mod wire;
