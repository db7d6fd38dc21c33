//! The member table: every supernode a supernode knows, compactly.
//!
//! A one-hop index needs every supernode to know (almost) every other, so at
//! 10 000 supernodes a simulator process holds 10^8 entries and a daemon
//! 10^4. An entry is 64 bytes in a slab (`Vec`) and 4 bytes in an index of
//! slot numbers (`hashbrown::HashTable<u32>`, hashed by the id's rendezvous
//! seed); the id is stored once, the address without IPv6 flow information,
//! and the gossip bookkeeping lives in the entry instead of a second map.

use crate::overlay::rendezvous::{member_seed, weight};
use hashbrown::HashTable;
use std::net::{IpAddr, SocketAddr};
use supervox_proto::overlay::{Member, MemberState};
use supervox_proto::UserId;

/// One known supernode.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub id: UserId,
    ip: IpAddr,
    port: u16,
    pub incarnation: u32,
    /// `None`: the slot is free.
    pub state: Option<MemberState>,
    pub load: u8,
    /// Smoothed RTT of our direct probes, ms (0: not measured).
    pub srtt_ms: u16,
    /// Times its current state is still to be piggybacked (0: not queued).
    pub gossip_left: u8,
    /// Bumped each time it is queued: older places in the queue are stale.
    pub gossip_stamp: u8,
}

impl Slot {
    /// The member as sent on the wire.
    pub fn member(&self) -> Member {
        Member {
            id: self.id,
            addr: self.addr(),
            incarnation: self.incarnation,
            state: self.state.unwrap_or(MemberState::Dead),
            load: self.load,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// Alive or suspect (suspects still hold their records).
    pub fn is_live(&self) -> bool {
        matches!(self.state, Some(MemberState::Alive | MemberState::Suspect))
    }

    /// Take a member's news (id unchanged).
    pub fn set(&mut self, m: &Member) {
        self.ip = m.addr.ip();
        self.port = m.addr.port();
        self.incarnation = m.incarnation;
        self.state = Some(m.state);
        self.load = m.load;
    }
}

fn hash(id: &UserId) -> u64 {
    weight(member_seed(id), 0x7ab1e)
}

/// Slab of slots plus an index by id; slot numbers are stable until removed.
#[derive(Debug, Default)]
pub(super) struct MemberTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashTable<u32>,
}

impl MemberTable {
    /// Entries held (any state).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Make room for `n` more entries, exactly (a warm start knows how many
    /// it will learn; doubling growth would waste up to half of 10^8
    /// entries' memory in the simulator).
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve_exact(n);
        let slots = &self.slots;
        self.index.reserve(n, |&j| hash(&slots[j as usize].id));
    }

    /// The slot of `id`.
    pub fn find(&self, id: &UserId) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(hash(id), |&i| slots[i as usize].id == *id).copied()
    }

    /// The slot numbered `i` (free or not).
    pub fn slot(&self, i: u32) -> Option<&Slot> {
        self.slots.get(i as usize).filter(|s| s.state.is_some())
    }

    /// The slot numbered `i`, to change (not its id).
    pub fn slot_mut(&mut self, i: u32) -> Option<&mut Slot> {
        self.slots.get_mut(i as usize).filter(|s| s.state.is_some())
    }

    /// The entry of `id`.
    pub fn get(&self, id: &UserId) -> Option<&Slot> {
        self.find(id).and_then(|i| self.slot(i))
    }

    /// The entry of `id`, to change.
    pub fn get_mut(&mut self, id: &UserId) -> Option<&mut Slot> {
        let i = self.find(id)?;
        self.slot_mut(i)
    }

    /// Add a member not in the table; its slot number.
    pub fn insert(&mut self, m: &Member) -> u32 {
        let slot = Slot {
            id: m.id,
            ip: m.addr.ip(),
            port: m.addr.port(),
            incarnation: m.incarnation,
            state: Some(m.state),
            load: m.load,
            srtt_ms: 0,
            gossip_left: 0,
            gossip_stamp: 0,
        };
        let i = match self.free.pop() {
            Some(i) => {
                // A new stamp: the last occupant's places in the gossip
                // queue stay stale.
                let stamp = self.slots[i as usize].gossip_stamp.wrapping_add(1);
                self.slots[i as usize] = Slot { gossip_stamp: stamp, ..slot };
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(hash(&m.id), i, |&j| hash(&slots[j as usize].id));
        i
    }

    /// Forget the member in slot `i`.
    pub fn remove(&mut self, i: u32) {
        let Some(s) = self.slot(i) else { return };
        let id = s.id;
        let slots = &self.slots;
        if let Ok(e) = self.index.find_entry(hash(&id), |&j| slots[j as usize].id == id) {
            e.remove();
        }
        self.slots[i as usize].state = None;
        self.slots[i as usize].gossip_left = 0;
        self.free.push(i);
    }

    /// Occupied slots with their numbers.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Slot)> {
        self.slots.iter().enumerate().filter(|(_, s)| s.state.is_some()).map(|(i, s)| (i as u32, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: u16) -> Member {
        let mut id = [0u8; 32];
        id[..2].copy_from_slice(&i.to_le_bytes());
        Member {
            id: UserId(id),
            addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 7000)),
            incarnation: 1,
            state: MemberState::Alive,
            load: 3,
        }
    }

    #[test]
    fn an_entry_is_64_bytes_and_slots_are_reused() {
        assert!(std::mem::size_of::<Slot>() <= 64, "{}", std::mem::size_of::<Slot>());
        let mut t = MemberTable::default();
        let slots: Vec<u32> = (0..100).map(|i| t.insert(&member(i))).collect();
        assert_eq!(t.len(), 100);
        assert_eq!(t.get(&member(42).id).map(|s| s.member()), Some(member(42)));
        t.remove(slots[42]);
        assert!(t.get(&member(42).id).is_none());
        assert_eq!(t.len(), 99);
        // The freed slot is reused, and every other entry is still found.
        assert_eq!(t.insert(&member(1000)), slots[42]);
        for i in (0..100).filter(|i| *i != 42) {
            assert_eq!(t.get(&member(i).id).map(|s| s.addr()), Some(member(i).addr));
        }
        assert_eq!(t.iter().count(), 100);
    }
}
