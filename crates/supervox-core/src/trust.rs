//! Pinned peer keys: trust on first use, as SSH does for host keys.
//!
//! The first call that connects with a peer whose key the directory
//! confirmed ([`crate::call::Verified::Directory`]) pins that peer's name to
//! its key. From then on the name is a *contact*: a call with that key is
//! [`crate::call::Verified::Contact`] whatever the directory says, and a call
//! where the name comes with any other key is refused as a possible attack,
//! the new key kept as *pending* until the user accepts it
//! ([`TrustStore::accept`], `ctl trust NAME`).
//!
//! The store is sans-IO: every change is returned as a [`TrustChange`] that
//! the driver persists (the client hands them out as
//! [`crate::client::ClientOutput::Trust`]); the driver loads the pins back
//! at start ([`TrustStore::from_pins`]).
//!
//! Bounded: at most [`MAX_PINS`] names. A full store evicts the pin seen
//! least recently (its `last_seen_ms`, refreshed by every connected call),
//! so the peers a user actually talks to stay pinned; the eviction is logged
//! and persisted like any change. (An attacker who could get that many calls
//! connected, e.g. to a node that auto-answers, could push out old pins;
//! 10 000 connected calls is far beyond what a person's contacts need.)

use crate::Map;
use supervox_proto::UserId;
use tracing::warn;

/// Most names pinned at once.
pub const MAX_PINS: usize = 10_000;

/// One pinned peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The peer's name.
    pub name: String,
    /// The key pinned for it.
    pub user_id: UserId,
    /// When it was pinned (unix ms; re-pinning by [`TrustStore::accept`] restarts it).
    pub first_seen_ms: u64,
    /// The last call that connected with it (unix ms).
    pub last_seen_ms: u64,
    /// Another key that came with this name since, waiting for the user's decision.
    pub pending: Option<UserId>,
}

/// A change the driver must persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustChange {
    /// Insert or replace this pin.
    Upsert(Pin),
    /// Forget the pin of this name (evicted).
    Remove(String),
}

/// What the store says about a name and a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// The name is not pinned.
    Unpinned,
    /// The key is the pinned one.
    Matches,
    /// The name is pinned to this other key.
    Changed {
        /// The pinned key.
        pinned: UserId,
    },
}

/// Why [`TrustStore::accept`] did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// The name is not pinned at all.
    #[error("{0:?} is not pinned (no call with it has connected yet)")]
    NotPinned(String),
    /// The name is pinned, but no other key came with it.
    #[error("no changed key is pending for {0:?}")]
    NothingPending(String),
}

/// The pinned keys: see the module docs.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    pins: Map<String, Pin>,
}

