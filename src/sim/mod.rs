//! The deterministic simulator (`verity-sim`): the production
//! [`NodeCore`](crate::core::NodeCore) driven as-is by a simulated network,
//! disk and clock, with crashes and restarts, all from one seed — in the
//! manner of FoundationDB's simulator and TigerBeetle's VOPR.
//!
//! N nodes of a cluster (each the production core with its routing), the
//! sources and the sink, all in one thread, on virtual time (µs). Every frame
//! between them is really encoded and decoded with `verity-wire`, then
//! passes a simulated link that may drop, duplicate, delay and reorder it,
//! or (during a partition) lose everything: a partition cuts every link, or
//! the links between one pair of nodes. Each source sends to one node (its
//! ingress); nodes forward records to the nodes owning their keys over
//! node-to-node channels with the same protocol as the sink's. Each node's
//! journal, outbound logs (one per channel) and snapshot live in memory: a
//! crash with `process` durability keeps them (the page cache survives a
//! process crash); with `fsync` durability it loses what the last group
//! commit did not cover (a machine crash). A restart recovers exactly as the
//! runtime does: newest snapshot, journal replay (outputs already logged
//! must come out bit-identical), RESUME with sources, peers and sink.
//!
//! Swarm testing: each seed draws its own fault parameters (loss 0–30%,
//! duplication 0–50%, reordering, partitions, crash rate, durability,
//! snapshot interval), its app and workload, and its cluster (1–4 nodes,
//! which node each source sends to). A run is a pure function of its
//! parameters and workload: [`SimRun::hash`] covers every output and every
//! journal record, and `--check-determinism` runs each seed twice.
//!
//! The simulator takes its workload as plain data ([`Workload`]) and returns
//! what the sink received ([`SimRun`]); generating the inputs and judging
//! the output with the independent oracle of `verity-check` is the
//! harness's part (`crate::harness::sim_run`), so this module does not
//! import the tools.
//!
//! One module per owned state: `params` ([`SimParams`]: what a run is),
//! `world` (time, queue, crashes and restarts, the run loop: it drives the
//! others), `net` (the links and their faults), `disk` (a node's journal,
//! snapshot and outbound logs, and what a crash loses), `node` (the driver
//! of the production core) and `clients` (the sources and the sink).

mod clients;
mod disk;
mod net;
mod node;
mod params;
mod world;

pub use clients::{Received, SourceInput, Workload};
pub use params::SimParams;
pub use world::{fresh_core, run, SimRun};
