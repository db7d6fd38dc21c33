//! Chat between two users, sans-IO (docs/PROTOCOL.md §9.2): texts up to
//! [`MAX_TEXT`] split into parts that each fit one mailbox item, 128-bit
//! random ids, per-conversation order by (sender timestamp, id), dedupe,
//! and the statuses `sent` → `stored` → `delivered` → `read`.
//!
//! Every part and every receipt travels as one sealed unit
//! ([`ChatOutput::Deliver`]) under its own random wire id: the driver sends
//! it as a peer message when the recipient is online and calls
//! [`Chat::undeliverable`] if that fails (or leaves it in the mailbox
//! straight away); [`Chat::stored`] reports a mailbox put. The sender keeps
//! each message until it is delivered ([`Chat::undelivered`]).

use super::payload::{open_envelope, seal_envelope, Envelope, PayloadError, PeerPayload};
use super::seal::{SealError, SEAL_OVERHEAD};
use crate::{Identity, Map};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use supervox_proto::mail::MAX_MAIL_BODY;
use supervox_proto::UserId;

/// Longest text of one message, in bytes of UTF-8.
pub const MAX_TEXT: usize = 16 * 1024;
/// Text bytes per part: with its header and the seal it fits one mail item.
pub const PART_TEXT: usize = MAX_MAIL_BODY - SEAL_OVERHEAD - 128;
/// Most message ids one receipt names.
pub const MAX_RECEIPT_IDS: usize = 64;
/// Messages kept in memory (both directions); the driver persists them.
pub const MAX_MESSAGES: usize = 100_000;
/// Incomplete incoming messages kept (their parts still arriving).
pub const MAX_PARTIAL: usize = 1_024;

/// A message id: 128 random bits chosen by the sender.
pub type MsgId = [u8; 16];

/// Where one message stands. Only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    /// Handed to our supernode (or to be sent).
    Sent,
    /// A majority of the recipient's mailbox holders has every part.
    Stored,
    /// The recipient has it (its delivery receipt arrived).
    Delivered,
    /// The recipient has read it (its read receipt arrived).
    Read,
}

impl Status {
    /// Read the contract's name (as stored).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sent" => Status::Sent,
            "stored" => Status::Stored,
            "delivered" => Status::Delivered,
            "read" => Status::Read,
            _ => return None,
        })
    }

    /// The name the CLI/JSON contract uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Stored => "stored",
            Status::Delivered => "delivered",
            Status::Read => "read",
        }
    }
}

/// What one chat unit says (inside a [`PeerPayload::Chat`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatPayload {
    /// Part `part` of `parts` of message `id`.
    Text {
        /// The message.
        id: MsgId,
        /// Sender's clock at sending (unix ms): the conversation order.
        sent_ms: u64,
        /// This part's index.
        part: u16,
        /// How many parts.
        parts: u16,
        /// This part's text.
        text: String,
    },
    /// The recipient has these messages.
    Delivered(Vec<MsgId>),
    /// The recipient has read these messages.
    Read(Vec<MsgId>),
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Its id.
    pub id: MsgId,
    /// Sender.
    pub from: UserId,
    /// Recipient.
    pub to: UserId,
    /// The text.
    pub text: String,
    /// Sender's clock at sending (unix ms).
    pub sent_ms: u64,
    /// Outgoing: how far it got. Incoming: `Delivered`, then `Read` once we read it.
    pub status: Status,
}

/// Why a chat input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// Longer than [`MAX_TEXT`].
    #[error("message of {0} bytes exceeds {MAX_TEXT}")]
    TooLong(usize),
    /// Empty text.
    #[error("empty message")]
    Empty,
    /// [`MAX_MESSAGES`] held.
    #[error("too many messages held")]
    Full,
    /// A unit that does not open or decode.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Decodes, but is not a valid payload.
    #[error("malformed chat payload")]
    Malformed,
}

/// What the chat wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatOutput {
    /// Get this sealed unit to `to`: as a peer message if it is online,
    /// else (or after [`Chat::undeliverable`]) into its mailbox, both
    /// under `wire_id`.
    Deliver {
        /// Recipient.
        to: UserId,
        /// The unit's id (peer message id and mail id).
        wire_id: MsgId,
        /// Sealed to `to`, at most [`MAX_MAIL_BODY`] bytes.
        sealed: Vec<u8>,
    },
    /// Leave this unit in `to`'s mailbox (the online try failed).
    Mail {
        /// Recipient.
        to: UserId,
        /// The unit's id.
        wire_id: MsgId,
        /// Sealed to `to`.
        sealed: Vec<u8>,
    },
    /// A new message arrived (complete, first time).
    Received(ChatMessage),
    /// One of our messages moved on.
    Status {
        /// The message.
        id: MsgId,
        /// Its new status.
        status: Status,
    },
}

