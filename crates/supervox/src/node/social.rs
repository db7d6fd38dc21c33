//! The node's side of the social layer ([`supervox_core::social`]): it
//! carries the [`Social`] machine's outputs to the client and the database,
//! feeds it the client's peer events, answers the social control requests,
//! keeps the call history, and streams events to `ctl events`.

use super::Node;
use crate::control::{ContactAction, Request};
use crate::db::InboxUnit;
use serde_json::{json, Value};
use std::collections::HashMap;
use supervox_core::client::ClientEvent;
use supervox_core::identity::fingerprint;
use supervox_core::reason::CallFailure;
use supervox_core::social::chat::{ChatMessage, MsgId, Status};
use supervox_core::social::{CallRecord, PresenceState, Social, SocialEvent, SocialOutput, StoreChange};
use supervox_proto::{CallId, UserId};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// `ctl events` streams at once.
pub const MAX_EVENT_STREAMS: usize = 16;
/// A `ctl send` answers `sent` if neither stored nor delivered within this.
pub const SEND_WAIT_MS: u64 = 15_000;
/// Mail puts remembered (for naming the recipient of a refusal).
const MAX_MAIL_PUTS: usize = 4_096;

/// A `ctl send` waiting for its message to be stored or delivered.
pub(super) struct PendingSend {
    tx: mpsc::Sender<String>,
    id: Option<MsgId>,
    deadline_ms: u64,
}

/// A call as the history will record it.
pub(super) struct CallLog {
    outgoing: bool,
    peer: String,
    user_id: Option<UserId>,
    start_ms: u64,
    path: Option<String>,
    connected: bool,
}

/// The node's social state besides the machine.
#[derive(Default)]
pub(super) struct SocialGlue {
    streams: Vec<mpsc::Sender<String>>,
    sends: HashMap<u64, PendingSend>,
    next_token: u64,
    mail_to: HashMap<MsgId, UserId>,
    calls: HashMap<CallId, CallLog>,
    /// Units left in the inbox by a crash are taken at the first sign-in.
    inbox_replayed: bool,
}

fn hex16(id: &MsgId) -> String {
    hex::encode(id)
}

impl Node {
    /// Carry out the social layer's outputs.
    pub(super) fn drain_social(&mut self) -> bool {
        let mut any = false;
        while let Some(out) = self.social.poll_output() {
            any = true;
            let now = crate::links::now_ms();
            match out {
                SocialOutput::Lookup(name) => {
                    if self.client.lookup_peer(&name).is_none() {
                        let e = supervox_core::client::PeerLookupError::Unverified;
                        self.social.handle_peer_found(&name, Err(e), now);
                    }
                }
                SocialOutput::SendPeer { wire_id, to, supernode, sealed } => {
                    if !self.client.send_peer(wire_id, to, supernode, sealed) {
                        self.social.handle_undeliverable(&wire_id);
                    }
                }
                SocialOutput::LeaveMail { wire_id, to, sealed } => {
                    if self.client.leave_mail_as(wire_id, to, sealed, now).is_some() {
                        if self.glue.mail_to.len() >= MAX_MAIL_PUTS {
                            self.glue.mail_to.clear();
                        }
                        self.glue.mail_to.insert(wire_id, to);
                    } else {
                        // Not signed in: chat is stored again at the next sign-in.
                        info!("not signed in: a unit for {to} waits for the next sign-in");
                    }
                }
                SocialOutput::Pin { name, user_id } => {
                    if let Err(e) = self.client.pin_contact(&name, user_id, now) {
                        warn!("contact {name:?} not pinned: {e}");
                    }
                }
                SocialOutput::Block { user_id, blocked } => self.client.set_blocked(user_id, blocked),
                SocialOutput::Store(change) => {
                    if let Err(e) = self.db.apply_social(&change) {
                        warn!("cannot store a social change: {e:#}");
                    }
                }
                SocialOutput::Event(e) => self.on_social_event(e),
            }
        }
        any
    }

