//! Receiving many UDP datagrams per system call (`recvmmsg(2)` on Linux).
//!
//! A relay forwards each datagram with one send; what it can save is the
//! receive side. One `recvmmsg` takes up to [`RecvBatch::capacity`] datagrams,
//! and a batch that comes back short proves the socket drained, so the reader
//! goes back to waiting without the extra receive that only answers
//! `EWOULDBLOCK` (see [`recv_batch`]). Written on `libc` rather than `nix`
//! because the buffers are reused for the life of the plane thread and `nix`'s
//! `recvmmsg` ties them to each call's result; see docs/DEPENDENCIES.md.

use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Reusable buffers for receiving up to `capacity` datagrams at once. Each
/// datagram lands `headroom` bytes into its slot, so a header can be written
/// in front of it in place (the ChannelData header on the relay path).
pub struct RecvBatch {
    headroom: usize,
    /// Bytes per slot: headroom plus the largest datagram.
    slot: usize,
    bufs: Vec<u8>,
    /// Per slot: the datagram's length and sender, filled by [`RecvBatch::recv`].
    got: Vec<(usize, Option<SocketAddr>)>,
    count: usize,
    #[cfg(target_os = "linux")]
    sys: linux::Headers,
}

// The buffers and the kernel headers are scratch space: show the shape and what is held.
impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.got.len())
            .field("headroom", &self.headroom)
            .field("slot", &self.slot)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Buffers for `capacity` datagrams of up to `max_datagram` bytes each, each with
    /// `headroom` bytes free in front.
    pub fn new(capacity: usize, headroom: usize, max_datagram: usize) -> Self {
        let capacity = capacity.max(1);
        let slot = headroom + max_datagram;
        Self {
            headroom,
            slot,
            bufs: vec![0; slot * capacity],
            got: vec![(0, None); capacity],
            count: 0,
            #[cfg(target_os = "linux")]
            sys: linux::Headers::new(capacity),
        }
    }

    /// Datagrams one receive can return.
    pub fn capacity(&self) -> usize {
        self.got.len()
    }

    /// Datagrams held from the last receive.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last receive returned nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` of the last receive: its sender, its whole slot (headroom
    /// first) and its length. `None` past the end, or for a datagram dropped
    /// because it did not fit its slot or named no IP sender.
    pub fn datagram(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8], usize)> {
        if i >= self.count {
            return None;
        }
        let (len, from) = *self.got.get(i)?;
        let slot = self.bufs.get_mut(i * self.slot..(i + 1) * self.slot)?;
        Some((from?, slot, len))
    }

    /// Receive what the non-blocking socket `fd` holds, up to [`Self::capacity`]
    /// datagrams, without blocking. `WouldBlock` when it holds nothing.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        #[cfg(target_os = "linux")]
        let n = self.sys.recv(fd, &mut self.bufs, self.slot, self.headroom, &mut self.got)?;
        #[cfg(not(target_os = "linux"))]
        let n = self.recv_one(fd)?;
        self.count = n;
        Ok(n)
    }

    /// Elsewhere than Linux: one `recvfrom` per call.
    #[cfg(not(target_os = "linux"))]
    fn recv_one(&mut self, fd: RawFd) -> io::Result<usize> {
        use std::mem::ManuallyDrop;
        use std::os::fd::FromRawFd;
        // Borrow the descriptor without taking ownership of it.
        let sock = ManuallyDrop::new(unsafe { std::net::UdpSocket::from_raw_fd(fd) });
        let (headroom, slot) = (self.headroom, self.slot);
        let buf = self.bufs.get_mut(headroom..slot).ok_or(ErrorKind::InvalidInput)?;
        let (n, from) = sock.recv_from(buf)?;
        self.got[0] = (n, Some(from));
        Ok(1)
    }
}

/// A non-blocking UDP socket registered with the reactor for reading only.
/// Sends go straight to the kernel ([`ReadSocket::get_ref`]); with the usual
/// read-and-write registration (edge-triggered), every send would also post a
/// writable edge and wake the thread once more for nothing — one extra
/// `epoll_wait` per relayed packet.
pub type ReadSocket = AsyncFd<std::net::UdpSocket>;

