//! Where a server's broadcasts go beyond this node, and where its durable
//! log is read: its [`Upstream`].
//!
//! It is chosen once: when the server is built with a transport (its own,
//! [`Own`]), or when it is linked to a server that has one (the link,
//! `crate::link`, carries it through the other server's). An in-process
//! server has none. The handle's methods ask the upstream, whichever it
//! is, and never which it is.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::core::Core;
use crate::error::{Error, TransportError};
use crate::gossip::GossipHandle;
use crate::position::Position;
use crate::topic::Topic;
use crate::transport::{BoxFuture, Connection, Envelope, LogHead, Mode, Replay, Transport};

/// The way to other nodes of a server of `M`: its own transport, or a
/// linked server's. `here` is the server it serves: an upstream is held by
/// its server and holds no reference to it.
pub(crate) trait Upstream<M>: Send + Sync {
    /// Sends `message` to other nodes as `mode` says.
    fn publish<'a>(
        &'a self,
        here: &'a Core<M>,
        mode: Mode<'a>,
        topics: &'a [Topic],
        message: &'a M,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// The node name the server answers to: its own, or (linked) that of
    /// the server whose transport carries it.
    fn node_name<'a>(&'a self, here: &'a Core<M>) -> &'a str;

    /// The state of the transport's link to other nodes.
    fn connection(&self, here: &Core<M>) -> Connection;

    /// Polls until [`connection`](Self::connection) is `wanted`.
    fn poll_connection(&self, here: &Core<M>, wanted: Connection, cx: &mut Context<'_>)
        -> Poll<()>;

    /// [`Transport::sync`].
    fn sync(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// The first subscriber of `topic` on the server appeared or the last
    /// one left ([`Transport::interest_changed`]).
    fn interest_changed(&self, topic: Topic);

    /// Whether broadcasts go through a durable log
    /// ([`Transport::durable_log`]).
    fn durable(&self) -> bool;

    /// The log's id and the sequence number the transport has read up to
    /// (0: none yet); `None` when not durable or not read yet.
    fn read_head(&self, here: &Core<M>) -> Option<(u16, u64)>;

    /// [`DurableLog::log_head`](crate::transport::DurableLog::log_head).
    fn log_head(&self) -> BoxFuture<'_, Result<LogHead, TransportError>>;

    /// [`DurableLog::replay_limit`](crate::transport::DurableLog::replay_limit).
    fn replay_limit(&self) -> Option<u64>;

    /// [`DurableLog::replay`](crate::transport::DurableLog::replay), in the server's own message type.
    fn replay<'a>(
        &'a self,
        after: Position,
        through: Position,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Replay<M>, TransportError>>;

    /// The engine's gossip, through which the server's presence trackers
    /// replicate with the other nodes'; `None` (the default): its
    /// trackers stay in process. A linked server has none: the node's
    /// replica of a tracker is its transport's server's, and a second
    /// replica under the same node name would confuse the others.
    fn gossip(&self) -> Option<GossipHandle> {
        None
    }
}

/// A server's own transport, and its engine's gossip if it has one.
pub(crate) struct Own<M> {
    transport: Box<dyn Transport<M>>,
    gossip: Option<GossipHandle>,
}

impl<M> Own<M> {
    pub(crate) fn new(transport: Box<dyn Transport<M>>, gossip: Option<GossipHandle>) -> Self {
        Self { transport, gossip }
    }
}

impl<M: Send + Sync + 'static> Upstream<M> for Own<M> {
    fn publish<'a>(
        &'a self,
        here: &'a Core<M>,
        mode: Mode<'a>,
        topics: &'a [Topic],
        message: &'a M,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let envelope = Envelope {
            origin: &here.node,
            instance: Some(here.instance),
            mode,
            topics,
            message,
        };
        let sending = self.transport.publish(envelope);
        Box::pin(async move {
            sending.await.map_err(|error| {
                // Rate-limited: an engine that is down fails every
                // broadcast.
                match here.failure_log.admit(&error.to_string()) {
                    Some(unlogged) => {
                        tracing::warn!(%error, unlogged, "broadcast not sent to other nodes");
                    }
                    None => tracing::debug!(%error, "broadcast not sent to other nodes"),
                }
                Error::Transport(error)
            })
        })
    }

    fn node_name<'a>(&'a self, here: &'a Core<M>) -> &'a str {
        &here.node
    }

    fn connection(&self, here: &Core<M>) -> Connection {
        here.connection.get()
    }

    fn poll_connection(
        &self,
        here: &Core<M>,
        wanted: Connection,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        here.connection.poll_until(wanted, cx)
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), Error>> {
        let syncing = self.transport.sync();
        Box::pin(async move { syncing.await.map_err(Error::Sync) })
    }

    fn interest_changed(&self, topic: Topic) {
        self.transport.interest_changed(topic);
    }

    fn durable(&self) -> bool {
        self.transport.durable_log().is_some()
    }

    fn read_head(&self, here: &Core<M>) -> Option<(u16, u64)> {
        self.transport.durable_log().and_then(|_| here.head())
    }

    fn log_head(&self) -> BoxFuture<'_, Result<LogHead, TransportError>> {
        match self.transport.durable_log() {
            Some(log) => log.log_head(),
            None => ready(Ok(LogHead::Unknown)),
        }
    }

    fn replay_limit(&self) -> Option<u64> {
        self.transport.durable_log()?.replay_limit()
    }

    // An `Arc` with an engine; without one, a `Copy` that is never made.
    #[allow(clippy::clone_on_copy)]
    fn gossip(&self) -> Option<GossipHandle> {
        self.gossip.clone()
    }

    fn replay<'a>(
        &'a self,
        after: Position,
        through: Position,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Replay<M>, TransportError>> {
        match self.transport.durable_log() {
            Some(log) => log.replay(after, through, topics),
            None => ready(Err(TransportError::msg("this transport keeps no log"))),
        }
    }
}

/// A future that is ready at once: what a gone linked server answers.
pub(crate) fn ready<'a, T: Send + 'a>(value: T) -> Pin<Box<dyn Future<Output = T> + Send + 'a>> {
    Box::pin(std::future::ready(value))
}