    /// A client event that concerns the social layer (or the history).
    /// Returns the event back if it is not one.
    pub(super) fn social_client_event(&mut self, e: ClientEvent, now: u64) -> Option<ClientEvent> {
        match e {
            ClientEvent::SignedIn { supernode } => {
                self.social.handle_signed_in(supernode, now);
                if !std::mem::replace(&mut self.glue.inbox_replayed, true) {
                    match self.db.inbox_units() {
                        Ok(units) => {
                            if !units.is_empty() {
                                info!("{} received units left from before a restart: taking them now", units.len());
                            }
                            for u in units {
                                self.social.handle_unit(u.from, u.wire_id, &u.sealed, now);
                            }
                        }
                        Err(e) => warn!("cannot read the inbox: {e:#}"),
                    }
                }
                Some(ClientEvent::SignedIn { supernode })
            }
            ClientEvent::LostSupernode { supernode, reason } => {
                self.social.handle_signed_out();
                Some(ClientEvent::LostSupernode { supernode, reason })
            }
            // Offline messages: stored (committed) before the holders are told
            // to delete them, so a crash in between loses nothing; then taken
            // by the social layer, whose results are stored before each
            // unit's raw copy goes. Duplicates are absorbed by id.
            ClientEvent::Mail { items } => {
                let units: Vec<InboxUnit> = items
                    .into_iter()
                    .map(|i| InboxUnit { wire_id: i.id, from: i.from, sent_ms: i.sent_ms, sealed: i.body })
                    .collect();
                match self.db.store_units(&units) {
                    Ok(stored) => {
                        if stored.len() < units.len() {
                            warn!("inbox full: {} mail items left in the mailbox", units.len() - stored.len());
                        }
                        info!("{} mail items stored", stored.len());
                        self.client.mail_saved(&stored, now);
                        for u in units.iter().filter(|u| stored.contains(&u.wire_id)) {
                            self.social.handle_unit(u.from, u.wire_id, &u.sealed, now);
                        }
                    }
                    Err(e) => warn!("cannot store mail (left in the mailbox): {e:#}"),
                }
                None
            }
            ClientEvent::Peer { id, from, body } => {
                let unit = InboxUnit { wire_id: id.0, from, sent_ms: 0, sealed: body };
                match self.db.store_units(std::slice::from_ref(&unit)) {
                    Ok(s) if !s.is_empty() => self.social.handle_unit(from, unit.wire_id, &unit.sealed, now),
                    Ok(_) => warn!("inbox full: peer message {id} from {from} dropped"),
                    Err(e) => warn!("cannot store peer message {id}: {e:#}"),
                }
                None
            }
            ClientEvent::PeerUndeliverable { id, reason } => {
                info!("peer message {id} not delivered ({reason})");
                self.social.handle_undeliverable(&id.0);
                None
            }
            ClientEvent::PeerFound { name, result, .. } => {
                self.social.handle_peer_found(&name, result, now);
                None
            }
            ClientEvent::MailStored { id, result } => {
                if let Err(e) = &result {
                    warn!("mail {} not stored: {e}", hex16(&id));
                }
                let to = self.glue.mail_to.remove(&id);
                self.social.handle_mail_stored(&id, result, to, now);
                None
            }
            other => Some(other),
        }
    }

    /// Keep the history of a call from its events.
    pub(super) fn log_call(&mut self, e: &ClientEvent, now: u64) {
        match e {
            ClientEvent::Incoming { call_id, from, user_id, .. } => {
                self.glue.calls.insert(
                    *call_id,
                    CallLog {
                        outgoing: false,
                        peer: from.clone(),
                        user_id: Some(*user_id),
                        start_ms: now,
                        path: None,
                        connected: false,
                    },
                );
                self.broadcast(json!({"event": "incoming_call", "call_id": call_id.to_string(), "peer": from,
                                      "user_id": user_id.to_string(), "fingerprint": fingerprint(user_id)}));
            }
            ClientEvent::Connected { call_id, user_id, path, .. } => {
                if let Some(l) = self.glue.calls.get_mut(call_id) {
                    l.user_id = Some(*user_id);
                    l.path = Some(path.as_str().to_string());
                    l.connected = true;
                }
            }
            ClientEvent::PathChanged { call_id, path, .. } => {
                if let Some(l) = self.glue.calls.get_mut(call_id) {
                    l.path = Some(path.as_str().to_string());
                }
            }
            ClientEvent::Failed { call_id, reason } => {
                if let Some(l) = self.glue.calls.remove(call_id) {
                    // An incoming call that rang and was not answered is a missed call.
                    let missed = !l.outgoing && matches!(reason, CallFailure::Missed | CallFailure::CallerCancelled);
                    // The callee could not be reached (offline, or gone from its
                    // supernode before the directory knew): a notice in its mailbox.
                    let unreachable = matches!(
                        reason,
                        CallFailure::Offline(_) | CallFailure::SignalFailed(_) | CallFailure::CalleeDidNotRespond
                    );
                    if l.outgoing && unreachable {
                        self.social.missed_call(&l.peer, call_id.0, now);
                    }
                    self.record_call(*call_id, l, 0, None, missed);
                }
            }
            _ => {}
        }
    }

