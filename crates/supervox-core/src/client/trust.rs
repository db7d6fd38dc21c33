//! The client's pinned peer keys ([`crate::trust`]): loaded by the driver,
//! consulted before a call rings or invites, updated when a call connects,
//! every change handed out as [`ClientOutput::Trust`] for the driver to
//! persist (before the `Connected` event that follows it).

use super::{Client, ClientEvent, ClientOutput};
use crate::call::Verified;
use crate::trust::{TrustError, TrustStore};
use supervox_proto::{CallId, UserId};
use tracing::warn;

impl Client {
    /// Replace the pinned keys (the driver loads them at start).
    pub fn set_trust_store(&mut self, store: TrustStore) {
        self.trust = store;
    }

    /// The pinned keys (for status and listing).
    pub fn trust_store(&self) -> &TrustStore {
        &self.trust
    }

    /// True iff `id` is the pinned key of some peer (a contact).
    pub fn is_contact(&self, id: &UserId) -> bool {
        self.trust.is_pinned_key(id)
    }

    /// Drop (`blocked`) or stop dropping every call and peer message from
    /// `key`, without telling its sender (a blocked contact, social layer).
    pub fn set_blocked(&mut self, key: UserId, blocked: bool) {
        if blocked {
            // Bounded by the contact list that drives it (MAX_CONTACTS).
            if self.blocked.len() < crate::social::contacts::MAX_CONTACTS {
                self.blocked.insert(key);
            }
        } else {
            self.blocked.remove(&key);
        }
    }

    /// True when `key` is blocked.
    pub fn is_blocked(&self, key: &UserId) -> bool {
        self.blocked.contains(key)
    }

    /// Pin `key` for `name`: an accepted contact (social layer). Refused
    /// when the name is pinned to another key (see `ctl trust`).
    pub fn pin_contact(&mut self, name: &str, key: UserId, now_ms: u64) -> Result<(), TrustError> {
        if let crate::trust::PinCheck::Changed { pinned } = self.trust.check(name, &key) {
            warn!("{name:?} accepted as a contact with key {key}, but it is pinned to {pinned}: pin kept");
            return Err(TrustError::NothingPending(name.to_string()));
        }
        for change in self.trust.seen(name, key, now_ms) {
            self.out.push_back(ClientOutput::Trust(change));
        }
        Ok(())
    }

    /// The user accepts the key that last came with `name` instead of its
    /// pinned one (`ctl trust NAME`): it is pinned from now on. Returns (old,
    /// new); the change is handed out as [`ClientOutput::Trust`].
    pub fn trust_accept(&mut self, name: &str, now_ms: u64) -> Result<(UserId, UserId), TrustError> {
        let (old, new, change) = self.trust.accept(name, now_ms)?;
        self.out.push_back(ClientOutput::Trust(change));
        tracing::info!("{name:?} is now pinned to key {new} (was {old}), accepted by the user");
        Ok((old, new))
    }

    /// A call with `peer` on `key` connected: pin a directory-confirmed peer
    /// (first use), refresh a contact's last-seen time.
    pub(super) fn pin_connected(&mut self, peer: &str, key: UserId, verified: Verified, now_ms: u64) {
        if !verified.is_confirmed() {
            return;
        }
        let first = self.trust.get(peer).is_none();
        for change in self.trust.seen(peer, key, now_ms) {
            self.out.push_back(ClientOutput::Trust(change));
        }
        if first && self.trust.get(peer).is_some() {
            tracing::info!("pinned {peer:?} to key {key} (first call)");
        }
    }

    /// `name`, pinned to `old`, came with `new` on call `id`: warn loudly,
    /// tell the user, and keep `new` pending for `ctl trust` when
    /// `remember` (the directory confirms `new` owns the name; a caller the
    /// directory does not back is refused without leaving its key to accept).
    pub(super) fn key_changed(&mut self, id: CallId, name: &str, old: UserId, new: UserId, remember: bool) {
        warn!(
            "the key of {name:?} changed: pinned {old}, this call came with {new}: possible attack (or {name:?} has \
             a new identity; compare fingerprints, then `ctl trust {name}` to accept it)"
        );
        if remember {
            if let Some(change) = self.trust.key_changed(name, new) {
                self.out.push_back(ClientOutput::Trust(change));
            }
        }
        self.event(ClientEvent::KeyChanged { call_id: id, name: name.to_string(), old, new });
    }
}
