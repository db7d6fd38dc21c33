//! The social layer, sans-IO (docs/PROTOCOL.md §9): contacts, presence,
//! chat with receipts and missed-call notices between users, every unit
//! sealed end to end ([`seal`], [`payload`]).
//!
//! [`Social`] is a machine of its own beside the [`crate::client::Client`]:
//! the driver feeds it the client's peer events (units that arrived online
//! or from the mailbox, lookup answers, delivery failures, mailbox puts)
//! and the user's commands, and carries out its [`SocialOutput`]s — most of
//! them calls on the client (look a name up, send a peer message, leave
//! mail, pin or block a key) and writes to the database. It never touches
//! a socket or the clock.
//!
//! Delivery ([`SocialOutput::SendPeer`] / [`SocialOutput::LeaveMail`]): a
//! unit for a user whose supernode we learnt recently (their presence note
//! or a lookup) goes as a peer message; otherwise the name is looked up
//! first; a user who is offline, or a peer message that comes back
//! undeliverable, goes to the mailbox when the unit is worth keeping (chat,
//! receipts, contact handshake, missed calls — not presence).

pub mod chat;
pub mod contacts;
pub mod payload;
pub mod seal;

use crate::client::PeerAt;
use crate::client::PeerLookupError;
use crate::{Identity, Map};
use chat::{Chat, ChatError, ChatMessage, ChatOutput, MsgId, Status};
use contacts::{Contact, ContactError, ContactList, ContactState, SeenPresence};
use payload::{
    open_envelope, seal_envelope, ContactMsg, Envelope, MissedCallNote, PeerPayload, PresenceNote, Shown,
    MAX_REQUEST_TEXT, MAX_STATUS_TEXT,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::collections::VecDeque;
use std::net::SocketAddr;
use supervox_proto::UserId;
use tracing::{debug, info, warn};

/// A presence note counts this long after it arrives.
pub const PRESENCE_LIFETIME_MS: u32 = 5 * 60 * 1000;
/// While signed in, presence is pushed to online contacts this often (well
/// inside [`PRESENCE_LIFETIME_MS`], so one lost note does not show us offline).
pub const PRESENCE_REFRESH_MS: u64 = 2 * 60 * 1000;
/// A user's supernode learnt from a note or lookup is used this long.
pub const ROUTE_FRESH_MS: u64 = 60 * 1000;
/// A peer message not reported undeliverable within this is taken as handed over.
pub const IN_FLIGHT_MS: u64 = 10 * 1000;
/// A lookup not answered within this is given up (units go to the mailbox).
pub const LOOKUP_TIMEOUT_MS: u64 = 10 * 1000;
/// Undelivered messages are stored again this often (their mailbox
/// holders may have changed), and at every sign-in.
pub const RESEND_EVERY_MS: u64 = 30 * 60 * 1000;
/// Names looked up at once.
pub const MAX_LOOKUPS: usize = 256;
/// Things waiting on one name's lookup.
pub const MAX_WAITING_PER_NAME: usize = 64;
/// Peer messages remembered as in flight.
pub const MAX_IN_FLIGHT: usize = 4_096;
/// Names learnt for keys (verified by lookup), for showing strangers.
pub const MAX_NAMES: usize = 10_000;

/// What a user sets as their presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceState {
    /// Available.
    Online,
    /// Away.
    Away,
    /// Do not disturb.
    Busy,
    /// Looks offline to everyone; calls from contacts still come through.
    Invisible,
}

impl PresenceState {
    /// The name the CLI uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Busy => "busy",
            Self::Invisible => "invisible",
        }
    }

    /// Read the CLI's name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "online" => Self::Online,
            "away" => Self::Away,
            "busy" => Self::Busy,
            "invisible" => Self::Invisible,
            _ => return None,
        })
    }

    fn shown(self) -> Shown {
        match self {
            Self::Online => Shown::Online,
            Self::Away => Shown::Away,
            Self::Busy => Shown::Busy,
            Self::Invisible => Shown::Offline,
        }
    }
}

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct SocialConfig {
    /// Send read receipts.
    pub read_receipts: bool,
    /// Drop chat and missed-call notices from anyone not an accepted contact.
    pub refuse_strangers: bool,
}

impl Default for SocialConfig {
    fn default() -> Self {
        Self { read_receipts: true, refuse_strangers: false }
    }
}

/// A call as history keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The call's id.
    pub call_id: [u8; 16],
    /// We called (true) or they did.
    pub outgoing: bool,
    /// The peer's name.
    pub peer: String,
    /// The peer's key, when known.
    pub user_id: Option<UserId>,
    /// When it started (invite sent or received, unix ms).
    pub start_ms: u64,
    /// How long it was connected (0: never).
    pub duration_ms: u64,
    /// The media path at the end.
    pub path: Option<String>,
    /// Its quality.
    pub mos: Option<f64>,
    /// An incoming call nobody answered (or a notice that one was placed while we were offline).
    pub missed: bool,
}

/// What the driver must persist (in this order, each committed before the next output is acted on).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreChange {
    /// Insert or replace a contact entry.
    ContactPut(Contact),
    /// Forget a contact entry.
    ContactGone(UserId),
    /// Insert or update a message (new, or its status moved).
    Message(ChatMessage),
    /// A call for the history.
    Call(CallRecord),
    /// Our presence setting.
    MyPresence {
        /// The state.
        state: PresenceState,
        /// The text.
        text: String,
    },
    /// A received unit is fully taken (what it said is stored): its raw copy may go.
    UnitDone(MsgId),
}

