//! The directory a supernode keeps: name claims (durable, first come first
//! served, for a year after their owner last signed one) and presence
//! records (signed, expiring). Every record is verified before it is stored;
//! nothing unverified is ever served.
//!
//! There is no race rule: which of two keys gets a contested name is decided
//! by a majority of the name's holders at claim time (supernode/index.rs),
//! and no holder ever replaces one key's claim with another's — not on a
//! replica, not on a hand-off, not on a claim riding along with a presence.

use crate::Map;
use supervox_proto::{LookupAnswer, NameClaim, Presence, RecordError, Refusal, UserId};
use thiserror::Error;

/// Most claims one supernode stores (a bound on memory, not a product limit).
pub const MAX_CLAIMS: usize = 1_000_000;

/// How long a claim lives after its owner signed it: a year. A client signs
/// a fresh claim at every sign-in, which renews it at the holders.
pub const CLAIM_LIFETIME_MS: u64 = 365 * 24 * 3600 * 1000;

/// How far in the future a claim may be signed (clock skew): a claim dated
/// later would outlive [`CLAIM_LIFETIME_MS`].
pub const MAX_CLAIM_SKEW_MS: u64 = 10 * 60 * 1000;

/// Most names one key may hold (at each holder: see docs/PROTOCOL.md §7.4).
pub const MAX_NAMES_PER_KEY: usize = 3;

/// Why a record was not stored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DirectoryError {
    /// Signature, key, name or expiry invalid.
    #[error("{0}")]
    Invalid(#[from] RecordError),
    /// The name belongs to another key.
    #[error("name {0:?} is taken by another key")]
    NameTaken(String),
    /// The key holds [`MAX_NAMES_PER_KEY`] other names here.
    #[error("this key holds {MAX_NAMES_PER_KEY} names already")]
    TooManyNames,
    /// Signed too far in the future, or expired.
    #[error("claim time outside the accepted range")]
    BadTime,
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

impl From<&DirectoryError> for Refusal {
    fn from(e: &DirectoryError) -> Self {
        match e {
            DirectoryError::Invalid(r) => Refusal::Invalid(r.clone()),
            DirectoryError::NameTaken(_) => Refusal::Taken,
            DirectoryError::TooManyNames => Refusal::TooManyNames(MAX_NAMES_PER_KEY),
            DirectoryError::BadTime => Refusal::BadTime,
            DirectoryError::NotOwner(_) => Refusal::NotOwner,
            DirectoryError::WrongSupernode(..) => Refusal::WrongSupernode,
            DirectoryError::Stale => Refusal::Stale,
            DirectoryError::Full => Refusal::Full,
        }
    }
}

/// What storing a claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// A new claim was stored (persist it).
    Stored,
    /// The same key held the name; its newer claim replaced the held one
    /// (a renewal: persist it).
    Renewed,
    /// The same key already held the name with this claim or a newer one.
    Unchanged,
}

/// Claims and presence held by one supernode.
#[derive(Debug, Default)]
pub struct Directory {
    claims: Map<String, NameClaim>,
    /// Names held per key, for [`MAX_NAMES_PER_KEY`].
    names_of: Map<UserId, u8>,
    presence: Map<UserId, Presence>,
}

