//! Rings shared with another process: handing one over, attaching to one,
//! and noticing that the peer died.
//!
//! The daemon creates the ring ([`export_producer`], [`export_consumer`])
//! and sends a [`RingHandoff`] over a [`PeerLink`]: a Unix `SOCK_SEQPACKET`
//! socket, either a socketpair whose child end a spawned agent inherits
//! (`PINWHEEL_PEER_FD`), or any connected socket. One message carries the
//! ring's numbers and, as `SCM_RIGHTS`, its memfd and two eventfds.
//!
//! Everything received is untrusted: the numbers are checked, the memfd's
//! seals, size and header are checked (`shm::attach`), and both ends of a
//! cross-process ring validate every index they read.
//!
//! Peer death: the peer's end of the link closes when it exits, however it
//! exits, so [`PeerLink::wait_gone`] sees EOF. The surviving side then
//! calls `reset` on its end, which empties the ring under a new epoch,
//! and hands the ring to the next peer with a fresh [`RingHandoff`]; an
//! attacher whose handoff epoch differs from the ring's refuses it.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
};

use super::handle::{Bells, DataBell};
use super::layout::{ConsumerEnd, ProducerEnd, Shared};
use super::sync::{Doorbell, Ordering};
use super::{Consumer, MAX_SLOTS, Producer, RingConfig, RingError, WaitStrategy, os, shm};
use crate::link::{LinkMessage, MAX_MESSAGE_BYTES};

/// Environment variable that names an inherited [`PeerLink`] descriptor.
pub const PEER_FD_ENV: &str = "PINWHEEL_PEER_FD";
/// The descriptor number [`PeerLink::spawn`] gives the child's link.
pub const PEER_FD: i32 = 3;
const MAGIC: u32 = u32::from_le_bytes(*b"PWHO");
const VERSION: u16 = 1;
const MESSAGE_BYTES: usize = 32;

/// The part a receiver of a handoff plays on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It writes.
    Producer,
    /// It reads.
    Consumer,
}

/// Everything another process needs to attach to a ring.
#[derive(Debug)]
pub struct RingHandoff {
    /// The ring's numbers.
    pub config: RingConfig,
    /// The ring's epoch when handed over.
    pub epoch: u64,
    /// What the receiver is.
    pub role: Role,
    memfd: OwnedFd,
    data_bell: OwnedFd,
    space_bell: OwnedFd,
}

/// What the exporting side keeps to hand its ring over again.
#[derive(Debug)]
pub(super) struct Export {
    memfd: OwnedFd,
    epoch: u64,
}

/// Creates a ring in a memfd whose producer is this process; the handoff
/// gives its consumer end to a peer.
pub fn export_producer(config: RingConfig) -> Result<(Producer, RingHandoff), RingError> {
    let (memfd, shared, bells) = create(config)?;
    record_pid(&shared, Role::Producer);
    let handoff = handoff(&memfd, &bells, config, 1, Role::Consumer)?;
    let mut producer = Producer::new(ProducerEnd::new(shared, config.max_frame), bells, config);
    producer.export = Some(Export { memfd, epoch: 1 });
    Ok((producer, handoff))
}

/// Creates a ring in a memfd whose consumer is this process; the handoff
/// gives its producer end to a peer.
pub fn export_consumer(config: RingConfig) -> Result<(Consumer, RingHandoff), RingError> {
    export_consumer_into(config, &DataBell::new()?)
}

/// [`export_consumer`] whose consumer is woken by `bell`, shared with the
/// other rings the same thread consumes (a `ConsumerGroup`).
pub fn export_consumer_into(
    config: RingConfig,
    bell: &DataBell,
) -> Result<(Consumer, RingHandoff), RingError> {
    let (memfd, shared, bells) = create_with(config, Arc::clone(&bell.0))?;
    record_pid(&shared, Role::Consumer);
    let handoff = handoff(&memfd, &bells, config, 1, Role::Producer)?;
    let mut consumer = Consumer::new(ConsumerEnd::new(shared, config.max_frame), bells, config);
    consumer.export = Some(Export { memfd, epoch: 1 });
    Ok((consumer, handoff))
}

fn create(config: RingConfig) -> Result<(OwnedFd, Arc<Shared>, Arc<Bells>), RingError> {
    create_with(config, Arc::new(Doorbell::new().map_err(os("eventfd"))?))
}