    /// An outgoing call was placed (for the history).
    pub(super) fn log_outgoing(&mut self, call_id: CallId, peer: &str, now: u64) {
        self.glue.calls.insert(
            call_id,
            CallLog {
                outgoing: true,
                peer: peer.to_string(),
                user_id: None,
                start_ms: now,
                path: None,
                connected: false,
            },
        );
    }

    /// A connected call ended: into the history with its quality.
    pub(super) fn log_ended(&mut self, call_id: CallId, duration_ms: u64, mos: Option<f64>) {
        if let Some(l) = self.glue.calls.remove(&call_id) {
            let d = if l.connected { duration_ms } else { 0 };
            self.record_call(call_id, l, d, mos, false);
        }
    }

    fn record_call(&mut self, call_id: CallId, l: CallLog, duration_ms: u64, mos: Option<f64>, missed: bool) {
        let rec = CallRecord {
            call_id: call_id.0,
            outgoing: l.outgoing,
            peer: l.peer,
            user_id: l.user_id,
            start_ms: l.start_ms,
            duration_ms,
            path: l.path,
            mos,
            missed,
        };
        if let Err(e) = self.db.apply_social(&StoreChange::Call(rec.clone())) {
            warn!("cannot store a call in the history: {e:#}");
        }
        if missed {
            self.broadcast(json!({"event": "missed_call", "peer": rec.peer, "start_ms": rec.start_ms}));
        }
    }

    /// Send one event line to every `ctl events` stream (and forget closed ones).
    pub(super) fn broadcast(&mut self, v: Value) {
        let line = v.to_string();
        // A stream that does not keep up loses lines; a closed one goes.
        self.glue.streams.retain(|tx| !matches!(tx.try_send(line.clone()), Err(mpsc::error::TrySendError::Closed(_))));
    }

    fn peer_name(&self, key: &UserId) -> String {
        self.social.name_of(key).map(str::to_string).unwrap_or_else(|| format!("?{}", fingerprint(key)))
    }

    fn message_json(&self, m: &ChatMessage) -> Value {
        let me = self.client.identity().user_id();
        let name = |k: &UserId| if *k == me { self.opts.name.clone() } else { self.peer_name(k) };
        json!({"id": hex16(&m.id), "from": name(&m.from), "to": name(&m.to), "from_user_id": m.from.to_string(),
               "text": m.text, "sent_ms": m.sent_ms, "status": m.status.as_str(),
               "direction": if m.from == me { "out" } else { "in" },
               // A message from someone not an accepted contact is marked.
               "contact": self.social.contacts().is_accepted(if m.from == me { &m.to } else { &m.from })})
    }

    /// A message as an event line (`ctl send`'s answer, `ctl events`).
    fn message_event(&self, m: &ChatMessage) -> Value {
        let mut v = self.message_json(m);
        v["event"] = json!("message");
        v
    }

