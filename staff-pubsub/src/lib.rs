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
mod registry;
mod topic;
mod transport;

pub use error::{Error, RecvError, TransportError, TryRecvError};
pub use pubsub::{Builder, PubSub, Stats, Subscription, DEFAULT_CAPACITY, DEFAULT_NODE_NAME};
pub use topic::{ParseTopicError, Topic, TopicKind};
pub use transport::{BoxFuture, Envelope, LocalNode, Mode, Transport};
pub use uuid::Uuid;
