//! Length-prefixed frames on a TCP stream.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes (a Noise
//! handshake or transport message). Lengths above [`MAX_FRAME_LEN`] are a
//! protocol violation: the connection is closed rather than buffering.

use thiserror::Error;

/// Largest frame body accepted: one Noise message (65535 bytes) at most.
pub const MAX_FRAME_LEN: usize = 65_535;

/// Largest frame accepted before the peer is authenticated (Noise handshake messages and
/// the Hello are a few hundred bytes): a stranger's connection holds at most this much
/// plus one read while it has not proven who it is.
pub const MAX_PREAUTH_FRAME_LEN: usize = 4_096;

/// Why a byte stream could not be split into frames.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The peer announced a frame larger than the decoder's limit ([`MAX_FRAME_LEN`], or
    /// [`MAX_PREAUTH_FRAME_LEN`] before authentication).
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A zero-length frame is never valid.
    #[error("empty frame")]
    Empty,
}

/// Prefix `body` with its length. Panics only on a caller bug (body too large),
/// never on network input.
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) {
    assert!(body.len() <= MAX_FRAME_LEN, "outgoing frame too large");
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// Incremental frame splitter: feed it whatever the socket returned.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder with an empty buffer, accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder accepting frames up to `max_len` (at most [`MAX_FRAME_LEN`]).
    pub fn with_max_len(max_len: usize) -> Self {
        FrameDecoder { buf: Vec::new(), max_len: max_len.min(MAX_FRAME_LEN) }
    }

    /// Change the largest frame accepted from now on (e.g. once the peer is authenticated).
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len.min(MAX_FRAME_LEN);
    }

    /// Append received bytes. The buffer never exceeds one maximal frame plus
    /// one read, because [`FrameDecoder::next_frame`] rejects larger lengths
    /// before more is buffered.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Free the buffer if it holds nothing (it keeps the capacity of the
    /// largest read otherwise): for owners of many mostly idle decoders.
    pub fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max_len {
            return Err(FrameError::TooLarge(len));
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_across_reads() {
        let mut wire = Vec::new();
        encode_frame(b"hello", &mut wire);
        encode_frame(b"world!", &mut wire);
        let mut d = FrameDecoder::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
        }
        assert_eq!(d.next_frame().unwrap().unwrap(), b"hello");
        assert_eq!(d.next_frame().unwrap().unwrap(), b"world!");
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_lower_limit_refuses_before_buffering_the_body() {
        let mut d = FrameDecoder::with_max_len(MAX_PREAUTH_FRAME_LEN);
        d.push(&(MAX_PREAUTH_FRAME_LEN as u32 + 1).to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(MAX_PREAUTH_FRAME_LEN + 1)));
        let mut d = FrameDecoder::with_max_len(MAX_PREAUTH_FRAME_LEN);
        let mut wire = Vec::new();
        encode_frame(&[7; MAX_PREAUTH_FRAME_LEN], &mut wire);
        d.push(&wire);
        assert_eq!(d.next_frame().unwrap().map(|f| f.len()), Some(MAX_PREAUTH_FRAME_LEN));
        d.set_max_len(usize::MAX);
        let mut wire = Vec::new();
        encode_frame(&[7; MAX_FRAME_LEN], &mut wire);
        d.push(&wire);
        assert_eq!(d.next_frame().unwrap().map(|f| f.len()), Some(MAX_FRAME_LEN));
    }

    #[test]
    fn rejects_oversized_and_empty() {
        let mut d = FrameDecoder::new();
        d.push(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(0xffff_ffff)));
        let mut d = FrameDecoder::new();
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
    }
}
