//! The server handle, its builder, and subscriptions.
//!
//! One file per job: [`PubSub`] (`handle`), the shared `Core` and what
//! transports call (`core`), [`Builder`] (`builder`), the broadcast paths
//! (`broadcast`), [`Subscription`] (`subscription`), resuming from the log
//! (`resume`), [`Stats`] with the counters (`stats`), and where broadcasts
//! go beyond this node (`upstream`).

mod broadcast;
mod builder;
mod core;
mod handle;
mod resume;
mod stats;
mod subscription;
mod upstream;

pub use broadcast::Broadcast;
pub use builder::Builder;
pub use handle::PubSub;
pub use stats::Stats;
pub use subscription::Subscription;

pub(crate) use self::core::{Core, Peer};
pub(crate) use stats::random_u64;
pub(crate) use upstream::{ready, Upstream};

/// The default queue capacity of one subscription.
pub const DEFAULT_CAPACITY: usize = 1024;

/// The most registry shards a server takes ([`Builder::shards`] clamps to it).
pub const MAX_SHARDS: usize = 1 << 12;

/// The subscriptions a topic has on a server before it is a wide topic: a
/// new subscription on that topic alone then reads the topic's shared ring
/// instead of a queue of its own (see [`Builder::capacity`]). Per-entity
/// topics, with one subscriber or a few, stay below it; the value is a
/// round number, not tuned by measurement.
pub const WIDE_TOPIC_FROM: usize = crate::ring::RING_FROM;

/// The node name of an in-process server built without one. A server built
/// with a transport and no name gets a unique one instead (see
/// [`Builder::node_name`]).
pub const DEFAULT_NODE_NAME: &str = "local";
