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
//! - **Hand-off.** When the live set changes, each supernode offers its
//!   boxes to the holders that are new for them in its view (it remembers
//!   each box's holder set; they deduplicate); an old holder keeps its copies
//!   until they expire or are acknowledged, bounded by the store's limits.
//! - **Persistence.** Every change of the store is a [`MailChange`] the
//!   supernode emits ([`super::SnOutput::Mail`]) ahead of any answer that
//!   depends on it, so a driver that writes each change before sending what
//!   follows never acknowledges mail it has not stored. At start the driver
//!   hands back what it stored ([`Supernode::restore_mail`]).
//!
//! [`MailStore`] is the sans-IO store; the `impl Supernode` block below is
//! the protocol.

use super::{SnOutput, Supernode, MAX_LOOKUPS_PER_CONN};
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

/// One change of a [`MailStore`], for the driver to persist in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailChange {
    /// An item was stored (new here).
    Stored(MailItem),
    /// The recipient `to` acknowledged `ids`: deleted where held, and
    /// remembered as tombstones.
    Acked {
        /// Whose mailbox.
        to: UserId,
        /// The ids acknowledged (every one becomes a tombstone).
        ids: Vec<MailId>,
    },
    /// The oldest tombstones, no longer remembered (beyond [`MAX_TOMBSTONES`]).
    Forgotten(Vec<MailId>),
    /// Items dropped without an ack: expired, or not taken back at restore
    /// (expired, over a limit, or no longer valid).
    Dropped(Vec<(UserId, MailId)>),
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
    /// Changes not yet taken by [`MailStore::take_changes`] (drained after
    /// every operation, so this holds one operation's changes at most).
    changes: Vec<MailChange>,
}

impl MailStore {
    /// Store `item` (verified at `now_ms`). `Ok(false)`: we had it, or it was
    /// delivered already.
    pub fn put(&mut self, item: MailItem, now_ms: u64) -> Result<bool, MailRefusal> {
        let stored = self.insert(item.clone(), now_ms)?;
        if stored {
            self.changes.push(MailChange::Stored(item));
        }
        Ok(stored)
    }

    /// Take back what an earlier run stored (its [`MailChange`]s applied in
    /// order): tombstones oldest first, then the items, checked again as a
    /// put would (what no longer verifies or fits is reported
    /// [`MailChange::Dropped`]). Emits nothing else: the rest is stored.
    pub fn restore(&mut self, items: Vec<MailItem>, tombstones: Vec<MailId>, now_ms: u64) {
        // Stored already: only what the bound pushes out needs writing.
        let forgotten: Vec<MailId> = tombstones.into_iter().filter_map(|id| self.tombstone(id)).collect();
        if !forgotten.is_empty() {
            self.changes.push(MailChange::Forgotten(forgotten));
        }
        let mut dropped = Vec::new();
        for item in items {
            let key = (item.to, item.id);
            if !matches!(self.insert(item, now_ms), Ok(true)) {
                dropped.push(key);
            }
        }
        if !dropped.is_empty() {
            self.changes.push(MailChange::Dropped(dropped));
        }
    }

