//! Default TURN server limits, in one place: [`TurnConfig::new`](crate::TurnConfig::new)
//! and the supervox daemon's command line both take them from here.

/// Per-allocation bandwidth in kbit/s over both directions (a few Opus calls' worth).
pub const RELAY_KBPS: u32 = 512;

/// Allocations a server holds at most, including ones waiting for a relay socket.
pub const MAX_ALLOCATIONS: usize = 1_000;
