//! The authentication handshake: HMAC-SHA256 challenge-response, in both directions.
//!
//! ```text
//! listener -> client   #MP-CHALLENGE#  server_nonce(40)
//! client   -> listener #MP-RESPONSE#   HMAC(key, "client" | server_nonce)  client_nonce(40)
//! listener -> client   #WELCOME#       HMAC(key, "server" | client_nonce)   (or #FAILURE#)
//! client   -> listener #WELCOME#                                            (or #FAILURE#)
//! ```
//!
//! Each message is one frame (8-byte little-endian length, then the body), read with a
//! limit of [`MAX_HANDSHAKE_MESSAGE`] bytes and against a deadline, so a peer that sends a
//! huge length, garbage or nothing at all costs a bounded amount of memory and time. Nonces
//! are fresh random bytes; tags are compared in constant time; the role strings keep one
//! side's answer from being replayed as the other's. This runs before any message is
//! decoded. It is not wire-compatible with Python's handshake.

use std::io::{self, Read, Write};
use std::time::Duration;

use mp_ipc::deadline::Deadline;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AuthenticationError;

/// The longest handshake message accepted, in bytes.
pub const MAX_HANDSHAKE_MESSAGE: u64 = 256;

const CHALLENGE: &[u8] = b"#MP-CHALLENGE#";
const RESPONSE: &[u8] = b"#MP-RESPONSE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const NONCE_LEN: usize = 40;
const TAG_LEN: usize = 32;

/// A byte stream whose reads can be bounded in time.
pub(crate) trait TimedStream: Read + Write {
    /// Sets the read and write timeouts (`None`: block).
    fn set_io_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

fn tag(key: &[u8], role: &[u8], nonce: &[u8]) -> [u8; TAG_LEN] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(role);
    mac.update(nonce);
    mac.finalize().into_bytes().into()
}

fn verify(key: &[u8], role: &[u8], nonce: &[u8], got: &[u8]) -> bool {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(role);
    mac.update(nonce);
    mac.verify_slice(got).is_ok()
}

fn nonce() -> Result<[u8; NONCE_LEN], AuthenticationError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n)
        .map_err(|e| AuthenticationError::Io(io::Error::other(e.to_string())))?;
    Ok(n)
}

fn io_error(e: io::Error) -> AuthenticationError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => AuthenticationError::Timeout,
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => AuthenticationError::Closed,
        _ => AuthenticationError::Io(e),
    }
}

struct Framed<'a, S: TimedStream> {
    s: &'a mut S,
    deadline: Deadline,
}

impl<S: TimedStream> Framed<'_, S> {
    /// The time left (`None`: no deadline), an error once it is up.
    fn left(&self) -> Result<Option<Duration>, AuthenticationError> {
        match self.deadline.remaining() {
            Some(left) if left.is_zero() => Err(AuthenticationError::Timeout),
            left => Ok(left),
        }
    }

    fn send(&mut self, parts: &[&[u8]]) -> Result<(), AuthenticationError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut msg = Vec::with_capacity(8 + len);
        msg.extend_from_slice(&(len as u64).to_le_bytes());
        for p in parts {
            msg.extend_from_slice(p);
        }
        let left = self.left()?;
        self.s.set_io_timeout(left).map_err(io_error)?;
        self.s.write_all(&msg).map_err(io_error)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), AuthenticationError> {
        let mut got = 0;
        while got < buf.len() {
            let left = self.left()?;
            self.s.set_io_timeout(left).map_err(io_error)?;
            match self.s.read(&mut buf[got..]) {
                Ok(0) => return Err(AuthenticationError::Closed),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<Vec<u8>, AuthenticationError> {
        let mut header = [0u8; 8];
        self.read_exact(&mut header)?;
        let len = u64::from_le_bytes(header);
        if len > MAX_HANDSHAKE_MESSAGE {
            return Err(AuthenticationError::Protocol(format!(
                "a handshake message of {len} bytes exceeds the limit of {MAX_HANDSHAKE_MESSAGE}"
            )));
        }
        let mut body = vec![0u8; len as usize];
        self.read_exact(&mut body)?;
        Ok(body)
    }
}

/// The listener's side: challenges the client, then answers the client's challenge.
/// `verified` runs once the client has proven it holds the key (before the last exchange).
pub(crate) fn serve<S: TimedStream>(
    stream: &mut S,
    key: &[u8],
    deadline: Deadline,
    verified: impl FnOnce(),
) -> Result<(), AuthenticationError> {
    let mut f = Framed {
        s: stream,
        deadline,
    };
    let ours = nonce()?;
    f.send(&[CHALLENGE, &ours])?;
    let answer = f.recv()?;
    let Some(rest) = answer.strip_prefix(RESPONSE) else {
        let _ = f.send(&[FAILURE]);
        return Err(AuthenticationError::Protocol(
            "expected a response to the challenge".into(),
        ));
    };
    if rest.len() != TAG_LEN + NONCE_LEN {
        let _ = f.send(&[FAILURE]);
        return Err(AuthenticationError::Protocol(format!(
            "a response of {} bytes, expected {}",
            rest.len(),
            TAG_LEN + NONCE_LEN
        )));
    }
    let (their_tag, their_nonce) = rest.split_at(TAG_LEN);
    if !verify(key, b"client", &ours, their_tag) {
        let _ = f.send(&[FAILURE]);
        return Err(AuthenticationError::BadResponse);
    }
    verified();
    f.send(&[WELCOME, &tag(key, b"server", their_nonce)])?;
    match f.recv()? {
        v if v == WELCOME => Ok(()),
        v if v == FAILURE => Err(AuthenticationError::Rejected),
        _ => Err(AuthenticationError::Protocol(
            "expected the client's verdict".into(),
        )),
    }
}

/// The client's side: answers the listener's challenge, then challenges the listener.
pub(crate) fn answer<S: TimedStream>(
    stream: &mut S,
    key: &[u8],
    deadline: Deadline,
) -> Result<(), AuthenticationError> {
    let mut f = Framed {
        s: stream,
        deadline,
    };
    let challenge = f.recv()?;
    let their_nonce = match challenge.strip_prefix(CHALLENGE) {
        Some(n) if n.len() == NONCE_LEN => n,
        _ => {
            return Err(AuthenticationError::Protocol(
                "expected a challenge from the listener".into(),
            ))
        }
    };
    let ours = nonce()?;
    f.send(&[RESPONSE, &tag(key, b"client", their_nonce), &ours])?;
    let verdict = f.recv()?;
    if verdict == FAILURE {
        return Err(AuthenticationError::Rejected);
    }
    match verdict.strip_prefix(WELCOME) {
        Some(t) if verify(key, b"server", &ours, t) => {
            f.send(&[WELCOME])?;
            Ok(())
        }
        Some(_) => {
            let _ = f.send(&[FAILURE]);
            Err(AuthenticationError::BadResponse)
        }
        None => Err(AuthenticationError::Protocol(
            "expected the listener's verdict".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_depend_on_key_role_and_nonce() {
        let t = tag(b"k", b"client", b"n");
        assert!(verify(b"k", b"client", b"n", &t));
        assert!(!verify(b"x", b"client", b"n", &t));
        assert!(!verify(b"k", b"server", b"n", &t));
        assert!(!verify(b"k", b"client", b"m", &t));
        assert!(!verify(b"k", b"client", b"n", &t[..31]));
    }
}
