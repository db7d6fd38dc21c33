//! Offline mail on the index (docs/PROTOCOL.md §8): every user has a mailbox
//! on the R supernodes that rendezvous hashing picks for the key
//! `mail/<user id hex>` — the presence holders' rule on another key — and a
//! message for a user who is offline waits there, end-to-end encrypted, for
//! up to 30 days.
//!
//! - **Put.** The sender's supernode checks the item (the sender's own
//!   signature, size, lifetime) and asks *every* holder to store it; the
//!   sender hears `stored` once a majority of them has it ([`put_quorum`]),
//!   an error with the reason otherwise. A sender keeps its message until it
//!   is delivered and puts it again if need be (holders deduplicate by id).
//! - **Fetch.** The recipient's supernode forwards the recipient's signed
//!   fetch to every holder and streams the union (deduplicated, every item
//!   verified again: holders are not trusted) to the client, oldest first,
//!   a page per holder.
//! - **Ack.** The recipient signs the ids it has stored; only that signature
//!   deletes, so nobody else can delete its mail. Deleted ids are remembered
//!   (tombstones) so a late copy does not bring an item back.
//! - **Hand-off.** When the live set changes, each holder offers its boxes
//!   to their holders in the new view (they deduplicate); an old holder keeps
//!   its copies until they expire or are acknowledged, bounded by the store's
//!   limits.
//!
//! [`MailStore`] is the sans-IO store; the `impl Supernode` block below is
//! the protocol.

use super::{Supernode, MAX_LOOKUPS_PER_CONN};
use crate::overlay::rendezvous::key_hash;
use crate::{ConnId, Map};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use supervox_proto::mail::{MailAck, MailError, MailFetch, MailId, MailItem};
use supervox_proto::overlay::{OverlayMsg, MAX_ITEMS_PER_PACKET};
use supervox_proto::{Message, UserId};
use tracing::debug;

/// Most items in one mailbox.
pub const MAX_BOX_ITEMS: usize = 1000;
/// Most bytes in one mailbox (4 MiB).
pub const MAX_BOX_BYTES: usize = 4 << 20;
/// Most bytes of mail one supernode holds in all (256 MiB).
pub const MAX_STORE_BYTES: usize = 256 << 20;
/// Deleted ids remembered (a bound on memory; the oldest go first).
pub const MAX_TOMBSTONES: usize = 200_000;
/// Bytes of items per overlay answer or copy (one datagram).
pub const MAIL_PAGE_BYTES: usize = 7 * 1024;
/// How long a put or fetch waits for the holders.
pub const MAIL_TIMEOUT_MS: u64 = 2_000;
/// Items one client may put per minute.
pub const MAIL_PUTS_PER_MINUTE: usize = 120;

/// Holders that must store an item before the sender hears `stored`: a
/// majority of `holders`.
pub fn put_quorum(holders: usize) -> usize {
    holders / 2 + 1
}

/// Why a holder did not store an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailRefusal {
    /// The item does not verify.
    #[error("invalid mail: {0}")]
    Invalid(#[from] MailError),
    /// The recipient's mailbox is at its quota.
    #[error("mailbox full ({MAX_BOX_ITEMS} messages or 4 MiB)")]
    BoxFull,
    /// This holder is at its total limit.
    #[error("holder out of space")]
    StoreFull,
}

#[derive(Debug, Default)]
struct MailBox {
    /// Oldest first.
    items: BTreeMap<(u64, MailId), MailItem>,
    ids: Map<MailId, u64>,
    bytes: usize,
}

/// The mailboxes one supernode holds.
#[derive(Debug, Default)]
pub struct MailStore {
    boxes: Map<UserId, MailBox>,
    bytes: usize,
    tombstones: HashSet<MailId>,
    tomb_order: VecDeque<MailId>,
}

