//! The supernode's side of the overlay: sealed datagrams in and out,
//! membership upkeep, call signals between supernodes, STUN dial-backs.

use super::index::{Pending, MAX_PENDING, MAX_TRIES, RETRY_MS};
use super::{SnOutput, Supernode, MAX_SIGNALS_PER_CONN};
use crate::overlay::membership::MemberEvent;
use crate::overlay::wire::Inbound;
use crate::ConnId;
use std::net::SocketAddr;
use supervox_proto::overlay::{OverlayMsg, OverlayPacket};
use supervox_proto::{CallId, Message, Refusal, SignalEnvelope, UserId};
use tracing::{debug, info, warn};

/// Signals remembered to drop retransmitted copies.
const SEEN_SIGNALS: usize = 4_096;
/// Addresses with messages waiting for a `HelloAck`, at most (seeds).
const MAX_PARKED_ADDRS: usize = 64;
/// Messages waiting per address, at most.
const MAX_PARKED_PER_ADDR: usize = 4;

/// True for messages that answer one from the address they go to: those may
/// not outgrow what came from an address that has not proved itself.
fn is_answer(msg: &OverlayMsg) -> bool {
    matches!(
        msg,
        OverlayMsg::Members { .. }
            | OverlayMsg::Ack { .. }
            | OverlayMsg::SyncBuckets { .. }
            | OverlayMsg::SyncPull { .. }
            | OverlayMsg::ClaimAns { .. }
            | OverlayMsg::PublishAns { .. }
            | OverlayMsg::LookupAns { .. }
            | OverlayMsg::StoreAck { .. }
            | OverlayMsg::SignalAck { .. }
            | OverlayMsg::MailPutAns { .. }
            | OverlayMsg::MailItems { .. }
    )
}

/// A message's kind, for the driver's metrics and the simulator.
pub fn overlay_kind(msg: &OverlayMsg) -> &'static str {
    match msg {
        OverlayMsg::Join => "Join",
        OverlayMsg::Members { .. } => "Members",
        OverlayMsg::Ping { .. } => "Ping",
        OverlayMsg::Ack { .. } => "Ack",
        OverlayMsg::PingReq { .. } => "PingReq",
        OverlayMsg::SyncDigest { .. } => "SyncDigest",
        OverlayMsg::SyncBuckets { .. } => "SyncBuckets",
        OverlayMsg::SyncPull { .. } => "SyncPull",
        OverlayMsg::Claim { .. } => "Claim",
        OverlayMsg::ClaimAns { .. } => "ClaimAns",
        OverlayMsg::Publish { .. } => "Publish",
        OverlayMsg::PublishAns { .. } => "PublishAns",
        OverlayMsg::Unpublish { .. } => "Unpublish",
        OverlayMsg::Lookup { .. } => "Lookup",
        OverlayMsg::LookupAns { .. } => "LookupAns",
        OverlayMsg::Store { .. } => "Store",
        OverlayMsg::StoreAck { .. } => "StoreAck",
        OverlayMsg::Signal { .. } => "Signal",
        OverlayMsg::SignalAck { .. } => "SignalAck",
        OverlayMsg::StunDialBack { .. } => "StunDialBack",
        OverlayMsg::MailPut { .. } => "MailPut",
        OverlayMsg::MailPutAns { .. } => "MailPutAns",
        OverlayMsg::MailFetch { .. } => "MailFetch",
        OverlayMsg::MailItems { .. } => "MailItems",
        OverlayMsg::MailAck { .. } => "MailAck",
        OverlayMsg::MailCopy { .. } => "MailCopy",
    }
}

