//! Error type of the network lab.

use std::io;

/// Everything that can go wrong while building or running a lab.
///
/// The lab never degrades silently: a missing privilege or tool is an error that says what is
/// missing, so a test that needs the lab fails loudly instead of being skipped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process is not running as root (effective uid 0), which network namespaces and TUN
    /// devices require.
    #[error("supervox-netlab needs root (effective uid is {euid}): network namespaces and TUN devices cannot be created otherwise; run the tests or the tool as root")]
    NotRoot {
        /// The effective uid found.
        euid: u32,
    },
    /// The `ip` command of iproute2 could not be run.
    #[error("supervox-netlab needs the `ip` command of iproute2, which could not be run: {0}")]
    IpMissing(#[source] io::Error),
    /// `/dev/net/tun` could not be opened or a TUN device could not be created.
    #[error("TUN device unavailable ({context}): {source}; the impaired link needs /dev/net/tun and CAP_NET_ADMIN")]
    TunUnavailable {
        /// What was being done.
        context: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// An external command ran but failed.
    #[error("command `{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, for the message.
        command: String,
        /// How it ended.
        status: String,
        /// What it printed on standard error (trimmed).
        stderr: String,
    },
    /// An I/O error with a description of what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// A parameter was out of range or could not be parsed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A closure run inside a namespace panicked.
    #[error("a closure run inside namespace {0} panicked")]
    Panicked(String),
}

impl Error {
    /// Wraps an [`io::Error`] with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