/// A unit in flight: where it goes and what it means for its message.
#[derive(Debug)]
struct Unit {
    to: UserId,
    sealed: Vec<u8>,
    msg: Option<MsgId>,
}

#[derive(Debug)]
struct Partial {
    from: UserId,
    sent_ms: u64,
    parts: Vec<Option<String>>,
}

/// The chat state machine of one user.
#[derive(Debug)]
pub struct Chat {
    me: Identity,
    /// Our name, carried in every unit (receipts find their way back by it).
    name: String,
    read_receipts: bool,
    /// Every message by id.
    messages: Map<MsgId, ChatMessage>,
    /// Conversation order: (peer, sent_ms, id).
    order: BTreeMap<(UserId, u64, MsgId), ()>,
    /// Outgoing units not yet known to be stored or delivered.
    units: Map<MsgId, Unit>,
    /// Outgoing message id → parts not yet stored.
    unstored: Map<MsgId, u16>,
    partial: Map<MsgId, Partial>,
    out: VecDeque<ChatOutput>,
}

impl Chat {
    /// A chat for `me`, called `name`; `read_receipts` false never tells
    /// senders we read.
    pub fn new(me: Identity, name: &str, read_receipts: bool) -> Self {
        Self {
            me,
            name: name.to_string(),
            read_receipts,
            messages: Map::default(),
            order: BTreeMap::new(),
            units: Map::default(),
            unstored: Map::default(),
            partial: Map::default(),
            out: VecDeque::new(),
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<ChatOutput> {
        self.out.pop_front()
    }

    /// Send `text` to `to` at `now_ms`: its id, with one
    /// [`ChatOutput::Deliver`] per part queued.
    pub fn send<R: RngCore + CryptoRng>(
        &mut self,
        to: UserId,
        text: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<MsgId, ChatError> {
        if text.is_empty() {
            return Err(ChatError::Empty);
        }
        if text.len() > MAX_TEXT {
            return Err(ChatError::TooLong(text.len()));
        }
        if self.messages.len() >= MAX_MESSAGES {
            return Err(ChatError::Full);
        }
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let parts = split(text);
        let total = parts.len() as u16;
        for (i, part) in parts.into_iter().enumerate() {
            let payload =
                ChatPayload::Text { id, sent_ms: now_ms, part: i as u16, parts: total, text: part.to_string() };
            self.queue(to, payload, Some(id), rng)?;
        }
        self.unstored.insert(id, total);
        let msg = ChatMessage {
            id,
            from: self.me.user_id(),
            to,
            text: text.to_string(),
            sent_ms: now_ms,
            status: Status::Sent,
        };
        self.insert(to, msg);
        Ok(id)
    }

    /// A sealed unit from `from` (a peer message, or a mail item's body)
    /// under `wire_id`. Duplicates are absorbed; new complete messages come
    /// out as [`ChatOutput::Received`] and are receipted.
    pub fn receive<R: RngCore + CryptoRng>(
        &mut self,
        from: UserId,
        wire_id: &MsgId,
        sealed: &[u8],
        rng: &mut R,
    ) -> Result<(), ChatError> {
        let env = open_envelope(&self.me, &from, wire_id, sealed).map_err(|e| match e {
            PayloadError::Seal(s) => ChatError::Seal(s),
            PayloadError::Malformed => ChatError::Malformed,
        })?;
        match env.body {
            PeerPayload::Chat(p) => self.on_payload(from, p, rng),
            _ => Err(ChatError::Malformed),
        }
    }

    /// A chat payload from `from`, already opened (the social layer opens
    /// every unit once and hands the chat ones here).
    pub fn on_payload<R: RngCore + CryptoRng>(
        &mut self,
        from: UserId,
        payload: ChatPayload,
        rng: &mut R,
    ) -> Result<(), ChatError> {
        match payload {
            ChatPayload::Text { id, sent_ms, part, parts, text } => {
                if parts == 0 || part >= parts || usize::from(parts) > MAX_TEXT.div_ceil(PART_TEXT) {
                    return Err(ChatError::Malformed);
                }
                if let Some(m) = self.messages.get(&id) {
                    // Seen: receipt again (the first receipt may be lost), keep nothing.
                    if m.from == from {
                        self.receipt(from, ChatPayload::Delivered(vec![id]), rng)?;
                    }
                    return Ok(());
                }
                if self.messages.len() >= MAX_MESSAGES {
                    return Err(ChatError::Full);
                }
                if !self.partial.contains_key(&id) && self.partial.len() >= MAX_PARTIAL {
                    return Err(ChatError::Full);
                }
                let p = self.partial.entry(id).or_insert_with(|| Partial {
                    from,
                    sent_ms,
                    parts: vec![None; usize::from(parts)],
                });
                if p.from != from || p.parts.len() != usize::from(parts) {
                    return Err(ChatError::Malformed);
                }
                p.parts[usize::from(part)] = Some(text);
                if p.parts.iter().all(Option::is_some) {
                    let Some(p) = self.partial.remove(&id) else { return Ok(()) };
                    let text: String = p.parts.into_iter().flatten().collect();
                    if text.len() > MAX_TEXT {
                        return Err(ChatError::Malformed);
                    }
                    let me = self.me.user_id();
                    let msg = ChatMessage { id, from, to: me, text, sent_ms: p.sent_ms, status: Status::Delivered };
                    self.insert(from, msg.clone());
                    self.out.push_back(ChatOutput::Received(msg));
                    self.receipt(from, ChatPayload::Delivered(vec![id]), rng)?;
                }
            }
            ChatPayload::Delivered(ids) => self.advance(&from, &ids, Status::Delivered)?,
            ChatPayload::Read(ids) => self.advance(&from, &ids, Status::Read)?,
        }
        Ok(())
    }

    /// The online try of unit `wire_id` failed: into the mailbox with it.
    pub fn undeliverable(&mut self, wire_id: &MsgId) {
        if let Some(u) = self.units.get(wire_id) {
            self.out.push_back(ChatOutput::Mail { to: u.to, wire_id: *wire_id, sealed: u.sealed.clone() });
        }
    }

    /// Unit `wire_id` was handed to the recipient online (its supernode
    /// took it): no mailbox needed; the receipt will follow.
    pub fn handed_over(&mut self, wire_id: &MsgId) {
        if self.units.get(wire_id).is_some_and(|u| u.msg.is_none()) {
            self.units.remove(wire_id);
        }
    }

    /// The mailbox put of unit `wire_id` succeeded.
    pub fn stored(&mut self, wire_id: &MsgId) {
        let Some(u) = self.units.remove(wire_id) else { return };
        let Some(id) = u.msg else { return };
        let left = self.unstored.get_mut(&id).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left == Some(0) {
            self.unstored.remove(&id);
            self.set_status(&id, Status::Stored);
        }
    }

    /// Mark every incoming message from `peer` read; sends a read receipt
    /// unless read receipts are off. The ids it marked.
    pub fn read<R: RngCore + CryptoRng>(&mut self, peer: &UserId, rng: &mut R) -> Result<Vec<MsgId>, ChatError> {
        let me = self.me.user_id();
        let ids: Vec<MsgId> = self
            .conversation(peer)
            .into_iter()
            .filter(|m| m.from == *peer && m.to == me && m.status < Status::Read)
            .map(|m| m.id)
            .collect();
        for id in &ids {
            if let Some(m) = self.messages.get_mut(id) {
                m.status = Status::Read;
            }
        }
        if self.read_receipts {
            for chunk in ids.chunks(MAX_RECEIPT_IDS) {
                self.receipt(*peer, ChatPayload::Read(chunk.to_vec()), rng)?;
            }
        }
        Ok(ids)
    }

    /// The conversation with `peer`, in order (sender time, then id).
    pub fn conversation(&self, peer: &UserId) -> Vec<&ChatMessage> {
        self.order
            .range((*peer, 0, [0; 16])..=(*peer, u64::MAX, [0xff; 16]))
            .filter_map(|((_, _, id), ())| self.messages.get(id))
            .collect()
    }

    /// Messages from `peer` not yet read.
    pub fn unread(&self, peer: &UserId) -> usize {
        let me = self.me.user_id();
        self.conversation(peer).into_iter().filter(|m| m.from == *peer && m.to == me && m.status < Status::Read).count()
    }

    /// Our messages not yet delivered (the sender keeps them; the driver
    /// may store them again, e.g. when the mailbox holders change).
    pub fn undelivered(&self) -> Vec<&ChatMessage> {
        let me = self.me.user_id();
        self.messages.values().filter(|m| m.from == me && m.status < Status::Delivered).collect()
    }

    /// One message by id.
    pub fn message(&self, id: &MsgId) -> Option<&ChatMessage> {
        self.messages.get(id)
    }

    /// Put back a message the driver stored (at start). Ours not yet
    /// delivered count as undelivered again; [`Chat::resend`] sends them.
    pub fn restore(&mut self, msg: ChatMessage) {
        if self.messages.len() >= MAX_MESSAGES || self.messages.contains_key(&msg.id) {
            return;
        }
        let me = self.me.user_id();
        let peer = if msg.from == me { msg.to } else { msg.from };
        self.insert(peer, msg);
    }

    /// Send every part of our undelivered message `id` again, under new
    /// wire ids (the recipient deduplicates by message id): after a restart,
    /// or to store it again when its mailbox holders may have changed.
    pub fn resend<R: RngCore + CryptoRng>(&mut self, id: &MsgId, rng: &mut R) -> Result<(), ChatError> {
        let me = self.me.user_id();
        let Some(m) = self.messages.get(id).filter(|m| m.from == me && m.status < Status::Delivered).cloned() else {
            return Ok(());
        };
        // Units still in flight for it are superseded.
        self.units.retain(|_, u| u.msg != Some(m.id));
        let parts = split(&m.text);
        let total = parts.len() as u16;
        for (i, part) in parts.into_iter().enumerate() {
            let payload = ChatPayload::Text {
                id: m.id,
                sent_ms: m.sent_ms,
                part: i as u16,
                parts: total,
                text: part.to_string(),
            };
            self.queue(m.to, payload, Some(m.id), rng)?;
        }
        self.unstored.insert(m.id, total);
        Ok(())
    }

    fn insert(&mut self, peer: UserId, msg: ChatMessage) {
        self.order.insert((peer, msg.sent_ms, msg.id), ());
        self.messages.insert(msg.id, msg);
    }

    fn receipt<R: RngCore + CryptoRng>(&mut self, to: UserId, p: ChatPayload, rng: &mut R) -> Result<(), ChatError> {
        self.queue(to, p, None, rng)
    }

    fn queue<R: RngCore + CryptoRng>(
        &mut self,
        to: UserId,
        payload: ChatPayload,
        msg: Option<MsgId>,
        rng: &mut R,
    ) -> Result<(), ChatError> {
        let mut wire_id = [0u8; 16];
        rng.fill_bytes(&mut wire_id);
        let env = Envelope { from_name: self.name.clone(), body: PeerPayload::Chat(payload) };
        let sealed = seal_envelope(&self.me, &to, &wire_id, &env, rng).map_err(|e| match e {
            PayloadError::Seal(s) => ChatError::Seal(s),
            PayloadError::Malformed => ChatError::Malformed,
        })?;
        debug_assert!(sealed.len() <= MAX_MAIL_BODY);
        self.units.insert(wire_id, Unit { to, sealed: sealed.clone(), msg });
        self.out.push_back(ChatOutput::Deliver { to, wire_id, sealed });
        Ok(())
    }

    /// A receipt from `from`: only for our messages to `from`.
    fn advance(&mut self, from: &UserId, ids: &[MsgId], status: Status) -> Result<(), ChatError> {
        if ids.len() > MAX_RECEIPT_IDS {
            return Err(ChatError::Malformed);
        }
        let me = self.me.user_id();
        for id in ids {
            if self.messages.get(id).is_some_and(|m| m.from == me && m.to == *from) {
                if status >= Status::Delivered {
                    // Delivered: its units need no mailbox any more.
                    self.units.retain(|_, u| u.msg != Some(*id));
                    self.unstored.remove(id);
                }
                self.set_status(id, status);
            }
        }
        Ok(())
    }

    fn set_status(&mut self, id: &MsgId, status: Status) {
        if let Some(m) = self.messages.get_mut(id) {
            if status > m.status {
                m.status = status;
                self.out.push_back(ChatOutput::Status { id: *id, status });
            }
        }
    }
}

/// Split on char boundaries into parts of at most [`PART_TEXT`] bytes.
fn split(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(PART_TEXT);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (a, b) = rest.split_at(cut);
        parts.push(a);
        rest = b;
    }
    parts
}

#[cfg(test)]
mod tests;
