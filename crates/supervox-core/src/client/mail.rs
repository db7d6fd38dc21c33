//! The client's side of offline mail (docs/PROTOCOL.md §8): leave an item in
//! a recipient's mailbox, fetch our own at sign-in (and every
//! [`MAIL_FETCH_EVERY_MS`] while online, in case an item raced our
//! sign-in), and acknowledge what the driver has stored — only then do the
//! holders delete it, so a crash between receipt and storage loses nothing.

use super::{Client, ClientEvent};
use rand::RngCore;
use supervox_proto::mail::{MailAck, MailFetch, MailId, MailItem, MAX_ACK_IDS, MAX_MAIL_BODY, MAX_MAIL_LIFETIME_MS};
use supervox_proto::{Message, UserId};
use tracing::debug;

/// While signed in, our mailbox is fetched this often as well.
pub const MAIL_FETCH_EVERY_MS: u64 = 5 * 60 * 1000;

impl Client {
    /// Leave `body` (already end-to-end encrypted for `to`) in `to`'s
    /// mailbox. The outcome arrives as [`ClientEvent::MailStored`]. `None`
    /// when not signed in or the body is too large.
    pub fn leave_mail(&mut self, to: UserId, body: Vec<u8>, now_ms: u64) -> Option<MailId> {
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        self.leave_mail_as(id, to, body, now_ms)
    }

    /// [`Client::leave_mail`] under an id the caller chose (random, 128
    /// bits): sealed peer messages bind their id, so a part that could not
    /// be delivered online goes to the mailbox under the same one.
    pub fn leave_mail_as(&mut self, id: MailId, to: UserId, body: Vec<u8>, now_ms: u64) -> Option<MailId> {
        if self.supernode().is_none() || body.len() > MAX_MAIL_BODY {
            return None;
        }
        let item = MailItem::sign(self.identity.signing_key(), id, to, now_ms, MAX_MAIL_LIFETIME_MS, body);
        self.send_sn(Message::MailPut { item }).then_some(id)
    }

    /// Ask our supernode for our mail.
    pub(super) fn fetch_mail(&mut self, now_ms: u64) {
        self.next_mail_fetch_ms = now_ms + MAIL_FETCH_EVERY_MS;
        let fetch = MailFetch::sign(self.identity.signing_key(), now_ms);
        self.send_sn(Message::MailFetch { fetch });
    }

    /// The driver has stored these items for good: the holders may delete them.
    pub fn mail_saved(&mut self, ids: &[MailId], now_ms: u64) {
        for chunk in ids.chunks(MAX_ACK_IDS) {
            let ack = MailAck::sign(self.identity.signing_key(), chunk.to_vec(), now_ms);
            self.send_sn(Message::MailAck { ack });
        }
        self.mail_unsaved = self.mail_unsaved.saturating_sub(ids.len());
        if self.mail_more && self.mail_unsaved == 0 && !ids.is_empty() {
            self.mail_more = false;
            self.fetch_mail(now_ms);
        }
    }

    /// Items from our mailbox (the supernode is not trusted: each is
    /// verified here, and must be ours).
    pub(super) fn on_mail(&mut self, items: Vec<MailItem>, done: bool, more: bool, now_ms: u64) {
        let me = self.identity.user_id();
        let items: Vec<MailItem> = items
            .into_iter()
            .filter(|i| {
                let ok = i.to == me && i.verify(now_ms).is_ok();
                if !ok {
                    debug!("a mail item that is not ours or does not verify dropped");
                }
                ok
            })
            .collect();
        if !items.is_empty() {
            self.mail_unsaved += items.len();
            self.event(ClientEvent::Mail { items });
        }
        if done && more && self.mail_unsaved == 0 {
            // Everything of this round is saved (and acked) already.
            self.mail_more = false;
            self.fetch_mail(now_ms);
        } else if done {
            self.mail_more |= more;
        }
    }

    /// Our periodic fetch, when due.
    pub(super) fn tick_mail(&mut self, now_ms: u64) {
        if self.supernode().is_some() && now_ms >= self.next_mail_fetch_ms {
            self.fetch_mail(now_ms);
        }
    }

    /// When the periodic fetch is due, while signed in.
    pub(super) fn mail_timeout(&self) -> Option<u64> {
        self.supernode().is_some().then_some(self.next_mail_fetch_ms)
    }
}
