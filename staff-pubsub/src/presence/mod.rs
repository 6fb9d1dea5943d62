//! Presence: who is on a topic, across nodes.
//!
//! A tracked presence is a key (a user id, say) with metadata on a topic,
//! owned by whoever tracked it. The set of presences is a delta-state CRDT
//! with the semantics of Phoenix's `Phoenix.Tracker`: [`state`] is the CRDT,
//! [`shard`] one replica's protocol (heartbeats, transfers, down and
//! permanently down replicas) as a state machine without I/O.
//!
//! The server's API ([`Tracker`], [`Tracked`], [`PresenceDiffs`], and
//! [`PubSub::track`](crate::PubSub::track)) is one replica per server and
//! metadata type (one per shard of a pooled Phoenix tracker). On a
//! server whose engine gossips (Redis live and durable, NATS live and
//! durable, and Phoenix for the metadata types given an Elixir tracker
//! with [`PhoenixConfig::presence`](crate::phoenix::PhoenixConfig::presence)),
//! a task drives the replica's [`shard::Shard`] over it (heartbeats,
//! transfers, downs), so that the nodes share their presences, with the
//! timing of [`PresenceTiming`]. Between Rust nodes the messages are
//! MessagePack; on the Phoenix engine they are `Phoenix.Tracker`'s own,
//! so that the Rust node is a replica of the Elixir tracker, listed by
//! Elixir's `Presence.list/1` and listing Elixir's presences. In process,
//! and on a Phoenix server for a metadata type without an Elixir tracker,
//! the replica is alone and the tracker is this node's. A linked server
//! (a spec's and its extension's) shares the tracker of the server with
//! the transport, as that server's mode says.

pub mod clock;
#[cfg(any(test, feature = "redis", feature = "nats"))]
mod codec;
pub mod generations;
#[cfg(feature = "phoenix")]
mod phoenix_codec;
#[cfg(any(test, feature = "redis", feature = "nats"))]
mod runtime;
#[cfg(test)]
mod runtime_tests;
pub mod shard;
#[cfg(test)]
mod sim_tests;
pub mod state;
mod timing;
mod tracker;
#[cfg(any(test, feature = "redis", feature = "nats"))]
mod wire;

pub use timing::{PresenceTiming, PresenceTimingError};
pub use tracker::{
    Presence, PresenceDiff, PresenceDiffs, PresenceError, PresenceId, PresenceLimits,
    PresenceRecvError, Tracked, Tracker, DIFF_QUEUE_CAPACITY,
};
#[cfg(test)]
mod manifest_tests;