impl Supernode {
    /// A UDP datagram that starts with the overlay magic byte arrived from
    /// `from`. Only datagrams sealed for us by their sender pass (pairwise
    /// keys, replay window: see [`crate::overlay::wire`]); a sender we do not
    /// know is admitted as a member only once it has proved its address, and
    /// until then gets nothing but a small ack to its pings.
    pub fn on_datagram(&mut self, from: SocketAddr, bytes: &[u8], now_ms: u64) {
        self.clock(now_ms);
        if self.step.done {
            return;
        }
        let membership = &self.membership;
        let inbound = match self.wire.open(from, bytes, now_ms, |id| membership.get(id).is_some()) {
            Ok(i) => i,
            Err(e) => {
                let refused = self.stats().overlay_refused;
                if refused.is_power_of_two() {
                    warn!("overlay datagram from {from} refused: {e}");
                }
                return;
            }
        };
        let (sender, validated, packet) = match inbound {
            Inbound::Hello { reply } => {
                self.out.push_back(SnOutput::Datagram { to: from, bytes: reply, kind: "HelloAck" });
                return;
            }
            Inbound::HelloAck { .. } => {
                if let Some((_, msgs)) = self.parked.remove(&from) {
                    for msg in msgs {
                        self.send_overlay(from, msg);
                    }
                }
                return;
            }
            Inbound::Packet { sender, validated, packet } => (sender, validated, packet),
        };
        let OverlayPacket { from: member, msg } = packet;
        debug!("overlay {} from {from}", overlay_kind(&msg));
        // The header is the sender's own entry; nobody speaks for another.
        if member.id != sender {
            self.stats.overlay_refused += 1;
            return;
        }
        if self.membership.get(&sender).is_none() {
            // Admission: a proved address, then the member's proof of work
            // and its prefix's room (`Membership::admit`). A member refused
            // stays a stranger: it is not accused or answered with news, so
            // it causes no churn here.
            if validated && member.addr == from {
                self.membership.observe(member, now_ms);
            }
            if self.membership.get(&sender).is_none() {
                return self.on_stranger_msg(from, member.id, msg, now_ms);
            }
        } else if self.membership.is_refused(&sender, now_ms) && !self.membership.is_live(&sender) {
            // Known only as dead, and refused its return (its prefix is full).
            self.membership.observe(member, now_ms);
            if !self.membership.is_live(&sender) {
                return self.on_stranger_msg(from, member.id, msg, now_ms);
            }
        }
        if matches!(msg, OverlayMsg::Ping { .. } | OverlayMsg::PingReq { .. }) {
            self.probed(now_ms);
        }
        let incarnation = self.membership.me().incarnation;
        self.membership.observe(member, now_ms);
        if let OverlayMsg::Unpublish { user } = msg {
            // The address we hold for the sender (its header may say another).
            let at = self.membership.get(&sender).map_or(member.addr, |m| m.addr);
            self.directory.remove_presence_at(&user, at);
        } else if !self.membership.on_msg(from, &member, &msg, now_ms) {
            if let Some(msg) = self.on_index_msg(from, member.id, msg, now_ms) {
                if let Some(msg) = self.on_mail_msg(from, member.id, msg, now_ms) {
                    self.on_peer_msg(from, member.id, msg, now_ms);
                }
            }
        }
        if self.membership.me().incarnation > incarnation {
            self.refuted(now_ms);
        }
        self.flush_membership(now_ms);
    }

    /// A sender not (yet) admitted as a member: it may be a supernode whose
    /// join has not reached us, or anyone with a key and a spoofed source.
    /// Its header is not learnt and it speaks for no membership; its index,
    /// mail and signal requests are served (records are verified on their
    /// own signatures, and every answer to an unproved address is bounded by
    /// what came from it, with a cookie whose echo admits a real member);
    /// a ping gets a bare ack, an ack completes only an indirect probe we sent
    /// it; it cannot order dial-backs or unpublish.
    fn on_stranger_msg(&mut self, from: SocketAddr, id: UserId, msg: OverlayMsg, now_ms: u64) {
        match msg {
            OverlayMsg::Ping { seq, .. } => self.send_overlay(from, OverlayMsg::Ack { seq, updates: Vec::new() }),
            // The answer to an indirect probe we sent it for a member that
            // admitted it: relayed (only if it is the probe's target).
            OverlayMsg::Ack { seq, .. } => self.membership.on_stranger_ack(&id, seq),
            OverlayMsg::Claim { .. }
            | OverlayMsg::Publish { .. }
            | OverlayMsg::Lookup { .. }
            | OverlayMsg::Store { .. }
            | OverlayMsg::Signal { .. }
            | OverlayMsg::MailPut { .. }
            | OverlayMsg::MailFetch { .. }
            | OverlayMsg::MailAck { .. }
            | OverlayMsg::MailCopy { .. } => {
                if let Some(msg) = self.on_index_msg(from, id, msg, now_ms) {
                    if let Some(msg) = self.on_mail_msg(from, id, msg, now_ms) {
                        self.on_peer_msg(from, id, msg, now_ms);
                    }
                }
            }
            other => {
                self.stats.overlay_refused += 1;
                debug!("overlay {} from stranger {from} refused", overlay_kind(&other));
            }
        }
        self.flush_membership(now_ms);
    }

