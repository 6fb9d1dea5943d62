//! [`PubSub`], the server handle: subscribing, the server's state and
//! stats, its link to other nodes.

use std::future::poll_fn;

use super::builder::Builder;
use super::core::Core;
use super::stats::{Stats, Stripe};
use super::subscription::{Held, Subscription, Topics};
use crate::error::Error;
use crate::inbox::Inbox;
use crate::loom::sync::atomic::{AtomicU64, Ordering};
use crate::loom::sync::Arc;
use crate::topic::Topic;
use crate::transport::{Connection, LocalNode, NodeSink};

/// A typed topic pub/sub server: the analog of a `Phoenix.PubSub` server.
///
/// Cheap to clone (one `Arc`); every clone is the same server. Messages are
/// delivered as `Arc<M>`: one allocation per broadcast, shared by every
/// subscriber it reaches.
///
/// ```
/// use staff_pubsub::{PubSub, Topic};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), staff_pubsub::Error> {
/// const ROOMS: Topic = Topic::new("chat:rooms");
/// let pubsub = PubSub::<String>::new();
/// let mut subscription = pubsub.subscribe(ROOMS)?;
/// pubsub.broadcast(&[ROOMS], "hello".to_owned()).await?;
/// assert_eq!(*subscription.recv().await.unwrap(), "hello");
/// # Ok(()) }
/// ```
pub struct PubSub<M> {
    pub(super) core: Arc<Core<M>>,
}

impl<M> Clone for PubSub<M> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
        }
    }
}

impl<M> std::fmt::Debug for PubSub<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub")
            .field("node", &self.core.node)
            .field("instance", &format_args!("{:016x}", self.core.instance))
            .field("capacity", &self.core.capacity)
            .field("network", &self.core.upstream().is_some())
            .finish_non_exhaustive()
    }
}

impl<M: Send + Sync + 'static> Default for PubSub<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> PubSub<M> {
    pub(crate) fn from_core(core: Arc<Core<M>>) -> Self {
        Self { core }
    }

    pub(crate) fn core(&self) -> &Arc<Core<M>> {
        &self.core
    }
}

impl<M: Send + Sync + 'static> PubSub<M> {
    /// An in-process server with the default settings.
    #[must_use]
    pub fn new() -> Self {
        Builder::default().build()
    }

    /// A builder for a configured server.
    pub fn builder() -> Builder<M> {
        Builder::default()
    }

    /// This node's name.
    #[must_use]
    pub fn node_name(&self) -> &str {
        self.core.node_name()
    }

    /// Subscribes to one topic. Leave by dropping the subscription or calling
    /// [`Subscription::unsubscribe`].
    ///
    /// # Errors
    ///
    /// [`Error::SubscriptionLimit`] when the server is full.
    pub fn subscribe(&self, topic: Topic) -> Result<Subscription<M>, Error> {
        self.subscribe_many([topic])
    }

    /// Subscribes to several topics with one queue: the subscription receives
    /// one copy of a broadcast per listed topic that the broadcast reaches
    /// (a topic listed twice counts once).
    ///
    /// # Errors
    ///
    /// [`Error::NoTopics`] for an empty list; [`Error::SubscriptionLimit`]
    /// when the server is full.
    pub fn subscribe_many(
        &self,
        topics: impl IntoIterator<Item = Topic>,
    ) -> Result<Subscription<M>, Error> {
        self.subscribe_with(topics, Inbox::new())
    }

    /// [`subscribe_many`](Self::subscribe_many) into `inbox`, a new one.
    pub(super) fn subscribe_with(
        &self,
        topics: impl IntoIterator<Item = Topic>,
        inbox: Inbox<M>,
    ) -> Result<Subscription<M>, Error> {
        let core = &self.core;
        let topics = Topics::new(topics);
        if topics.as_slice().is_empty() {
            return Err(Error::NoTopics);
        }
        let reserved =
            core.counters
                .subscriptions
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < core.max_subscriptions).then_some(n + 1)
                });
        if reserved.is_err() {
            return Err(Error::SubscriptionLimit {
                limit: core.max_subscriptions,
            });
        }
        let inbox = Arc::new(inbox);
        // On one topic only, a new subscription may read a wide topic's
        // shared ring.
        let sole = topics.as_slice().len() == 1;
        for topic in topics.as_slice() {
            if core.registry.insert(*topic, Arc::clone(&inbox), sole) {
                core.interest_changed(*topic, true);
            }
        }
        tracing::debug!(topics = topics.as_slice().len(), node = %core.node, "subscribed");
        Ok(Subscription {
            inbox,
            core: Arc::downgrade(core),
            topics: Held::Live(topics),
        })
    }
}

