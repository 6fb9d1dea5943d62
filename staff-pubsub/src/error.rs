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
    /// The engine did not take the broadcast. Who has the message then:
    ///
    /// - on a live server (Redis, NATS, Phoenix, or a server linked to one
    ///   of these), this node's subscribers: they received it when
    ///   `broadcast` was called (a `direct_broadcast` to another node has
    ///   none here);
    /// - on a durable one (`RedisConfig::durable`, `NatsConfig::durable`,
    ///   or a server linked to one), nobody: every node, this one included,
    ///   delivers from the log only.
    ///
    /// Whether the others (durable: every node) will still receive it is
    /// told by [`TransportError::outcome`]: [`Outcome::NotSent`] means
    /// never, [`Outcome::Unknown`] that they may, later, at most once (the
    /// request may have reached the engine before the failure). While the
    /// node knows its engine is down
    /// ([`Connection::Disconnected`](crate::Connection::Disconnected)) a
    /// broadcast fails with [`Outcome::NotSent`].
    ///
    /// Logged by the server at WARN for the first failure, for one whose
    /// cause differs from the previous one's, and then once every 30 s
    /// (with `unlogged`, the number of failures logged at DEBUG only since
    /// the last WARN); the others at DEBUG. Every mode, every engine.
    #[error("broadcast not sent to other nodes")]
    Transport(#[source] TransportError),
    /// Building a server with a transport failed: the transport could not
    /// connect (its message says where and why, such as
    /// `cannot connect to Redis at redis://127.0.0.1:6379: Connection refused`).
    #[error(transparent)]
    Connect(TransportError),
    /// [`PubSub::sync`](crate::PubSub::sync) could not confirm that this
    /// node's subscriptions reached the engine.
    #[error("the transport could not confirm this node's subscriptions")]
    Sync(#[source] TransportError),
    /// A server that talks to other nodes needs a non-empty node name.
    #[error("the node name must not be empty when the server has a transport")]
    EmptyNodeName,
    /// [`Subscription::add_topic`](crate::Subscription::add_topic) on a
    /// subscription that was unsubscribed, or whose server is gone.
    #[error("the subscription is closed: it was unsubscribed or its server is gone")]
    SubscriptionClosed,
    /// [`PubSub::subscribe_since`](crate::PubSub::subscribe_since) on a
    /// server whose transport keeps no log (in process, live Redis or NATS,
    /// Phoenix, or a server linked to one of these): only a durable
    /// transport can replay.
    #[error("this server's transport keeps no log to replay from: it is not durable")]
    NotDurable,
    /// [`PubSub::subscribe_since`](crate::PubSub::subscribe_since) could
    /// not read the log (the engine did not answer): the subscription was
    /// not made.
    #[error("cannot read the log to replay what was missed")]
    Replay(#[source] TransportError),
}

/// What a failed send may still have done: whether retrying could deliver
/// a message twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Certainly not sent: the engine never got the message (no connection
    /// could be made, the message was too large to send, the engine refused
    /// the command). No other node will receive it, and on a durable server
    /// neither will this one; on a live server this node's subscribers
    /// received it at the call. Retrying cannot make a duplicate.
    NotSent,
    /// The request may have reached the engine before the failure (a reply
    /// that timed out, a connection that broke after the write): other
    /// nodes (on a durable server, every node, this one included) may
    /// receive the message, possibly later, at most once. Retrying may
    /// deliver it twice.
    Unknown,
}

/// A transport's failure, wrapping the engine's own error.
///
/// Its [`outcome`](Self::outcome) tells a caller deciding whether to retry
/// if the message was certainly not sent.
#[derive(Debug)]
pub struct TransportError {
    what: String,
    outcome: Outcome,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    /// An error described by `what`, caused by `source`, whose outcome is
    /// [`Outcome::Unknown`] (the safe assumption).
    pub fn new(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what: what.into(),
            outcome: Outcome::Unknown,
            source: Some(source.into()),
        }
    }

    /// An error described by `what` alone, whose outcome is
    /// [`Outcome::Unknown`].
    pub fn msg(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            outcome: Outcome::Unknown,
            source: None,
        }
    }

    /// The same error, with `outcome`: a transport marks failures that
    /// certainly sent nothing with [`Outcome::NotSent`].
    #[must_use]
    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Whether the message was certainly not sent, or may have been, and
    /// so who will have it:
    ///
    /// | outcome | live server (Redis, NATS, Phoenix, linked to one) | durable server (Redis or NATS `durable`, linked to one) |
    /// | --- | --- | --- |
    /// | [`Outcome::NotSent`] | this node's subscribers (at the call); no other node, ever | nobody, ever |
    /// | [`Outcome::Unknown`] | this node's subscribers; other nodes may, later, at most once | every node, this one included, may, later, at most once |
    ///
    /// (A `direct_broadcast` to another node has no subscriber here in
    /// either mode.) An in-process server has no engine: its broadcasts
    /// never fail.
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        self.outcome
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
    /// Messages published on other nodes were lost on the way: the
    /// transport lost its connection (or its receive task had to be
    /// restarted), or, in durable mode, the log no longer held them. The
    /// [`Gap`](crate::Gap) says which, and how many log entries are missing
    /// when that is known. It comes in queue order: after every message
    /// queued before the loss, before every message received after it.
    /// Reload any state built from the stream.
    #[error("{0}")]
    Gap(crate::Gap),
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
    #[error("{}", RecvError::Lagged(*.0))]
    Lagged(u64),
    /// See [`RecvError::Gap`].
    #[error("{0}")]
    Gap(crate::Gap),
    /// See [`RecvError::Closed`].
    #[error("{}", RecvError::Closed)]
    Closed,
}

impl From<RecvError> for TryRecvError {
    fn from(error: RecvError) -> Self {
        match error {
            RecvError::Lagged(n) => Self::Lagged(n),
            RecvError::Gap(gap) => Self::Gap(gap),
            RecvError::Closed => Self::Closed,
        }
    }
}
