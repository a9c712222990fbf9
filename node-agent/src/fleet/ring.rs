//! Who owns a slice: weighted rendezvous (highest random weight) hashing.
//!
//! Every member scores every key; the highest score owns it. A member's
//! score for a key is `-weight / ln(u)`, with `u` in (0, 1) drawn from a
//! hash of (member, key), so a member owns a share of keys proportional to
//! its weight, and adding or removing one member moves only the keys it
//! gains or loses (about 1/N of them), never keys between the others.
//! Every agent computes the same owners from the same member list, without
//! talking to the others.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::store::ObjectId;

/// The ownership key: an object and the fleet granule a slice falls in.
/// The granule is fixed for the fleet, so the tuner's slice-size changes
/// never move ownership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnershipKey {
    pub object: ObjectId,
    pub granule_index: u64,
}

impl OwnershipKey {
    pub fn new(object: ObjectId, offset: u64, granule: u64) -> Self {
        Self {
            object,
            granule_index: offset / granule.max(1),
        }
    }

    fn bytes(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..16].copy_from_slice(&self.object.0.to_le_bytes());
        out[16..].copy_from_slice(&self.granule_index.to_le_bytes());
        out
    }
}

/// One member of the ring.
#[derive(Clone, Debug, PartialEq)]
pub struct RingMember {
    pub name: String,
    /// Relative capacity; members of weight 0 own nothing.
    pub weight: f64,
    /// Precomputed from the name, so scoring a key hashes once per member.
    seed: u64,
}

impl RingMember {
    pub fn new(name: &str, weight: f64) -> Self {
        Self {
            name: name.to_string(),
            weight,
            seed: xxh3_64_with_seed(name.as_bytes(), 0x51CE_CAC4E),
        }
    }

    fn score(&self, key: &[u8; 24]) -> f64 {
        if self.weight <= 0.0 {
            return f64::NEG_INFINITY;
        }
        let h = xxh3_64_with_seed(key, self.seed);
        // u in (0, 1): never 0 (ln 0) nor 1 (ln 1 = 0, a division by zero).
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        -self.weight / u.ln()
    }
}

/// Which of `n` holders of `key` the member `name` asks: fixed per
/// (member, key) and spread evenly over the holders, independently of the
/// members' scores.
pub fn pick(name: &str, key: &OwnershipKey, n: usize) -> usize {
    let h = xxh3_64_with_seed(&key.bytes(), xxh3_64_with_seed(name.as_bytes(), 0x5B12_EAD5));
    (h % n.max(1) as u64) as usize
}

/// The members, in a stable order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ring {
    members: Vec<RingMember>,
}

impl Ring {
    /// A ring of `members`; duplicates by name keep the first.
    pub fn new(mut members: Vec<RingMember>) -> Self {
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members.dedup_by(|a, b| a.name == b.name);
        Self { members }
    }

