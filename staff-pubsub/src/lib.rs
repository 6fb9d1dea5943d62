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