/// What the user (or the UI) is told.
#[derive(Debug, Clone, PartialEq)]
pub enum SocialEvent {
    /// Someone asks to be a contact (their name checked against the directory).
    ContactRequest {
        /// Their name.
        name: String,
        /// Their key.
        user_id: UserId,
        /// Their note.
        message: String,
    },
    /// An entry changed (`None`: it was removed).
    Contact {
        /// The name.
        name: String,
        /// The key.
        user_id: UserId,
        /// The new state.
        state: Option<ContactState>,
    },
    /// A contact's presence changed.
    Presence {
        /// The name.
        name: String,
        /// The key.
        user_id: UserId,
        /// What they show.
        shown: Shown,
        /// Their status text.
        text: String,
    },
    /// A message arrived.
    Message {
        /// It.
        message: ChatMessage,
        /// The sender's name.
        from_name: String,
        /// The sender is an accepted contact.
        contact: bool,
    },
    /// One of our messages moved on.
    MessageStatus {
        /// The message.
        id: MsgId,
        /// To whom.
        to: UserId,
        /// Its new status.
        status: Status,
    },
    /// A `send` was taken: its message id.
    Sent {
        /// The caller's token.
        token: u64,
        /// The message.
        id: MsgId,
        /// The recipient.
        to: UserId,
    },
    /// A command that needed a lookup failed.
    Failed {
        /// The caller's token (0 for contact commands).
        token: u64,
        /// The name.
        name: String,
        /// Why.
        reason: SocialError,
    },
    /// A contact's call reached us while we were offline.
    MissedCall(CallRecord),
    /// A unit could not be stored in the recipient's mailbox.
    MailRefused {
        /// The recipient.
        to: UserId,
        /// Why, as the supernode said (untrusted text).
        reason: String,
    },
}

/// Why a social command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocialError {
    /// The directory has no such name.
    #[error("no such user")]
    NoSuchUser,
    /// The lookup did not verify, timed out, or found a changed key.
    #[error("lookup failed: {0}")]
    Lookup(String),
    /// The name is ours.
    #[error("that is you")]
    Yourself,
    /// A contact-list rule.
    #[error(transparent)]
    Contact(#[from] ContactError),
    /// A chat rule.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// Too long a note or status text.
    #[error("text longer than {0} bytes")]
    TooLong(usize),
    /// Too many lookups at once.
    #[error("too busy: try again")]
    Busy,
    /// The name is blocked.
    #[error("{0:?} is blocked")]
    Blocked(String),
}

impl SocialError {
    /// A stable code for JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoSuchUser => "no-such-user",
            Self::Lookup(_) => "lookup-failed",
            Self::Yourself => "yourself",
            Self::Contact(ContactError::Full) => "contacts-full",
            Self::Contact(ContactError::NameTaken(_)) => "name-taken",
            Self::Contact(ContactError::NotFound(_)) => "not-a-contact",
            Self::Contact(ContactError::WrongState { .. }) => "wrong-state",
            Self::Chat(ChatError::TooLong(_)) => "too-long",
            Self::Chat(ChatError::Empty) => "empty",
            Self::Chat(_) => "chat-error",
            Self::TooLong(_) => "too-long",
            Self::Busy => "busy",
            Self::Blocked(_) => "blocked",
        }
    }
}

/// What the social layer wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum SocialOutput {
    /// Look this name up ([`crate::client::Client::lookup_peer`]); the answer
    /// comes back through [`Social::handle_peer_found`].
    Lookup(String),
    /// Send this unit as a peer message ([`crate::client::Client::send_peer`]).
    SendPeer {
        /// The unit's id.
        wire_id: MsgId,
        /// Recipient.
        to: UserId,
        /// Its supernode.
        supernode: SocketAddr,
        /// Sealed unit.
        sealed: Vec<u8>,
    },
    /// Leave this unit in the recipient's mailbox ([`crate::client::Client::leave_mail_as`]).
    LeaveMail {
        /// The unit's id (= mail id).
        wire_id: MsgId,
        /// Recipient.
        to: UserId,
        /// Sealed unit.
        sealed: Vec<u8>,
    },
    /// Pin this key for this name: an accepted contact.
    Pin {
        /// The name.
        name: String,
        /// The key.
        user_id: UserId,
    },
    /// Drop (or stop dropping) everything from this key, calls included.
    Block {
        /// The key.
        user_id: UserId,
        /// Blocked or not.
        blocked: bool,
    },
    /// Persist this.
    Store(StoreChange),
    /// Tell the user.
    Event(SocialEvent),
}

/// Something waiting on a name's lookup.
#[derive(Debug, Clone)]
enum Waiting {
    /// `contacts add`.
    Add { message: String },
    /// `contacts block` of a name not on the list.
    Block,
    /// A request from this key came claiming the name: check it.
    Request { from: UserId, message: String, now_ms: u64 },
    /// A message from a stranger claiming the name: learn it if true.
    Sender { from: UserId },
    /// `send` to a name whose key we did not know.
    Chat { token: u64, text: String },
    /// A unit to deliver (`mail`: to the mailbox when not online).
    Unit { to: UserId, wire_id: MsgId, sealed: Vec<u8>, mail: bool },
}

#[derive(Debug)]
struct Lookup {
    asked_ms: u64,
    waiting: Vec<Waiting>,
}

#[derive(Debug)]
struct InFlight {
    to: UserId,
    sealed: Vec<u8>,
    mail: bool,
    until_ms: u64,
}

/// The social layer of one user: see the module docs.
#[derive(Debug)]
pub struct Social {
    me: Identity,
    name: String,
    cfg: SocialConfig,
    chat: Chat,
    contacts: ContactList,
    /// Names of keys that are not contacts, as lookups confirmed them.
    names: Map<UserId, String>,
    /// Where a user is attached, and until when we trust that.
    routes: Map<UserId, (SocketAddr, u64)>,
    lookups: Map<String, Lookup>,
    in_flight: Map<MsgId, InFlight>,
    my_state: PresenceState,
    my_text: String,
    my_seq: u64,
    supernode: Option<SocketAddr>,
    next_refresh_ms: Option<u64>,
    next_resend_ms: Option<u64>,
    rng: StdRng,
    out: VecDeque<SocialOutput>,
}

