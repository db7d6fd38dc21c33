//! Rendezvous (highest-random-weight) hashing: which supernodes hold a key.
//!
//! Every supernode computes the same holders from the same live set, with no
//! coordination: each member gets a weight `mix(hash(key) ^ mix(seed(member)))`
//! (the seed from the member's proof of work, `admission.rs`)
//! and the R heaviest hold the record. When a member joins or leaves, only
//! the keys it wins or held move (about R/N of them), which keeps hand-off
//! small. The hash is fixed (FNV-1a then a SplitMix64 finaliser) so that
//! every build and platform agrees.

use supervox_proto::UserId;

/// Hash of a record key (a name).
pub fn key_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// The first 8 bytes of a member's public key: breaks ties of weight (which
/// need equal seeds, a 2^-64 chance) the same way everywhere, and buckets
/// members for anti-entropy. Not a member's seed: that comes from its proof
/// of work ([`crate::overlay::admission`]), so it cannot be chosen by
/// grinding keys.
pub fn id_word(id: &UserId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(b)
}

/// The weight of a member's seed for `key_hash` (ties are broken by [`id_word`]).
pub fn weight(key_hash: u64, member_seed: u64) -> u64 {
    mix(key_hash ^ mix(member_seed))
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `r` heaviest of `members` for `key_hash`, heaviest first: `(weight,
/// item)`. One pass, keeping a small sorted array: O(N·r).
pub fn top<T: Copy>(key_hash: u64, members: impl Iterator<Item = (u64, T)>, r: usize) -> Vec<(u64, T)> {
    let mut best: Vec<(u64, u64, T)> = Vec::with_capacity(r + 1);
    for (seed, item) in members {
        let w = weight(key_hash, seed);
        if best.len() == r && best.last().is_some_and(|l| (l.0, l.1) >= (w, seed)) {
            continue;
        }
        let at = best.iter().position(|b| (b.0, b.1) < (w, seed)).unwrap_or(best.len());
        best.insert(at, (w, seed, item));
        best.truncate(r);
    }
    best.into_iter().map(|(w, _, t)| (w, t)).collect()
}

/// `mix(member_seed)`: a member's share of [`weight`], computed once per
/// member so that ranking N members costs one mix each.
pub fn premix(member_seed: u64) -> u64 {
    mix(member_seed)
}

/// [`top`] over members given as `(premix(seed), item)`: the same ranking,
/// half the work. `seed_of` gives an item's seed, needed only to break a tie
/// of weights.
pub fn top_premixed<T: Copy>(
    key_hash: u64,
    members: impl Iterator<Item = (u64, T)>,
    r: usize,
    seed_of: impl Fn(&T) -> u64,
) -> Vec<(u64, T)> {
    let mut best: Vec<(u64, T)> = Vec::with_capacity(r + 1);
    let heavier = |a: &(u64, T), b: &(u64, T)| a.0 > b.0 || (a.0 == b.0 && seed_of(&a.1) > seed_of(&b.1));
    for (pm, item) in members {
        let cand = (mix(key_hash ^ pm), item);
        if best.len() == r && best.last().is_some_and(|l| !heavier(&cand, l)) {
            continue;
        }
        let at = best.iter().position(|b| heavier(&cand, b)).unwrap_or(best.len());
        best.insert(at, cand);
        best.truncate(r);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_stable_and_move_little_when_membership_changes() {
        let seeds: Vec<u64> = (0..100u64).map(|i| mix(i + 1)).collect();
        let keys: Vec<u64> = (0..2000).map(|i| key_hash(&format!("user{i}"))).collect();
        let holders = |set: &[u64], k: u64| -> Vec<u64> {
            top(k, set.iter().map(|s| (*s, *s)), 3).into_iter().map(|(_, s)| s).collect()
        };
        // The same inputs give the same holders, in the same order.
        assert_eq!(holders(&seeds, keys[0]), holders(&seeds, keys[0]));
        // Order of iteration does not matter.
        let mut rev = seeds.clone();
        rev.reverse();
        assert!(keys.iter().all(|k| holders(&seeds, *k) == holders(&rev, *k)));
        // Load spreads: every member holds some keys, none holds far too many
        // (mean 60 per member).
        let mut count = std::collections::HashMap::new();
        for k in &keys {
            for h in holders(&seeds, *k) {
                *count.entry(h).or_insert(0) += 1;
            }
        }
        assert_eq!(count.len(), 100);
        assert!(count.values().all(|c| *c < 120), "{count:?}");
        // Removing one member changes only the holder sets it was in.
        let gone = seeds[17];
        let rest: Vec<u64> = seeds.iter().copied().filter(|s| *s != gone).collect();
        for k in &keys {
            let before = holders(&seeds, *k);
            let after = holders(&rest, *k);
            if before.contains(&gone) {
                assert!(before.iter().filter(|s| **s != gone).all(|s| after.contains(s)));
            } else {
                assert_eq!(before, after);
            }
        }
        // Fewer members than R: all of them.
        assert_eq!(holders(&seeds[..2], keys[3]).len(), 2);
        // Premixed seeds rank exactly as `top` does.
        for k in &keys {
            let pre = top_premixed(*k, seeds.iter().map(|s| (premix(*s), *s)), 3, |s| *s);
            assert_eq!(pre, top(*k, seeds.iter().map(|s| (*s, *s)), 3));
        }
    }
}