impl MailStore {
    /// Store `item` (verified at `now_ms`). `Ok(false)`: we had it, or it was
    /// delivered already.
    pub fn put(&mut self, item: MailItem, now_ms: u64) -> Result<bool, MailRefusal> {
        item.verify(now_ms)?;
        if self.tombstones.contains(&item.id) {
            return Ok(false);
        }
        let size = item.size();
        let total = self.bytes;
        let b = self.boxes.entry(item.to).or_default();
        if b.ids.contains_key(&item.id) {
            return Ok(false);
        }
        if b.items.len() >= MAX_BOX_ITEMS || b.bytes + size > MAX_BOX_BYTES {
            return Err(MailRefusal::BoxFull);
        }
        if total + size > MAX_STORE_BYTES {
            return Err(MailRefusal::StoreFull);
        }
        b.ids.insert(item.id, item.sent_ms);
        b.bytes += size;
        b.items.insert((item.sent_ms, item.id), item);
        self.bytes += size;
        Ok(true)
    }

    /// `to`'s oldest items, up to about `max_bytes` (at least one), and
    /// whether more remain.
    pub fn page(&self, to: &UserId, max_bytes: usize) -> (Vec<MailItem>, bool) {
        let Some(b) = self.boxes.get(to) else { return (Vec::new(), false) };
        let mut out = Vec::new();
        let mut used = 0;
        for item in b.items.values() {
            if !out.is_empty() && (used + item.size() > max_bytes || out.len() >= MAX_ITEMS_PER_PACKET) {
                return (out, true);
            }
            used += item.size();
            out.push(item.clone());
        }
        (out, false)
    }

    /// Delete what the recipient acknowledges (its signature checked at
    /// `now_ms`); returns how many items went.
    pub fn ack(&mut self, ack: &MailAck, now_ms: u64) -> Result<usize, MailError> {
        ack.verify(now_ms)?;
        let mut gone = 0;
        for id in &ack.ids {
            self.tombstone(*id);
            let Some(b) = self.boxes.get_mut(&ack.to) else { continue };
            if let Some(sent) = b.ids.remove(id) {
                if let Some(item) = b.items.remove(&(sent, *id)) {
                    b.bytes -= item.size();
                    self.bytes -= item.size();
                    gone += 1;
                }
            }
        }
        if self.boxes.get(&ack.to).is_some_and(|b| b.items.is_empty()) {
            self.boxes.remove(&ack.to);
        }
        Ok(gone)
    }

    fn tombstone(&mut self, id: MailId) {
        if self.tombstones.insert(id) {
            self.tomb_order.push_back(id);
            if self.tomb_order.len() > MAX_TOMBSTONES {
                if let Some(old) = self.tomb_order.pop_front() {
                    self.tombstones.remove(&old);
                }
            }
        }
    }

    /// Drop expired items.
    pub fn expire(&mut self, now_ms: u64) {
        let mut freed = 0;
        self.boxes.retain(|_, b| {
            let before = b.items.len();
            b.items.retain(|_, i| i.expires_ms > now_ms);
            if b.items.len() != before {
                let ids: Map<MailId, u64> = b.items.values().map(|i| (i.id, i.sent_ms)).collect();
                let bytes: usize = b.items.values().map(MailItem::size).sum();
                freed += b.bytes - bytes;
                b.ids = ids;
                b.bytes = bytes;
            }
            !b.items.is_empty()
        });
        self.bytes -= freed;
    }

    /// Recipients with mail here.
    pub fn recipients(&self) -> Vec<UserId> {
        self.boxes.keys().copied().collect()
    }

    /// Every item for `to`.
    pub fn items_of(&self, to: &UserId) -> Vec<MailItem> {
        self.boxes.get(to).map(|b| b.items.values().cloned().collect()).unwrap_or_default()
    }

    /// Items held in all.
    pub fn len(&self) -> usize {
        self.boxes.values().map(|b| b.items.len()).sum()
    }