impl Social {
    /// The social layer of `me`, called `name`.
    pub fn new(me: Identity, name: &str, cfg: SocialConfig, seed: u64) -> Self {
        Self {
            chat: Chat::new(me.clone(), name, cfg.read_receipts),
            me,
            name: name.to_string(),
            cfg,
            contacts: ContactList::new(),
            names: Map::default(),
            routes: Map::default(),
            lookups: Map::default(),
            in_flight: Map::default(),
            my_state: PresenceState::Online,
            my_text: String::new(),
            my_seq: 0,
            supernode: None,
            next_refresh_ms: None,
            next_resend_ms: None,
            rng: StdRng::seed_from_u64(seed),
            out: VecDeque::new(),
        }
    }

    /// Put back what the driver stored (at start): contacts, messages, our
    /// presence setting. Blocked keys come out as [`SocialOutput::Block`].
    pub fn restore(
        &mut self,
        contacts: Vec<Contact>,
        messages: Vec<ChatMessage>,
        presence: Option<(PresenceState, String)>,
    ) {
        for c in contacts {
            if c.state == ContactState::Blocked {
                self.out.push_back(SocialOutput::Block { user_id: c.user_id, blocked: true });
            }
            if let Err(e) = self.contacts.put(c) {
                warn!("a stored contact not restored: {e}");
            }
        }
        for m in messages {
            self.chat.restore(m);
        }
        if let Some((state, text)) = presence {
            self.my_state = state;
            self.my_text = text;
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<SocialOutput> {
        self.out.pop_front()
    }

    /// The contact list.
    pub fn contacts(&self) -> &ContactList {
        &self.contacts
    }

    /// The chat (conversations, messages).
    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    /// Our presence setting.
    pub fn presence(&self) -> (PresenceState, &str) {
        (self.my_state, &self.my_text)
    }

    /// The name to show for a key: a contact's, or one a lookup confirmed.
    pub fn name_of(&self, key: &UserId) -> Option<&str> {
        self.contacts.get(key).map(|c| c.name.as_str()).or_else(|| self.names.get(key).map(String::as_str))
    }

    /// The key of a name we know (contact list or confirmed by a lookup).
    pub fn key_of(&self, name: &str) -> Option<UserId> {
        self.contacts
            .by_name(name)
            .map(|c| c.user_id)
            .or_else(|| self.names.iter().find(|(_, n)| *n == name).map(|(k, _)| *k))
    }

    /// The earliest time [`Social::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        let in_flight = self.in_flight.values().map(|f| f.until_ms).min();
        let lookups = self.lookups.values().map(|l| l.asked_ms + LOOKUP_TIMEOUT_MS).min();
        let expiries = self
            .contacts
            .accepted()
            .filter_map(|c| c.presence.as_ref())
            .filter(|p| p.shown != Shown::Offline)
            .map(|p| p.expires_ms)
            .min();
        crate::timer::earliest([in_flight, lookups, expiries, self.next_refresh_ms, self.next_resend_ms])
    }

    /// Run what is due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let done: Vec<MsgId> = self.in_flight.iter().filter(|(_, f)| f.until_ms <= now_ms).map(|(k, _)| *k).collect();
        for id in done {
            self.in_flight.remove(&id);
        }
        let late: Vec<String> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.asked_ms + LOOKUP_TIMEOUT_MS <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for name in late {
            self.handle_peer_found(&name, Err(PeerLookupError::Unverified), now_ms);
        }
        // Contacts whose presence lapsed (a crash, a lost network) show offline.
        let lapsed: Vec<UserId> = self
            .contacts
            .accepted()
            .filter(|c| c.presence.as_ref().is_some_and(|p| p.shown != Shown::Offline && p.expires_ms <= now_ms))
            .map(|c| c.user_id)
            .collect();
        for key in lapsed {
            self.set_offline(&key);
        }
        if self.next_refresh_ms.is_some_and(|t| t <= now_ms) {
            self.next_refresh_ms = Some(now_ms + PRESENCE_REFRESH_MS);
            self.push_presence(false, true, now_ms);
        }
        if self.next_resend_ms.is_some_and(|t| t <= now_ms) {
            self.next_resend_ms = Some(now_ms + RESEND_EVERY_MS);
            self.resend(false);
        }
        self.drain_chat(now_ms);
    }

    // ---- the link to the network ----

    /// Signed in through `supernode`: tell contacts (asking theirs back),
    /// store again what is still not known to be stored.
    pub fn handle_signed_in(&mut self, supernode: SocketAddr, now_ms: u64) {
        self.supernode = Some(supernode);
        self.routes.clear();
        self.next_refresh_ms = Some(now_ms + PRESENCE_REFRESH_MS);
        self.next_resend_ms = Some(now_ms + RESEND_EVERY_MS);
        self.push_presence(true, false, now_ms);
        self.resend(true);
        self.drain_chat(now_ms);
    }

    /// The supernode link went away (we will sign in again).
    pub fn handle_signed_out(&mut self) {
        self.supernode = None;
        self.next_refresh_ms = None;
        self.next_resend_ms = None;
    }

    /// A clean sign-out: show offline to the contacts we can reach now.
    pub fn sign_out(&mut self, now_ms: u64) {
        if self.supernode.is_none() {
            return;
        }
        let note = self.note(Shown::Offline, false);
        let targets: Vec<UserId> = self.contacts.accepted().map(|c| c.user_id).collect();
        for to in targets {
            if let Some(sn) = self.fresh_route(&to, now_ms) {
                if let Some((wire_id, sealed)) = self.seal(&to, PeerPayload::Presence(note.clone())) {
                    self.out.push_back(SocialOutput::SendPeer { wire_id, to, supernode: sn, sealed });
                }
            }
        }
        self.handle_signed_out();
    }

