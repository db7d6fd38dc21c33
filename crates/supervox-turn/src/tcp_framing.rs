//! Splitting a TCP/TLS byte stream into STUN messages and ChannelData frames (RFC 8656 §12.5).
//!
//! Over streams, a STUN message is `20 + length` bytes and a ChannelData frame is
//! `4 + length` bytes followed by zero padding up to a multiple of 4. The framer yields each
//! message with its padding removed; feed it to [`crate::TurnServer::handle_client`].

use crate::codec::{self, PacketKind, CHANNEL_HEADER_LEN, HEADER_LEN, MAGIC_COOKIE};

/// Most bytes the framer will buffer: one maximal frame plus one 64 KiB read.
pub const MAX_BUFFERED: usize = 4 * 65_536;

/// The stream is not TURN: the driver must close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// The next frame starts with bytes that are neither STUN nor ChannelData.
    NotTurn,
    /// More than [`MAX_BUFFERED`] bytes were pushed without being drained.
    BufferFull,
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramingError::NotTurn => f.write_str("stream carries neither STUN nor ChannelData"),
            FramingError::BufferFull => f.write_str("framing buffer full"),
        }
    }
}

impl std::error::Error for FramingError {}

/// Incremental stream framer; one per TCP/TLS connection.
#[derive(Debug, Default)]
pub struct TcpFramer {
    buf: Vec<u8>,
    start: usize,
    poisoned: bool,
}

impl TcpFramer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Append bytes read from the stream. Drain with [`TcpFramer::next_frame`] after each push.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FramingError> {
        if self.buffered() + data.len() > MAX_BUFFERED {
            self.poisoned = true;
            return Err(FramingError::BufferFull);
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete frame (padding stripped), `Ok(None)` if more bytes are needed, or an
    /// error after which the connection must be closed (the framer stays failed).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        if self.poisoned {
            return Err(FramingError::NotTurn);
        }
        let avail = &self.buf[self.start..];
        if avail.len() < CHANNEL_HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([avail[2], avail[3]]));
        let (frame_len, consumed) = match codec::packet_kind(avail) {
            PacketKind::Stun => {
                if len % 4 != 0 {
                    self.poisoned = true;
                    return Err(FramingError::NotTurn);
                }
                if avail.len() >= 8 && u32::from_be_bytes([avail[4], avail[5], avail[6], avail[7]]) != MAGIC_COOKIE {
                    self.poisoned = true;
                    return Err(FramingError::NotTurn);
                }
                (HEADER_LEN + len, HEADER_LEN + len)
            }
            PacketKind::ChannelData => {
                if !codec::is_rfc5766_channel(u16::from_be_bytes([avail[0], avail[1]])) {
                    self.poisoned = true;
                    return Err(FramingError::NotTurn);
                }
                let frame = CHANNEL_HEADER_LEN + len;
                (frame, frame.div_ceil(4) * 4)
            }
            PacketKind::Other => {
                self.poisoned = true;
                return Err(FramingError::NotTurn);
            }
        };
        if avail.len() < consumed {
            return Ok(None);
        }
        let begin = self.start;
        self.start += consumed;
        Ok(self.buf.get(begin..begin + frame_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_channel_data, method, Class, MessageBuilder};

    #[test]
    fn splits_mixed_stream_byte_by_byte() {
        let stun = MessageBuilder::new(method::BINDING, Class::Request, [1; 12]).into_bytes();
        let cd1 = encode_channel_data(0x4000, b"abc", true).expect("cd");
        let cd2 = encode_channel_data(0x4FFF, b"abcd", true).expect("cd");
        let stream: Vec<u8> = [stun.clone(), cd1.clone(), cd2.clone(), stun.clone()].concat();
        let mut f = TcpFramer::new();
        let mut frames = Vec::new();
        for b in &stream {
            f.push(std::slice::from_ref(b)).expect("push");
            while let Some(fr) = f.next_frame().expect("frame") {
                frames.push(fr.to_vec());
            }
        }
        assert_eq!(frames, vec![stun.clone(), cd1[..7].to_vec(), cd2.clone(), stun]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        let mut f = TcpFramer::new();
        // A TLS ClientHello on a plain-TCP port.
        f.push(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]).expect("push");
        assert_eq!(f.next_frame(), Err(FramingError::NotTurn));
        assert_eq!(f.next_frame(), Err(FramingError::NotTurn));
        let mut g = TcpFramer::new();
        g.push(&[0x80, 0x00, 0x00, 0x04]).expect("push");
        assert_eq!(g.next_frame(), Err(FramingError::NotTurn));
        let mut h = TcpFramer::new();
        assert_eq!(h.push(&vec![0u8; MAX_BUFFERED + 1]), Err(FramingError::BufferFull));
        let mut k = TcpFramer::new();
        k.push(&[0x00, 0x01, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]).expect("push");
        assert_eq!(k.next_frame(), Err(FramingError::NotTurn));
    }

    #[test]
    fn random_streams_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let mut f = TcpFramer::new();
            for _ in 0..8 {
                let n = rng.gen_range(0..200);
                let chunk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                if f.push(&chunk).is_err() {
                    break;
                }
                while let Ok(Some(_)) = f.next_frame() {}
            }
        }
    }
}