    /// True when no mail is held.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// Bytes held (as counted against the limits).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The rendezvous key of `user`'s mailbox.
fn mail_key(user: &UserId) -> String {
    format!("mail/{}", hex::encode(user.0))
}

/// Greedy pages of at most [`MAIL_PAGE_BYTES`] (at least one item each).
fn pages(items: Vec<MailItem>) -> Vec<Vec<MailItem>> {
    let mut out: Vec<Vec<MailItem>> = Vec::new();
    let mut used = 0;
    for item in items {
        let size = item.size();
        match out.last_mut() {
            Some(page) if used + size <= MAIL_PAGE_BYTES && page.len() < MAX_ITEMS_PER_PACKET => page.push(item),
            _ => {
                out.push(vec![item]);
                used = 0;
            }
        }
        used += size;
    }
    out
}

/// A client's put or fetch waiting on the holders.
#[derive(Debug)]
pub(super) enum MailPending {
    Put { conn: ConnId, id: MailId, outstanding: usize, stored: usize, needed: usize, last_err: Option<String> },
    Fetch { conn: ConnId, to: UserId, outstanding: usize, seen: HashSet<MailId>, more: bool },
}

impl Supernode {
    /// The holders of `user`'s mailbox in our view, heaviest first.
    pub(super) fn mail_holders(&self, user: &UserId) -> Vec<(UserId, SocketAddr)> {
        self.membership
            .heaviest(key_hash(&mail_key(user)), self.presence_replicas())
            .into_iter()
            .map(|(_, m)| (m.id, m.addr))
            .collect()
    }

    /// A client leaves mail: its own, checked here, then to every holder.
    pub(super) fn client_mail_put(&mut self, conn: ConnId, user: UserId, item: MailItem, now_ms: u64) {
        let id = item.id;
        let refuse = |s: &mut Self, reason: String| s.send(conn, Message::MailPutResult { id, result: Err(reason) });
        if item.from != user {
            return refuse(self, "mail must be from the signed-in user".into());
        }
        if let Err(e) = item.verify(now_ms) {
            return refuse(self, format!("invalid mail: {e}"));
        }
        let allowed = self.conns.get_mut(&conn).is_some_and(|c| c.mail_puts.take(now_ms));
        if !allowed {
            return refuse(self, format!("rate limited: at most {MAIL_PUTS_PER_MINUTE} messages a minute"));
        }
        if self.mail_pending.len() >= super::index::MAX_PENDING {
            return refuse(self, "supernode busy".into());
        }
        let holders = self.mail_holders(&item.to);
        let needed = put_quorum(holders.len());
        let req = self.next_mail_req();
        let mut p = MailPending::Put { conn, id, outstanding: holders.len(), stored: 0, needed, last_err: None };
        for (hid, addr) in holders {
            if hid == self.me {
                let r = self.mail.put(item.clone(), now_ms).map(|_| ()).map_err(|e| e.to_string());
                Self::put_answer(&mut p, r);
            } else {
                self.send_overlay(addr, OverlayMsg::MailPut { req, item: item.clone() });
            }
        }
        self.mail_pending.insert(req, (p, now_ms + MAIL_TIMEOUT_MS));
        self.mail_progress(req);
    }

    fn put_answer(p: &mut MailPending, r: Result<(), String>) {
        if let MailPending::Put { outstanding, stored, last_err, .. } = p {
            *outstanding = outstanding.saturating_sub(1);
            match r {
                Ok(()) => *stored += 1,
                Err(e) => *last_err = Some(e),
            }
        }
    }

    /// Answer the client once a request is decided (or the holders ran out).
    fn mail_progress(&mut self, req: u64) {
        let done = match self.mail_pending.get(&req) {
            Some((MailPending::Put { outstanding, stored, needed, .. }, _)) => *stored >= *needed || *outstanding == 0,
            Some((MailPending::Fetch { outstanding, .. }, _)) => *outstanding == 0,
            None => false,
        };
        if done {
            self.finish_mail(req);
        }
    }

    fn finish_mail(&mut self, req: u64) {
        let Some((p, _)) = self.mail_pending.remove(&req) else { return };
        match p {
            MailPending::Put { conn, id, stored, needed, last_err, .. } => {
                let result = if stored >= needed {
                    Ok(())
                } else {
                    Err(last_err.unwrap_or_else(|| format!("stored on {stored} of the {needed} holders needed")))
                };
                self.send(conn, Message::MailPutResult { id, result });
            }
            MailPending::Fetch { conn, more, .. } => {
                self.send(conn, Message::Mail { items: Vec::new(), done: true, more })
            }
        }
    }

