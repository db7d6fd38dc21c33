//! Lookups a supernode forwards to its peers on behalf of a client.

use super::{better_answer, Supernode, LOOKUP_TIMEOUT_MS, MAX_LOOKUPS_PER_CONN};
use crate::ConnId;
use supervox_proto::{LookupAnswer, Message};
use tracing::debug;

/// A client lookup waiting for answers from other supernodes.
#[derive(Debug)]
pub(super) struct PendingLookup {
    conn: ConnId,
    client_req: u64,
    name: String,
    waiting: usize,
    best: LookupAnswer,
    deadline_ms: u64,
}

impl Supernode {
    pub(super) fn client_lookup(&mut self, conn: ConnId, req_id: u64, name: String, now_ms: u64) {
        self.stats.lookups += 1;
        let local = self.directory.lookup(&name, now_ms);
        if matches!(local, LookupAnswer::Online { .. }) || self.peers.is_empty() {
            self.send(conn, Message::LookupResult { req_id, answer: local });
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.lookups >= MAX_LOOKUPS_PER_CONN {
            self.send(conn, Message::Error { reason: "too many lookups in flight".into() });
            return;
        }
        c.lookups += 1;
        self.stats.lookups_forwarded += 1;
        let ours = self.next_req;
        self.next_req += 1;
        let peers: Vec<ConnId> = self.peers.values().copied().collect();
        for p in &peers {
            self.send(*p, Message::Lookup { req_id: ours, name: name.clone() });
        }
        self.lookups.insert(
            ours,
            PendingLookup {
                conn,
                client_req: req_id,
                name,
                waiting: peers.len(),
                best: local,
                deadline_ms: now_ms + LOOKUP_TIMEOUT_MS,
            },
        );
    }

    /// An answer from a peer. Peers are not trusted: records are verified
    /// again and must match the name asked for.
    pub(super) fn peer_answer(&mut self, req_id: u64, answer: LookupAnswer, now_ms: u64) {
        let Some(p) = self.lookups.get_mut(&req_id) else {
            return;
        };
        let valid = match &answer {
            LookupAnswer::Online { claim, presence } => {
                claim.verify().is_ok()
                    && claim.name == p.name
                    && presence.verify(now_ms).is_ok()
                    && presence.user_id == claim.user_id
                    && presence.name == claim.name
            }
            LookupAnswer::Offline { claim } => claim.verify().is_ok() && claim.name == p.name,
            LookupAnswer::Unknown => true,
        };
        if !valid {
            debug!("discarding invalid lookup answer from a peer");
        } else {
            let best = std::mem::replace(&mut p.best, LookupAnswer::Unknown);
            p.best = better_answer(best, answer);
        }
        p.waiting = p.waiting.saturating_sub(1);
        if p.waiting == 0 || matches!(p.best, LookupAnswer::Online { .. }) {
            self.finish_lookup(req_id);
        }
    }

    pub(super) fn expire_lookups(&mut self, now_ms: u64) {
        let due: Vec<u64> = self.lookups.iter().filter(|(_, p)| p.deadline_ms <= now_ms).map(|(k, _)| *k).collect();
        for k in due {
            self.finish_lookup(k);
        }
    }

    fn finish_lookup(&mut self, req_id: u64) {
        let Some(p) = self.lookups.remove(&req_id) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&p.conn) {
            c.lookups = c.lookups.saturating_sub(1);
            self.send(p.conn, Message::LookupResult { req_id: p.client_req, answer: p.best });
        }
    }
}
