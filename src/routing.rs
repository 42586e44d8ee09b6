//! Routing: keys hash to a fixed number of partitions (like Flink's key
//! groups); partitions map to nodes in contiguous, even ranges.
//!
//! - `partition(key) = fnv1a64(key bytes) & (partitions - 1)` — the key's
//!   bytes are its snapshot encoding ([`crate::codec::Codec`]), so every
//!   process, every run and every build agree on it.
//! - `owner(p) = p * nodes / partitions`: node `i` owns partitions
//!   `[ceil(i * P / N), ceil((i + 1) * P / N))`, so ownership differs by at
//!   most one partition between nodes and is a pure function of (P, N).

use crate::codec::Codec;

/// Largest partition count (the partition → node table stays small).
pub const MAX_PARTITIONS: u32 = 1 << 16;
/// Largest node count of a cluster.
pub const MAX_NODES: u32 = 1024;

pub use verity_wire::fnv::fnv1a64;

/// Why a routing table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingError {
    PartitionsNotPowerOfTwo(u32),
    TooManyPartitions(u32),
    NoNodes,
    TooManyNodes(u32),
    MoreNodesThanPartitions { nodes: u32, partitions: u32 },
}

impl core::fmt::Display for RoutingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RoutingError::PartitionsNotPowerOfTwo(p) => {
                write!(f, "partition count {p} is not a power of two")
            }
            RoutingError::TooManyPartitions(p) => {
                write!(f, "partition count {p} exceeds {MAX_PARTITIONS}")
            }
            RoutingError::NoNodes => write!(f, "the cluster has no nodes"),
            RoutingError::TooManyNodes(n) => write!(f, "{n} nodes exceed {MAX_NODES}"),
            RoutingError::MoreNodesThanPartitions { nodes, partitions } => write!(
                f,
                "{nodes} nodes but only {partitions} partitions: some nodes would own nothing"
            ),
        }
    }
}

impl std::error::Error for RoutingError {}

/// The partition → node table of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    partitions: u32,
    nodes: u32,
}

impl Routing {
    pub fn new(partitions: u32, nodes: u32) -> Result<Routing, RoutingError> {
        if !partitions.is_power_of_two() {
            return Err(RoutingError::PartitionsNotPowerOfTwo(partitions));
        }
        if partitions > MAX_PARTITIONS {
            return Err(RoutingError::TooManyPartitions(partitions));
        }
        if nodes == 0 {
            return Err(RoutingError::NoNodes);
        }
        if nodes > MAX_NODES {
            return Err(RoutingError::TooManyNodes(nodes));
        }
        if nodes > partitions {
            return Err(RoutingError::MoreNodesThanPartitions { nodes, partitions });
        }
        Ok(Routing { partitions, nodes })
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// The partition of a key hash.
    pub fn partition_of_hash(&self, hash: u64) -> u32 {
        (hash & (self.partitions as u64 - 1)) as u32
    }

    /// The partition of a key.
    pub fn partition<K: Codec>(&self, key: &K) -> u32 {
        let mut bytes = Vec::with_capacity(16);
        key.encode(&mut bytes);
        self.partition_of_hash(fnv1a64(&bytes))
    }

    /// The node (index, from 0) that owns partition `p`.
    pub fn owner(&self, p: u32) -> u32 {
        debug_assert!(p < self.partitions);
        ((p as u64 * self.nodes as u64) / self.partitions as u64) as u32
    }

    /// The partitions node `node` owns, as a half-open range.
    pub fn owned(&self, node: u32) -> core::ops::Range<u32> {
        let first = |i: u32| -> u32 {
            // Smallest p with p * N / P >= i, i.e. ceil(i * P / N).
            ((i as u64 * self.partitions as u64).div_ceil(self.nodes as u64)) as u32
        };
        first(node)..first(node + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_contiguous_even_and_covers_every_partition() {
        for (p, n) in [(4096, 1), (4096, 3), (4096, 7), (16, 16), (1024, 5)] {
            let r = Routing::new(p, n).unwrap();
            let mut counts = vec![0u32; n as usize];
            for part in 0..p {
                let o = r.owner(part);
                assert!(r.owned(o).contains(&part), "p={p} n={n} part={part}");
                counts[o as usize] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "uneven: {counts:?}");
            let ranges: Vec<_> = (0..n).map(|i| r.owned(i)).collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[n as usize - 1].end, p);
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
        }
    }

    #[test]
    fn a_key_always_lands_in_the_same_partition() {
        let r = Routing::new(4096, 3).unwrap();
        // Pinned values: changing the hash or the key encoding would move
        // every key of a running cluster.
        assert_eq!(r.partition(b" IBM"), r.partition(b" IBM"));
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            r.partition(&7u64),
            r.partition_of_hash(fnv1a64(&7u64.to_le_bytes()))
        );
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert_eq!(
            Routing::new(1000, 3),
            Err(RoutingError::PartitionsNotPowerOfTwo(1000))
        );
        assert_eq!(Routing::new(4096, 0), Err(RoutingError::NoNodes));
        assert_eq!(
            Routing::new(2, 3),
            Err(RoutingError::MoreNodesThanPartitions {
                nodes: 3,
                partitions: 2
            })
        );
        assert_eq!(
            Routing::new(1 << 17, 3),
            Err(RoutingError::TooManyPartitions(1 << 17))
        );
    }
}