    /// A sealed unit from `from` (a peer message or a mail item) under
    /// `wire_id`. Whatever it says is stored before its
    /// [`StoreChange::UnitDone`].
    pub fn handle_unit(&mut self, from: UserId, wire_id: MsgId, sealed: &[u8], now_ms: u64) {
        self.take_unit(from, wire_id, sealed, now_ms);
        self.drain_chat(now_ms);
        self.out.push_back(SocialOutput::Store(StoreChange::UnitDone(wire_id)));
    }

    fn take_unit(&mut self, from: UserId, wire_id: MsgId, sealed: &[u8], now_ms: u64) {
        if self.contacts.is_blocked(&from) {
            return debug!("a unit from a blocked key dropped");
        }
        let env = match open_envelope(&self.me, &from, &wire_id, sealed) {
            Ok(e) => e,
            Err(e) => return debug!("a peer unit from {from} refused: {e}"),
        };
        let accepted = self.contacts.is_accepted(&from);
        match env.body {
            PeerPayload::Chat(p) => {
                let is_text = matches!(p, chat::ChatPayload::Text { .. });
                if is_text && self.cfg.refuse_strangers && !accepted {
                    return debug!("a message from a stranger refused (--strangers refuse)");
                }
                if is_text && self.name_of(&from).is_none() {
                    // Best effort: shown without a name until a lookup confirms it.
                    let _ = self.wait_on(&env.from_name, Waiting::Sender { from }, now_ms);
                }
                if let Err(e) = self.chat.on_payload(from, p, &mut self.rng) {
                    debug!("a chat unit from {from} refused: {e}");
                }
            }
            PeerPayload::Contact(m) => self.on_contact_msg(from, &env.from_name, m, now_ms),
            PeerPayload::Presence(note) => self.on_presence(from, note, now_ms),
            PeerPayload::MissedCall(n) => {
                let Some(c) = self.contacts.get(&from).filter(|c| c.state == ContactState::Accepted) else {
                    return debug!("a missed-call notice from a non-contact dropped");
                };
                let rec = CallRecord {
                    call_id: n.call_id,
                    outgoing: false,
                    peer: c.name.clone(),
                    user_id: Some(from),
                    start_ms: n.at_ms,
                    duration_ms: 0,
                    path: None,
                    mos: None,
                    missed: true,
                };
                self.out.push_back(SocialOutput::Store(StoreChange::Call(rec.clone())));
                self.out.push_back(SocialOutput::Event(SocialEvent::MissedCall(rec)));
            }
        }
    }

    /// The answer to a [`SocialOutput::Lookup`] of `name`.
    pub fn handle_peer_found(&mut self, name: &str, result: Result<PeerAt, PeerLookupError>, now_ms: u64) {
        let Some(lookup) = self.lookups.remove(name) else { return };
        if let Ok(at) = &result {
            if let Some(sn) = at.supernode {
                self.routes.insert(at.user_id, (sn, now_ms + ROUTE_FRESH_MS));
            } else {
                // The directory says offline: a contact that crashed shows so now.
                self.set_offline(&at.user_id);
            }
        }
        let failure = |e: &PeerLookupError| match e {
            PeerLookupError::Unknown => SocialError::NoSuchUser,
            other => SocialError::Lookup(other.to_string()),
        };
        for w in lookup.waiting {
            match (&result, w) {
                (Ok(at), Waiting::Add { message }) => self.add_found(name, at.user_id, message, now_ms),
                (Ok(at), Waiting::Block) => {
                    if let Err(e) = self.block_key(name, at.user_id, now_ms) {
                        self.fail(0, name, e);
                    }
                }
                (Ok(at), Waiting::Request { from, message, now_ms: t }) if at.user_id == from => {
                    self.learn_name(from, name);
                    self.request_verified(name, from, message, t)
                }
                (Ok(at), Waiting::Sender { from }) if at.user_id == from => self.learn_name(from, name),
                (_, Waiting::Request { from, .. }) | (_, Waiting::Sender { from }) => {
                    warn!("a unit from key {from} claims the name {name:?}, which the directory does not give it")
                }
                (Ok(at), Waiting::Chat { token, text }) => {
                    self.learn_name(at.user_id, name);
                    self.send_to(token, at.user_id, &text, now_ms)
                }
                (Ok(at), Waiting::Unit { to, wire_id, sealed, mail }) => match at.supernode {
                    Some(sn) if at.user_id == to => self.send_peer(to, sn, wire_id, sealed, mail, now_ms),
                    // Offline, or the name now has another key: only the key we sealed to can read its mailbox.
                    _ if mail => self.out.push_back(SocialOutput::LeaveMail { wire_id, to, sealed }),
                    _ => {}
                },
                (Err(e), Waiting::Add { .. } | Waiting::Block) => self.fail(0, name, failure(e)),
                (Err(e), Waiting::Chat { token, .. }) => self.fail(token, name, failure(e)),
                (Err(_), Waiting::Unit { to, wire_id, sealed, mail }) => {
                    if mail {
                        self.out.push_back(SocialOutput::LeaveMail { wire_id, to, sealed })
                    }
                }
            }
        }
        self.drain_chat(now_ms);
    }

