//! TUN devices: opening `/dev/net/tun` and reading/writing raw IP packets.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::error::{Error, Result};

/// `TUNSETIFF`, `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Largest packet a TUN device hands us (its MTU is 1500; leave room for larger MTUs).
pub(crate) const MAX_PACKET: usize = 65_535;

/// `struct ifreq` as far as `TUNSETIFF` reads it: the name and the flags, padded to the
/// kernel's 40 bytes.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates a TUN device (IP packets, no packet-information header) named `name` in the network
/// namespace of the calling thread, and returns its non-blocking file descriptor.
///
/// The device disappears when the descriptor is closed.
pub(crate) fn open_tun(name: &str) -> Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(Error::InvalidArgument(format!("interface name {name:?} must be 1-15 bytes")));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| Error::TunUnavailable { context: "opening /dev/net/tun".into(), source: e })?;
    let mut req =
        IfReq { name: [0; libc::IFNAMSIZ], flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short, _pad: [0; 22] };
    for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads a `struct ifreq`; `req` is a properly sized, initialised
    // `#[repr(C)]` value that outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(Error::TunUnavailable {
            context: format!("creating TUN device {name} (ioctl TUNSETIFF)"),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: the raw fd comes from `into_raw_fd`, so we own it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(file.into_raw_fd()) })
}

/// Reads one packet; `Ok(None)` when none is waiting.
pub(crate) fn read_packet(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            // `n` is non-negative and at most `buf.len()`.
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
    }
}

/// Writes one packet. Returns `false` if the device would block (the packet is dropped).
pub(crate) fn write_packet(fd: &OwnedFd, packet: &[u8]) -> io::Result<bool> {
    loop {
        // SAFETY: `packet` is valid for reads of `packet.len()` bytes.
        let n = unsafe { libc::write(fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n >= 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => return Ok(false),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
    }
}
