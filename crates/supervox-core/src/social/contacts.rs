//! The contact list (docs/PROTOCOL.md §9.3): who a user has asked, who has
//! asked them, who is accepted and who is blocked — by name and key.
//!
//! Sans-IO and passive: [`super::Social`] decides the handshake; this file
//! keeps the entries, their bounds and their presence as last seen.

use super::payload::Shown;
use crate::Map;
use supervox_proto::UserId;

/// Most entries (all states together).
pub const MAX_CONTACTS: usize = 10_000;
/// Most unanswered incoming requests kept: past it the oldest goes, so a
/// flood of requests cannot push accepted contacts out.
pub const MAX_INCOMING: usize = 256;

/// Where a contact stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactState {
    /// We asked; no answer yet.
    Outgoing,
    /// They asked; we have not answered.
    Incoming,
    /// Both agreed: presence is shared, the key is pinned.
    Accepted,
    /// Everything from this key is dropped without a word.
    Blocked,
}

impl ContactState {
    /// The name the CLI/JSON contract uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outgoing => "outgoing",
            Self::Incoming => "incoming",
            Self::Accepted => "accepted",
            Self::Blocked => "blocked",
        }
    }

    /// Read a stored state.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "outgoing" => Self::Outgoing,
            "incoming" => Self::Incoming,
            "accepted" => Self::Accepted,
            "blocked" => Self::Blocked,
            _ => return None,
        })
    }
}

/// A contact's presence as we last heard it (live only, not persisted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenPresence {
    /// What they show.
    pub shown: Shown,
    /// Their status text.
    pub text: String,
    /// Their counter (older notes are ignored).
    pub seq: u64,
    /// Offline after this (our clock) unless refreshed.
    pub expires_ms: u64,
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Their name (checked against the directory, or pinned).
    pub name: String,
    /// Their key.
    pub user_id: UserId,
    /// Where it stands.
    pub state: ContactState,
    /// The note of their request (incoming) or ours (outgoing).
    pub message: String,
    /// When the entry last changed state (unix ms).
    pub since_ms: u64,
    /// Accepted contacts only: their presence as last heard.
    pub presence: Option<SeenPresence>,
}

impl Contact {
    /// What they show now: offline unless an accepted contact told us
    /// otherwise within its presence lifetime.
    pub fn shown(&self, now_ms: u64) -> Shown {
        match &self.presence {
            Some(p) if self.state == ContactState::Accepted && now_ms < p.expires_ms => p.shown,
            _ => Shown::Offline,
        }
    }

    /// Their status text while they show as online.
    pub fn status_text(&self, now_ms: u64) -> &str {
        match &self.presence {
            Some(p) if self.shown(now_ms) != Shown::Offline => &p.text,
            _ => "",
        }
    }
}

/// The list, by key (a name maps to one key: the first that came with it).
#[derive(Debug, Default)]
pub struct ContactList {
    by_key: Map<UserId, Contact>,
}

/// Why an entry could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    /// [`MAX_CONTACTS`] entries.
    #[error("contact list full ({MAX_CONTACTS})")]
    Full,
    /// The name is on the list with another key.
    #[error("{0:?} is on the contact list with another key")]
    NameTaken(String),
    /// No such entry.
    #[error("{0:?} is not on the contact list")]
    NotFound(String),
    /// The entry is not in a state this action applies to.
    #[error("{name:?} is {state}")]
    WrongState {
        /// The name.
        name: String,
        /// Its state.
        state: &'static str,
    },
}

