//! The social machines of a few users on a toy network: a directory of
//! names, online/offline users, mailboxes. The machines are the real ones;
//! only the client and the supernodes are played by [`Net`].

use super::*;
use std::collections::HashMap;

struct User {
    social: Social,
    id: UserId,
    online: bool,
    /// What the driver persisted, and pins/blocks it was asked for.
    stored: Vec<StoreChange>,
    events: Vec<SocialEvent>,
    pins: Vec<(String, UserId)>,
    blocked: Vec<(UserId, bool)>,
}

struct Net {
    users: Vec<User>,
    /// Mailboxes: recipient → (sender, wire id, sealed).
    mail: HashMap<UserId, Vec<(UserId, MsgId, Vec<u8>)>>,
    /// Units sent as peer messages, per recipient (what a supernode would see).
    seen_online: HashMap<UserId, usize>,
    /// Lookups asked (name), per user.
    lookups: Vec<(usize, String)>,
    now: u64,
    /// Names whose directory answer is forged to this key.
    forged: HashMap<String, UserId>,
}

fn sn(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

impl Net {
    fn new(names: &[&str], cfg: SocialConfig) -> Self {
        let users = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let me = Identity::from_seed([i as u8 + 1; 32]);
                let id = me.user_id();
                User {
                    social: Social::new(me, n, cfg, i as u64),
                    id,
                    online: false,
                    stored: vec![],
                    events: vec![],
                    pins: vec![],
                    blocked: vec![],
                }
            })
            .collect();
        let mut net = Net {
            users,
            mail: HashMap::new(),
            seen_online: HashMap::new(),
            lookups: vec![],
            now: 1_000_000,
            forged: HashMap::new(),
        };
        for i in 0..names.len() {
            net.sign_in(i);
        }
        net
    }

    fn idx(&self, key: &UserId) -> Option<usize> {
        self.users.iter().position(|u| u.id == *key)
    }

    fn name(&self, i: usize) -> String {
        self.users[i].social.name.clone()
    }

    fn sign_in(&mut self, i: usize) {
        self.users[i].online = true;
        self.users[i].social.handle_signed_in(sn(i), self.now);
        // The node fetches its mailbox at sign-in.
        let items = self.mail.remove(&self.users[i].id).unwrap_or_default();
        for (from, w, s) in items {
            self.users[i].social.handle_unit(from, w, &s, self.now);
        }
        self.run();
    }

    fn crash(&mut self, i: usize) {
        self.users[i].online = false;
        self.users[i].social.handle_signed_out();
    }

    fn sign_out(&mut self, i: usize) {
        self.users[i].social.sign_out(self.now);
        self.run();
        self.users[i].online = false;
    }

    /// Carry out every output until all are quiet.
    fn run(&mut self) {
        for _ in 0..100 {
            let mut any = false;
            for i in 0..self.users.len() {
                while let Some(o) = self.users[i].social.poll_output() {
                    any = true;
                    self.act(i, o);
                }
            }
            if !any {
                return;
            }
        }
        panic!("the social machines do not settle");
    }

    fn act(&mut self, i: usize, o: SocialOutput) {
        let now = self.now;
        let from = self.users[i].id;
        match o {
            SocialOutput::Lookup(name) => {
                self.lookups.push((i, name.clone()));
                let found = self.users.iter().position(|u| u.social.name == name);
                let result = match (self.forged.get(&name), found) {
                    (Some(k), _) => Ok(PeerAt { user_id: *k, supernode: Some(sn(99)) }),
                    (None, Some(j)) => {
                        Ok(PeerAt { user_id: self.users[j].id, supernode: self.users[j].online.then(|| sn(j)) })
                    }
                    (None, None) => Err(PeerLookupError::Unknown),
                };
                self.users[i].social.handle_peer_found(&name, result, now);
            }
            SocialOutput::SendPeer { wire_id, to, supernode, sealed } => {
                match self.idx(&to).filter(|&j| self.users[j].online && supernode == sn(j)) {
                    Some(j) => {
                        *self.seen_online.entry(to).or_default() += 1;
                        self.users[j].social.handle_unit(from, wire_id, &sealed, now);
                    }
                    None => self.users[i].social.handle_undeliverable(&wire_id),
                }
            }
            SocialOutput::LeaveMail { wire_id, to, sealed } => {
                self.mail.entry(to).or_default().push((from, wire_id, sealed));
                self.users[i].social.handle_mail_stored(&wire_id, Ok(()), Some(to), now);
            }
            SocialOutput::Pin { name, user_id } => self.users[i].pins.push((name, user_id)),
            SocialOutput::Block { user_id, blocked } => self.users[i].blocked.push((user_id, blocked)),
            SocialOutput::Store(c) => self.users[i].stored.push(c),
            SocialOutput::Event(e) => self.users[i].events.push(e),
        }
    }

    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            let next = self.users.iter().filter_map(|u| u.social.poll_timeout()).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for u in &mut self.users {
                        if u.social.poll_timeout().is_some_and(|t| t <= self.now) {
                            u.social.handle_timeout(self.now);
                        }
                    }
                    self.run();
                    for u in &self.users {
                        assert!(
                            u.social.poll_timeout().is_none_or(|t| t > self.now),
                            "a machine still due: it would spin"
                        );
                    }
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn state(&self, i: usize, of: usize) -> Option<ContactState> {
        self.users[i].social.contacts().get(&self.users[of].id).map(|c| c.state)
    }

    fn shown(&self, i: usize, of: usize) -> Shown {
        self.users[i].social.contacts().get(&self.users[of].id).map_or(Shown::Offline, |c| c.shown(self.now))
    }

    fn befriend(&mut self, a: usize, b: usize) {
        let nb = self.name(b);
        let na = self.name(a);
        self.users[a].social.add_contact(&nb, "hi", self.now).unwrap();
        self.run();
        self.users[b].social.accept(&na, self.now).unwrap();
        self.run();
        assert_eq!((self.state(a, b), self.state(b, a)), (Some(ContactState::Accepted), Some(ContactState::Accepted)));
    }

    fn texts(&self, i: usize, with: usize) -> Vec<(String, Status)> {
        self.users[i]
            .social
            .chat()
            .conversation(&self.users[with].id)
            .into_iter()
            .map(|m| (m.text.clone(), m.status))
            .collect()
    }
}