    fn on_peer_msg(&mut self, from: SocketAddr, from_id: UserId, msg: OverlayMsg, now_ms: u64) {
        match msg {
            OverlayMsg::Signal { req, env } => {
                let dup = self.seen_signals.contains(&(from_id, req));
                let result = if env.to_supernode != self.cfg.advertise {
                    Err(Refusal::NotHere)
                } else {
                    match self.clients.get(&env.to) {
                        Some(&to) => {
                            if !dup {
                                self.send(to, Message::Signal(env));
                            }
                            Ok(())
                        }
                        None => Err(Refusal::CalleeGone),
                    }
                };
                if !dup {
                    self.seen_signals.push_back((from_id, req));
                    if self.seen_signals.len() > SEEN_SIGNALS {
                        self.seen_signals.pop_front();
                    }
                }
                self.send_overlay(from, OverlayMsg::SignalAck { req, result });
            }
            OverlayMsg::SignalAck { req, result } => {
                // Only the member the signal went to may answer for it (its id at its
                // address): a member that guesses request ids cannot fail (or confirm)
                // other members' calls.
                let Some(Pending::Signal { env, to_id, .. }) = self.pending.get(&req) else { return };
                if env.to_supernode != from || *to_id != from_id {
                    return self.refuse_answer("SignalAck", from);
                }
                if let Some(Pending::Signal { conn, env, .. }) = self.pending.remove(&req) {
                    self.signal_done(conn);
                    match result {
                        Ok(()) => self.stats.signals_routed += 1,
                        Err(reason) => self.signal_failed(conn, env.call_id, reason.to_string()),
                    }
                }
            }
            OverlayMsg::StunDialBack { transaction_id, mapped, to, padding } => {
                if self.dial_backs.take(now_ms) {
                    self.out.push_back(SnOutput::StunDialBack { transaction_id, mapped, to, padding });
                }
            }
            other => debug!("unexpected overlay message {} from {from}", overlay_kind(&other)),
        }
    }

    /// Seal and queue one overlay message for the member at `to`. A
    /// supernode known only by address (a seed) is first asked its id with a
    /// `Hello`; the message waits for the answer. Answers to an address that
    /// is no member's and has not proved itself are bounded by what came
    /// from it (no amplification).
    pub(super) fn send_overlay(&mut self, to: SocketAddr, msg: OverlayMsg) {
        let Some(id) = self.membership.id_at(&to).or_else(|| self.wire.id_at(&to)) else {
            return self.park(to, msg, self.clock_ms);
        };
        self.send_overlay_to(id, to, msg);
    }

    /// Seal and queue one overlay message for member `id` at `to`.
    fn send_overlay_to(&mut self, id: UserId, to: SocketAddr, msg: OverlayMsg) {
        let kind = overlay_kind(&msg);
        let now_ms = self.clock_ms;
        let limited = is_answer(&msg) && !self.membership.is_live_addr(&to);
        let packet = OverlayPacket { from: self.membership.me(), msg };
        match self.wire.seal(&id, to, &packet, limited, now_ms) {
            Ok(bytes) => self.out.push_back(SnOutput::Datagram { to, bytes, kind }),
            Err(e) => debug!("overlay {kind} to {to} not sent: {e}"),
        }
    }

    /// Keep a message for an address whose member we do not know yet, and
    /// ask who is there (at most once a second per address).
    fn park(&mut self, to: SocketAddr, msg: OverlayMsg, now_ms: u64) {
        if !self.parked.contains_key(&to) && self.parked.len() >= MAX_PARKED_ADDRS {
            return debug!("overlay message to {to} dropped: too many unknown addresses");
        }
        let (hello_ms, msgs) = self.parked.entry(to).or_insert((0, Vec::new()));
        if msgs.len() < MAX_PARKED_PER_ADDR {
            msgs.push(msg);
        }
        if *hello_ms == 0 || now_ms >= *hello_ms + 1_000 {
            *hello_ms = now_ms.max(1);
            self.out.push_back(SnOutput::Datagram { to, bytes: self.wire.hello(), kind: "Hello" });
        }
    }

