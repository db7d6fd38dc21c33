//! The directory a supernode keeps: name claims (durable, first come first
//! served) and presence records (signed, expiring). Every record is verified
//! before it is stored; nothing unverified is ever served.

use crate::Map;
use supervox_proto::{LookupAnswer, NameClaim, Presence, RecordError, UserId};
use thiserror::Error;

/// How young two conflicting claims must both be for replication to settle
/// them by [`NameClaim::wins_over`] (a race between supernodes).
pub const RACE_WINDOW_MS: u64 = 60_000;

/// Most claims one supernode stores (a bound on memory, not a product limit).
pub const MAX_CLAIMS: usize = 1_000_000;

/// Why a record was not stored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DirectoryError {
    /// Signature, key, name or expiry invalid.
    #[error("{0}")]
    Invalid(#[from] RecordError),
    /// The name belongs to another key.
    #[error("name {0:?} is taken by another key")]
    NameTaken(String),
    /// A presence record for a name this key does not own.
    #[error("name {0:?} is not claimed by this key")]
    NotOwner(String),
    /// The record names another supernode than the one it was sent to.
    #[error("presence names supernode {0} but was sent to {1}")]
    WrongSupernode(std::net::SocketAddr, std::net::SocketAddr),
    /// An older presence record than the one stored.
    #[error("stale presence record")]
    Stale,
    /// The directory is full.
    #[error("directory full")]
    Full,
}

/// What storing a claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// A new claim was stored (replicate it).
    Stored,
    /// The same key already held the name; nothing changed.
    Unchanged,
    /// A conflicting claim lost to this one under [`NameClaim::wins_over`]
    /// and was replaced (only during replication; clients get `NameTaken`).
    Replaced(NameClaim),
}

/// Claims and presence held by one supernode.
#[derive(Debug, Default)]
pub struct Directory {
    claims: Map<String, NameClaim>,
    presence: Map<UserId, Presence>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client claims a name: first come, first served.
    pub fn claim(&mut self, claim: NameClaim) -> Result<ClaimOutcome, DirectoryError> {
        claim.verify()?;
        match self.claims.get(&claim.name) {
            Some(held) if held.user_id == claim.user_id => Ok(ClaimOutcome::Unchanged),
            Some(_) => Err(DirectoryError::NameTaken(claim.name)),
            None => self.insert(claim),
        }
    }

    /// A claim arrives from another supernode.
    ///
    /// Two supernodes can accept different keys for one name at the same
    /// moment; such a race resolves the same way everywhere: the claim that
    /// [`NameClaim::wins_over`] the other stays. Only a race can do that:
    /// both claims must be younger than [`RACE_WINDOW_MS`]. An established name
    /// is never replaced, so a peer cannot steal it with a back-dated claim.
    pub fn replicate(&mut self, claim: NameClaim, now_ms: u64) -> Result<ClaimOutcome, DirectoryError> {
        // Every peer sends us every claim: a copy of one we verified already
        // needs no second signature check (the cost that dominates a join).
        if self.claims.get(&claim.name) == Some(&claim) {
            return Ok(ClaimOutcome::Unchanged);
        }
        claim.verify()?;
        let young = |c: &NameClaim| c.created_ms.abs_diff(now_ms) <= RACE_WINDOW_MS;
        match self.claims.get(&claim.name) {
            Some(held) if held.user_id == claim.user_id => Ok(ClaimOutcome::Unchanged),
            Some(held) if young(held) && young(&claim) && claim.wins_over(held) => {
                let loser = held.clone();
                self.presence.retain(|_, p| p.user_id != loser.user_id || p.name != loser.name);
                self.claims.insert(claim.name.clone(), claim);
                Ok(ClaimOutcome::Replaced(loser))
            }
            Some(_) => Err(DirectoryError::NameTaken(claim.name)),
            None => self.insert(claim),
        }
    }

    /// Load a claim from our own storage (verified, first one per name wins).
    pub fn restore(&mut self, claim: NameClaim) -> Result<ClaimOutcome, DirectoryError> {
        self.claim(claim)
    }

    fn insert(&mut self, claim: NameClaim) -> Result<ClaimOutcome, DirectoryError> {
        if self.claims.len() >= MAX_CLAIMS {
            return Err(DirectoryError::Full);
        }
        self.claims.insert(claim.name.clone(), claim);
        Ok(ClaimOutcome::Stored)
    }

    /// Store a presence record after checking signature, expiry, that it
    /// names `home` (the supernode storing it), ownership of the name and that
    /// it is newer than what we hold.
    pub fn publish(
        &mut self,
        presence: Presence,
        home: std::net::SocketAddr,
        now_ms: u64,
    ) -> Result<(), DirectoryError> {
        presence.verify(now_ms)?;
        if presence.supernode != home {
            return Err(DirectoryError::WrongSupernode(presence.supernode, home));
        }
        match self.claims.get(&presence.name) {
            Some(c) if c.user_id == presence.user_id => {}
            _ => return Err(DirectoryError::NotOwner(presence.name)),
        }
        if let Some(old) = self.presence.get(&presence.user_id) {
            if old.seq > presence.seq {
                return Err(DirectoryError::Stale);
            }
        }
        self.presence.insert(presence.user_id, presence);
        Ok(())
    }