impl<M: Send + Sync + 'static> PubSub<M> {
    /// The number of subscriptions to `topic` on this node.
    #[must_use]
    pub fn subscriber_count(&self, topic: &Topic) -> usize {
        self.core.registry.subscriber_count(topic)
    }

    /// A snapshot of the server's counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let counters = &self.core.counters;
        let sum = |counter: fn(&Stripe) -> &AtomicU64| {
            counters
                .stripes
                .iter()
                .map(|stripe| counter(stripe).load(Ordering::Relaxed))
                .sum()
        };
        Stats {
            published: sum(|stripe| &stripe.published),
            delivered: sum(|stripe| &stripe.delivered),
            lagged: sum(|stripe| &stripe.lagged),
            subscriptions: counters.subscriptions.load(Ordering::Relaxed),
            topics: self.core.registry.topic_count(),
            received: counters.received.load(Ordering::Relaxed),
            rejected: counters.rejected.load(Ordering::Relaxed),
            gaps: counters.gaps.load(Ordering::Relaxed),
            name_conflicts: counters.name_conflicts.load(Ordering::Relaxed),
            connection: self.connection(),
        }
    }

    /// The state of this server's link to other nodes: [`Connection::Local`]
    /// without a transport; with one, [`Connection::Connected`] while it
    /// receives from the other nodes and [`Connection::Disconnected`] while
    /// it reconnects.
    #[must_use]
    pub fn connection(&self) -> Connection {
        match self.core.upstream() {
            Some(upstream) => upstream.connection(&self.core),
            None => self.core.connection.get(),
        }
    }

    /// Waits until this node's transport has registered every topic
    /// subscribed before the call with the engine, so that what other
    /// nodes broadcast from then on reaches them. With NATS, which routes
    /// by interest, a new topic's subscription reaches the server a moment
    /// after [`subscribe`](Self::subscribe) returns; in process, with Redis
    /// (which receives every topic), with Phoenix and with durable NATS
    /// (which reads the whole log) it resolves at once. A server
    /// linked with another spec's waits for the linked one's transport.
    ///
    /// # Errors
    ///
    /// [`Error::Sync`] if the transport could not confirm it (not
    /// connected, no answer in time, a subscription refused).
    pub async fn sync(&self) -> Result<(), Error> {
        match self.core.upstream() {
            Some(upstream) => upstream.sync().await,
            None => Ok(()),
        }
    }

    /// Waits until [`connection`](Self::connection) is `state` (at once if
    /// it is already): wait for [`Connection::Connected`] after a reconnect
    /// instead of sending test messages. Never resolves if the server never
    /// reaches `state`: bound it with a timeout.
    pub async fn wait_for_connection(&self, state: Connection) {
        poll_fn(|cx| match self.core.upstream() {
            Some(upstream) => upstream.poll_connection(&self.core, state, cx),
            None => self.core.connection.poll_until(state, cx),
        })
        .await;
    }

    /// The handle a transport uses to deliver to this server.
    #[must_use]
    pub fn local_node(&self) -> LocalNode<M> {
        let core: Arc<dyn NodeSink<M>> = Arc::clone(&self.core) as Arc<dyn NodeSink<M>>;
        LocalNode::new(
            Arc::downgrade(&core),
            Arc::clone(&self.core.node),
            self.core.instance,
        )
    }
}
