//! The supernode overlay: sealed datagrams between supernodes, SWIM
//! membership, and rendezvous hashing that places each record on R of them.

pub mod admission;
pub mod membership;
pub mod rendezvous;
pub mod wire;
