//! Errors of the runtime.

use std::fmt;

/// An error from a [`PubSub`](crate::PubSub) operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server already has as many subscriptions as it was built to allow.
    #[error("subscription limit reached: the server allows {limit} subscriptions")]
    SubscriptionLimit {
        /// The configured maximum.
        limit: usize,
    },
    /// A subscription needs at least one topic.
    #[error("a subscription needs at least one topic")]
    NoTopics,
    /// A direct broadcast named a node that this server cannot reach: with the
    /// in-process transport, any node but this one.
    #[error("node `{node}` is not reachable: this server has no transport to other nodes")]
    UnknownNode {
        /// The node that was named.
        node: String,
    },
    /// The broadcast could not be handed to the transport. Subscribers on this
    /// node did receive it; other nodes did not.
    #[error("broadcast not sent to other nodes")]
    Transport(#[source] TransportError),
    /// A server that talks to other nodes needs a non-empty node name.
    #[error("the node name must not be empty when the server has a transport")]
    EmptyNodeName,
}

/// A transport's failure, wrapping the engine's own error.
#[derive(Debug)]
pub struct TransportError {
    what: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    /// An error described by `what`, caused by `source`.
    pub fn new(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// An error described by `what` alone.
    pub fn msg(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            source: None,
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Why [`Subscription::recv`](crate::Subscription::recv) returned no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscription's queue was full and this many older messages were
    /// dropped. The next receive continues with the oldest message kept.
    #[error("subscriber lagged behind: {0} messages missed")]
    Lagged(u64),
    /// The transport lost its connection; messages may have been missed
    /// without a count. Reload any state built from the stream.
    #[error("the transport reconnected: messages may have been missed")]
    Gap,
    /// The server was dropped and every queued message has been received.
    #[error("the server is closed")]
    Closed,
}

/// Why [`Subscription::try_recv`](crate::Subscription::try_recv) returned no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No message is queued now.
    #[error("no message queued")]
    Empty,
    /// See [`RecvError::Lagged`].
    #[error("subscriber lagged behind: {0} messages missed")]
    Lagged(u64),
    /// See [`RecvError::Gap`].
    #[error("the transport reconnected: messages may have been missed")]
    Gap,
    /// See [`RecvError::Closed`].
    #[error("the server is closed")]
    Closed,
}

impl From<RecvError> for TryRecvError {
    fn from(error: RecvError) -> Self {
        match error {
            RecvError::Lagged(n) => Self::Lagged(n),
            RecvError::Gap => Self::Gap,
            RecvError::Closed => Self::Closed,
        }
    }
}