    /// Send what the membership wants sent and act on live-set changes.
    pub(super) fn flush_membership(&mut self, now_ms: u64) {
        while let Some((to, msg)) = self.membership.poll_send() {
            self.send_overlay(to, msg);
        }
        while let Some((id, to, msg)) = self.membership.poll_confirm() {
            self.send_overlay_to(id, to, msg);
        }
        self.place_all(now_ms);
        let mut partner_may_change = false;
        while let Some(ev) = self.membership.poll_event() {
            match ev {
                MemberEvent::Up(m) => info!("supernode {} is a member (load {}%)", m.addr, m.load),
                MemberEvent::Down(m) => info!("supernode {} is down", m.addr),
            }
            partner_may_change = true;
            self.on_member_event(ev, now_ms);
        }
        if partner_may_change {
            let partner = self.dial_back_partner();
            if partner != self.partner {
                self.partner = partner;
                self.out.push_back(SnOutput::DialBackPartner(partner));
            }
        }
    }

    /// A call signal from one of our clients.
    pub(super) fn route_from_client(&mut self, conn: ConnId, env: SignalEnvelope, now_ms: u64) {
        if env.to_supernode == self.cfg.advertise {
            match self.clients.get(&env.to) {
                Some(&to) => {
                    self.stats.signals_routed += 1;
                    self.send(to, Message::Signal(env));
                }
                None => self.signal_failed(conn, env.call_id, "callee is not connected to its supernode".into()),
            }
            return;
        }
        // Signals go only to live members: a client must not aim this supernode's
        // datagrams at an address of its choosing.
        let Some(to_id) = self.membership.live().find(|m| m.addr == env.to_supernode).map(|m| m.id) else {
            return self.signal_failed(conn, env.call_id, "callee's supernode is not a member".into());
        };
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.signals >= MAX_SIGNALS_PER_CONN || self.pending.len() >= MAX_PENDING {
            return self.signal_failed(conn, env.call_id, "supernode busy".into());
        }
        c.signals += 1;
        self.retry_signal(0, conn, env, to_id, 0, now_ms);
    }

    /// A client's signal left the pending table (answered or given up).
    fn signal_done(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.signals = c.signals.saturating_sub(1);
        }
    }

    /// Send (or resend) a signal to the callee's supernode, member `to_id`;
    /// `req` 0 = new.
    pub(super) fn retry_signal(
        &mut self,
        req: u64,
        conn: ConnId,
        env: SignalEnvelope,
        to_id: UserId,
        tries: u8,
        now_ms: u64,
    ) {
        if tries >= MAX_TRIES {
            self.signal_done(conn);
            let reason = format!("callee's supernode {} does not answer", env.to_supernode);
            return self.signal_failed(conn, env.call_id, reason);
        }
        let req = if req == 0 { self.new_req() } else { req };
        self.send_overlay(env.to_supernode, OverlayMsg::Signal { req, env: env.clone() });
        let next = now_ms + RETRY_MS * (1 << tries);
        self.pending.insert(req, Pending::Signal { conn, env, to_id, tries: tries + 1, next });
    }

    fn signal_failed(&mut self, conn: ConnId, call_id: CallId, reason: String) {
        self.stats.signals_failed += 1;
        if self.conns.get(&conn).and_then(|c| c.user()).is_some() {
            self.send(conn, Message::SignalFailed { call_id, reason });
        }
    }

    /// Ask the supernode at `peer` to answer a client's STUN request from its
    /// address (NAT filtering discovery). False if it is not a live member.
    pub fn request_dial_back(
        &mut self,
        peer: SocketAddr,
        transaction_id: [u8; 12],
        mapped: SocketAddr,
        to: SocketAddr,
        padding: u16,
    ) -> bool {
        if !self.membership.is_live_addr(&peer) {
            return false;
        }
        self.send_overlay(peer, OverlayMsg::StunDialBack { transaction_id, mapped, to, padding });
        true
    }

    /// A live member to ask for dial-backs: the same one while it lives.
    pub fn dial_back_partner(&self) -> Option<SocketAddr> {
        self.membership.live().map(|m| m.addr).min()
    }
}