    /// A peer message of ours came back undeliverable: the recipient left
    /// its supernode. Worth keeping: into the mailbox.
    pub fn handle_undeliverable(&mut self, wire_id: &MsgId) {
        let Some(f) = self.in_flight.remove(wire_id) else { return };
        self.routes.remove(&f.to);
        if f.mail {
            self.out.push_back(SocialOutput::LeaveMail { wire_id: *wire_id, to: f.to, sealed: f.sealed });
        } else if self.contacts.is_accepted(&f.to) {
            // Our presence did not reach them: they are not where they said.
            self.set_offline(&f.to);
        }
    }

    /// The outcome of a [`SocialOutput::LeaveMail`].
    pub fn handle_mail_stored(&mut self, wire_id: &MsgId, result: Result<(), String>, to: Option<UserId>, now_ms: u64) {
        match result {
            Ok(()) => self.chat.stored(wire_id),
            Err(reason) => {
                if let Some(to) = to {
                    self.out.push_back(SocialOutput::Event(SocialEvent::MailRefused { to, reason }));
                }
            }
        }
        self.drain_chat(now_ms);
    }

    // ---- the user's commands ----

    /// `contacts add NAME [--message TEXT]`: ask `name` (accepts their
    /// request if they asked first).
    pub fn add_contact(&mut self, name: &str, message: &str, now_ms: u64) -> Result<(), SocialError> {
        if name == self.name {
            return Err(SocialError::Yourself);
        }
        if message.len() > MAX_REQUEST_TEXT {
            return Err(SocialError::TooLong(MAX_REQUEST_TEXT));
        }
        match self.contacts.by_name(name).map(|c| (c.state, c.user_id)) {
            Some((ContactState::Incoming, _)) => return self.accept(name, now_ms),
            Some((ContactState::Accepted, _)) => {
                return Err(ContactError::WrongState { name: name.into(), state: "already a contact" }.into())
            }
            Some((ContactState::Blocked, _)) => return Err(SocialError::Blocked(name.into())),
            // Asked before: ask again (the first request may be lost).
            Some((ContactState::Outgoing, key)) => {
                self.add_found(name, key, message.to_string(), now_ms);
                return Ok(());
            }
            None => {}
        }
        self.wait_on(name, Waiting::Add { message: message.to_string() }, now_ms)
    }

    /// `contacts accept NAME`.
    pub fn accept(&mut self, name: &str, now_ms: u64) -> Result<(), SocialError> {
        let c = self.entry(name, ContactState::Incoming, "not asking")?;
        self.become_contacts(c, now_ms);
        Ok(())
    }

    /// `contacts decline NAME`: the request is forgotten, silently (the
    /// sender is not told; it may ask again).
    pub fn decline(&mut self, name: &str) -> Result<(), SocialError> {
        let c = self.entry(name, ContactState::Incoming, "not asking")?;
        self.forget(&c);
        Ok(())
    }

    /// `contacts remove NAME`: off the list (a blocked name is unblocked);
    /// a contact is told, so it stops showing us.
    pub fn remove(&mut self, name: &str, now_ms: u64) -> Result<(), SocialError> {
        let c = self.contacts.by_name(name).cloned().ok_or_else(|| ContactError::NotFound(name.into()))?;
        if matches!(c.state, ContactState::Accepted | ContactState::Outgoing) {
            self.deliver(c.user_id, PeerPayload::Contact(ContactMsg::Remove), true, now_ms);
        }
        if c.state == ContactState::Blocked {
            self.out.push_back(SocialOutput::Block { user_id: c.user_id, blocked: false });
        }
        self.forget(&c);
        self.drain_chat(now_ms);
        Ok(())
    }

    /// `contacts block NAME`: everything from the key is dropped without a
    /// word to its sender.
    pub fn block(&mut self, name: &str, now_ms: u64) -> Result<(), SocialError> {
        match self.key_of(name) {
            Some(key) => self.block_key(name, key, now_ms),
            None => self.wait_on(name, Waiting::Block, now_ms),
        }
    }

    /// `presence STATE [--text TEXT]`: contacts see it within a round trip.
    pub fn set_presence(&mut self, state: PresenceState, text: &str, now_ms: u64) -> Result<(), SocialError> {
        if text.len() > MAX_STATUS_TEXT {
            return Err(SocialError::TooLong(MAX_STATUS_TEXT));
        }
        self.my_state = state;
        self.my_text = text.to_string();
        self.out.push_back(SocialOutput::Store(StoreChange::MyPresence { state, text: text.to_string() }));
        // Invisible is pushed too: as offline, so contacts stop showing us.
        self.push_presence(false, false, now_ms);
        Ok(())
    }

    /// `send NAME TEXT`: the message id comes as [`SocialEvent::Sent`] with
    /// `token` (at once when the name's key is known, after a lookup if not).
    pub fn send(&mut self, token: u64, name: &str, text: &str, now_ms: u64) -> Result<(), SocialError> {
        if name == self.name {
            return Err(SocialError::Yourself);
        }
        if text.is_empty() {
            return Err(ChatError::Empty.into());
        }
        if text.len() > chat::MAX_TEXT {
            return Err(ChatError::TooLong(text.len()).into());
        }
        match self.key_of(name) {
            Some(key) if self.contacts.is_blocked(&key) => Err(SocialError::Blocked(name.into())),
            Some(key) => {
                self.send_to(token, key, text, now_ms);
                self.drain_chat(now_ms);
                Ok(())
            }
            None => self.wait_on(name, Waiting::Chat { token, text: text.to_string() }, now_ms),
        }
    }

    /// `read NAME`: mark the conversation read (read receipts unless off).
    pub fn read(&mut self, name: &str, now_ms: u64) -> Result<usize, SocialError> {
        let key = self.key_of(name).ok_or_else(|| ContactError::NotFound(name.into()))?;
        let read = self.chat.read(&key, &mut self.rng)?;
        for id in &read {
            if let Some(m) = self.chat.message(id).cloned() {
                self.out.push_back(SocialOutput::Store(StoreChange::Message(m)));
            }
        }
        self.drain_chat(now_ms);
        Ok(read.len())
    }