fn create_with(
    config: RingConfig,
    data: Arc<Doorbell>,
) -> Result<(OwnedFd, Arc<Shared>, Arc<Bells>), RingError> {
    config.validate()?;
    let (memfd, shared) = shm::create(config.slots, 1)?;
    let bells = Bells {
        data,
        space: Doorbell::new().map_err(os("eventfd"))?,
    };
    Ok((memfd, Arc::new(shared), Arc::new(bells)))
}

fn handoff(
    memfd: &OwnedFd,
    bells: &Bells,
    config: RingConfig,
    epoch: u64,
    role: Role,
) -> Result<RingHandoff, RingError> {
    let dup = |fd: BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(os("duplicate ring descriptor"))
    };
    Ok(RingHandoff {
        config,
        epoch,
        role,
        memfd: dup(memfd.as_fd())?,
        data_bell: dup(bells.data.as_fd())?,
        space_bell: dup(bells.space.as_fd())?,
    })
}

impl Producer {
    /// Empties an exported ring under a new epoch after its consumer died,
    /// and returns the handoff for the next consumer.
    pub fn reset(&mut self) -> Result<RingHandoff, RingError> {
        let export = self.export.as_mut().ok_or_else(|| RingError::Config {
            reason: "only an exported ring can be reset".into(),
        })?;
        export.epoch += 1;
        self.end.reset(export.epoch);
        handoff(
            &export.memfd,
            &self.bells,
            self.config,
            export.epoch,
            Role::Consumer,
        )
    }
}

impl Consumer {
    /// Empties an exported ring under a new epoch after its producer died,
    /// and returns the handoff for the next producer.
    pub fn reset(&mut self) -> Result<RingHandoff, RingError> {
        let export = self.export.as_mut().ok_or_else(|| RingError::Config {
            reason: "only an exported ring can be reset".into(),
        })?;
        export.epoch += 1;
        self.end.reset(export.epoch);
        handoff(
            &export.memfd,
            &self.bells,
            self.config,
            export.epoch,
            Role::Producer,
        )
    }
}

impl RingHandoff {
    fn attach(&self) -> Result<(Arc<Shared>, Arc<Bells>), RingError> {
        self.config.validate().map_err(|err| RingError::Handoff {
            reason: err.to_string(),
        })?;
        let shared = shm::attach(&self.memfd, self.config.slots, self.epoch)?;
        let bells = Bells {
            data: Arc::new(Doorbell::from_fd(
                self.data_bell
                    .try_clone()
                    .map_err(os("duplicate doorbell"))?,
            )),
            space: Doorbell::from_fd(
                self.space_bell
                    .try_clone()
                    .map_err(os("duplicate doorbell"))?,
            ),
        };
        Ok((Arc::new(shared), Arc::new(bells)))
    }

    /// Attaches as the ring's producer (the handoff's role must say so).
    pub fn into_producer(self) -> Result<Producer, RingError> {
        self.expect_role(Role::Producer)?;
        let (shared, bells) = self.attach()?;
        record_pid(&shared, Role::Producer);
        Ok(Producer::new(
            ProducerEnd::new(shared, self.config.max_frame),
            bells,
            self.config,
        ))
    }

    /// Attaches as the ring's consumer (the handoff's role must say so).
    pub fn into_consumer(self) -> Result<Consumer, RingError> {
        self.expect_role(Role::Consumer)?;
        let (shared, bells) = self.attach()?;
        record_pid(&shared, Role::Consumer);
        Ok(Consumer::new(
            ConsumerEnd::new(shared, self.config.max_frame),
            bells,
            self.config,
        ))
    }

    /// The ring's memfd, for tests that play a hostile peer.
    #[cfg(test)]
    pub(super) fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    fn expect_role(&self, role: Role) -> Result<(), RingError> {
        if self.role == role {
            Ok(())
        } else {
            Err(RingError::Handoff {
                reason: format!(
                    "handoff is for the {:?} end, not the {role:?} end",
                    self.role
                ),
            })
        }
    }