impl ContactList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries, sorted by name.
    pub fn all(&self) -> Vec<&Contact> {
        let mut v: Vec<&Contact> = self.by_key.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Accepted contacts.
    pub fn accepted(&self) -> impl Iterator<Item = &Contact> {
        self.by_key.values().filter(|c| c.state == ContactState::Accepted)
    }

    /// The entry of a key.
    pub fn get(&self, key: &UserId) -> Option<&Contact> {
        self.by_key.get(key)
    }

    /// The entry of a key, to change its presence.
    pub fn get_mut(&mut self, key: &UserId) -> Option<&mut Contact> {
        self.by_key.get_mut(key)
    }

    /// The entry of a name.
    pub fn by_name(&self, name: &str) -> Option<&Contact> {
        self.by_key.values().find(|c| c.name == name)
    }

    /// True when the key is an accepted contact.
    pub fn is_accepted(&self, key: &UserId) -> bool {
        self.get(key).is_some_and(|c| c.state == ContactState::Accepted)
    }

    /// True when the key is blocked.
    pub fn is_blocked(&self, key: &UserId) -> bool {
        self.get(key).is_some_and(|c| c.state == ContactState::Blocked)
    }

    /// Insert or update the entry of `contact.user_id`. An incoming request
    /// past [`MAX_INCOMING`] evicts the oldest one (returned, for the
    /// driver to forget too).
    pub fn put(&mut self, contact: Contact) -> Result<Option<UserId>, ContactError> {
        if let Some(other) = self.by_name(&contact.name) {
            if other.user_id != contact.user_id {
                return Err(ContactError::NameTaken(contact.name));
            }
        }
        let new = !self.by_key.contains_key(&contact.user_id);
        if new && self.by_key.len() >= MAX_CONTACTS {
            return Err(ContactError::Full);
        }
        let mut evicted = None;
        if new && contact.state == ContactState::Incoming {
            let incoming: Vec<(&UserId, u64)> = self
                .by_key
                .iter()
                .filter(|(_, c)| c.state == ContactState::Incoming)
                .map(|(k, c)| (k, c.since_ms))
                .collect();
            if incoming.len() >= MAX_INCOMING {
                evicted = incoming.iter().min_by_key(|(_, t)| *t).map(|(k, _)| **k);
            }
        }
        if let Some(k) = evicted {
            self.by_key.remove(&k);
        }
        self.by_key.insert(contact.user_id, contact);
        Ok(evicted)
    }

    /// Remove the entry of a key.
    pub fn remove(&mut self, key: &UserId) -> Option<Contact> {
        self.by_key.remove(key)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, k: u8, state: ContactState, since_ms: u64) -> Contact {
        Contact { name: name.into(), user_id: UserId([k; 32]), state, message: String::new(), since_ms, presence: None }
    }

    #[test]
    fn a_name_keeps_its_key_and_incoming_floods_evict_only_requests() {
        let mut l = ContactList::new();
        l.put(c("bob", 1, ContactState::Accepted, 1)).unwrap();
        assert_eq!(l.put(c("bob", 2, ContactState::Incoming, 2)), Err(ContactError::NameTaken("bob".into())));
        for i in 0..MAX_INCOMING as u64 + 10 {
            let mut e = c(&format!("x{i}"), 0, ContactState::Incoming, 10 + i);
            e.user_id.0[..8].copy_from_slice(&(i + 100).to_le_bytes());
            l.put(e).unwrap();
        }
        assert!(l.is_accepted(&UserId([1; 32])), "the accepted contact survives the flood");
        assert_eq!(l.all().iter().filter(|c| c.state == ContactState::Incoming).count(), MAX_INCOMING);
        assert!(l.by_name("x0").is_none() && l.by_name("x265").is_some(), "the oldest requests went");
    }

    #[test]
    fn presence_shows_only_for_accepted_contacts_within_its_lifetime() {
        let mut e = c("bob", 1, ContactState::Incoming, 1);
        e.presence = Some(SeenPresence { shown: Shown::Away, text: "lunch".into(), seq: 1, expires_ms: 100 });
        assert_eq!(e.shown(50), Shown::Offline);
        e.state = ContactState::Accepted;
        assert_eq!((e.shown(50), e.status_text(50)), (Shown::Away, "lunch"));
        assert_eq!((e.shown(100), e.status_text(100)), (Shown::Offline, ""));
    }
}