/// Register `sock` (already non-blocking) as a [`ReadSocket`]; needs a tokio runtime.
pub fn read_socket(sock: std::net::UdpSocket) -> io::Result<ReadSocket> {
    // SAFETY: the `AsyncFd` owns the socket, so its descriptor stays open and the
    // same until the `AsyncFd` is dropped.
    unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// Send one datagram from `sock`; a full send buffer drops it, as UDP may.
pub fn send_from(sock: &ReadSocket, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
    sock.get_ref().send_to(bytes, to)
}

/// Wait until `sock` is readable, then receive a batch into `batch`. `Ok(true)`:
/// the batch came back full, so more may be waiting. `Ok(false)`: the socket is
/// drained and its readiness cleared, so the next call waits for new datagrams.
/// The datagrams are in `batch` either way (none when it was already empty).
pub async fn recv_batch(sock: &ReadSocket, batch: &RefCell<RecvBatch>) -> io::Result<bool> {
    let mut ready = sock.readable().await?;
    let mut b = batch.borrow_mut();
    b.count = 0;
    let capacity = b.capacity();
    // A short batch is reported to tokio as `WouldBlock`, which is what clears
    // the readiness; the datagrams stay in `batch`.
    match ready.try_io(|s| match b.recv(s.as_raw_fd())? {
        n if n < capacity => Err(ErrorKind::WouldBlock.into()),
        _ => Ok(()),
    }) {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) => Err(e),
        Err(_drained) => Ok(false),
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::socket_addr;
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::RawFd;

    /// The `mmsghdr`s, `iovec`s and sender addresses of one batch. They point
    /// into the caller's buffers, so they are rebuilt at every call rather than
    /// kept self-referential.
    pub struct Headers {
        hdrs: Vec<libc::mmsghdr>,
        iovs: Vec<libc::iovec>,
        addrs: Vec<libc::sockaddr_storage>,
    }

    impl Headers {
        pub fn new(capacity: usize) -> Self {
            // SAFETY: all three are plain C structs for which all-zero is a valid value.
            Self {
                hdrs: (0..capacity).map(|_| unsafe { std::mem::zeroed() }).collect(),
                iovs: (0..capacity).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect(),
                addrs: (0..capacity).map(|_| unsafe { std::mem::zeroed() }).collect(),
            }
        }

        pub fn recv(
            &mut self,
            fd: RawFd,
            bufs: &mut [u8],
            slot: usize,
            headroom: usize,
            got: &mut [(usize, Option<SocketAddr>)],
        ) -> io::Result<usize> {
            let n = self.hdrs.len().min(got.len()).min(bufs.len() / slot.max(1));
            for (i, chunk) in bufs.chunks_exact_mut(slot).take(n).enumerate() {
                let Some(data) = chunk.get_mut(headroom..) else { return Err(io::ErrorKind::InvalidInput.into()) };
                self.iovs[i] = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
                let h = &mut self.hdrs[i];
                h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_iov = &mut self.iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: the first `n` headers point at `n` live iovecs, each at a
            // distinct slot of `bufs` of the length it states, and at `n` address
            // buffers of the size they state; all outlive the call.
            let r = unsafe {
                libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            let r = (r as usize).min(n);
            for ((h, a), g) in self.hdrs.iter().zip(&self.addrs).zip(got.iter_mut()).take(r) {
                let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let from = socket_addr(a, h.msg_hdr.msg_namelen);
                *g = (h.msg_len as usize, if truncated { None } else { from });
            }
            Ok(r)
        }
    }
}

/// The IP sender in a `sockaddr_storage` the kernel filled with `len` bytes.
#[cfg(target_os = "linux")]
fn socket_addr(a: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    let len = len as usize;
    match a.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say the storage holds a `sockaddr_in`,
            // and `sockaddr_storage` is aligned for every address type.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(v4.sin_port)).into())
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddrV6::new(ip, u16::from_be(v6.sin6_port), v6.sin6_flowinfo, v6.sin6_scope_id).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair() -> (ReadSocket, std::net::UdpSocket, SocketAddr) {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let to = rx.local_addr().unwrap();
        (read_socket(rx).unwrap(), std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), to)
    }

    #[tokio::test]
    async fn a_batch_takes_every_queued_datagram_and_a_short_one_clears_readiness() {
        let (rx, tx, to) = pair();
        for i in 0..5u8 {
            tx.send_to(&[i; 10], to).unwrap();
        }
        // Loopback delivers inside `send_to`: all five are queued now.
        let batch = RefCell::new(RecvBatch::new(4, 4, 64));
        assert!(recv_batch(&rx, &batch).await.unwrap(), "a full batch says more may wait");
        assert_eq!(batch.borrow().len(), 4);
        {
            let mut b = batch.borrow_mut();
            let (from, slot, len) = b.datagram(2).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!((len, &slot[4..4 + len]), (10, &[2u8; 10][..]));
        }
        assert!(!recv_batch(&rx, &batch).await.unwrap(), "a short batch says drained");
        assert_eq!(batch.borrow().len(), 1);
        assert_eq!(batch.borrow_mut().datagram(0).unwrap().1[4], 4);
        assert!(batch.borrow_mut().datagram(1).is_none());
        // Readiness was cleared: the next receive waits for a new datagram.
        let waited = tokio::time::timeout(Duration::from_millis(50), recv_batch(&rx, &batch)).await;
        assert!(waited.is_err(), "readiness survived a drained batch");
        tx.send_to(b"again", to).unwrap();
        assert!(!recv_batch(&rx, &batch).await.unwrap());
        assert_eq!(batch.borrow_mut().datagram(0).map(|(_, _, n)| n), Some(5));
    }

    #[tokio::test]
    async fn a_datagram_larger_than_its_slot_is_dropped_not_cut() {
        let (rx, tx, to) = pair();
        tx.send_to(&[7; 100], to).unwrap();
        tx.send_to(&[8; 10], to).unwrap();
        let batch = RefCell::new(RecvBatch::new(4, 0, 32));
        recv_batch(&rx, &batch).await.unwrap();
        let mut b = batch.borrow_mut();
        assert_eq!(b.len(), 2);
        assert!(b.datagram(0).is_none(), "a truncated datagram must not be handed on");
        assert_eq!(b.datagram(1).map(|(_, _, n)| n), Some(10));
    }
}
