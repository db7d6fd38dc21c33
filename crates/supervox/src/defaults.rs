//! Defaults of the daemon's own settings, in one place for the command line
//! and the code that builds options without it (the standby supernode).
//! Limits of the protocol state machines live in `supervox_core::defaults`
//! and `supervox_turn::defaults`.

/// Connections a supernode holds at most (clients, peers and handshakes).
pub const MAX_CONNECTIONS: usize = 20_000;

/// Clients a promoted (`--supernode auto`) supernode serves before redirecting:
/// lower than a dedicated supernode's, as it runs on a user's machine.
pub const PROMOTED_MAX_CLIENTS: usize = 1_000;

/// Seconds signed in before a `--supernode auto` node volunteers.
pub const PROMOTE_AFTER_S: u64 = 600;

/// Seconds a promoted supernode is not needed before it steps back.
pub const STEP_BACK_AFTER_S: u64 = supervox_core::defaults::STEP_BACK_AFTER_MS / 1000;
