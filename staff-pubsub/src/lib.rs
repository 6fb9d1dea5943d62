//! Typed, real-time change notifications on a small topic pub/sub runtime.
//!
//! The runtime is generic: a [`PubSub<M>`] server delivers messages of type
//! `M` to [`Subscription`]s of [`Topic`]s, in process by default. The
//! `#[staff_events]` macro generates typed topic functions, events and
//! fan-out on top of it; the stock staff spec ships as [`staff`].
//!
//! Delivery rule: a subscription receives one copy of a broadcast for each
//! of its topics that the broadcast reaches. A slow subscriber is never
//! waited for: when its queue is full the oldest message is dropped and the
//! subscriber is told how many it missed ([`RecvError::Lagged`]).
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod inbox;
mod pubsub;
#[cfg(feature = "redis")]
pub mod redis;
mod registry;
pub mod spec;
mod stock;
mod topic;
mod transport;
pub mod wire;

pub use error::{Error, Outcome, RecvError, TransportError, TryRecvError};
pub use pubsub::{
    Builder, Connection, PubSub, Stats, Subscription, DEFAULT_CAPACITY, DEFAULT_NODE_NAME,
};
#[doc = include_str!("staff_events.md")]
pub use staff_pubsub_macros::staff_events;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
pub use stock::staff;
pub use topic::{ParseTopicError, Topic, TopicKind};
pub use transport::{BoxFuture, Envelope, LocalNode, Mode, Transport};
pub use uuid::Uuid;

/// What generated code uses: absolute paths that work wherever the spec is.
/// Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::spec::{
        deserialize_message, serialize_message, unknown_event, AlreadyInstalled, DefaultServer,
        Route, Spec, SpecMessage, Target, TargetKey, TopicList, UnknownEvent,
    };
    pub use crate::{Error, ParseTopicError, PubSub, Subscription, Topic, TopicKind};
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
    use std::sync::Arc;
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
            drop(self.0.push_returning_evicted(message, capacity));
        }

        /// The next message or report, if one is queued.
        pub fn try_take(&self) -> Option<Result<Arc<M>, RecvError>> {
            self.0.try_take()
        }

        /// The next message or report, or `Pending` with the waker kept.
        pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<Arc<M>, RecvError>> {
            self.0.poll_take(cx)
        }
    }
}