    pub fn members(&self) -> &[RingMember] {
        &self.members
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The owner of `key`: the member with the highest score. Ties (which
    /// need equal 53-bit hashes) go to the name that sorts first.
    pub fn owner(&self, key: &OwnershipKey) -> Option<&RingMember> {
        let bytes = key.bytes();
        let mut best: Option<(&RingMember, f64)> = None;
        for m in &self.members {
            let s = m.score(&bytes);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((m, s));
            }
        }
        best.filter(|(_, s)| s.is_finite()).map(|(m, _)| m)
    }

    /// The members that may hold `key`, best first: the owner, then the
    /// members a request goes to when the owner sheds it (members of
    /// weight 0 are left out).
    pub fn ranked(&self, key: &OwnershipKey) -> Vec<&RingMember> {
        let bytes = key.bytes();
        let mut scored: Vec<(&RingMember, f64)> = self
            .members
            .iter()
            .map(|m| (m, m.score(&bytes)))
            .filter(|(_, s)| s.is_finite())
            .collect();
        // Stable: equal scores keep the name order, as in `owner`.
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.into_iter().map(|(m, _)| m).collect()
    }

    /// The share of all keys `name` owns (its weight over the total).
    pub fn owned_fraction(&self, name: &str) -> f64 {
        let total: f64 = self.members.iter().map(|m| m.weight.max(0.0)).sum();
        let own = self
            .members
            .iter()
            .find(|m| m.name == name)
            .map_or(0.0, |m| m.weight.max(0.0));
        if total > 0.0 {
            own / total
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ring(names: &[&str]) -> Ring {
        Ring::new(names.iter().map(|n| RingMember::new(n, 1.0)).collect())
    }

    fn keys(n: u64) -> Vec<OwnershipKey> {
        (0..n)
            .map(|i| OwnershipKey::new(ObjectId(u128::from(i / 16) * 0x9E37_79B9), (i % 16) << 22, 4 << 20))
            .collect()
    }

    fn owners(ring: &Ring, keys: &[OwnershipKey]) -> Vec<String> {
        keys.iter()
            .map(|k| ring.owner(k).expect("an owner").name.clone())
            .collect()
    }

    #[test]
    fn every_member_owns_about_its_share() {
        let ring = ring(&["node-a", "node-b", "node-c", "node-d"]);
        let keys = keys(40_000);
        for name in ["node-a", "node-b", "node-c", "node-d"] {
            let owned = owners(&ring, &keys).iter().filter(|o| *o == name).count();
            let share = owned as f64 / keys.len() as f64;
            assert!((0.23..0.27).contains(&share), "{name} owns {share}");
        }
    }

    #[test]
    fn weights_shift_the_shares() {
        let ring = Ring::new(vec![RingMember::new("big", 3.0), RingMember::new("small", 1.0)]);
        let keys = keys(40_000);
        let big = owners(&ring, &keys).iter().filter(|o| *o == "big").count() as f64 / keys.len() as f64;
        assert!((0.72..0.78).contains(&big), "big owns {big}");
        assert!((ring.owned_fraction("big") - 0.75).abs() < 1e-9);
    }

    #[test]
    fn adding_a_member_moves_only_its_new_keys() {
        let keys = keys(40_000);
        let before = owners(&ring(&["a", "b", "c"]), &keys);
        let after = owners(&ring(&["a", "b", "c", "d"]), &keys);
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        // Every moved key moved to the new member, and about 1/4 moved.
        assert!(moved.iter().all(|(_, a)| *a == "d"));
        let share = moved.len() as f64 / keys.len() as f64;
        println!("a fourth member takes {:.1}% of {} keys", share * 100.0, keys.len());
        assert!(share < 1.3 / 4.0 && share > 0.2, "{share} of the keys moved");
        // Removing it again moves them back, and only them.
        assert_eq!(owners(&ring(&["a", "b", "c"]), &keys), before);
    }

    #[test]
    fn the_ranking_starts_with_the_owner_and_lists_every_member_once() {
        let ring = ring(&["a", "b", "c", "d"]);
        let mut second = BTreeMap::new();
        for key in keys(4_000) {
            let ranked: Vec<_> = ring.ranked(&key).iter().map(|m| m.name.clone()).collect();
            assert_eq!(Some(&ranked[0]), ring.owner(&key).map(|m| &m.name));
            let mut sorted = ranked.clone();
            sorted.sort();
            assert_eq!(sorted, ["a", "b", "c", "d"]);
            *second.entry(ranked[1].clone()).or_insert(0) += 1;
        }
        // The next owner is spread like the owner, so shed load is too.
        assert!(second.values().all(|n| (800..1200).contains(n)), "{second:?}");
    }

    #[test]
    fn the_granule_not_the_slice_decides() {
        let ring = ring(&["a", "b", "c"]);
        let object = ObjectId(42);
        let granule = 4 << 20;
        let first = ring.owner(&OwnershipKey::new(object, 0, granule)).cloned();
        for offset in (0..granule).step_by(256 << 10) {
            assert_eq!(ring.owner(&OwnershipKey::new(object, offset, granule)).cloned(), first);
        }
    }

    #[test]
    fn member_order_and_duplicates_do_not_matter() {
        let keys = keys(1_000);
        assert_eq!(
            owners(&ring(&["a", "b", "c"]), &keys),
            owners(&ring(&["c", "a", "b", "a"]), &keys)
        );
        assert!(ring(&[]).owner(&keys[0]).is_none());
        let zero = Ring::new(vec![RingMember::new("z", 0.0)]);
        assert!(zero.owner(&keys[0]).is_none());
    }
}
