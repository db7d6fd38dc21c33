//! Anti-replay window for per-packet AEAD counters (as in IPsec and WireGuard).
//!
//! The window remembers the highest counter accepted so far and which of the
//! [`WINDOW_SIZE`] counters at or below it were seen. A counter is accepted once, if it is
//! newer than the highest or inside the window and not yet seen. Call
//! [`ReplayWindow::accept`] only *after* the packet has been authenticated, otherwise a
//! forged counter could advance the window.

/// Number of counters tracked below (and including) the highest accepted one.
pub const WINDOW_SIZE: u64 = 1024;
const WORDS: usize = (WINDOW_SIZE / 64) as usize;

/// Sliding anti-replay bitmap of [`WINDOW_SIZE`] counters.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// Highest counter accepted so far, `None` before the first.
    top: Option<u64>,
    /// Bit `c % WINDOW_SIZE` is set when counter `c` (within the window) was seen.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// Creates an empty window that accepts any first counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns `true` if `counter` is seen for the first time and is not older than the
    /// window, recording it; returns `false` for duplicates and too-old counters.
    pub fn accept(&mut self, counter: u64) -> bool {
        match self.top {
            None => {
                self.top = Some(counter);
                self.set(counter);
                true
            }
            Some(top) if counter > top => {
                let advance = counter - top;
                if advance >= WINDOW_SIZE {
                    self.bits = [0; WORDS];
                } else {
                    for c in top + 1..=counter {
                        self.clear(c);
                    }
                }
                self.top = Some(counter);
                self.set(counter);
                true
            }
            Some(top) => {
                if top - counter >= WINDOW_SIZE || self.is_set(counter) {
                    false
                } else {
                    self.set(counter);
                    true
                }
            }
        }
    }

    /// Highest counter accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.top
    }

    fn pos(counter: u64) -> (usize, u64) {
        let bit = counter % WINDOW_SIZE;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn set(&mut self, counter: u64) {
        let (w, m) = Self::pos(counter);
        self.bits[w] |= m;
    }

    fn clear(&mut self, counter: u64) {
        let (w, m) = Self::pos(counter);
        self.bits[w] &= !m;
    }

    fn is_set(&self, counter: u64) -> bool {
        let (w, m) = Self::pos(counter);
        self.bits[w] & m != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicates() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(1));
        assert!(!w.accept(1));
        assert!(!w.accept(0));
        assert_eq!(w.highest(), Some(1));
    }

    #[test]
    fn accepts_out_of_order_within_window() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(2000));
        assert!(w.accept(1990));
        assert!(w.accept(2000 - WINDOW_SIZE + 1)); // oldest still inside
        assert!(w.accept(1995));
        assert!(!w.accept(1990));
        assert!(w.accept(2005));
        assert!(w.accept(2001));
        assert!(!w.accept(2005));
        assert!(!w.accept(1995));
    }

    #[test]
    fn rejects_too_old() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(5000));
        assert!(!w.accept(5000 - WINDOW_SIZE));
        assert!(!w.accept(0));
        // After a big jump everything before the new window is too old, even unseen.
        assert!(w.accept(100_000));
        assert!(!w.accept(5001));
        assert!(w.accept(100_000 - 1));
    }

    #[test]
    fn slot_reuse_after_advance() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(10));
        // 10 + WINDOW_SIZE maps to the same bit; it must be accepted as new,
        // and 10 then counts as too old.
        assert!(w.accept(10 + WINDOW_SIZE));
        assert!(!w.accept(10));
        assert!(w.accept(11)); // not seen before, still inside
        assert!(!w.accept(10 + WINDOW_SIZE));
    }

    #[test]
    fn extremes() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
        assert!(w.accept(u64::MAX - 1));
        assert!(!w.accept(0));
    }

    #[test]
    fn exhaustive_against_model() {
        use std::collections::HashSet;
        let mut w = ReplayWindow::new();
        let mut seen = HashSet::new();
        let mut top = 0u64;
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let delta = (x >> 33) % 1500;
            let c = if (x >> 20) & 1 == 0 { top + delta / 8 } else { top.saturating_sub(delta) };
            let expect = !seen.contains(&c) && (c > top || top - c < WINDOW_SIZE || seen.is_empty());
            assert_eq!(w.accept(c), expect, "counter {c} top {top}");
            if expect {
                seen.insert(c);
                top = top.max(c);
            }
        }
    }
}