#[test]
fn request_accept_pins_both_and_shares_presence_both_ways() {
    let mut net = Net::new(&["alice", "bob"], SocialConfig::default());
    net.users[0].social.add_contact("bob", "it's alice", net.now).unwrap();
    net.run();
    assert_eq!(net.state(0, 1), Some(ContactState::Outgoing));
    assert_eq!(net.state(1, 0), Some(ContactState::Incoming));
    assert!(net.users[1].events.iter().any(|e| matches!(e,
        SocialEvent::ContactRequest { name, message, .. } if name == "alice" && message == "it's alice")));
    // Not yet contacts: nobody sees anybody.
    assert_eq!(net.shown(0, 1), Shown::Offline);
    net.users[1].social.accept("alice", net.now).unwrap();
    net.run();
    assert_eq!(net.state(0, 1), Some(ContactState::Accepted));
    assert_eq!(net.users[0].pins, vec![("bob".to_string(), net.users[1].id)]);
    assert_eq!(net.users[1].pins, vec![("alice".to_string(), net.users[0].id)]);
    assert_eq!((net.shown(0, 1), net.shown(1, 0)), (Shown::Online, Shown::Online));
    // Persisted as accepted on both sides.
    assert!(net.users[0]
        .stored
        .iter()
        .any(|c| matches!(c, StoreChange::ContactPut(c) if c.state == ContactState::Accepted)));

    net.users[1].social.set_presence(PresenceState::Away, "lunch", net.now).unwrap();
    net.run();
    let bob = &net.users[0].social.contacts().get(&net.users[1].id).unwrap().clone();
    assert_eq!((bob.shown(net.now), bob.status_text(net.now)), (Shown::Away, "lunch"));
    assert!(net.users[0].events.iter().any(|e| matches!(e, SocialEvent::Presence { shown: Shown::Away, .. })));
}

#[test]
fn invisible_and_clean_sign_out_show_offline_and_a_crash_lapses() {
    let mut net = Net::new(&["alice", "bob"], SocialConfig::default());
    net.befriend(0, 1);
    net.users[1].social.set_presence(PresenceState::Invisible, "", net.now).unwrap();
    net.run();
    assert_eq!(net.shown(0, 1), Shown::Offline);
    net.users[1].social.set_presence(PresenceState::Busy, "", net.now).unwrap();
    net.run();
    assert_eq!(net.shown(0, 1), Shown::Busy);
    net.sign_out(1);
    assert_eq!(net.shown(0, 1), Shown::Offline, "a clean sign-out shows at once");
    net.sign_in(1);
    assert_eq!(net.shown(0, 1), Shown::Busy, "signing in tells contacts");
    assert_eq!(net.shown(1, 0), Shown::Online, "and asks theirs back");
    // A crash: nothing said; alice's next refresh finds bob gone.
    net.crash(1);
    net.advance(PRESENCE_REFRESH_MS - 1_000);
    assert_eq!(net.shown(0, 1), Shown::Busy);
    net.advance(2_000);
    assert_eq!(net.shown(0, 1), Shown::Offline, "a crash shows within the refresh interval");
}