    /// The recipient asks for its mail.
    pub(super) fn client_mail_fetch(&mut self, conn: ConnId, user: UserId, fetch: MailFetch, now_ms: u64) {
        if fetch.to != user || fetch.verify(now_ms).is_err() {
            self.send(conn, Message::Error { reason: "mail fetch refused: not signed by this user".into() });
            return;
        }
        let busy = self
            .mail_pending
            .values()
            .filter(|(p, _)| matches!(p, MailPending::Fetch { conn: c, .. } if *c == conn))
            .count();
        if busy >= MAX_LOOKUPS_PER_CONN || self.mail_pending.len() >= super::index::MAX_PENDING {
            self.send(conn, Message::Error { reason: "too many mail fetches in flight".into() });
            return;
        }
        let holders = self.mail_holders(&user);
        let req = self.next_mail_req();
        let p = MailPending::Fetch { conn, to: user, outstanding: holders.len(), seen: HashSet::new(), more: false };
        self.mail_pending.insert(req, (p, now_ms + MAIL_TIMEOUT_MS));
        for (hid, addr) in holders {
            if hid == self.me {
                let (items, more) = self.mail.page(&user, MAIL_PAGE_BYTES);
                self.mail_items_answered(req, items, more, now_ms);
            } else {
                self.send_overlay(addr, OverlayMsg::MailFetch { req, fetch: fetch.clone() });
            }
        }
        self.mail_progress(req);
    }

    /// One holder's page for a fetch: verified, deduplicated, passed on.
    fn mail_items_answered(&mut self, req: u64, items: Vec<MailItem>, more: bool, now_ms: u64) {
        let Some((MailPending::Fetch { conn, to, outstanding, seen, more: any_more }, _)) =
            self.mail_pending.get_mut(&req)
        else {
            return;
        };
        *outstanding = outstanding.saturating_sub(1);
        *any_more |= more;
        let fresh: Vec<MailItem> = items
            .into_iter()
            .take(MAX_ITEMS_PER_PACKET)
            .filter(|i| i.to == *to && i.verify(now_ms).is_ok() && seen.insert(i.id))
            .collect();
        let conn = *conn;
        if !fresh.is_empty() {
            self.send(conn, Message::Mail { items: fresh, done: false, more: false });
        }
    }

    /// The recipient has stored these: every holder deletes them.
    pub(super) fn client_mail_ack(&mut self, conn: ConnId, user: UserId, ack: MailAck, now_ms: u64) {
        if ack.to != user || ack.verify(now_ms).is_err() {
            self.send(conn, Message::Error { reason: "mail ack refused: not signed by this user".into() });
            return;
        }
        for (hid, addr) in self.mail_holders(&user) {
            if hid == self.me {
                let _ = self.mail.ack(&ack, now_ms);
            } else {
                self.send_overlay(addr, OverlayMsg::MailAck { ack: ack.clone() });
            }
        }
    }

    fn next_mail_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    /// Mail messages from other supernodes; others are handed back.
    pub(super) fn on_mail_msg(&mut self, from: SocketAddr, msg: OverlayMsg, now_ms: u64) -> Option<OverlayMsg> {
        match msg {
            OverlayMsg::MailPut { req, item } => {
                let result = self.mail.put(item, now_ms).map(|_| ()).map_err(|e| e.to_string());
                self.send_overlay(from, OverlayMsg::MailPutAns { req, result });
            }
            OverlayMsg::MailPutAns { req, result } => {
                if let Some((p, _)) = self.mail_pending.get_mut(&req) {
                    Self::put_answer(p, result);
                    self.mail_progress(req);
                }
            }
            OverlayMsg::MailFetch { req, fetch } => {
                // Only the recipient's signature opens a mailbox, whoever forwards it.
                if fetch.verify(now_ms).is_ok() {
                    let (items, more) = self.mail.page(&fetch.to, MAIL_PAGE_BYTES);
                    self.send_overlay(from, OverlayMsg::MailItems { req, items, more });
                }
            }
            OverlayMsg::MailItems { req, items, more } => {
                self.mail_items_answered(req, items, more, now_ms);
                self.mail_progress(req);
            }
            OverlayMsg::MailAck { ack } => {
                if let Err(e) = self.mail.ack(&ack, now_ms) {
                    debug!("mail ack from {from} refused: {e}");
                }
            }
            OverlayMsg::MailCopy { items } => {
                for item in items.into_iter().take(MAX_ITEMS_PER_PACKET) {
                    if let Err(e) = self.mail.put(item, now_ms) {
                        debug!("mail copy from {from} not stored: {e}");
                    }
                }
            }
            other => return Some(other),
        }
        None
    }

