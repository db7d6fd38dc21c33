//! The member table: every supernode a supernode knows, compactly.
//!
//! A one-hop index needs every supernode to know (almost) every other, so at
//! 10 000 supernodes a simulator process holds 10^8 entries and a daemon
//! 10^4. An entry is 64 bytes in a slab (`Vec`) and 4 bytes in an index of
//! slot numbers (`hashbrown::HashTable<u32>`, hashed over the whole id with
//! a per-process random key, so ids made to share a prefix do not share a
//! bucket), plus 4 in an index by address (which member a datagram goes to);
//! the id is stored once, the address without IPv6 flow information, and the
//! gossip bookkeeping lives in the entry instead of a second map.

use crate::overlay::rendezvous::weight;
use hashbrown::HashTable;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use supervox_proto::overlay::{Member, MemberState};
use supervox_proto::UserId;

/// One known supernode.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub id: UserId,
    /// The address as IPv6 (an IPv4 address mapped, `::ffff:a.b.c.d`): 16
    /// bytes where `IpAddr` takes 17, which keeps the slot at 64 with the nonce.
    ip: [u8; 16],
    port: u16,
    pub incarnation: u32,
    /// Its proof-of-work nonce (verified before it entered the table).
    pub nonce: u32,
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
            nonce: self.nonce,
        }
    }

    /// `ip` as the table gives it back.
    pub fn canonical(ip: IpAddr) -> IpAddr {
        let v6 = Ipv6Addr::from(ip16(ip));
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }

    pub fn ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.ip);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.port)
    }

    fn addr_hash(&self) -> u64 {
        addr_hash(self.ip(), self.port)
    }

    /// Alive or suspect (suspects still hold their records).
    pub fn is_live(&self) -> bool {
        matches!(self.state, Some(MemberState::Alive | MemberState::Suspect))
    }

    /// Take a member's news (id unchanged); [`MemberTable::set`] keeps the indexes.
    fn set(&mut self, m: &Member) {
        self.ip = ip16(m.addr.ip());
        self.port = m.addr.port();
        self.incarnation = m.incarnation;
        self.nonce = m.nonce;
        self.state = Some(m.state);
        self.load = m.load;
    }
}

/// An address as stored: IPv4 mapped into IPv6. (A member advertising an
/// IPv4-mapped IPv6 address is therefore known by the IPv4 address it maps.)
fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A random key per process: an attacker who picks ids cannot aim them at
/// one bucket of anyone's table.
fn table_key() -> u64 {
    static KEY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x7ab1e);
        h.finish()
    })
}

fn hash(id: &UserId) -> u64 {
    id.0.chunks_exact(8).fold(table_key(), |acc, w| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        weight(acc, u64::from_le_bytes(b))
    })
}

fn addr_hash(ip: IpAddr, port: u16) -> u64 {
    let (hi, lo) = match ip {
        IpAddr::V4(v4) => (0, u64::from(u32::from(v4))),
        IpAddr::V6(v6) => {
            let b = u128::from(v6);
            ((b >> 64) as u64, b as u64)
        }
    };
    weight(weight(table_key() ^ hi, lo), u64::from(port))
}

/// Slab of slots plus an index by id; slot numbers are stable until removed.
#[derive(Debug, Default)]
pub(super) struct MemberTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashTable<u32>,
    /// Slot numbers by address: the latest member to take an address wins.
    by_addr: HashTable<u32>,
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
        self.by_addr.reserve(n, |&j| slots[j as usize].addr_hash());
    }

    /// The slot of the member at `addr`.
    pub fn find_addr(&self, addr: &SocketAddr) -> Option<u32> {
        let addr = &SocketAddr::new(Slot::canonical(addr.ip()), addr.port());
        let slots = &self.slots;
        let h = addr_hash(addr.ip(), addr.port());
        self.by_addr.find(h, |&i| slots[i as usize].addr() == *addr).copied()
    }

    fn unindex_addr(&mut self, i: u32) {
        let slots = &self.slots;
        let s = &slots[i as usize];
        if let Ok(e) = self.by_addr.find_entry(s.addr_hash(), |&j| j == i) {
            e.remove();
        }
    }

    fn index_addr(&mut self, i: u32) {
        let addr = self.slots[i as usize].addr();
        if let Some(j) = self.find_addr(&addr) {
            self.unindex_addr(j);
        }
        let slots = &self.slots;
        self.by_addr.insert_unique(slots[i as usize].addr_hash(), i, |&j| slots[j as usize].addr_hash());
    }

    /// Take a member's news in slot `i` (id unchanged), keeping the address index.
    pub fn set(&mut self, i: u32, m: &Member) {
        let Some(s) = self.slot(i) else { return };
        let moved = s.addr() != SocketAddr::new(Slot::canonical(m.addr.ip()), m.addr.port());
        if moved {
            self.unindex_addr(i);
        }
        self.slots[i as usize].set(m);
        if moved {
            self.index_addr(i);
        }
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
            ip: ip16(m.addr.ip()),
            port: m.addr.port(),
            incarnation: m.incarnation,
            nonce: m.nonce,
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
        self.index_addr(i);
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
        self.unindex_addr(i);
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
            nonce: u32::from(i),
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
