//! Presence: who is on a topic, across nodes.
//!
//! A tracked presence is a key (a user id, say) with metadata on a topic,
//! owned by whoever tracked it. The set of presences is a delta-state CRDT
//! with the semantics of Phoenix's `Phoenix.Tracker`: [`state`] is the CRDT,
//! [`shard`] one replica's protocol (heartbeats, transfers, down and
//! permanently down replicas) as a state machine without I/O.
//!
//! The server's API ([`Tracker`], [`Tracked`], [`PresenceDiffs`], and
//! [`PubSub::track`](crate::PubSub::track)) runs in process: the tracker
//! is this node's replica alone. Driving a [`shard::Shard`] over a
//! transport, so that nodes share presences, is not done yet.

pub mod clock;
pub mod generations;
pub mod shard;
#[cfg(test)]
mod sim_tests;
pub mod state;
mod tracker;

pub(crate) use tracker::Trackers;
pub use tracker::{
    Presence, PresenceDiff, PresenceDiffs, PresenceError, PresenceId, PresenceLimits,
    PresenceRecvError, Tracked, Tracker, DIFF_QUEUE_CAPACITY,
};
#[cfg(test)]
mod manifest_tests;