    /// A call to `name` could not reach it (offline, or gone from its
    /// supernode): leave a missed-call notice in its mailbox (accepted
    /// contacts only, whose key is pinned: no lookup needed).
    pub fn missed_call(&mut self, name: &str, call_id: [u8; 16], now_ms: u64) {
        let Some(key) = self.contacts.by_name(name).filter(|c| c.state == ContactState::Accepted).map(|c| c.user_id)
        else {
            return;
        };
        let note = PeerPayload::MissedCall(MissedCallNote { call_id, at_ms: now_ms });
        if let Some((wire_id, sealed)) = self.seal(&key, note) {
            self.out.push_back(SocialOutput::LeaveMail { wire_id, to: key, sealed });
        }
    }

    // ---- inside ----

    fn entry(&self, name: &str, want: ContactState, not: &'static str) -> Result<Contact, SocialError> {
        let c = self.contacts.by_name(name).cloned().ok_or_else(|| ContactError::NotFound(name.into()))?;
        if c.state != want {
            return Err(ContactError::WrongState { name: name.into(), state: not }.into());
        }
        Ok(c)
    }

    fn fail(&mut self, token: u64, name: &str, reason: SocialError) {
        self.out.push_back(SocialOutput::Event(SocialEvent::Failed { token, name: name.to_string(), reason }));
    }

    fn learn_name(&mut self, key: UserId, name: &str) {
        if self.contacts.get(&key).is_some() {
            return;
        }
        if self.names.len() >= MAX_NAMES && !self.names.contains_key(&key) {
            self.names.clear(); // a cache: relearnt by the next lookups
        }
        // One key per name: a name that moved to another key leaves the old one.
        self.names.retain(|_, n| n != name);
        self.names.insert(key, name.to_string());
    }

    fn put_contact(&mut self, c: Contact) -> Result<(), SocialError> {
        if let Some(evicted) = self.contacts.put(c.clone())? {
            self.out.push_back(SocialOutput::Store(StoreChange::ContactGone(evicted)));
        }
        self.out.push_back(SocialOutput::Store(StoreChange::ContactPut(c.clone())));
        self.out.push_back(SocialOutput::Event(SocialEvent::Contact {
            name: c.name,
            user_id: c.user_id,
            state: Some(c.state),
        }));
        Ok(())
    }

    fn forget(&mut self, c: &Contact) {
        self.contacts.remove(&c.user_id);
        self.out.push_back(SocialOutput::Store(StoreChange::ContactGone(c.user_id)));
        self.out.push_back(SocialOutput::Event(SocialEvent::Contact {
            name: c.name.clone(),
            user_id: c.user_id,
            state: None,
        }));
    }

    /// Our request to `name` (key from the lookup): an outgoing entry and the request itself.
    fn add_found(&mut self, name: &str, key: UserId, message: String, now_ms: u64) {
        match self.contacts.get(&key).map(|c| c.state) {
            Some(ContactState::Incoming) => {
                if let Some(c) = self.contacts.get(&key).cloned() {
                    self.become_contacts(c, now_ms);
                }
                return;
            }
            Some(ContactState::Accepted) => return,
            Some(ContactState::Blocked) => return self.fail(0, name, SocialError::Blocked(name.into())),
            _ => {}
        }
        let c = Contact {
            name: name.to_string(),
            user_id: key,
            state: ContactState::Outgoing,
            message: message.clone(),
            since_ms: now_ms,
            presence: None,
        };
        if let Err(e) = self.put_contact(c) {
            return self.fail(0, name, e);
        }
        self.deliver(key, PeerPayload::Contact(ContactMsg::Request { message }), true, now_ms);
    }

    fn block_key(&mut self, name: &str, key: UserId, now_ms: u64) -> Result<(), SocialError> {
        let c = Contact {
            name: name.to_string(),
            user_id: key,
            state: ContactState::Blocked,
            message: String::new(),
            since_ms: now_ms,
            presence: None,
        };
        // A name on the list under another key was checked by put.
        self.put_contact(c)?;
        self.out.push_back(SocialOutput::Block { user_id: key, blocked: true });
        Ok(())
    }

    /// Accepted both ways: pin the key, share presence both ways.
    fn become_contacts(&mut self, mut c: Contact, now_ms: u64) {
        c.state = ContactState::Accepted;
        c.since_ms = now_ms;
        c.presence = None;
        let (name, key) = (c.name.clone(), c.user_id);
        if let Err(e) = self.put_contact(c) {
            return self.fail(0, &name, e);
        }
        self.out.push_back(SocialOutput::Pin { name: name.clone(), user_id: key });
        info!("{name:?} is now a contact (key {key})");
        self.deliver(key, PeerPayload::Contact(ContactMsg::Accept), true, now_ms);
        if self.supernode.is_some() {
            let note = self.note(self.my_state.shown(), true);
            self.deliver(key, PeerPayload::Presence(note), false, now_ms);
        }
    }

