//! supervox sans-IO core.
//!
//! State machines that take input (bytes, messages, the current time in ms)
//! and produce output (bytes or messages to send, connections to open,
//! events). Nothing here opens a socket, spawns a thread or reads a clock: the
//! tokio driver in the `supervox` crate and the tests feed it.

pub mod backoff;
pub mod call;
pub mod client;
pub mod defaults;
pub mod directory;
pub mod host_cache;
pub mod identity;
pub mod link;
pub mod media_path;
pub mod noise;
pub mod overlay;
pub mod reason;
pub mod replay;
pub mod social;
pub mod supernode;
pub mod timer;
pub mod trust;

pub use identity::Identity;

/// Opaque handle the driver gives each connection.
pub type ConnId = u64;

/// The hash map every state machine uses: a fixed hasher, so iteration order
/// (and therefore the order of outputs) depends only on the inputs. The
/// simulator relies on that for reproducible runs; keys here are ids and
/// addresses we chose or verified, not attacker-chosen in bulk.
pub type Map<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>>;