/// True while `claim` lives at `now_ms`.
pub fn claim_alive(claim: &NameClaim, now_ms: u64) -> bool {
    claim.created_ms.saturating_add(CLAIM_LIFETIME_MS) > now_ms
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// A claim, from a client (through its supernode) or from another holder
    /// (replica, hand-off, riding along with a presence): first come, first
    /// served. The same key's newer claim renews the held one; another key's
    /// is refused whatever its `created_ms`.
    pub fn claim(&mut self, claim: NameClaim, now_ms: u64) -> Result<ClaimOutcome, DirectoryError> {
        // Every holder is sent every claim it holds again on hand-offs: a copy
        // of one verified already needs no second signature check.
        if self.claims.get(&claim.name) == Some(&claim) {
            return Ok(ClaimOutcome::Unchanged);
        }
        claim.verify()?;
        if claim.created_ms > now_ms.saturating_add(MAX_CLAIM_SKEW_MS) || !claim_alive(&claim, now_ms) {
            return Err(DirectoryError::BadTime);
        }
        match self.claims.get(&claim.name) {
            Some(held) if held.user_id == claim.user_id => {
                if claim.created_ms > held.created_ms {
                    self.claims.insert(claim.name.clone(), claim);
                    Ok(ClaimOutcome::Renewed)
                } else {
                    Ok(ClaimOutcome::Unchanged)
                }
            }
            Some(held) if claim_alive(held, now_ms) => Err(DirectoryError::NameTaken(claim.name)),
            Some(_) => {
                // Expired, not yet swept: the name is free.
                self.remove_claim(&claim.name);
                self.insert(claim)
            }
            None => self.insert(claim),
        }
    }

    /// A claim arrives from another supernode: [`Directory::claim`]'s rule.
    pub fn replicate(&mut self, claim: NameClaim, now_ms: u64) -> Result<ClaimOutcome, DirectoryError> {
        self.claim(claim, now_ms)
    }

    /// The claim held for `name` here, if any.
    pub fn claim_of(&self, name: &str) -> Option<&NameClaim> {
        self.claims.get(name)
    }

    /// Load a claim from our own storage (verified, first one per name wins;
    /// an expired one is refused).
    pub fn restore(&mut self, claim: NameClaim, now_ms: u64) -> Result<ClaimOutcome, DirectoryError> {
        self.claim(claim, now_ms)
    }

    fn insert(&mut self, claim: NameClaim) -> Result<ClaimOutcome, DirectoryError> {
        if self.claims.len() >= MAX_CLAIMS {
            return Err(DirectoryError::Full);
        }
        let n = self.names_of.entry(claim.user_id).or_default();
        if usize::from(*n) >= MAX_NAMES_PER_KEY {
            return Err(DirectoryError::TooManyNames);
        }
        *n += 1;
        self.claims.insert(claim.name.clone(), claim);
        Ok(ClaimOutcome::Stored)
    }

    fn remove_claim(&mut self, name: &str) -> Option<NameClaim> {
        let c = self.claims.remove(name)?;
        if let Some(n) = self.names_of.get_mut(&c.user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.names_of.remove(&c.user_id);
            }
        }
        self.presence.retain(|_, p| p.user_id != c.user_id || p.name != c.name);
        Some(c)
    }

    /// Drop the claims whose lifetime ended (and their presence); returns them.
    pub fn expire_claims(&mut self, now_ms: u64) -> Vec<NameClaim> {
        let dead: Vec<String> =
            self.claims.values().filter(|c| !claim_alive(c, now_ms)).map(|c| c.name.clone()).collect();
        dead.iter().filter_map(|n| self.remove_claim(n)).collect()
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
            Some(c) if c.user_id == presence.user_id && claim_alive(c, now_ms) => {}
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
        let Some(claim) = self.claims.get(name).filter(|c| claim_alive(c, now_ms)) else {
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
        assert_eq!(d.claim(NameClaim::sign(a.signing_key(), "alice", 5).unwrap(), 10), Ok(ClaimOutcome::Stored));
        assert_eq!(d.claim(NameClaim::sign(a.signing_key(), "alice", 4).unwrap(), 10), Ok(ClaimOutcome::Unchanged));
        assert_eq!(
            d.claim(NameClaim::sign(b.signing_key(), "alice", 1).unwrap(), 10),
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
        d.claim(NameClaim::sign(a.signing_key(), "alice", 5).unwrap(), 5).unwrap();
        let mut p = Presence::sign(a.signing_key(), "alice", SN.parse().unwrap(), 1, 60_000).unwrap();
        p.seq = 99;
        assert_eq!(d.publish(p, SN.parse().unwrap(), 0), Err(DirectoryError::Invalid(RecordError::BadSignature)));
        assert!(matches!(d.lookup("alice", 0), LookupAnswer::Offline { .. }));
    }

    /// The old race rule let an earlier-dated claim replace a young one: a
    /// replica or a claim riding along with a presence never replaces another
    /// key's claim now, however it is dated.
    #[test]
    fn a_held_name_is_never_replaced_by_another_keys_claim() {
        let now = 1_000_000;
        let owner = NameClaim::sign(id(1).signing_key(), "alice", now - 1).unwrap();
        let mut d = Directory::new();
        d.claim(owner.clone(), now).unwrap();
        for created in [0, now - 2, now] {
            let thief = NameClaim::sign(id(2).signing_key(), "alice", created).unwrap();
            assert_eq!(d.replicate(thief, now), Err(DirectoryError::NameTaken("alice".into())));
        }
        assert!(matches!(d.lookup("alice", now), LookupAnswer::Offline { claim } if claim == owner));
    }

    #[test]
    fn a_key_holds_at_most_three_names_and_claims_live_a_year_unless_renewed() {
        let mut d = Directory::new();
        let a = id(1);
        for n in ["a1", "a2", "a3"] {
            assert_eq!(d.claim(NameClaim::sign(a.signing_key(), n, 1).unwrap(), 1), Ok(ClaimOutcome::Stored));
        }
        assert_eq!(d.claim(NameClaim::sign(a.signing_key(), "a4", 1).unwrap(), 1), Err(DirectoryError::TooManyNames));
        // Signed in the future (beyond the skew), or more than a year ago.
        let future = NameClaim::sign(id(2).signing_key(), "b", 1 + MAX_CLAIM_SKEW_MS + 1).unwrap();
        assert_eq!(d.claim(future, 1), Err(DirectoryError::BadTime));
        let year = CLAIM_LIFETIME_MS;
        let old = NameClaim::sign(id(2).signing_key(), "b", 1).unwrap();
        assert_eq!(d.claim(old, year + 1), Err(DirectoryError::BadTime));
        // a1 is renewed half a year on; a2 and a3 are not and expire.
        let renewal = NameClaim::sign(a.signing_key(), "a1", year / 2).unwrap();
        assert_eq!(d.claim(renewal.clone(), year / 2), Ok(ClaimOutcome::Renewed));
        assert_eq!(d.lookup("a2", year + 1), LookupAnswer::Unknown, "served after its lifetime");
        let gone: Vec<String> = d.expire_claims(year + 1).into_iter().map(|c| c.name).collect();
        assert_eq!(gone.len(), 2);
        assert!(gone.contains(&"a2".to_string()) && gone.contains(&"a3".to_string()));
        assert!(matches!(d.lookup("a1", year + 1), LookupAnswer::Offline { claim } if claim == renewal));
        // Expired names are free again, and count no more against the key.
        let taker = NameClaim::sign(id(3).signing_key(), "a2", year + 1).unwrap();
        assert_eq!(d.claim(taker, year + 1), Ok(ClaimOutcome::Stored));
        assert_eq!(d.claim(NameClaim::sign(a.signing_key(), "a5", year).unwrap(), year + 1), Ok(ClaimOutcome::Stored));
    }
}