    fn on_social_event(&mut self, e: SocialEvent) {
        let v = match e {
            SocialEvent::ContactRequest { name, user_id, message } => {
                info!("contact request from {name:?} [fingerprint {}]: {message:?}", fingerprint(&user_id));
                json!({"event": "contact_request", "name": name, "user_id": user_id.to_string(),
                       "fingerprint": fingerprint(&user_id), "message": message})
            }
            SocialEvent::Contact { name, user_id, state } => {
                info!("contact {name:?}: {}", state.map_or("removed", |s| s.as_str()));
                json!({"event": "contact", "name": name, "user_id": user_id.to_string(),
                       "state": state.map(|s| s.as_str())})
            }
            SocialEvent::Presence { name, user_id, shown, text } => {
                info!(
                    "{name:?} is {}{}",
                    shown.as_str(),
                    if text.is_empty() { String::new() } else { format!(" ({text})") }
                );
                json!({"event": "presence", "name": name, "user_id": user_id.to_string(),
                       "presence": shown.as_str(), "status_text": text})
            }
            // message_json marks whether the sender is an accepted contact.
            SocialEvent::Message { message, .. } => {
                info!("message {} from {}", hex16(&message.id), self.peer_name(&message.from));
                self.message_event(&message)
            }
            SocialEvent::MessageStatus { id, to, status } => {
                self.answer_send(&id, status);
                json!({"event": "message_status", "id": hex16(&id), "to": self.peer_name(&to),
                       "status": status.as_str()})
            }
            SocialEvent::Sent { token, id, to } => {
                if let Some(p) = self.glue.sends.get_mut(&token) {
                    p.id = Some(id);
                }
                json!({"event": "message_sent", "id": hex16(&id), "to": self.peer_name(&to)})
            }
            SocialEvent::Failed { token, name, reason } => {
                warn!("{name:?}: {reason}");
                let v = json!({"event": "error", "name": name, "error": reason.to_string(), "code": reason.code()});
                if let Some(p) = self.glue.sends.remove(&token) {
                    let _ = p.tx.try_send(v.to_string());
                }
                v
            }
            SocialEvent::MissedCall(r) => {
                info!("missed call from {:?} at {}", r.peer, r.start_ms);
                json!({"event": "missed_call", "peer": r.peer, "user_id": r.user_id.map(|k| k.to_string()),
                       "start_ms": r.start_ms})
            }
            SocialEvent::MailRefused { to, reason } => {
                let reason = supervox_core::reason::ReasonText::new(&reason);
                json!({"event": "mail_refused", "to": self.peer_name(&to), "reason": reason.as_str()})
            }
        };
        self.broadcast(v);
    }

    /// A message moved on: answer the `ctl send` waiting for it.
    fn answer_send(&mut self, id: &MsgId, status: Status) {
        let Some(token) = self.glue.sends.iter().find(|(_, p)| p.id.as_ref() == Some(id)).map(|(t, _)| *t) else {
            return;
        };
        if status >= Status::Stored {
            if let Some(p) = self.glue.sends.remove(&token) {
                let m = self.social.chat().message(id).cloned();
                let mut v =
                    m.map(|m| self.message_event(&m)).unwrap_or_else(|| json!({"event": "message", "id": hex16(id)}));
                // The status that answered, even if the message moved on since.
                v["status"] = json!(status.as_str());
                let _ = p.tx.try_send(v.to_string());
            }
        }
    }

    /// The earliest `ctl send` deadline.
    pub(super) fn sends_timeout(&self) -> Option<u64> {
        self.glue.sends.values().map(|p| p.deadline_ms).min()
    }

    /// `ctl send`s that waited long enough: answer `sent`.
    pub(super) fn expire_sends(&mut self, now: u64) {
        let due: Vec<u64> = self.glue.sends.iter().filter(|(_, p)| p.deadline_ms <= now).map(|(t, _)| *t).collect();
        for t in due {
            if let Some(p) = self.glue.sends.remove(&t) {
                let v = match p.id.and_then(|id| self.social.chat().message(&id).cloned()) {
                    Some(m) => self.message_event(&m),
                    None => json!({"event": "error", "error": "no answer from the network", "code": "timeout"}),
                };
                let _ = p.tx.try_send(v.to_string());
            }
        }
    }

