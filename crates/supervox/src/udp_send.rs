//! Sending UDP datagrams from tokio sockets.

use std::io::ErrorKind;
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// Send a datagram now. Tokio's `try_send_to` answers `WouldBlock` until the
/// reactor has reported the socket writable once, which drops the first
/// datagrams of a fresh socket; UDP sends practically never block, so this
/// goes to the kernel directly.
pub fn send_now(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    match sock.try_send_to(bytes, to) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => socket2::SockRef::from(sock).send_to(bytes, &to.into()),
        r => r,
    }
}
