//! An agent's stdout and stderr, turned into log lines tagged with its
//! name.
//!
//! The pipes are non-blocking and read only when the watcher says they
//! are readable, at most [`READ_PER_TICK`] bytes each per tick: a chatty
//! agent fills its pipe and waits on its own writes; the daemon never
//! waits. A line is cut at [`MAX_LINE`] bytes, and at most
//! [`LINES_PER_TICK`] lines per pipe per tick become log events; the rest
//! are counted as dropped (and reported in one line), so an agent cannot
//! flood the daemon's log.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Bytes read from one pipe per tick at most.
pub const READ_PER_TICK: usize = 64 * 1024;
/// Longest line kept, bytes.
pub const MAX_LINE: usize = 1024;
/// Lines logged per pipe per tick at most.
pub const LINES_PER_TICK: usize = 100;

/// One of an agent's output pipes.
#[derive(Debug)]
pub struct LogPipe {
    agent: String,
    stream: &'static str,
    pipe: std::fs::File,
    partial: Vec<u8>,
    /// Lines not logged (over the per-tick limit).
    pub dropped: u64,
}

impl LogPipe {
    /// Wraps a pipe (made non-blocking here).
    pub fn new(agent: &str, stream: &'static str, fd: OwnedFd) -> std::io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(Self {
            agent: agent.to_owned(),
            stream,
            pipe: std::fs::File::from(fd),
            partial: Vec::with_capacity(MAX_LINE),
            dropped: 0,
        })
    }

    /// The pipe, to watch.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    /// Reads what is there (bounded) and logs its lines; true at end of
    /// file (the agent closed it or exited).
    pub fn drain(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let (mut read, mut lines) = (0, 0);
        let dropped_before = self.dropped;
        let eof = loop {
            if read >= READ_PER_TICK {
                break false;
            }
            match self.pipe.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    read += n;
                    for &byte in &buf[..n] {
                        self.take(byte, &mut lines);
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        if eof && !self.partial.is_empty() {
            self.take(b'\n', &mut lines);
        }
        if self.dropped > dropped_before {
            tracing::warn!(
                agent = %self.agent,
                stream = self.stream,
                dropped = self.dropped - dropped_before,
                "agent output over the log limit; lines dropped"
            );
        }
        eof
    }

    fn take(&mut self, byte: u8, lines: &mut usize) {
        if byte != b'\n' {
            if self.partial.len() < MAX_LINE {
                self.partial.push(byte);
            }
            return;
        }
        if *lines < LINES_PER_TICK {
            let line = String::from_utf8_lossy(&self.partial);
            tracing::info!(agent = %self.agent, stream = self.stream, line = %line, "agent output");
            *lines += 1;
        } else {
            self.dropped += 1;
        }
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn lines_are_cut_counted_and_end_of_file_is_seen() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut sut = LogPipe::new("Echo", "stdout", read).unwrap();
        let mut writer = std::fs::File::from(write);
        let long = "x".repeat(MAX_LINE * 2);
        writeln!(writer, "hello\n{long}").unwrap();
        for i in 0..LINES_PER_TICK + 5 {
            writeln!(writer, "line {i}").unwrap();
        }
        write!(writer, "tail without newline").unwrap();
        assert!(!sut.drain());
        assert_eq!(sut.dropped, 7);
        drop(writer);
        assert!(sut.drain());
        assert!(sut.partial.is_empty());
    }
}