    /// The social control requests; `Err` gives the request back.
    pub(super) fn social_control(&mut self, req: Request, tx: mpsc::Sender<String>, now: u64) -> Result<(), Request> {
        let reply = |v: Value| {
            let _ = tx.try_send(v.to_string());
        };
        let error =
            |e: &supervox_core::social::SocialError| json!({"ok": false, "error": e.to_string(), "code": e.code()});
        match req {
            Request::Contacts { action: None, .. } => {
                for c in self.social.contacts().all() {
                    let verified = match self.client.trust_store().check(&c.name, &c.user_id) {
                        supervox_core::trust::PinCheck::Matches => "contact",
                        // Filed only under a name the directory gave the key.
                        _ => "directory",
                    };
                    reply(
                        json!({"name": c.name, "user_id": c.user_id.to_string(), "fingerprint": fingerprint(&c.user_id),
                                 "state": c.state.as_str(), "presence": c.shown(now).as_str(),
                                 "status_text": c.status_text(now), "message": c.message, "verified": verified,
                                 "unread": self.social.chat().unread(&c.user_id)}),
                    );
                }
            }
            Request::Contacts { action: Some(action), name, message } => {
                let Some(name) = name else {
                    reply(json!({"ok": false, "error": "a name is needed", "code": "bad-request"}));
                    return Ok(());
                };
                let r = match action {
                    ContactAction::Add => self.social.add_contact(&name, message.as_deref().unwrap_or(""), now),
                    ContactAction::Accept => self.social.accept(&name, now),
                    ContactAction::Decline => self.social.decline(&name),
                    ContactAction::Remove => self.social.remove(&name, now),
                    ContactAction::Block => self.social.block(&name, now),
                };
                match r {
                    Ok(()) => reply(json!({"ok": true, "name": name})),
                    Err(e) => reply(error(&e)),
                }
            }
            Request::Presence { state, text } => match PresenceState::parse(&state) {
                Some(s) => match self.social.set_presence(s, text.as_deref().unwrap_or(""), now) {
                    Ok(()) => reply(json!({"ok": true, "presence": s.as_str()})),
                    Err(e) => reply(error(&e)),
                },
                None => reply(
                    json!({"ok": false, "error": format!("unknown presence {state:?}: online, away, busy or invisible"),
                                     "code": "bad-request"}),
                ),
            },
            Request::Send { name, text } => {
                self.glue.next_token += 1;
                let token = self.glue.next_token;
                match self.social.send(token, &name, &text, now) {
                    Ok(()) => {
                        let p = PendingSend { tx, id: None, deadline_ms: now + SEND_WAIT_MS };
                        self.glue.sends.insert(token, p);
                    }
                    Err(e) => reply(json!({"event": "error", "error": e.to_string(), "code": e.code()})),
                }
            }
            Request::Messages { name } => match self.social.key_of(&name) {
                Some(key) => {
                    let msgs: Vec<Value> =
                        self.social.chat().conversation(&key).into_iter().map(|m| self.message_json(m)).collect();
                    for m in msgs {
                        reply(m);
                    }
                }
                None => reply(json!({"ok": false, "error": format!("no conversation with {name:?}"),
                                     "code": "not-a-contact"})),
            },
            Request::Read { name } => match self.social.read(&name, now) {
                Ok(n) => reply(json!({"ok": true, "read": n})),
                Err(e) => reply(error(&e)),
            },
            Request::History => match self.db.calls() {
                Ok(calls) => {
                    for c in calls {
                        reply(
                            json!({"call_id": hex16(&c.call_id), "direction": if c.outgoing { "outgoing" } else { "incoming" },
                                     "peer": c.peer, "user_id": c.user_id.map(|k| k.to_string()),
                                     "start_ms": c.start_ms, "duration_ms": c.duration_ms, "path": c.path,
                                     "mos": c.mos, "missed": c.missed}),
                        );
                    }
                }
                Err(e) => reply(json!({"ok": false, "error": format!("{e:#}"), "code": "database"})),
            },
            Request::Events => {
                self.glue.streams.retain(|s| !s.is_closed());
                if self.glue.streams.len() >= MAX_EVENT_STREAMS {
                    reply(json!({"ok": false, "error": "too many event streams", "code": "busy"}));
                } else {
                    reply(json!({"event": "subscribed"}));
                    self.glue.streams.push(tx);
                }
            }
            other => return Err(other),
        }
        Ok(())
    }
}

/// The social layer of a node, from its database.
pub(super) fn restore(social: &mut Social, db: &crate::db::Db) -> anyhow::Result<()> {
    let contacts = db.contacts()?;
    let messages = db.messages()?;
    let presence = db.my_presence()?;
    if !contacts.is_empty() || !messages.is_empty() {
        info!("{} contacts and {} messages loaded", contacts.len(), messages.len());
    }
    social.restore(contacts, messages, presence);
    Ok(())
}
