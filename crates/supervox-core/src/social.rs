//! The social layer's sans-IO logic (docs/PROTOCOL.md §9): end-to-end
//! sealing of peer messages ([`seal`]) and chat with its receipts
//! ([`chat`]). The node daemon only persists what comes out and routes it
//! (online as a peer message, else through the mailbox).

pub mod chat;
pub mod seal;
