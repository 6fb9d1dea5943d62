//! The seam between a server and other nodes: what a transport author
//! names.
//!
//! A broadcast dispatches to this node's subscribers, then hands one
//! [`Envelope`] to the server's [`Transport`], if it has one. A transport's
//! receive side hands what it reads to [`LocalNode::dispatch_wire`], which
//! dispatches on that node. The in-process default has no transport at all.
//!
//! This module only declares the seam; the server implements its side
//! ([`LocalNode`]'s methods reach the server through a private trait, which
//! the server's core implements beside its registry and counters).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use crate::error::TransportError;
use crate::topic::Topic;

/// A boxed, sendable future: what [`Transport::publish`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which nodes an envelope is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode<'a> {
    /// Every node, the origin included (a publisher that is not a node).
    All,
    /// Every node but the origin, which has dispatched locally already.
    ExceptOrigin,
    /// Only the named node.
    Only(&'a str),
}

impl Mode<'_> {
    /// Whether node `me` should dispatch an envelope sent by `origin`.
    #[must_use]
    pub fn accepts(&self, origin: &str, me: &str) -> bool {
        match self {
            Mode::All => true,
            Mode::ExceptOrigin => origin != me,
            Mode::Only(node) => *node == me,
        }
    }
}

/// One broadcast on its way to other nodes.
#[derive(Debug)]
pub struct Envelope<'a, M> {
    /// The sending node.
    pub origin: &'a str,
    /// The sending server's random instance id, which tells apart two live
    /// servers given the same node name. `None` for a publisher that is not
    /// a server (a script, another language).
    pub instance: Option<u64>,
    /// Which nodes should dispatch it.
    pub mode: Mode<'a>,
    /// The topics it reaches on every node.
    pub topics: &'a [Topic],
    /// The message.
    pub message: &'a M,
}

/// Carries broadcasts to other nodes.
///
/// Implementations publish each envelope with one network operation and
/// resolve only once the engine has accepted it: `Ok` means sent.
pub trait Transport<M>: Send + Sync + 'static {
    /// Sends one envelope to the other nodes.
    fn publish<'a>(
        &'a self,
        envelope: Envelope<'a, M>,
    ) -> BoxFuture<'a, Result<(), TransportError>>;

    /// The node's first subscriber of `topic` appeared, or its last one
    /// left: a transport that routes by interest (NATS) subscribes to or
    /// leaves the topic's subject. Called synchronously, after the change,
    /// on the thread that made it; calls for one topic from several
    /// threads may arrive in either order, so check
    /// [`LocalNode::has_subscribers`] for the current state. The default
    /// does nothing (Redis receives every topic).
    fn interest_changed(&self, topic: Topic) {
        let _ = topic;
    }

    /// Resolves once every interest change notified before the call is
    /// registered with the engine, so that broadcasts other nodes make
    /// from then on reach those topics. The default resolves at once.
    fn sync(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The state of a server's link to other nodes: [`PubSub::connection`](crate::PubSub::connection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Connection {
    /// No transport: the server reaches this process only.
    #[default]
    Local,
    /// The transport is connected and receives what other nodes broadcast.
    Connected,
    /// The transport lost its connection and is reconnecting: nothing is
    /// received meanwhile, and subscribers get
    /// [`RecvError::Gap`](crate::RecvError::Gap) once it is back.
    Disconnected,
}

/// What a [`LocalNode`] asks of its server: implemented by the server's
/// core (in `pubsub.rs`), so that this module names no part of it.
pub(crate) trait NodeSink<M>: Send + Sync {
    /// Dispatches a received message to this node's subscribers of
    /// `topics`, each distinct topic once; returns the copies queued.
    fn dispatch_wire(&self, topics: &mut dyn Iterator<Item = &str>, message: M) -> u64;
    /// Every subscriber gets a gap, in queue order.
    fn signal_gap(&self);
    /// Counts a refused message from the wire.
    fn record_rejected(&self);
    /// Counts an envelope from another live server with this node's name.
    fn record_name_conflict(&self);
    /// Records the link's state.
    fn set_connection(&self, connection: Connection);
    /// Whether the node (this server or its linked one) has a subscriber
    /// of `topic`.
    fn has_subscribers(&self, topic: &Topic) -> bool;
    /// Every topic the node has a subscriber of.
    fn topics(&self) -> Vec<Topic>;
}

