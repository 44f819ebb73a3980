//! The attach socket (`/run/pinwheel/agent.sock` by default): where agents
//! started by something else (a systemd unit, a container) connect to
//! take their rings, kind `external` in the manifest.
//!
//! A `SOCK_SEQPACKET` Unix socket, mode 0666 so any local user can reach
//! it: who may attach as which agent is decided per connection from the
//! kernel's `SO_PEERCRED` (pid, uid, gid of the peer, which it cannot
//! forge), checked against the manifest's `user` and `group` once the
//! hello names the agent (`side.rs`). Non-blocking: accepting never waits.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, getsockopt, listen,
    socket, sockopt,
};
use pinwheel_ipc::ring::PeerLink;

/// Who is on the other end of a connection, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCreds {
    /// Its process.
    pub pid: u32,
    /// Its user.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
}

/// The listening socket.
#[derive(Debug)]
pub struct AttachSocket {
    listener: OwnedFd,
    path: PathBuf,
}

impl AttachSocket {
    /// Listens at `path` (its directory is created; a stale socket file
    /// is replaced).
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let addr = UnixAddr::new(path)?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&listener), &addr)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        listen(&listener, Backlog::new(16)?)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The listener, to watch.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The next waiting connection, non-blocking, with its peer's
    /// credentials; `None` when none waits.
    pub fn accept(&self) -> Option<(PeerLink, PeerCreds)> {
        loop {
            let raw = match accept4(
                std::os::fd::AsRawFd::as_raw_fd(&self.listener),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(raw) => raw,
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => continue,
                Err(_) => return None,
            };
            // SAFETY: accept4 just returned this descriptor; nothing else
            // owns it.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
            let Ok(creds) = getsockopt(&fd, sockopt::PeerCredentials) else {
                continue;
            };
            let creds = PeerCreds {
                pid: creds.pid() as u32,
                uid: creds.uid(),
                gid: creds.gid(),
            };
            return Some((PeerLink::from_socket(fd), creds));
        }
    }
}

impl Drop for AttachSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