    /// Forget a user's presence (its link to us closed).
    pub fn remove_presence(&mut self, user: &UserId) {
        self.presence.remove(user);
    }

    /// Forget a user's presence if it names supernode `home` (the one
    /// telling us the user left; a newer record elsewhere stays).
    pub fn remove_presence_at(&mut self, user: &UserId, home: std::net::SocketAddr) {
        if self.presence.get(user).is_some_and(|p| p.supernode == home) {
            self.presence.remove(user);
        }
    }

    /// Drop expired presence records.
    pub fn expire(&mut self, now_ms: u64) {
        self.presence.retain(|_, p| p.expires_ms > now_ms);
    }

    /// What we know of a name.
    pub fn lookup(&self, name: &str, now_ms: u64) -> LookupAnswer {
        let Some(claim) = self.claims.get(name) else {
            return LookupAnswer::Unknown;
        };
        match self.presence.get(&claim.user_id) {
            Some(p) if p.expires_ms > now_ms && p.name == claim.name => {
                LookupAnswer::Online { claim: claim.clone(), presence: p.clone() }
            }
            _ => LookupAnswer::Offline { claim: claim.clone() },
        }
    }

    /// All claims, for replication to a new peer and for persistence.
    pub fn claims(&self) -> impl Iterator<Item = &NameClaim> {
        self.claims.values()
    }

    /// Number of claims held.
    pub fn claim_count(&self) -> usize {
        self.claims.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use std::net::SocketAddr;

    const SN: &str = "127.0.0.1:4000";

    fn id(n: u8) -> Identity {
        Identity::from_seed([n; 32])
    }

    #[test]
    fn first_claim_wins_and_presence_needs_ownership() {
        let mut d = Directory::new();
        let (a, b) = (id(1), id(2));
        assert_eq!(d.claim(NameClaim::sign(a.signing_key(), "alice", 5).unwrap()), Ok(ClaimOutcome::Stored));
        assert_eq!(d.claim(NameClaim::sign(a.signing_key(), "alice", 9).unwrap()), Ok(ClaimOutcome::Unchanged));
        assert_eq!(
            d.claim(NameClaim::sign(b.signing_key(), "alice", 1).unwrap()),
            Err(DirectoryError::NameTaken("alice".into()))
        );
        let sn: SocketAddr = SN.parse().unwrap();
        let stolen = Presence::sign(b.signing_key(), "alice", sn, 1, 60_000).unwrap();
        assert_eq!(d.publish(stolen, sn, 0), Err(DirectoryError::NotOwner("alice".into())));
        d.publish(Presence::sign(a.signing_key(), "alice", sn, 2, 60_000).unwrap(), sn, 0).unwrap();
        assert!(matches!(d.lookup("alice", 10), LookupAnswer::Online { .. }));
        assert_eq!(
            d.publish(Presence::sign(a.signing_key(), "alice", sn, 1, 60_000).unwrap(), sn, 0),
            Err(DirectoryError::Stale)
        );
        d.expire(60_000);
        assert!(matches!(d.lookup("alice", 60_000), LookupAnswer::Offline { .. }));
        assert_eq!(d.lookup("nobody", 0), LookupAnswer::Unknown);
    }

    #[test]
    fn forged_presence_is_refused() {
        let mut d = Directory::new();
        let a = id(1);
        d.claim(NameClaim::sign(a.signing_key(), "alice", 5).unwrap()).unwrap();
        let mut p = Presence::sign(a.signing_key(), "alice", SN.parse().unwrap(), 1, 60_000).unwrap();
        p.seq = 99;
        assert_eq!(d.publish(p, SN.parse().unwrap(), 0), Err(DirectoryError::Invalid(RecordError::BadSignature)));
        assert!(matches!(d.lookup("alice", 0), LookupAnswer::Offline { .. }));
    }

    #[test]
    fn replication_conflicts_resolve_identically() {
        let now = 1_000_000;
        let early = NameClaim::sign(id(1).signing_key(), "x", now - 2).unwrap();
        let late = NameClaim::sign(id(2).signing_key(), "x", now - 1).unwrap();
        let (mut d1, mut d2) = (Directory::new(), Directory::new());
        d1.claim(early.clone()).unwrap();
        d2.claim(late.clone()).unwrap();
        d1.replicate(late.clone(), now).unwrap_err();
        assert_eq!(d2.replicate(early.clone(), now), Ok(ClaimOutcome::Replaced(late)));
        assert!(matches!(d1.lookup("x", 0), LookupAnswer::Offline { claim } if claim == early));
        assert!(matches!(d2.lookup("x", 0), LookupAnswer::Offline { claim } if claim == early));
    }

    #[test]
    fn an_established_name_cannot_be_stolen_with_a_backdated_claim() {
        let now = 10 * RACE_WINDOW_MS;
        let owner = NameClaim::sign(id(1).signing_key(), "alice", now - 2 * RACE_WINDOW_MS).unwrap();
        let mut d = Directory::new();
        d.claim(owner.clone()).unwrap();
        let thief = NameClaim::sign(id(2).signing_key(), "alice", 0).unwrap();
        assert_eq!(d.replicate(thief, now), Err(DirectoryError::NameTaken("alice".into())));
        assert!(matches!(d.lookup("alice", 0), LookupAnswer::Offline { claim } if claim == owner));
    }
}
