//! Promotion: a client that may serve as a supernode (`--supernode auto`)
//! volunteers once it has been signed in long enough and its probe shows a
//! public address with UDP; its supernode promotes it when the network needs
//! capacity and a TCP connection to it works (see `Supernode::volunteer`).

use super::{Client, ClientEvent};
use std::net::SocketAddr;
use supervox_proto::Message;
use tracing::info;

/// How often a volunteer asks again.
const VOLUNTEER_EVERY_MS: u64 = 10_000;
/// A node that stepped back does not volunteer again for this long.
pub const VOLUNTEER_AFTER_STEP_BACK_MS: u64 = 600_000;

/// Settings of a client that may become a supernode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolunteerConfig {
    /// Where its supernode would listen (TCP and UDP, already bound).
    pub advertise: SocketAddr,
    /// Signed in at least this long before volunteering.
    pub after_ms: u64,
}

/// Promotion state of a client.
#[derive(Debug, Default)]
pub(super) struct Promotion {
    /// Signed in continuously since.
    since_ms: Option<u64>,
    next_try_ms: u64,
    promoted: bool,
}

impl Client {
    /// Whether this client was promoted to supernode.
    pub fn promoted(&self) -> bool {
        self.promotion.promoted
    }

    /// A volunteer that is signed in starts counting at once, and offers
    /// itself when it has been signed in long enough on a public address.
    pub(super) fn promotion_timeout(&self) -> Option<u64> {
        let v = self.cfg.volunteer?;
        if self.promotion.promoted || self.supernode().is_none() {
            return None;
        }
        let Some(since) = self.promotion.since_ms else { return Some(0) };
        // Not public yet: the probe's result is an input, after which we are asked again.
        let public = self.reach.as_ref().is_some_and(|r| r.udp && r.public);
        public.then(|| (since + v.after_ms).max(self.promotion.next_try_ms))
    }

    pub(super) fn tick_promotion(&mut self, now_ms: u64) {
        let Some(v) = self.cfg.volunteer else {
            return;
        };
        if self.promotion.promoted {
            return;
        }
        if self.supernode().is_none() {
            self.promotion.since_ms = None;
            return;
        }
        let since = *self.promotion.since_ms.get_or_insert(now_ms);
        let public = self.reach.as_ref().is_some_and(|r| r.udp && r.public);
        if now_ms < since + v.after_ms || now_ms < self.promotion.next_try_ms || !public {
            return;
        }
        self.promotion.next_try_ms = now_ms + VOLUNTEER_EVERY_MS;
        info!("volunteering as a supernode at {}", v.advertise);
        self.send_sn(Message::Volunteer { advertise: v.advertise });
    }

    /// Our supernode stepped back: the role is client again. `advertise`
    /// is where a later supernode would listen (`None`: it cannot, so we
    /// stop volunteering). No new offer for [`VOLUNTEER_AFTER_STEP_BACK_MS`].
    pub fn on_stepped_back(&mut self, now_ms: u64, advertise: Option<SocketAddr>) {
        self.promotion.promoted = false;
        self.promotion.since_ms = None;
        self.promotion.next_try_ms = now_ms + VOLUNTEER_AFTER_STEP_BACK_MS;
        match (advertise, self.cfg.volunteer.as_mut()) {
            (Some(a), Some(v)) => v.advertise = a,
            _ => self.cfg.volunteer = None,
        }
    }

    pub(super) fn on_promote(&mut self, network_key: [u8; 32], seeds: Vec<SocketAddr>, difficulty: u8) {
        if self.cfg.volunteer.is_none() || self.promotion.promoted {
            return;
        }
        self.promotion.promoted = true;
        info!("promoted to supernode; joining through {seeds:?}");
        self.event(ClientEvent::Promoted { network_key, seeds, difficulty });
    }
}