    fn on_contact_msg(&mut self, from: UserId, from_name: &str, m: ContactMsg, now_ms: u64) {
        let state = self.contacts.get(&from).map(|c| c.state);
        match (m, state) {
            // We asked them too: both want it.
            (ContactMsg::Request { .. } | ContactMsg::Accept, Some(ContactState::Outgoing)) => {
                if let Some(c) = self.contacts.get(&from).cloned() {
                    self.become_contacts(c, now_ms);
                }
            }
            // They lost our answer (or their state): answer again.
            (ContactMsg::Request { .. }, Some(ContactState::Accepted)) => {
                self.deliver(from, PeerPayload::Contact(ContactMsg::Accept), true, now_ms)
            }
            (ContactMsg::Request { message }, Some(ContactState::Incoming)) => {
                if let Some(mut c) = self.contacts.get(&from).cloned() {
                    c.message = message;
                    let _ = self.put_contact(c);
                }
            }
            // A stranger's request: filed only under a name the directory gives their key.
            (ContactMsg::Request { message }, None) => {
                let _ = self.wait_on(from_name, Waiting::Request { from, message, now_ms }, now_ms);
            }
            (ContactMsg::Remove, Some(ContactState::Accepted | ContactState::Incoming | ContactState::Outgoing)) => {
                if let Some(c) = self.contacts.get(&from).cloned() {
                    self.forget(&c);
                }
            }
            // An Accept we never asked for adds nobody.
            _ => {}
        }
    }

    fn request_verified(&mut self, name: &str, from: UserId, message: String, now_ms: u64) {
        if self.contacts.get(&from).is_some() {
            return;
        }
        let c = Contact {
            name: name.to_string(),
            user_id: from,
            state: ContactState::Incoming,
            message: message.clone(),
            since_ms: now_ms,
            presence: None,
        };
        match self.put_contact(c) {
            Ok(()) => self.out.push_back(SocialOutput::Event(SocialEvent::ContactRequest {
                name: name.to_string(),
                user_id: from,
                message,
            })),
            Err(e) => warn!("a contact request from {name:?} not filed: {e}"),
        }
    }

    fn on_presence(&mut self, from: UserId, note: PresenceNote, now_ms: u64) {
        // Strangers can neither see our presence nor inject theirs.
        let Some(c) = self.contacts.get_mut(&from).filter(|c| c.state == ContactState::Accepted) else {
            return debug!("presence from a non-contact dropped");
        };
        if c.presence.as_ref().is_some_and(|p| note.seq <= p.seq) {
            return; // older than what we have
        }
        let before = c.shown(now_ms);
        let text_before = c.status_text(now_ms).to_string();
        let lifetime = u64::from(note.lifetime_ms.min(PRESENCE_LIFETIME_MS));
        c.presence =
            Some(SeenPresence { shown: note.shown, text: note.text, seq: note.seq, expires_ms: now_ms + lifetime });
        let (shown, text, name) = (c.shown(now_ms), c.status_text(now_ms).to_string(), c.name.clone());
        match note.supernode {
            Some(sn) if note.shown != Shown::Offline => {
                self.routes.insert(from, (sn, now_ms + ROUTE_FRESH_MS));
            }
            _ => {
                self.routes.remove(&from);
            }
        }
        if before == Shown::Offline && shown != Shown::Offline {
            // Back online: what we left in its mailbox may have raced its
            // sign-in fetch; hand our undelivered messages over directly.
            let ids: Vec<MsgId> = self.chat.undelivered().into_iter().filter(|m| m.to == from).map(|m| m.id).collect();
            for id in ids {
                if let Err(e) = self.chat.resend(&id, &mut self.rng) {
                    warn!("cannot resend a message: {e}");
                }
            }
        }
        if shown != before || text != text_before {
            self.out.push_back(SocialOutput::Event(SocialEvent::Presence { name, user_id: from, shown, text }));
        }
        if note.reply && self.supernode.is_some() {
            let mine = self.note(self.my_state.shown(), false);
            self.deliver(from, PeerPayload::Presence(mine), false, now_ms);
        }
    }

    fn set_offline(&mut self, key: &UserId) {
        let Some(c) = self.contacts.get_mut(key) else { return };
        let Some(p) = c.presence.as_mut() else { return };
        let was = p.shown;
        p.shown = Shown::Offline;
        p.text.clear();
        let name = c.name.clone();
        self.routes.remove(key);
        if was != Shown::Offline {
            self.out.push_back(SocialOutput::Event(SocialEvent::Presence {
                name,
                user_id: *key,
                shown: Shown::Offline,
                text: String::new(),
            }));
        }
    }

    fn note(&mut self, shown: Shown, reply: bool) -> PresenceNote {
        self.my_seq += 1;
        PresenceNote {
            shown,
            text: if shown == Shown::Offline { String::new() } else { self.my_text.clone() },
            seq: self.my_seq,
            supernode: self.supernode,
            lifetime_ms: PRESENCE_LIFETIME_MS,
            reply,
        }
    }

    /// Our presence to every accepted contact (`refresh`: only those we know
    /// to be online; invisible sends nothing then).
    fn push_presence(&mut self, reply: bool, refresh: bool, now_ms: u64) {
        if self.supernode.is_none() || (refresh && self.my_state == PresenceState::Invisible) {
            return;
        }
        // The sequence counter follows the clock so a restart does not go backwards.
        self.my_seq = self.my_seq.max(now_ms);
        let note = self.note(self.my_state.shown(), reply);
        let targets: Vec<UserId> = self
            .contacts
            .accepted()
            .filter(|c| !refresh || c.shown(now_ms) != Shown::Offline)
            .map(|c| c.user_id)
            .collect();
        for to in targets {
            self.deliver(to, PeerPayload::Presence(note.clone()), false, now_ms);
        }
    }

    fn send_to(&mut self, token: u64, to: UserId, text: &str, now_ms: u64) {
        match self.chat.send(to, text, now_ms, &mut self.rng) {
            Ok(id) => {
                if let Some(m) = self.chat.message(&id).cloned() {
                    self.out.push_back(SocialOutput::Store(StoreChange::Message(m)));
                }
                self.out.push_back(SocialOutput::Event(SocialEvent::Sent { token, id, to }));
            }
            Err(e) => {
                let name = self.name_of(&to).unwrap_or("?").to_string();
                self.fail(token, &name, e.into());
            }
        }
    }

