//! A Byzantine supernode — a test tool. It speaks the real protocol (its
//! datagrams are sealed with its own member key, like anyone's) with the
//! attacks of a malicious member in it: forged lookup answers, claims
//! granted to its accomplice and refused to everyone else, censored
//! requests, false accusations that would evict honest members, and claims
//! of the names it holds for keys of its own. The simulator turns a share of
//! its supernodes into these; the index tests use it against one member.
//! Nothing here runs unless [`Supernode::turn_byzantine`] was called.

use super::Supernode;
use crate::Identity;
use rand::Rng;
use std::net::SocketAddr;
use supervox_proto::overlay::{Member, MemberState, OverlayMsg};
use supervox_proto::{LookupAnswer, NameClaim, Presence, Refusal, UserId};

/// Which attacks a Byzantine supernode makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attacks {
    /// Answer every lookup with a claim and presence for the asked name
    /// signed by the accomplice (who would sit in the middle of calls).
    pub forge_lookups: bool,
    /// Grant every claim of the accomplice, refuse every other as taken.
    pub steal_claims: bool,
    /// Answer no publish, store, signal or mail put (records and calls it
    /// should carry vanish).
    pub censor: bool,
    /// Accuse a random live member of being dead in every ping and ack.
    pub evict: bool,
    /// Once a second, claim a name it holds for a fresh key of its own at
    /// the name's other holders.
    pub hijack: bool,
}

impl Attacks {
    /// Every attack at once.
    pub const ALL: Attacks =
        Attacks { forge_lookups: true, steal_claims: true, censor: true, evict: true, hijack: true };
}

/// A supernode's malice: what it does and the keys it signs lies with.
#[derive(Debug)]
pub struct Byzantine {
    attacks: Attacks,
    /// The accomplice: forged claims and presence are signed with its key.
    accomplice: Identity,
    /// Lies told, by kind (for the simulator's report).
    pub told: ByzantineCounts,
}

/// What a Byzantine supernode did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByzantineCounts {
    /// Lookups answered with a forgery.
    pub forged_lookups: u64,
    /// Claims answered with a lie (granted to the accomplice or refused).
    pub lied_claims: u64,
    /// Requests dropped unanswered.
    pub censored: u64,
    /// False accusations gossiped.
    pub accusations: u64,
    /// Names claimed for its own keys at their other holders.
    pub hijack_claims: u64,
}

impl Byzantine {
    /// Malice with `attacks`; lies are signed by `accomplice`.
    pub fn new(attacks: Attacks, accomplice: Identity) -> Self {
        Self { attacks, accomplice, told: ByzantineCounts::default() }
    }
}

impl Supernode {
    /// Make this supernode Byzantine (a test tool: see the module docs).
    pub fn turn_byzantine(&mut self, b: Byzantine) {
        self.byzantine = Some(Box::new(b));
    }

    /// What this supernode did as a Byzantine one, if it is one.
    pub fn byzantine_counts(&self) -> Option<ByzantineCounts> {
        self.byzantine.as_ref().map(|b| b.told)
    }

    /// A member request reaching a Byzantine supernode: answered with a lie
    /// or dropped (`None`), or handed back for honest handling.
    pub(super) fn byzantine_request(&mut self, from: SocketAddr, msg: OverlayMsg, now_ms: u64) -> Option<OverlayMsg> {
        let Some(b) = self.byzantine.as_mut() else { return Some(msg) };
        let a = b.attacks;
        match msg {
            OverlayMsg::Lookup { req, name } if a.forge_lookups => {
                let key = b.accomplice.signing_key();
                let (Ok(claim), Ok(presence)) = (
                    NameClaim::sign(key, &name, now_ms.saturating_sub(1)),
                    Presence::sign(key, &name, self.cfg.advertise, now_ms, now_ms + 60_000),
                ) else {
                    return None;
                };
                b.told.forged_lookups += 1;
                self.send_overlay(
                    from,
                    OverlayMsg::LookupAns { req, answer: LookupAnswer::Online { claim, presence } },
                );
                None
            }
            OverlayMsg::Claim { req, claim, .. } if a.steal_claims => {
                let result = if claim.user_id == b.accomplice.user_id() {
                    Ok(supervox_proto::Claimed::New)
                } else {
                    Err(Refusal::Taken)
                };
                b.told.lied_claims += 1;
                self.send_overlay(from, OverlayMsg::ClaimAns { req, result });
                None
            }
            OverlayMsg::Publish { .. }
            | OverlayMsg::Store { .. }
            | OverlayMsg::Signal { .. }
            | OverlayMsg::MailPut { .. }
                if a.censor =>
            {
                b.told.censored += 1;
                None
            }
            other => Some(other),
        }
    }

    /// Gossip a Byzantine supernode adds to what it sends: a member it
    /// claims is dead, at the incarnation everyone knows.
    pub(super) fn byzantine_gossip(&mut self, msg: &mut OverlayMsg) {
        let Some(b) = self.byzantine.as_mut() else { return };
        if !b.attacks.evict {
            return;
        }
        let (OverlayMsg::Ping { updates, .. } | OverlayMsg::Ack { updates, .. }) = msg else { return };
        let n = self.membership.live_count();
        if n == 0 {
            return;
        }
        let pick = self.rng.gen_range(0..n);
        if let Some(victim) = self.membership.live().nth(pick) {
            b.told.accusations += 1;
            updates.push(Member { state: MemberState::Dead, ..victim });
        }
    }

    /// Once a housekeeping period: claim one name this supernode holds for
    /// a fresh key at the name's other holders (answers are never waited
    /// for: the holders' own rules decide).
    pub(super) fn byzantine_housekeeping(&mut self, now_ms: u64) {
        let Some(b) = self.byzantine.as_mut() else { return };
        if !b.attacks.hijack {
            return;
        }
        let n = self.directory.claim_count();
        if n == 0 {
            return;
        }
        let pick = self.rng.gen_range(0..n);
        let Some(name) = self.directory.claims().nth(pick).map(|c| c.name.clone()) else { return };
        let thief = Identity::from_seed(self.rng.gen());
        let Ok(claim) = NameClaim::sign(thief.signing_key(), &name, now_ms) else { return };
        b.told.hijack_claims += 1;
        let me: UserId = self.me;
        for h in self.holders_of(&name) {
            if h.id != me {
                let req = self.rng.gen::<u64>() | 1;
                self.send_overlay(h.addr, OverlayMsg::Claim { req, claim: claim.clone(), renew_only: false });
            }
        }
    }
}
