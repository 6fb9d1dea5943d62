//! Typed, real-time change notifications on a small topic pub/sub runtime.
//!
//! The runtime is generic: a [`PubSub<M>`] server delivers messages of type
//! `M` to [`Subscription`]s of [`Topic`]s, in process by default. The
//! [`#[staff_events]`](staff_events) macro generates typed topic functions,
//! events and fan-out on top of it; the stock staff spec ships as
//! [`staff`], the Rust counterpart of Elixir's `PhoenixKitStaff.PubSub`.
//!
//! ```
//! use staff_pubsub::staff::{self, Message, Team, TeamEvent};
//! use staff_pubsub::Uuid;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let department = Uuid::now_v7();
//! // A department page subscribes to its department's topic...
//! let mut page = staff::subscribe(staff::topic_department(department))?;
//!
//! // ...and a new team of that department reaches it: `broadcast_team`
//! // fans out to `staff:teams`, `staff:team:<uuid>` and the department's topic.
//! let team = Team { uuid: Uuid::now_v7(), name: Some("Squad A".into()), department_uuid: Some(department) };
//! staff::broadcast_team(TeamEvent::Created, team.clone()).await?;
//!
//! let message = page.recv().await?;
//! assert_eq!(*message, Message::Team(TeamEvent::Created, team));
//! # Ok(()) }
//! ```
//!
//! Delivery rule: a subscription receives one copy of a broadcast for each
//! of its topics that the broadcast reaches. A slow subscriber is never
//! waited for: when its queue is full the oldest message is dropped and the
//! subscriber is told how many it missed ([`RecvError::Lagged`]); after a
//! transport reconnects it is told of the gap ([`RecvError::Gap`]).
//!
//! # Features
//!
//! - (default): the in-process runtime, the stock [`staff`] spec, the
//!   [`wire`] envelope.
//! - `redis`: the Redis pub/sub transport (`staff_pubsub::redis`), for
//!   several nodes.
//! - `redis-tls`: `rediss://` URLs for the Redis transport.
//! - `sse`: live updates in the browser, a subscription as a Server-Sent
//!   Events response for axum 0.8 (`staff_pubsub::sse`). Its former name,
//!   `axum`, still turns it on.
//! - `nats`: the NATS transport (`staff_pubsub::nats`), routed by interest:
//!   a node receives only the topics it has subscribers of.
//! - `phoenix`: joining a Phoenix application's PubSub through its
//!   Redis (`phoenix_pubsub_redis` frames), `staff_pubsub::phoenix`, and
//!   its `Phoenix.Presence` trackers as a replica.
//! - `testing`: `assert_receive!` and `refute_receive!`
//!   (`staff_pubsub::testing`), for tests; pair them with a spec's
//!   generated `scope` function.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod default_server;
mod error;
mod extensions;
#[cfg(any(test, feature = "redis", feature = "nats"))]
mod gossip;
mod inbox;
mod link;
mod loom;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;
#[cfg(any(feature = "redis", feature = "nats"))]
mod net;
#[cfg(feature = "phoenix")]
#[cfg_attr(docsrs, doc(cfg(feature = "phoenix")))]
pub mod phoenix;
mod position;
/// Without an engine nothing gossips: a tracker is in process.
#[cfg(not(any(test, feature = "redis", feature = "nats")))]
mod gossip {
    pub(crate) type GossipHandle = std::convert::Infallible;
}
pub mod presence;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod registry;
mod ring;
mod server;
pub mod spec;
#[cfg(feature = "sse")]
#[cfg_attr(docsrs, doc(cfg(feature = "sse")))]
pub mod sse;
mod stock;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod throttle;
mod topic;
pub mod transport;
pub mod wire;

pub use default_server::{AlreadyInstalled, Scoped};
pub use error::{Error, Outcome, RecvError, TransportError, TryRecvError};
pub use position::{Gap, ParsePositionError, Position, Retention};
pub use server::{
    Broadcast, Builder, PubSub, Stats, Subscription, DEFAULT_CAPACITY, DEFAULT_NODE_NAME,
    MAX_SHARDS, WIDE_TOPIC_FROM,
};
#[doc = include_str!("staff_events.md")]
pub use staff_pubsub_macros::staff_events;

pub use stock::staff;
pub use topic::{ParseTopicError, Topic, TopicKind};
pub use transport::Connection;
pub use uuid::Uuid;

/// What generated code uses: absolute paths that work wherever the spec is.
/// Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::default_server::{DefaultServer, ScopeEntry};
    pub use crate::link::{link, LinkedBases};
    pub use crate::spec::serde_form::{
        deserialize_event, deserialize_message, deserialize_payload_of, serialize_message,
        unknown_event,
    };
    pub use crate::spec::support::{
        broadcast_default, broadcast_on, parse_event, payload_field, PayloadField, TopicList,
    };
    pub use crate::spec::{Route, Spec, SpecMessage, Target, TargetKey, UnknownEvent};
    pub use crate::{
        AlreadyInstalled, Builder, Error, ParseTopicError, PubSub, Scoped, Subscription, Topic,
        TopicKind,
    };
    pub use futures_util::future::Either;
    pub use serde;
    pub use staff_pubsub_macros::__staff_events_extend;
    pub use uuid::Uuid;
}

/// The runtime's per-subscription queue, for the benchmark crate's `floor`
/// contender (`bench/`): the very queues subscriptions use, fed directly.
/// Behind the feature `__bench`, off by default. Not public API.
#[cfg(feature = "__bench")]
#[doc(hidden)]
pub mod __bench {
    use crate::loom::sync::Arc;
    use std::task::{Context, Poll};

    use crate::RecvError;

    /// One subscription's queue, without a registry, topic or counters.
    pub struct Inbox<M>(crate::inbox::Inbox<M>);

    impl<M> Default for Inbox<M> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<M> Inbox<M> {
        /// An empty, open queue.
        pub fn new() -> Self {
            Self(crate::inbox::Inbox::new())
        }

        /// Queues `message` as the registry does, dropping the oldest if
        /// `capacity` are queued already (the evicted one after the push).
        pub fn push(&self, message: Arc<M>, capacity: usize) {
            drop(self.0.push_returning_evicted(message, None, capacity));
        }

        /// The next message or report, if one is queued.
        pub fn try_take(&self) -> Option<Result<Arc<M>, RecvError>> {
            self.0
                .try_take()
                .map(|taken| taken.map(|(message, _)| message))
        }

        /// The next message or report, or `Pending` with the waker kept.
        pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<Arc<M>, RecvError>> {
            self.0
                .poll_take(cx)
                .map(|taken| taken.map(|(message, _)| message))
        }
    }
}
