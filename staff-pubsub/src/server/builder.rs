//! [`Builder`]: a server's settings, and building it with or without a
//! transport.

use std::future::Future;
use std::marker::PhantomData;

use super::core::Core;
use super::handle::PubSub;
use super::stats::unique_node_name;
use super::upstream::Own;
use super::{DEFAULT_CAPACITY, DEFAULT_NODE_NAME, MAX_SHARDS};
use crate::error::{Error, TransportError};
use crate::extensions::Preset;
use crate::gossip::GossipHandle;

use crate::loom::sync::Arc;
use crate::registry::Registry;
use crate::transport::{Connection, LocalNode, Transport};

/// Configures a [`PubSub`]: made by [`PubSub::builder`].
#[must_use]
pub struct Builder<M> {
    pub(super) capacity: usize,
    shards: usize,
    node_name: Option<String>,
    pub(super) max_subscriptions: usize,
    /// Settings of the features built on the server (presence's timing),
    /// which the builder holds without naming them.
    preset: Preset,
    message: PhantomData<fn() -> M>,
}

impl<M> Clone for Builder<M> {
    fn clone(&self) -> Self {
        Self {
            capacity: self.capacity,
            shards: self.shards,
            node_name: self.node_name.clone(),
            max_subscriptions: self.max_subscriptions,
            preset: self.preset.clone(),
            message: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("capacity", &self.capacity)
            .field("shards", &self.shards)
            .field("node_name", &self.node_name)
            .field("max_subscriptions", &self.max_subscriptions)
            .finish_non_exhaustive()
    }
}

impl<M> Default for Builder<M> {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self {
            capacity: DEFAULT_CAPACITY,
            shards: (cores * 4).next_power_of_two(),
            node_name: None,
            max_subscriptions: usize::MAX,
            preset: Preset::default(),
            message: PhantomData,
        }
    }
}

impl<M: Send + Sync + 'static> Builder<M> {
    /// How many messages one subscription queues before the oldest are
    /// dropped and reported as [`RecvError::Lagged`](crate::RecvError::Lagged). At least 1.
    ///
    /// A wide topic shares one queue among its subscribers: once a topic
    /// has [`WIDE_TOPIC_FROM`](crate::WIDE_TOPIC_FROM) subscriptions on
    /// this server, each new subscription on that
    /// topic alone reads the topic's shared ring of `capacity` slots (one
    /// per message, however many read it) instead of a queue of its own.
    /// What it receives is the same (messages, order, lag reports, gaps,
    /// [`Subscription::len`](crate::Subscription::len)), and so are the counts of [`PubSub::stats`](crate::PubSub::stats).
    /// It reads the ring until it leaves the topic, adds another topic, is
    /// the `from` of [`PubSub::broadcast_from`](crate::PubSub::broadcast_from) or
    /// [`PubSub::local_broadcast_from`], or is the topic's last subscriber
    /// on this server: it then continues, with what it had not read yet,
    /// in a queue of its own.
    ///
    /// What an application can see of the ring is the messages' lifetime.
    /// The ring holds a reference to a message until the first broadcast to
    /// the topic after every subscription that was reading the ring when
    /// the message came has received it (or left the ring), at the latest
    /// until `capacity` newer messages replace it, or until no subscription
    /// reads the ring any more; once the server is gone, until its readers'
    /// subscriptions are dropped. So [`Arc::try_unwrap`] or
    /// [`Arc::get_mut`] on a received message of a wide topic fails while
    /// the ring holds it, and a message's `Drop` may run in the
    /// [`broadcast`](PubSub::broadcast) to the topic (or the transport's
    /// receive task) that comes after, as it may for a message evicted from
    /// a full queue, or in the call by which the ring's last reader leaves
    /// it (`add_topic`, `remove_topic`, `unsubscribe` or the drop,
    /// `broadcast_from`).
    ///
    /// It is also the page of a resumed subscription's replay
    /// ([`PubSub::subscribe_since`](crate::PubSub::subscribe_since)): at most `capacity` log entries of
    /// the replay are read from the log and held at once.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many independently locked parts the topic registry has (rounded up
    /// to a power of two, from 1 to [`MAX_SHARDS`](crate::MAX_SHARDS)). More
    /// shards let more publishers run in parallel.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, MAX_SHARDS);
        self
    }

    /// This node's name, unique among the nodes sharing a transport: the
    /// name [`PubSub::direct_broadcast`] addresses.
    ///
    /// Without one, an in-process server is named [`DEFAULT_NODE_NAME`]
    /// and a server built with a transport gets a name no other node has:
    /// `<host>-<pid>-<8 random hex digits>`, such as `web-1-4711-9f3a0c21`.
    /// Two live nodes that are given the same name are still told apart
    /// (each server carries a random instance id on the wire): they receive
    /// each other's broadcasts, and each reports the clash with a
    /// `tracing` error and in [`Stats::name_conflicts`](crate::Stats::name_conflicts).
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = Some(name.into());
        self
    }

    /// The most subscriptions the server accepts at once; past it,
    /// [`PubSub::subscribe`] returns [`Error::SubscriptionLimit`].
    pub fn max_subscriptions(mut self, limit: usize) -> Self {
        self.max_subscriptions = limit;
        self
    }

    /// Builds an in-process server.
    pub fn build(mut self) -> PubSub<M> {
        let name = self
            .node_name
            .take()
            .unwrap_or_else(|| DEFAULT_NODE_NAME.to_owned());
        PubSub {
            core: Arc::new(self.core(name, Connection::Local)),
        }
    }

    /// Builds a server whose broadcasts also reach other nodes through the
    /// transport that `connect` makes. `connect` gets the handle through which
    /// the transport delivers what it receives.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyNodeName`] for a name that is empty or white space;
    /// [`Error::Connect`] if `connect` fails.
    pub async fn build_with<T, F, Fut>(self, connect: F) -> Result<PubSub<M>, Error>
    where
        T: Transport<M>,
        F: FnOnce(LocalNode<M>) -> Fut,
        Fut: Future<Output = Result<T, TransportError>>,
    {
        self.build_with_gossip(|local| async move {
            connect(local).await.map(|transport| (transport, None))
        })
        .await
    }

    /// As [`build_with`](Self::build_with), for an engine that also gives
    /// its gossip: the server's presence trackers replicate through it.
    pub(crate) async fn build_with_gossip<T, F, Fut>(
        mut self,
        connect: F,
    ) -> Result<PubSub<M>, Error>
    where
        T: Transport<M>,
        F: FnOnce(LocalNode<M>) -> Fut,
        Fut: Future<Output = Result<(T, Option<GossipHandle>), TransportError>>,
    {
        let name = match self.node_name.take() {
            Some(name) if name.trim().is_empty() => return Err(Error::EmptyNodeName),
            Some(name) => name,
            None => unique_node_name(),
        };
        let pubsub = PubSub {
            core: Arc::new(self.core(name, Connection::Disconnected)),
        };
        let (transport, gossip) = connect(pubsub.local_node()).await.map_err(Error::Connect)?;
        // The core was built just above without an upstream: this sets it.
        pubsub
            .core
            .set_upstream(Box::new(Own::new(Box::new(transport), gossip)));
        Ok(pubsub)
    }

    /// Sets a feature's setting of type `T` (presence's timing), which the
    /// server built keeps in its extensions.
    pub(crate) fn preset<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.preset.set(value);
        self
    }

    fn core(self, name: String, connection: Connection) -> Core<M> {
        Core::new(
            Registry::new(self.shards, self.capacity),
            Arc::from(name),
            connection,
            self.capacity,
            self.max_subscriptions,
            self.preset,
        )
    }
}