    /// Undelivered messages out again: at sign-in those never stored, every
    /// [`RESEND_EVERY_MS`] all not yet delivered.
    fn resend(&mut self, only_unstored: bool) {
        let ids: Vec<MsgId> = self
            .chat
            .undelivered()
            .into_iter()
            .filter(|m| !only_unstored || m.status == Status::Sent)
            .map(|m| m.id)
            .collect();
        for id in ids {
            if let Err(e) = self.chat.resend(&id, &mut self.rng) {
                warn!("cannot resend a message: {e}");
            }
        }
    }

    /// Queue `w` behind a lookup of `name` (asked once per name).
    fn wait_on(&mut self, name: &str, w: Waiting, now_ms: u64) -> Result<(), SocialError> {
        if let Some(l) = self.lookups.get_mut(name) {
            if l.waiting.len() >= MAX_WAITING_PER_NAME {
                return Err(SocialError::Busy);
            }
            l.waiting.push(w);
            return Ok(());
        }
        if self.lookups.len() >= MAX_LOOKUPS {
            return Err(SocialError::Busy);
        }
        self.lookups.insert(name.to_string(), Lookup { asked_ms: now_ms, waiting: vec![w] });
        self.out.push_back(SocialOutput::Lookup(name.to_string()));
        Ok(())
    }

    fn seal(&mut self, to: &UserId, body: PeerPayload) -> Option<(MsgId, Vec<u8>)> {
        let mut wire_id = [0u8; 16];
        self.rng.fill_bytes(&mut wire_id);
        let env = Envelope { from_name: self.name.clone(), body };
        match seal_envelope(&self.me, to, &wire_id, &env, &mut self.rng) {
            Ok(sealed) => Some((wire_id, sealed)),
            Err(e) => {
                warn!("cannot seal a unit to {to}: {e}");
                None
            }
        }
    }

    fn deliver(&mut self, to: UserId, body: PeerPayload, mail: bool, now_ms: u64) {
        if let Some((wire_id, sealed)) = self.seal(&to, body) {
            self.route(to, wire_id, sealed, mail, now_ms);
        }
    }

    /// Online if we know where, else after a lookup, else the mailbox.
    fn route(&mut self, to: UserId, wire_id: MsgId, sealed: Vec<u8>, mail: bool, now_ms: u64) {
        if let Some(sn) = self.fresh_route(&to, now_ms) {
            return self.send_peer(to, sn, wire_id, sealed, mail, now_ms);
        }
        // A contact that told us it went offline (or lapsed) is not looked
        // up: the directory may not know yet, and the mailbox is where it
        // will look. Its next presence note brings it back online.
        let known_offline = self.contacts.get(&to).is_some_and(|c| {
            c.state == ContactState::Accepted && c.presence.is_some() && c.shown(now_ms) == Shown::Offline
        });
        if known_offline {
            if mail {
                self.out.push_back(SocialOutput::LeaveMail { wire_id, to, sealed });
            }
            return;
        }
        // A sender whose claimed name is being checked: behind that lookup.
        let name = self.name_of(&to).map(str::to_string).or_else(|| self.name_being_checked(&to));
        let w = Waiting::Unit { to, wire_id, sealed: sealed.clone(), mail };
        let queued = match name {
            Some(name) if self.supernode.is_some() => self.wait_on(&name, w, now_ms).is_ok(),
            _ => false,
        };
        if !queued && mail {
            self.out.push_back(SocialOutput::LeaveMail { wire_id, to, sealed });
        }
    }

    /// The supernode `to` is attached to, if we learnt it recently.
    fn fresh_route(&self, to: &UserId, now_ms: u64) -> Option<SocketAddr> {
        self.routes.get(to).filter(|(_, until)| *until > now_ms).map(|(sn, _)| *sn)
    }

    fn name_being_checked(&self, key: &UserId) -> Option<String> {
        self.lookups.iter().find_map(|(name, l)| {
            l.waiting
                .iter()
                .any(|w| matches!(w, Waiting::Sender { from } | Waiting::Request { from, .. } if from == key))
                .then(|| name.clone())
        })
    }

    fn send_peer(&mut self, to: UserId, sn: SocketAddr, wire_id: MsgId, sealed: Vec<u8>, mail: bool, now_ms: u64) {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            // Oldest first would need an order; any one will do: it was probably handed over.
            if let Some(k) = self.in_flight.keys().next().copied() {
                self.in_flight.remove(&k);
            }
        }
        self.in_flight.insert(wire_id, InFlight { to, sealed: sealed.clone(), mail, until_ms: now_ms + IN_FLIGHT_MS });
        self.out.push_back(SocialOutput::SendPeer { wire_id, to, supernode: sn, sealed });
    }

    /// Carry the chat's outputs into ours.
    fn drain_chat(&mut self, now_ms: u64) {
        while let Some(o) = self.chat.poll_output() {
            match o {
                ChatOutput::Deliver { to, wire_id, sealed } | ChatOutput::Mail { to, wire_id, sealed } => {
                    self.route(to, wire_id, sealed, true, now_ms);
                }
                ChatOutput::Received(m) => {
                    let from_name = self.name_of(&m.from).unwrap_or("").to_string();
                    let contact = self.contacts.is_accepted(&m.from);
                    self.out.push_back(SocialOutput::Store(StoreChange::Message(m.clone())));
                    self.out.push_back(SocialOutput::Event(SocialEvent::Message { message: m, from_name, contact }));
                }
                ChatOutput::Status { id, status } => {
                    if let Some(m) = self.chat.message(&id).cloned() {
                        let to = m.to;
                        self.out.push_back(SocialOutput::Store(StoreChange::Message(m)));
                        self.out.push_back(SocialOutput::Event(SocialEvent::MessageStatus { id, to, status }));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