/// A transport's handle on the server it serves: where received messages go.
///
/// It holds the server weakly: once every [`PubSub`](crate::PubSub) handle is
/// dropped, [`LocalNode::is_alive`] turns false and the transport's tasks
/// should stop.
pub struct LocalNode<M> {
    sink: Weak<dyn NodeSink<M>>,
    node: Arc<str>,
    instance: u64,
}

impl<M> Clone for LocalNode<M> {
    fn clone(&self) -> Self {
        Self {
            sink: Weak::clone(&self.sink),
            node: Arc::clone(&self.node),
            instance: self.instance,
        }
    }
}

impl<M> std::fmt::Debug for LocalNode<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode")
            .field("node", &self.node)
            .field("instance", &format_args!("{:016x}", self.instance))
            .field("alive", &(self.sink.strong_count() > 0))
            .finish()
    }
}

impl<M> LocalNode<M> {
    pub(crate) fn new(sink: Weak<dyn NodeSink<M>>, node: Arc<str>, instance: u64) -> Self {
        Self {
            sink,
            node,
            instance,
        }
    }

    /// This node's name.
    #[must_use]
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// This server's random instance id: what its envelopes carry as
    /// [`Envelope::instance`].
    #[must_use]
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Whether the server still exists.
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.sink.strong_count() > 0
    }

    /// Dispatches a message received from another node to this node's
    /// subscribers of `topics` (topic strings as printed by [`Topic`]):
    /// one copy per distinct topic per subscription, however often a topic
    /// is listed. Returns the number of copies queued, or `None` if the
    /// server is gone.
    ///
    /// The caller bounds the number of topics (the Redis transport refuses
    /// an envelope with more than its `max_topics`); deduplication costs one
    /// hash per topic.
    pub fn dispatch_wire<'t>(
        &self,
        topics: impl IntoIterator<Item = &'t str>,
        message: M,
    ) -> Option<u64> {
        let sink = self.sink.upgrade()?;
        Some(sink.dispatch_wire(&mut topics.into_iter(), message))
    }

    /// Tells every subscriber that messages may have been lost (the
    /// connection to the engine dropped): each receives
    /// [`RecvError::Gap`](crate::RecvError::Gap) once, after the messages
    /// it has queued already and before any dispatched after this call.
    pub fn signal_gap(&self) {
        if let Some(sink) = self.sink.upgrade() {
            sink.signal_gap();
        }
    }

    /// Counts a malformed or refused message from the wire (the caller logs it).
    pub fn record_rejected(&self) {
        if let Some(sink) = self.sink.upgrade() {
            sink.record_rejected();
        }
    }

    /// Records the link's state, as [`PubSub::connection`](crate::PubSub::connection)
    /// reports it: a transport sets [`Connection::Connected`] once it
    /// receives and [`Connection::Disconnected`] when it loses its
    /// connection.
    pub fn set_connection(&self, connection: Connection) {
        if let Some(sink) = self.sink.upgrade() {
            sink.set_connection(connection);
        }
    }

    /// Whether this node has a subscriber of `topic` now: on this server
    /// or, for a server linked with another spec's (one bus), on that one.
    /// What a transport routing by interest checks on
    /// [`Transport::interest_changed`].
    #[must_use]
    pub fn has_subscribers(&self, topic: &Topic) -> bool {
        self.sink
            .upgrade()
            .is_some_and(|sink| sink.has_subscribers(topic))
    }

    /// Every topic this node has a subscriber of now (both servers of a
    /// linked pair): what a transport routing by interest subscribes to
    /// when it starts.
    #[must_use]
    pub fn topics(&self) -> Vec<Topic> {
        self.sink
            .upgrade()
            .map_or_else(Vec::new, |sink| sink.topics())
    }

    /// Counts an envelope from another live server that carries this
    /// node's name (the caller logs it).
    pub fn record_name_conflict(&self) {
        if let Some(sink) = self.sink.upgrade() {
            sink.record_name_conflict();
        }
    }
}