#[test]
fn a_contact_that_stops_refreshing_lapses_within_the_presence_lifetime() {
    let mut net = Net::new(&["alice", "bob"], SocialConfig::default());
    net.befriend(0, 1);
    // Bob's machine stops (no sign-out, no refresh) while the directory and
    // his supernode still take units for him: only the lifetime tells.
    net.users[1].social.handle_signed_out();
    let mut quiet = std::mem::replace(
        &mut net.users[1].social,
        Social::new(Identity::from_seed([9; 32]), "x", SocialConfig::default(), 9),
    );
    net.advance(u64::from(PRESENCE_LIFETIME_MS) - 1_000);
    assert_eq!(net.shown(0, 1), Shown::Online);
    net.advance(2_000);
    assert_eq!(net.shown(0, 1), Shown::Offline, "lapsed");
    std::mem::swap(&mut net.users[1].social, &mut quiet);
}

#[test]
fn strangers_see_no_presence_and_cannot_inject_theirs() {
    let mut net = Net::new(&["alice", "bob", "mallory"], SocialConfig::default());
    net.befriend(0, 1);
    net.users[1].social.set_presence(PresenceState::Away, "secret", net.now).unwrap();
    net.run();
    // Mallory (no contact) got no unit from bob at all.
    let mallory = net.users[2].id;
    assert_eq!(net.seen_online.get(&mallory), None);
    assert!(!net.mail.contains_key(&mallory));
    // Mallory pushes a presence note to alice: dropped.
    let note = PresenceNote {
        shown: Shown::Online,
        text: "hi".into(),
        seq: u64::MAX,
        supernode: Some(sn(2)),
        lifetime_ms: 1,
        reply: true,
    };
    let alice = net.users[0].id;
    let (w, s) = net.users[2].social.seal(&alice, PeerPayload::Presence(note)).unwrap();
    net.users[0].social.handle_unit(mallory, w, &s, net.now);
    net.run();
    assert!(net.users[0].social.contacts().get(&mallory).is_none());
    assert_eq!(net.seen_online.get(&mallory), None, "no reply to a stranger's note");
}

#[test]
fn a_request_under_a_name_that_is_not_the_senders_is_not_filed() {
    let mut net = Net::new(&["alice", "bob", "mallory"], SocialConfig::default());
    // Mallory's units claim to be from "alice".
    net.users[2].social.name = "alice".into();
    net.users[2].social.chat = Chat::new(Identity::from_seed([3; 32]), "alice", true);
    net.users[2].social.add_contact("bob", "it is me, alice", net.now).unwrap();
    net.run();
    assert_eq!(net.state(1, 2), None, "bob's directory says alice is another key");
    assert!(!net.users[1].events.iter().any(|e| matches!(e, SocialEvent::ContactRequest { .. })));
}

#[test]
fn offline_messages_arrive_in_order_once_with_stored_delivered_read() {
    let mut net = Net::new(&["alice", "bob"], SocialConfig::default());
    net.befriend(0, 1);
    net.sign_out(1);
    for (t, text) in ["one", "two", "three"].iter().enumerate() {
        net.users[0].social.send(t as u64, "bob", text, net.now + t as u64).unwrap();
        net.run();
    }
    let st: Vec<Status> = net.texts(0, 1).into_iter().map(|(_, s)| s).collect();
    assert_eq!(st, vec![Status::Stored; 3], "in bob's mailbox");
    net.advance(10_000);
    let items = net.mail.get(&net.users[1].id).cloned().unwrap_or_default();
    assert_eq!(items.len(), 3);
    net.sign_in(1);
    assert_eq!(
        net.texts(1, 0),
        vec![("one".into(), Status::Delivered), ("two".into(), Status::Delivered), ("three".into(), Status::Delivered)]
    );
    assert!(net.texts(0, 1).iter().all(|(_, s)| *s == Status::Delivered));
    assert_eq!(net.users[1].social.read("alice", net.now).unwrap(), 3);
    net.run();
    assert!(net.texts(0, 1).iter().all(|(_, s)| *s == Status::Read));
    // The same mail fetched again (an ack was lost): nothing new, each unit done again.
    let messages = |u: &User| u.events.iter().filter(|e| matches!(e, SocialEvent::Message { .. })).count();
    let before = messages(&net.users[1]);
    for (from, w, s) in &items {
        net.users[1].social.handle_unit(*from, *w, s, net.now);
    }
    net.run();
    assert_eq!(messages(&net.users[1]), before);
    assert_eq!(net.texts(1, 0).len(), 3);
}