impl TrustStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `pins` (as persisted); beyond [`MAX_PINS`] the least
    /// recently seen are left out.
    pub fn from_pins(pins: impl IntoIterator<Item = Pin>) -> Self {
        let mut v: Vec<Pin> = pins.into_iter().collect();
        v.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then_with(|| a.name.cmp(&b.name)));
        v.truncate(MAX_PINS);
        Self { pins: v.into_iter().map(|p| (p.name.clone(), p)).collect() }
    }

    /// Number of pinned names.
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// True when nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// The pin of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Pin> {
        self.pins.get(name)
    }

    /// Every pin, by name.
    pub fn pins(&self) -> Vec<&Pin> {
        let mut v: Vec<&Pin> = self.pins.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Does `key` match what is pinned for `name`?
    pub fn check(&self, name: &str, key: &UserId) -> PinCheck {
        match self.pins.get(name) {
            None => PinCheck::Unpinned,
            Some(p) if p.user_id == *key => PinCheck::Matches,
            Some(p) => PinCheck::Changed { pinned: p.user_id },
        }
    }

    /// True iff `key` is the pinned key of some name (a linear scan: the
    /// store is bounded, and this is asked once per call).
    pub fn is_pinned_key(&self, key: &UserId) -> bool {
        self.pins.values().any(|p| p.user_id == *key)
    }

    /// A call with `name` on `key` connected: pin it if the name is new, or
    /// refresh its `last_seen_ms` if it is pinned to `key`. A name pinned to
    /// another key is left alone (the caller checked first). Returns what
    /// to persist.
    pub fn seen(&mut self, name: &str, key: UserId, now_ms: u64) -> Vec<TrustChange> {
        let mut out = Vec::new();
        if let Some(p) = self.pins.get_mut(name) {
            if p.user_id == key {
                p.last_seen_ms = p.last_seen_ms.max(now_ms);
                out.push(TrustChange::Upsert(p.clone()));
            }
            return out;
        }
        if self.pins.len() >= MAX_PINS {
            if let Some(old) = self.least_recent() {
                warn!("trust store full ({MAX_PINS} pins): forgetting the pin of {old:?}, seen least recently");
                self.pins.remove(&old);
                out.push(TrustChange::Remove(old));
            }
        }
        let p =
            Pin { name: name.to_string(), user_id: key, first_seen_ms: now_ms, last_seen_ms: now_ms, pending: None };
        self.pins.insert(p.name.clone(), p.clone());
        out.push(TrustChange::Upsert(p));
        out
    }

    /// `name`, pinned to another key, came with `new`: remember it as
    /// pending (replacing an older pending key). `None` if the name is not
    /// pinned, `new` is the pinned key, or it is already the pending one.
    pub fn key_changed(&mut self, name: &str, new: UserId) -> Option<TrustChange> {
        let p = self.pins.get_mut(name)?;
        if p.user_id == new || p.pending == Some(new) {
            return None;
        }
        p.pending = Some(new);
        Some(TrustChange::Upsert(p.clone()))
    }

    /// The user accepts the pending key of `name`: it becomes the pinned
    /// one. Returns (old key, new key) and what to persist.
    pub fn accept(&mut self, name: &str, now_ms: u64) -> Result<(UserId, UserId, TrustChange), TrustError> {
        let p = self.pins.get_mut(name).ok_or_else(|| TrustError::NotPinned(name.to_string()))?;
        let new = p.pending.take().ok_or_else(|| TrustError::NothingPending(name.to_string()))?;
        let old = std::mem::replace(&mut p.user_id, new);
        p.first_seen_ms = now_ms;
        p.last_seen_ms = now_ms;
        Ok((old, new, TrustChange::Upsert(p.clone())))
    }

    fn least_recent(&self) -> Option<String> {
        self.pins
            .values()
            .min_by(|a, b| a.last_seen_ms.cmp(&b.last_seen_ms).then_with(|| a.name.cmp(&b.name)))
            .map(|p| p.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> UserId {
        UserId([b; 32])
    }

    #[test]
    fn first_use_pins_and_later_calls_refresh() {
        let mut t = TrustStore::new();
        assert_eq!(t.check("bob", &key(1)), PinCheck::Unpinned);
        let ch = t.seen("bob", key(1), 10);
        assert!(matches!(&ch[..], [TrustChange::Upsert(p)] if p.user_id == key(1) && p.first_seen_ms == 10));
        assert_eq!(t.check("bob", &key(1)), PinCheck::Matches);
        assert_eq!(t.check("bob", &key(2)), PinCheck::Changed { pinned: key(1) });
        assert!(t.is_pinned_key(&key(1)) && !t.is_pinned_key(&key(2)));
        let ch = t.seen("bob", key(1), 50);
        assert!(matches!(&ch[..], [TrustChange::Upsert(p)] if p.first_seen_ms == 10 && p.last_seen_ms == 50));
        // Another key never overwrites a pin by being seen.
        assert!(t.seen("bob", key(2), 60).is_empty());
        assert_eq!(t.get("bob").unwrap().user_id, key(1));
    }

    #[test]
    fn a_changed_key_waits_for_the_user() {
        let mut t = TrustStore::new();
        assert_eq!(t.accept("bob", 0), Err(TrustError::NotPinned("bob".into())));
        t.seen("bob", key(1), 10);
        assert_eq!(t.accept("bob", 0), Err(TrustError::NothingPending("bob".into())));
        assert!(t.key_changed("bob", key(1)).is_none(), "the pinned key is no change");
        assert!(t.key_changed("bob", key(2)).is_some());
        assert!(t.key_changed("bob", key(2)).is_none(), "already pending");
        assert_eq!(t.check("bob", &key(2)), PinCheck::Changed { pinned: key(1) }, "pending is not trusted");
        let (old, new, ch) = t.accept("bob", 99).unwrap();
        assert_eq!((old, new), (key(1), key(2)));
        assert!(matches!(ch, TrustChange::Upsert(p) if p.user_id == key(2) && p.pending.is_none()));
        assert_eq!(t.check("bob", &key(2)), PinCheck::Matches);
        assert_eq!(t.check("bob", &key(1)), PinCheck::Changed { pinned: key(2) });
    }

    #[test]
    fn a_full_store_forgets_the_least_recently_seen() {
        let mut t = TrustStore::new();
        for i in 0..MAX_PINS {
            t.seen(&format!("n{i}"), key(1), 1_000 + i as u64);
        }
        t.seen("n0", key(1), 1_000_000); // n0 is recent again: n1 is now the oldest
        let ch = t.seen("new", key(2), 2_000_000);
        assert_eq!(ch[0], TrustChange::Remove("n1".into()));
        assert_eq!(t.len(), MAX_PINS);
        assert!(t.get("n0").is_some() && t.get("n1").is_none() && t.get("new").is_some());
        // Loading more than fit keeps the most recent.
        let pins = (0..MAX_PINS as u64 + 5).map(|i| Pin {
            name: format!("p{i}"),
            user_id: key(3),
            first_seen_ms: i,
            last_seen_ms: i,
            pending: None,
        });
        let t = TrustStore::from_pins(pins);
        assert_eq!(t.len(), MAX_PINS);
        assert!(t.get("p0").is_none() && t.get(&format!("p{}", MAX_PINS + 4)).is_some());
    }
}