    fn encode(&self) -> [u8; MESSAGE_BYTES] {
        let mut out = [0u8; MESSAGE_BYTES];
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6] = match self.role {
            Role::Producer => 0,
            Role::Consumer => 1,
        };
        out[7] = match self.config.wait {
            WaitStrategy::Spin => 0,
            WaitStrategy::Park => 1,
            WaitStrategy::Adaptive => 2,
        };
        out[8..16].copy_from_slice(&self.config.slots.to_le_bytes());
        out[16..20].copy_from_slice(&(self.config.max_frame as u32).to_le_bytes());
        out[20..24].copy_from_slice(&self.config.spin_us.to_le_bytes());
        out[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<Self, RingError> {
        let bad = |reason: String| RingError::Handoff { reason };
        let word = |range: std::ops::Range<usize>| -> u64 {
            bytes[range]
                .iter()
                .rev()
                .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
        };
        if bytes.len() != MESSAGE_BYTES
            || word(0..4) != u64::from(MAGIC)
            || word(4..6) != u64::from(VERSION)
        {
            return Err(bad(format!(
                "not a version {VERSION} ring handoff ({} bytes)",
                bytes.len()
            )));
        }
        let role = match bytes[6] {
            0 => Role::Producer,
            1 => Role::Consumer,
            other => return Err(bad(format!("unknown role {other}"))),
        };
        let wait = match bytes[7] {
            0 => WaitStrategy::Spin,
            1 => WaitStrategy::Park,
            2 => WaitStrategy::Adaptive,
            other => return Err(bad(format!("unknown wait strategy {other}"))),
        };
        let slots = word(8..16);
        if slots > MAX_SLOTS {
            return Err(bad(format!("{slots} slots is more than {MAX_SLOTS}")));
        }
        let config = RingConfig {
            slots,
            max_frame: word(16..20) as usize,
            wait,
            spin_us: word(20..24) as u32,
        };
        config.validate().map_err(|err| bad(err.to_string()))?;
        let [memfd, data_bell, space_bell]: [OwnedFd; 3] = fds
            .try_into()
            .map_err(|fds: Vec<OwnedFd>| bad(format!("{} descriptors instead of 3", fds.len())))?;
        Ok(Self {
            config,
            epoch: word(24..32),
            role,
            memfd,
            data_bell,
            space_bell,
        })
    }
}

/// Sends one datagram, with `fds` as `SCM_RIGHTS` when there are any.
fn send(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[i32],
    what: &'static str,
) -> Result<(), RingError> {
    send_flags(socket, bytes, fds, MsgFlags::empty(), what)
}

/// [`send`] with `flags` besides `MSG_NOSIGNAL`.
fn send_flags(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[i32],
    flags: MsgFlags,
    what: &'static str,
) -> Result<(), RingError> {
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(bytes)],
        control,
        MsgFlags::MSG_NOSIGNAL | flags,
        None,
    )
    .map_err(|errno| match errno {
        nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET => RingError::PeerGone,
        errno => RingError::Os {
            what,
            source: errno.into(),
        },
    })?;
    Ok(())
}

fn record_pid(shared: &Shared, role: Role) {
    let header = &shared.control().header;
    let slot = match role {
        Role::Producer => &header.producer_pid,
        Role::Consumer => &header.consumer_pid,
    };
    // SYNC: Relaxed; informational, read only for diagnostics.
    slot.store(std::process::id(), Ordering::Relaxed);
}

/// A connection to a peer process that rings are handed over on.
#[derive(Debug)]
pub struct PeerLink {
    socket: OwnedFd,
}