#[test]
fn blocked_keys_are_dropped_without_a_word() {
    let mut net = Net::new(&["alice", "bob"], SocialConfig::default());
    net.befriend(0, 1);
    net.users[1].social.block("alice", net.now).unwrap();
    net.run();
    assert_eq!(net.users[1].blocked, vec![(net.users[0].id, true)]);
    let before = net.users[1].events.len();
    let seen_by_alice = net.seen_online.get(&net.users[0].id).copied();
    net.users[0].social.send(1, "bob", "hello?", net.now).unwrap();
    net.users[0].social.add_contact("bob", "again", net.now).ok();
    net.run();
    assert_eq!(net.users[1].events.len(), before, "bob heard nothing");
    assert!(net.texts(1, 0).is_empty());
    assert_eq!(net.seen_online.get(&net.users[0].id).copied(), seen_by_alice, "alice got no receipt");
    net.users[1].social.remove("alice", net.now).unwrap();
    net.run();
    assert_eq!(net.users[1].blocked.last(), Some(&(net.users[0].id, false)));
}

#[test]
fn strangers_refuse_drops_their_messages_but_not_their_requests() {
    let cfg = SocialConfig { read_receipts: true, refuse_strangers: true };
    let mut net = Net::new(&["alice", "bob"], cfg);
    net.users[0].social.send(1, "bob", "hi stranger", net.now).unwrap();
    net.run();
    assert!(net.texts(1, 0).is_empty());
    net.users[0].social.add_contact("bob", "", net.now).unwrap();
    net.run();
    assert_eq!(net.state(1, 0), Some(ContactState::Incoming));
    net.users[1].social.accept("alice", net.now).unwrap();
    net.run();
    // Alice kept the refused message; once accepted (bob came online to
    // her), it is handed over, and new ones go straight through.
    assert_eq!(net.texts(1, 0), vec![("hi stranger".into(), Status::Delivered)]);
    net.users[0].social.send(2, "bob", "now?", net.now + 1).unwrap();
    net.run();
    assert_eq!(net.texts(1, 0)[1], ("now?".into(), Status::Delivered));
}

#[test]
fn a_missed_call_notice_reaches_an_offline_contact_only() {
    let mut net = Net::new(&["alice", "bob", "carol"], SocialConfig::default());
    net.befriend(0, 1);
    net.sign_out(1);
    net.users[0].social.missed_call("bob", [7; 16], net.now);
    net.users[0].social.missed_call("carol", [8; 16], net.now); // not a contact
    net.run();
    net.sign_in(1);
    let missed: Vec<&SocialEvent> =
        net.users[1].events.iter().filter(|e| matches!(e, SocialEvent::MissedCall(_))).collect();
    assert!(
        matches!(&missed[..], [SocialEvent::MissedCall(r)] if r.peer == "alice" && r.missed && r.call_id == [7; 16])
    );
    assert!(!net.mail.contains_key(&net.users[2].id));
}

#[test]
fn a_forged_lookup_does_not_misfile_or_leak() {
    // The supernode answers bob's name with mallory's key: alice's request
    // is sealed to that key (mallory can read "hi"), but once bob is pinned
    // a forged answer changes nothing: units go to bob's key's mailbox.
    let mut net = Net::new(&["alice", "bob", "mallory"], SocialConfig::default());
    net.befriend(0, 1);
    net.forged.insert("bob".into(), net.users[2].id);
    net.routes_clear(0);
    net.users[0].social.send(1, "bob", "for bob only", net.now).unwrap();
    net.run();
    assert!(!net.seen_online.contains_key(&net.users[2].id), "nothing went to mallory");
    assert_eq!(net.texts(1, 0), vec![]);
    assert!(net.mail.get(&net.users[1].id).is_some_and(|m| !m.is_empty()), "it waits in bob's own mailbox");
}

impl Net {
    fn routes_clear(&mut self, i: usize) {
        self.users[i].social.routes.clear();
    }
}