    /// The changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<MailChange> {
        std::mem::take(&mut self.changes)
    }

    fn insert(&mut self, item: MailItem, now_ms: u64) -> Result<bool, MailRefusal> {
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
        let mut forgotten = Vec::new();
        for id in &ack.ids {
            forgotten.extend(self.tombstone(*id));
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
        self.changes.push(MailChange::Acked { to: ack.to, ids: ack.ids.clone() });
        if !forgotten.is_empty() {
            self.changes.push(MailChange::Forgotten(forgotten));
        }
        Ok(gone)
    }

    /// Remember `id` as deleted; the tombstone this pushed out, if any.
    fn tombstone(&mut self, id: MailId) -> Option<MailId> {
        if self.tombstones.insert(id) {
            self.tomb_order.push_back(id);
            if self.tomb_order.len() > MAX_TOMBSTONES {
                let old = self.tomb_order.pop_front()?;
                self.tombstones.remove(&old);
                return Some(old);
            }
        }
        None
    }

    /// Drop expired items.
    pub fn expire(&mut self, now_ms: u64) {
        let mut freed = 0;
        let mut dropped = Vec::new();
        self.boxes.retain(|to, b| {
            let before = b.items.len();
            b.items.retain(|_, i| {
                let keep = i.expires_ms > now_ms;
                if !keep {
                    dropped.push((*to, i.id));
                }
                keep
            });
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
        if !dropped.is_empty() {
            self.changes.push(MailChange::Dropped(dropped));
        }
    }

    /// True when mail for `to` is held.
    pub fn holds(&self, to: &UserId) -> bool {
        self.boxes.contains_key(to)
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

/// A client's put or fetch waiting on the holders; `asked`: the holders
/// (member id and address) that may still answer it, once each.
#[derive(Debug)]
pub(super) enum MailPending {
    Put {
        conn: ConnId,
        id: MailId,
        asked: Vec<(UserId, SocketAddr)>,
        outstanding: usize,
        stored: usize,
        needed: usize,
        last_err: Option<String>,
    },
    Fetch {
        conn: ConnId,
        to: UserId,
        asked: Vec<(UserId, SocketAddr)>,
        outstanding: usize,
        seen: HashSet<MailId>,
        more: bool,
    },
}

impl MailPending {
    /// Take the holder `(id, addr)` off the list of those that may answer:
    /// true if it was on it.
    fn take_asked(&mut self, id: UserId, addr: SocketAddr) -> bool {
        let (MailPending::Put { asked, .. } | MailPending::Fetch { asked, .. }) = self;
        match asked.iter().position(|h| *h == (id, addr)) {
            Some(i) => {
                asked.swap_remove(i);
                true
            }
            None => false,
        }
    }
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
        let req = self.new_req();
        let asked = holders.iter().copied().filter(|h| h.0 != self.me).collect();
        let mut p = MailPending::Put { conn, id, asked, outstanding: holders.len(), stored: 0, needed, last_err: None };
        for (hid, addr) in holders {
            if hid == self.me {
                let r = self.mail_put(item.clone(), now_ms).map(|_| ()).map_err(|e| e.to_string());
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
                // A closed connection took its counter with it.
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.mail_fetches = c.mail_fetches.saturating_sub(1);
                    self.send(conn, Message::Mail { items: Vec::new(), done: true, more })
                }
            }
        }
    }

    /// The recipient asks for its mail.
    pub(super) fn client_mail_fetch(&mut self, conn: ConnId, user: UserId, fetch: MailFetch, now_ms: u64) {
        if fetch.to != user || fetch.verify(now_ms).is_err() {
            self.send(conn, Message::Error { reason: "mail fetch refused: not signed by this user".into() });
            return;
        }
        let busy = self.conns.get(&conn).map_or(usize::MAX, |c| c.mail_fetches);
        if busy >= MAX_LOOKUPS_PER_CONN || self.mail_pending.len() >= super::index::MAX_PENDING {
            self.send(conn, Message::Error { reason: "too many mail fetches in flight".into() });
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.mail_fetches += 1;
        }
        let holders = self.mail_holders(&user);
        let req = self.new_req();
        let asked = holders.iter().copied().filter(|h| h.0 != self.me).collect();
        let p =
            MailPending::Fetch { conn, to: user, asked, outstanding: holders.len(), seen: HashSet::new(), more: false };
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
        let Some((MailPending::Fetch { conn, to, outstanding, seen, more: any_more, .. }, _)) =
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
                self.flush_mail_changes();
            } else {
                self.send_overlay(addr, OverlayMsg::MailAck { ack: ack.clone() });
            }
        }
    }

    /// Store an item and queue its change (ahead of any answer about it).
    /// A box new here starts with the holders of our view: those its
    /// putter asked, so a hand-off does not send it to them again.
    fn mail_put(&mut self, item: MailItem, now_ms: u64) -> Result<bool, MailRefusal> {
        let to = item.to;
        let stored = self.mail.put(item, now_ms)?;
        self.flush_mail_changes();
        if stored && !self.mail_holder_sets.contains_key(&to) {
            let holders = self.mail_holders(&to);
            self.mail_holder_sets.insert(to, holders);
        }
        Ok(stored)
    }

    /// Queue the store's changes for the driver, in order.
    fn flush_mail_changes(&mut self) {
        for c in self.mail.take_changes() {
            self.out.push_back(SnOutput::Mail(c));
        }
    }

    /// Take back the mail an earlier run stored (see [`MailStore::restore`]):
    /// at the first hand-off every box is offered to all its holders (they
    /// may have lost it while we were gone).
    pub fn restore_mail(&mut self, items: Vec<MailItem>, tombstones: Vec<MailId>, now_ms: u64) {
        self.mail.restore(items, tombstones, now_ms);
        self.flush_mail_changes();
        self.mail_dirty = true;
    }

    /// True if a mail answer for `req` comes from a holder asked that had not
    /// answered; an answer from anyone else is dropped and counted.
    fn mail_answer_asked(&mut self, req: u64, from: SocketAddr, from_id: UserId, kind: &str) -> bool {
        let Some((p, _)) = self.mail_pending.get_mut(&req) else { return false };
        if p.take_asked(from_id, from) {
            return true;
        }
        self.refuse_answer(kind, from);
        false
    }

    /// Mail messages from member `from_id` at `from`; others are handed back.
    pub(super) fn on_mail_msg(
        &mut self,
        from: SocketAddr,
        from_id: UserId,
        msg: OverlayMsg,
        now_ms: u64,
    ) -> Option<OverlayMsg> {
        match msg {
            OverlayMsg::MailPut { req, item } => {
                // The change is queued ahead of the answer: stored before it leaves.
                let result = self.mail_put(item, now_ms).map(|_| ()).map_err(|e| e.to_string());
                self.send_overlay(from, OverlayMsg::MailPutAns { req, result });
            }
            OverlayMsg::MailPutAns { req, result } => {
                if !self.mail_answer_asked(req, from, from_id, "MailPutAns") {
                    return None;
                }
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
                if !self.mail_answer_asked(req, from, from_id, "MailItems") {
                    return None;
                }
                self.mail_items_answered(req, items, more, now_ms);
                self.mail_progress(req);
            }
            OverlayMsg::MailAck { ack } => {
                let r = self.mail.ack(&ack, now_ms);
                self.flush_mail_changes();
                if let Err(e) = r {
                    debug!("mail ack from {from} refused: {e}");
                }
            }
            OverlayMsg::MailCopy { items } => {
                for item in items.into_iter().take(MAX_ITEMS_PER_PACKET) {
                    if let Err(e) = self.mail_put(item, now_ms) {
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

    /// The live set changed: offer every box to the holders that are new
    /// for it in our view (they deduplicate), and remember its holder set.
    /// A change that leaves a box's holders alone sends nothing for it.
    /// Costs O(boxes held × members) to rank, at most one round per
    /// housekeeping period; sends only what moved.
    pub(super) fn hand_off_mail(&mut self, now_ms: u64) {
        self.mail.expire(now_ms);
        self.flush_mail_changes();
        // A box that went (acked, expired) takes its holder set with it.
        let mail = &self.mail;
        self.mail_holder_sets.retain(|to, _| mail.holds(to));
        for to in self.mail.recipients() {
            let holders = self.mail_holders(&to);
            let known = self.mail_holder_sets.get(&to);
            let new: Vec<SocketAddr> = holders
                .iter()
                .filter(|h| h.0 != self.me && !known.is_some_and(|k| k.contains(h)))
                .map(|h| h.1)
                .collect();
            if !new.is_empty() {
                let copies = pages(self.mail.items_of(&to));
                for addr in new {
                    for page in &copies {
                        self.send_overlay(addr, OverlayMsg::MailCopy { items: page.clone() });
                    }
                }
            }
            self.mail_holder_sets.insert(to, holders);
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
    fn every_change_is_emitted_and_a_restored_store_is_the_same() {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let mut s = MailStore::default();
        let (i0, i1, i2) = (item(&a, &b, 0, 1_000, 10), item(&a, &b, 1, 1_001, 10), item(&a, &b, 2, 1_002, 10));
        let mut short = item(&a, &b, 3, 1_003, 10);
        short = MailItem::sign(a.signing_key(), short.id, short.to, short.sent_ms, 5_000, short.body);
        for i in [&i0, &i1, &i2, &short] {
            s.put(i.clone(), 2_000).unwrap();
        }
        s.put(i0.clone(), 2_000).unwrap();
        let stored = s.take_changes();
        assert_eq!(
            stored,
            vec![
                MailChange::Stored(i0.clone()),
                MailChange::Stored(i1.clone()),
                MailChange::Stored(i2.clone()),
                MailChange::Stored(short.clone())
            ],
            "a duplicate changes nothing"
        );
        s.ack(&MailAck::sign(b.signing_key(), vec![[0; 16], [7; 16]], 2_000), 2_000).unwrap();
        assert_eq!(s.take_changes(), vec![MailChange::Acked { to: b.user_id(), ids: vec![[0; 16], [7; 16]] }]);
        s.expire(6_500);
        assert_eq!(s.take_changes(), vec![MailChange::Dropped(vec![(b.user_id(), [3; 16])])]);
        assert!(s.take_changes().is_empty());
        // What a driver stored (items i1, i2, tombstones 0 and 7) comes back whole;
        // the item that expired meanwhile is reported dropped.
        let mut r = MailStore::default();
        r.restore(vec![i2.clone(), i1.clone(), short.clone()], vec![[0; 16], [7; 16]], 6_500);
        assert_eq!(r.take_changes(), vec![MailChange::Dropped(vec![(b.user_id(), [3; 16])])]);
        assert_eq!(r.items_of(&b.user_id()), s.items_of(&b.user_id()));
        assert_eq!((r.len(), r.bytes()), (s.len(), s.bytes()));
        assert_eq!(r.put(i0, 6_500), Ok(false), "the tombstone came back too");
        assert!(r.take_changes().is_empty());
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