    /// Housekeeping (once a second, so no timer of its own): requests past
    /// their deadline are answered with what came.
    pub(super) fn expire_mail(&mut self, now_ms: u64) {
        let due: Vec<u64> = self.mail_pending.iter().filter(|(_, (_, d))| *d <= now_ms).map(|(r, _)| *r).collect();
        for req in due {
            self.finish_mail(req);
        }
    }

    /// The live set changed: offer every box to its holders in the new
    /// view (they deduplicate). Costs O(boxes held), at most one round per
    /// housekeeping period.
    pub(super) fn hand_off_mail(&mut self, now_ms: u64) {
        self.mail.expire(now_ms);
        for to in self.mail.recipients() {
            let holders = self.mail_holders(&to);
            let items = self.mail.items_of(&to);
            let copies = pages(items);
            for (hid, addr) in holders {
                if hid == self.me {
                    continue;
                }
                for page in &copies {
                    self.send_overlay(addr, OverlayMsg::MailCopy { items: page.clone() });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn item(from: &Identity, to: &Identity, n: u8, sent_ms: u64, len: usize) -> MailItem {
        MailItem::sign(from.signing_key(), [n; 16], to.user_id(), sent_ms, 60_000, vec![n; len])
    }

    #[test]
    fn store_pages_acks_and_remembers_deletions() {
        let (a, b, m) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]), Identity::from_seed([3; 32]));
        let mut s = MailStore::default();
        for n in 0..5 {
            assert_eq!(s.put(item(&a, &b, n, 1_000 + u64::from(n), 3000), 2_000), Ok(true));
        }
        assert_eq!(s.put(item(&a, &b, 0, 1_000, 3000), 2_000), Ok(false), "a duplicate");
        let (page, more) = s.page(&b.user_id(), MAIL_PAGE_BYTES);
        assert_eq!(page.iter().map(|i| i.id[0]).collect::<Vec<_>>(), vec![0, 1], "oldest first, one datagram");
        assert!(more);
        // Mallory cannot delete bob's mail; bob can.
        let mut forged = MailAck::sign(m.signing_key(), vec![[0; 16]], 2_000);
        forged.to = b.user_id();
        assert!(s.ack(&forged, 2_000).is_err());
        assert_eq!(s.len(), 5);
        assert_eq!(s.ack(&MailAck::sign(b.signing_key(), vec![[0; 16], [1; 16]], 2_000), 2_000), Ok(2));
        assert_eq!(s.len(), 3);
        // A late copy of a delivered item does not come back.
        assert_eq!(s.put(item(&a, &b, 0, 1_000, 3000), 2_100), Ok(false));
        assert_eq!(s.len(), 3);
        s.expire(61_005);
        assert!(s.is_empty() && s.bytes() == 0, "{} items, {} bytes", s.len(), s.bytes());
    }

    #[test]
    fn quotas_and_bad_items_are_refused_with_reasons() {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let mut s = MailStore::default();
        let mut bad = item(&a, &b, 1, 1_000, 10);
        bad.body.push(1);
        assert!(matches!(s.put(bad, 2_000), Err(MailRefusal::Invalid(_))));
        for n in 0..MAX_BOX_ITEMS {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(n as u64).to_le_bytes());
            let i = MailItem::sign(a.signing_key(), id, b.user_id(), 1_000, 60_000, vec![]);
            s.put(i, 2_000).unwrap();
        }
        let over = MailItem::sign(a.signing_key(), [0xff; 16], b.user_id(), 1_000, 60_000, vec![]);
        assert_eq!(s.put(over, 2_000), Err(MailRefusal::BoxFull));
        assert_eq!(MailRefusal::BoxFull.to_string(), "mailbox full (1000 messages or 4 MiB)");
        assert_eq!(put_quorum(3), 2);
        assert_eq!(put_quorum(1), 1);
    }
}