impl PeerLink {
    /// A connected pair of links, both close-on-exec: one per side, for
    /// two threads or for [`PeerLink::spawn`].
    pub fn pair() -> Result<(PeerLink, PeerLink), RingError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|errno| RingError::Os {
            what: "socketpair",
            source: errno.into(),
        })?;
        Ok((PeerLink { socket: ours }, PeerLink { socket: theirs }))
    }

    /// Starts `command` with the other end of a new link as its descriptor
    /// [`PEER_FD`] (named in [`PEER_FD_ENV`]), where
    /// [`PeerLink::from_env`] finds it; only that child inherits it.
    pub fn spawn(command: &mut Command) -> Result<(PeerLink, Child), RingError> {
        let (ours, theirs) = Self::pair()?;
        shm::pass_to_child(command, theirs.socket.as_fd(), PEER_FD);
        command.env(PEER_FD_ENV, PEER_FD.to_string());
        let child = command.spawn().map_err(os("start peer process"))?;
        drop(theirs);
        Ok((ours, child))
    }

    /// The link a parent left this process, named by [`PEER_FD_ENV`].
    pub fn from_env() -> Result<PeerLink, RingError> {
        let text = std::env::var(PEER_FD_ENV).map_err(|_| RingError::Handoff {
            reason: format!("{PEER_FD_ENV} is not set"),
        })?;
        let fd: i32 = text.parse().map_err(|_| RingError::Handoff {
            reason: format!("{PEER_FD_ENV}={text:?} is not a descriptor number"),
        })?;
        Ok(PeerLink {
            socket: shm::inherited_socket(fd)?,
        })
    }

    /// The link a parent left this process as descriptor `fd` (checked to
    /// be a socket; the link owns and closes it from here).
    pub fn inherited(fd: i32) -> Result<PeerLink, RingError> {
        Ok(PeerLink {
            socket: shm::inherited_socket(fd)?,
        })
    }

    /// Wraps a connected `SOCK_SEQPACKET` Unix socket.
    pub fn from_socket(socket: OwnedFd) -> Self {
        Self { socket }
    }

    /// The socket's descriptor number.
    pub fn raw_fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }

    /// Sends a ring to the peer.
    pub fn send(&self, handoff: &RingHandoff) -> Result<(), RingError> {
        let message = handoff.encode();
        let fds = [
            handoff.memfd.as_raw_fd(),
            handoff.data_bell.as_raw_fd(),
            handoff.space_bell.as_raw_fd(),
        ];
        send(self.socket.as_fd(), &message, &fds, "send ring handoff")
    }

    /// Receives a ring from the peer, waiting up to `timeout`.
    pub fn recv(&self, timeout: Duration) -> Result<RingHandoff, RingError> {
        if !self.readable(timeout)? {
            return Err(RingError::Timeout { waited: timeout });
        }
        let mut message = [0u8; MESSAGE_BYTES + 1];
        let (len, fds) = shm::recv_with_fds(self.socket.as_fd(), &mut message)?;
        if len == 0 {
            return Err(RingError::PeerGone);
        }
        RingHandoff::decode(&message[..len], fds)
    }

    fn readable(&self, timeout: Duration) -> Result<bool, RingError> {
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(errno) => Err(RingError::Os {
                what: "poll peer link",
                source: errno.into(),
            }),
        }
    }

    /// The socket, to wait on it together with other descriptors.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Sends one link message ([`crate::link`]).
    pub fn send_message(&self, message: &LinkMessage) -> Result<(), RingError> {
        let bytes = message.encode().map_err(|err| RingError::Handoff {
            reason: err.to_string(),
        })?;
        send(self.socket.as_fd(), &bytes, &[], "send link message")
    }

    /// Sends one link message if the peer's queue has room, never
    /// blocking: `Ok(false)` when it has none (the peer does not read its
    /// link), so a side that must not block (the daemon's control side)
    /// cannot be held by a peer.
    pub fn try_send_message(&self, message: &LinkMessage) -> Result<bool, RingError> {
        let bytes = message.encode().map_err(|err| RingError::Handoff {
            reason: err.to_string(),
        })?;
        let sent = send_flags(
            self.socket.as_fd(),
            &bytes,
            &[],
            MsgFlags::MSG_DONTWAIT,
            "send link message",
        );
        match sent {
            Ok(()) => Ok(true),
            Err(RingError::Os { source, .. })
                if source.kind() == std::io::ErrorKind::WouldBlock =>
            {
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Receives one link message, waiting up to `timeout`. Descriptors sent
    /// with it are closed: link messages carry none.
    pub fn recv_message(&self, timeout: Duration) -> Result<LinkMessage, RingError> {
        if !self.readable(timeout)? {
            return Err(RingError::Timeout { waited: timeout });
        }
        self.try_recv_message()?
            .ok_or(RingError::Timeout { waited: timeout })
    }

    /// Receives one link message if one is waiting, without blocking.
    /// A message that is not a valid link message is an error: the peer
    /// broke the protocol.
    pub fn try_recv_message(&self) -> Result<Option<LinkMessage>, RingError> {
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 1];
        let Some((len, fds)) =
            shm::recv_with_fds_flags(self.socket.as_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)?
        else {
            return Ok(None);
        };
        drop(fds);
        if len == 0 {
            return Err(RingError::PeerGone);
        }
        LinkMessage::decode(&buf[..len])
            .map(Some)
            .map_err(|err| RingError::Handoff {
                reason: err.to_string(),
            })
    }

    /// Waits up to `timeout` for the peer to go away; true when it has
    /// (its end of the link closed).
    pub fn wait_gone(&self, timeout: Duration) -> Result<bool, RingError> {
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        // POLLHUP and POLLERR are always reported; ask for nothing else, so
        // a message waiting to be read does not count as the peer leaving.
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(false),
            Ok(_) => {
                let events = fds[0].revents().unwrap_or(PollFlags::empty());
                Ok(events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
            }
            Err(errno) => Err(RingError::Os {
                what: "poll peer link",
                source: errno.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RingConfig {
        RingConfig {
            slots: 64,
            max_frame: 512,
            wait: WaitStrategy::Park,
            spin_us: 10,
        }
    }

    #[test]
    fn a_handoff_crosses_a_socketpair_and_attaches() {
        let (ours, theirs) = PeerLink::pair().unwrap();
        let (mut producer, handoff) = export_producer(config()).unwrap();
        ours.send(&handoff).unwrap();
        let mut consumer = theirs
            .recv(Duration::from_secs(1))
            .unwrap()
            .into_consumer()
            .unwrap();
        producer.try_push(b"across").unwrap();
        assert_eq!(
            consumer.try_recv(<[u8]>::to_vec).unwrap(),
            Some(b"across".to_vec())
        );
    }

    #[test]
    fn both_sides_record_their_pid_in_the_header() {
        let (producer, handoff) = export_producer(config()).unwrap();
        let consumer = handoff.into_consumer().unwrap();
        let header = &consumer.end.shared().control().header;
        let me = std::process::id();
        assert_eq!(header.producer_pid.load(Ordering::Relaxed), me);
        assert_eq!(header.consumer_pid.load(Ordering::Relaxed), me);
        drop(producer);
    }

    #[test]
    fn a_handoff_for_the_other_role_is_refused() {
        let (_producer, handoff) = export_producer(config()).unwrap();
        assert!(matches!(
            handoff.into_producer(),
            Err(RingError::Handoff { .. })
        ));
    }

    #[test]
    fn garbage_messages_are_refused_without_panicking() {
        let fds = || Vec::new();
        assert!(RingHandoff::decode(&[0u8; MESSAGE_BYTES], fds()).is_err());
        assert!(RingHandoff::decode(&[1, 2, 3], fds()).is_err());
        let (_p, handoff) = export_producer(config()).unwrap();
        let mut message = handoff.encode();
        message[8] = 3;
        assert!(RingHandoff::decode(&message, fds()).is_err());
        let message = handoff.encode();
        let err = RingHandoff::decode(&message, fds()).unwrap_err();
        assert!(
            err.to_string().contains("0 descriptors instead of 3"),
            "{err}"
        );
    }

    #[test]
    fn a_stale_epoch_is_refused_after_reset() {
        let (mut producer, stale) = export_producer(config()).unwrap();
        let fresh = producer.reset().unwrap();
        assert!(matches!(
            stale.into_consumer(),
            Err(RingError::Handoff { .. })
        ));
        assert!(fresh.into_consumer().is_ok());
    }

    #[test]
    fn link_messages_cross_and_garbage_is_an_error() {
        let (ours, theirs) = PeerLink::pair().unwrap();
        assert!(theirs.try_recv_message().unwrap().is_none());
        let hello = LinkMessage::MethodName { id: 7 };
        ours.send_message(&hello).unwrap();
        assert_eq!(theirs.recv_message(Duration::from_secs(1)).unwrap(), hello);
        send(ours.as_fd(), b"garbage!", &[], "test").unwrap();
        assert!(matches!(
            theirs.try_recv_message(),
            Err(RingError::Handoff { .. })
        ));
        drop(ours);
        assert!(matches!(
            theirs.try_recv_message(),
            Err(RingError::PeerGone)
        ));
    }

    #[test]
    fn a_peer_that_does_not_read_its_link_fills_it_without_blocking_the_sender() {
        let (ours, theirs) = PeerLink::pair().unwrap();
        let message = LinkMessage::ModelGranted { id: 1 };
        let sent = (0..1_000_000)
            .take_while(|_| ours.try_send_message(&message).unwrap())
            .count();
        assert!(sent > 0 && sent < 1_000_000, "{sent}");
        assert_eq!(theirs.try_recv_message().unwrap(), Some(message.clone()));
        assert!(ours.try_send_message(&message).unwrap());
    }

    #[test]
    fn wait_gone_sees_the_peer_close_its_end() {
        let (ours, theirs) = PeerLink::pair().unwrap();
        assert!(!ours.wait_gone(Duration::from_millis(1)).unwrap());
        drop(theirs);
        assert!(ours.wait_gone(Duration::from_millis(100)).unwrap());
    }
}
