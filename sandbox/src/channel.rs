//! The one way the sandbox's processes talk to each other: typed
//! [`Message`]s over a Unix socket pair, each sent as one frame
//! (`tag: u8`, `len: u32` little-endian, `len` bytes of payload).
//!
//! A closed channel is a message too: [`Channel::recv`] returns `None` at
//! end of file. Both ends are close-on-exec, so the command's end of the
//! report channel closes exactly when its execve succeeds.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

/// What one process of the sandbox tells another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// "I am in my new user namespace; map me." The sender's pid as the
    /// mounted /proc knows it, which may differ from the pid the clone
    /// returned (the caller may itself run in a PID namespace whose /proc
    /// is another namespace's).
    Ready {
        /// The pid to write `/proc/PID/uid_map` of.
        proc_pid: i32,
    },
    /// "Your id map is written: go on."
    Go,
    /// "I wrote my own id map (a single id, which a process may map for
    /// itself): nothing to do, and I am not waiting for `Go`."
    Mapped,
    /// A step failed: the setup step, or execve of the command.
    Failed {
        /// The failure was execve's (else a setup step's).
        exec: bool,
        /// The errno, 0 when the failure had none.
        errno: i32,
        /// The step, with the paths it involved (empty for exec).
        step: String,
    },
    /// The command ended with this raw wait status (from the monitor).
    Exited {
        /// As waitpid(2) reports it.
        raw: i32,
    },
}

const READY: u8 = b'r';
const GO: u8 = b'g';
const MAPPED: u8 = b'm';
const FAILED: u8 = b'f';
const EXITED: u8 = b'x';

impl Message {
    fn encode(&self) -> Vec<u8> {
        let (tag, payload) = match self {
            Message::Ready { proc_pid } => (READY, proc_pid.to_le_bytes().to_vec()),
            Message::Go => (GO, Vec::new()),
            Message::Mapped => (MAPPED, Vec::new()),
            Message::Failed { exec, errno, step } => {
                let mut p = vec![u8::from(*exec)];
                p.extend_from_slice(&errno.to_le_bytes());
                p.extend_from_slice(step.as_bytes());
                (FAILED, p)
            }
            Message::Exited { raw } => (EXITED, raw.to_le_bytes().to_vec()),
        };
        let mut frame = Vec::with_capacity(5 + payload.len());
        frame.push(tag);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&payload);
        frame
    }

    fn decode(tag: u8, payload: &[u8]) -> io::Result<Message> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sandbox message");
        let int = |b: &[u8]| b.try_into().map(i32::from_le_bytes).map_err(|_| bad());
        match tag {
            READY => Ok(Message::Ready {
                proc_pid: int(payload)?,
            }),
            GO if payload.is_empty() => Ok(Message::Go),
            MAPPED if payload.is_empty() => Ok(Message::Mapped),
            FAILED if payload.len() >= 5 => Ok(Message::Failed {
                exec: payload[0] != 0,
                errno: int(&payload[1..5])?,
                step: String::from_utf8_lossy(&payload[5..]).into_owned(),
            }),
            EXITED => Ok(Message::Exited { raw: int(payload)? }),
            _ => Err(bad()),
        }
    }
}

/// One end of a channel between two processes of the sandbox.
#[derive(Debug)]
pub(crate) struct Channel(UnixStream);

impl Channel {
    /// A connected pair of ends, both close-on-exec.
    pub(crate) fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Channel(a), Channel(b)))
    }

    /// Sends `msg` as one frame.
    pub(crate) fn send(&mut self, msg: &Message) -> io::Result<()> {
        self.0.write_all(&msg.encode())
    }

    /// Whether the other end is gone (every copy closed) or has something
    /// to read, without waiting: for a process that expects nothing yet
    /// and must not go on once the other process has died.
    pub(crate) fn readable_now(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }

    /// The next message, or `None` when every copy of the other end is
    /// closed (its process exited, or exec'd).
    pub(crate) fn recv(&mut self) -> io::Result<Option<Message>> {
        // Every frame starts with these 5 bytes, so asking for all of them
        // at once cannot take a byte of the next frame; usually one read.
        let mut head = [0u8; 5];
        match self.0.read(&mut head)? {
            0 => return Ok(None),
            n => self.0.read_exact(&mut head[n..])?,
        }
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "oversized sandbox message",
            ));
        }
        let mut payload = vec![0u8; len];
        self.0.read_exact(&mut payload)?;
        Message::decode(head[0], &payload).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_crosses_and_eof_is_none() {
        let (mut a, mut b) = Channel::pair().unwrap();
        let msgs = [
            Message::Ready { proc_pid: 4242 },
            Message::Go,
            Message::Mapped,
            Message::Failed {
                exec: false,
                errno: libc::EPERM,
                step: "cannot bind /a on /b".into(),
            },
            Message::Failed {
                exec: true,
                errno: libc::ENOENT,
                step: String::new(),
            },
            Message::Exited { raw: 7 << 8 },
        ];
        for m in &msgs {
            a.send(m).unwrap();
        }
        drop(a);
        for m in &msgs {
            assert_eq!(b.recv().unwrap().as_ref(), Some(m));
        }
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn readable_now_tells_a_silent_peer_from_a_gone_one() {
        let (a, b) = Channel::pair().unwrap();
        assert!(!b.readable_now(), "nothing sent, peer alive");
        drop(a);
        assert!(b.readable_now(), "peer gone: EOF is readable");
    }

    #[test]
    fn garbage_is_an_error_not_a_message() {
        assert!(Message::decode(b'?', &[]).is_err());
        assert!(Message::decode(READY, &[1, 2]).is_err());
        assert!(Message::decode(FAILED, &[1]).is_err());
    }
}
