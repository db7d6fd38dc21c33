//! Default supernode limits, in one place: [`SupernodeConfig::new`](crate::supernode::SupernodeConfig::new)
//! and the supervox daemon's command line both take them from here.

/// Clients a supernode serves before it redirects new ones.
pub const MAX_CLIENTS: usize = 10_000;

/// How long a promoted supernode must be not needed before it steps back.
pub const STEP_BACK_AFTER_MS: u64 = 600_000;
