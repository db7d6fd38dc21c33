//! The host cache: supernode addresses a client knows, persisted between
//! runs, at most [`MAX_ENTRIES`] (as Skype's did).

use std::net::SocketAddr;

/// Most entries kept.
pub const MAX_ENTRIES: usize = 200;

/// An ordered, bounded list of supernode addresses. Seeds and recently good
/// supernodes go to the front; failures move an entry to the back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCache {
    entries: Vec<SocketAddr>,
}

impl HostCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries, best first.
    pub fn entries(&self) -> &[SocketAddr] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is nothing to try.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add an address at the back if it is new.
    pub fn add(&mut self, addr: SocketAddr) {
        if !self.entries.contains(&addr) && self.entries.len() < MAX_ENTRIES {
            self.entries.push(addr);
        }
    }

    /// Move (or insert) an address to the front: it just worked.
    pub fn promote(&mut self, addr: SocketAddr) {
        self.entries.retain(|a| *a != addr);
        self.entries.insert(0, addr);
        self.entries.truncate(MAX_ENTRIES);
    }

    /// Move an address to the back: it just failed.
    pub fn demote(&mut self, addr: SocketAddr) {
        if let Some(pos) = self.entries.iter().position(|a| *a == addr) {
            let a = self.entries.remove(pos);
            self.entries.push(a);
        }
    }

    /// Serialise as one address per line.
    pub fn to_text(&self) -> String {
        self.entries.iter().map(|a| format!("{a}\n")).collect()
    }

    /// Parse the text form; bad lines are skipped (the cache is a hint).
    pub fn from_text(text: &str) -> Self {
        let mut c = Self::new();
        for line in text.lines() {
            if let Ok(a) = line.trim().parse() {
                c.add(a);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn bounded_ordered_persistent() {
        let mut c = HostCache::new();
        for p in 0..300 {
            c.add(a(p));
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        c.promote(a(250));
        assert_eq!(c.entries()[0], a(250));
        assert_eq!(c.len(), MAX_ENTRIES);
        c.demote(a(250));
        assert_eq!(*c.entries().last().unwrap(), a(250));
        let back = HostCache::from_text(&(c.to_text() + "garbage\n"));
        assert_eq!(back, c);
    }
}
