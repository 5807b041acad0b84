//! The simulated network: which links are cut, and what happens to a packet.
//!
//! Loss, duplication and latency are drawn per message from the seed's
//! `Params`; reordering falls out of random latency. Partitions cut links
//! between groups of nodes: symmetric (both ways), one-way (A hears B, B
//! does not hear A) and bridged (two halves that cannot talk, and one node
//! that talks to both; the classic way to make two leaders look plausible).
//!
//! Invariants:
//! 1. A packet crosses a link only if the link is up both when it is sent
//!    and when it arrives (a cut also drops what was in flight).
//! 2. `heal` restores every link; the liveness phase relies on it.

use rand::seq::SliceRandom;
use rand::Rng;
use std::fmt;

/// The shape of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionKind {
    /// No link between the two groups.
    Symmetric,
    /// The first group cannot reach the second; the reverse works.
    OneWay,
    /// Two groups cut from each other, plus one node linked to both.
    Bridge,
    /// One node cut from everyone.
    Isolate,
}

/// Link state between every ordered pair of nodes.
#[derive(Clone, Debug)]
pub struct Links {
    n: usize,
    /// `cut[from * n + to]`.
    cut: Vec<bool>,
    /// The active partition, for traces.
    pub active: Option<(PartitionKind, Vec<usize>, Vec<usize>)>,
}

impl Links {
    /// All links up.
    pub fn new(n: usize) -> Links {
        Links {
            n,
            cut: vec![false; n * n],
            active: None,
        }
    }

    /// Whether `from` can currently reach `to`.
    pub fn up(&self, from: usize, to: usize) -> bool {
        !self.cut[from * self.n + to]
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.iter_mut().for_each(|c| *c = false);
        self.active = None;
    }

    fn cut_between(&mut self, a: &[usize], b: &[usize], both_ways: bool) {
        for &x in a {
            for &y in b {
                self.cut[x * self.n + y] = true;
                if both_ways {
                    self.cut[y * self.n + x] = true;
                }
            }
        }
    }

    /// Draws and applies a random partition.
    pub fn partition<R: Rng>(&mut self, rng: &mut R) {
        let n = self.n;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        let kind = match rng.gen_range(0..4) {
            0 => PartitionKind::Symmetric,
            1 => PartitionKind::OneWay,
            2 if n >= 3 => PartitionKind::Bridge,
            _ => PartitionKind::Isolate,
        };
        let (a, b) = match kind {
            PartitionKind::Isolate => (vec![order[0]], order[1..].to_vec()),
            PartitionKind::Bridge => {
                // order[0] is the bridge; split the rest.
                let rest = &order[1..];
                let k = rng.gen_range(1..rest.len());
                (rest[..k].to_vec(), rest[k..].to_vec())
            }
            _ => {
                let k = rng.gen_range(1..n);
                (order[..k].to_vec(), order[k..].to_vec())
            }
        };
        self.heal();
        self.cut_between(&a, &b, kind != PartitionKind::OneWay);
        self.active = Some((kind, a, b));
    }
}

impl fmt::Display for Links {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.active {
            None => write!(f, "healed"),
            Some((kind, a, b)) => {
                let name = |v: &Vec<usize>| {
                    v.iter()
                        .map(|i| format!("n{}", i + 1))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let arrow = if *kind == PartitionKind::OneWay {
                    "-/->"
                } else {
                    "<-/->"
                };
                write!(f, "{kind:?} [{}] {arrow} [{}]", name(a), name(b))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn partitions_cut_what_they_say() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let mut links = Links::new(5);
            links.partition(&mut rng);
            let (kind, a, b) = links.active.clone().unwrap();
            for &x in &a {
                for &y in &b {
                    assert!(!links.up(x, y));
                    assert_eq!(links.up(y, x), kind == PartitionKind::OneWay);
                }
            }
            if kind == PartitionKind::Bridge {
                let bridge = (0..5).find(|i| !a.contains(i) && !b.contains(i)).unwrap();
                assert!((0..5).all(|i| links.up(bridge, i) && links.up(i, bridge)));
            }
            links.heal();
            assert!((0..5).all(|x| (0..5).all(|y| links.up(x, y))));
        }
    }
}
