//! The server handle, its builder, and subscriptions.

use std::cell::{Cell, LazyCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::error::{Error, RecvError, TransportError, TryRecvError};
use crate::inbox::{Inbox, Taken};
use crate::log::{Gap, Position};
use crate::registry::{Registry, Tally};
use crate::throttle::FailureLog;
use crate::topic::Topic;
use crate::topic::TopicKey;
use crate::transport::{
    BoxFuture, Connection, Envelope, LocalNode, LogHead, Mode, NodeSink, Replay, Transport,
};

/// Broadcasts to at most this many topics (every generated route) are
/// probed for subscribers before their message is shared.
const PROBED_TOPICS: usize = 8;

/// The default queue capacity of one subscription.
pub const DEFAULT_CAPACITY: usize = 1024;

/// The most registry shards a server takes ([`Builder::shards`] clamps to it).
pub const MAX_SHARDS: usize = 1 << 12;

/// The node name of an in-process server built without one. A server built
/// with a transport and no name gets a unique one instead (see
/// [`Builder::node_name`]).
pub const DEFAULT_NODE_NAME: &str = "local";

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
    core: Arc<Core<M>>,
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
            .field("network", &self.core.transport.get().is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Core<M> {
    pub(crate) registry: Registry<M>,
    pub(crate) counters: Counters,
    pub(crate) node: Arc<str>,
    /// A random number telling this server apart from any other, even one
    /// that shares its node name: it travels in every envelope.
    pub(crate) instance: u64,
    pub(crate) connection: ConnectionCell,
    capacity: usize,
    max_subscriptions: usize,
    /// Set once, right after the core is built, by [`Builder::build_with`].
    transport: OnceLock<Box<dyn Transport<M>>>,
    /// The server this one shares delivery with (a spec and its
    /// extension): set once by [`crate::link::link`].
    pub(crate) peer: OnceLock<Box<dyn Peer<M>>>,
    /// The node name of the linked server whose transport carries this
    /// one's traffic, when this one has none: what [`PubSub::node_name`]
    /// reports.
    pub(crate) node_alias: OnceLock<Arc<str>>,
    /// Tells the transport that routes by interest (this server's or the
    /// linked one's) that a topic appeared or went: set with the
    /// transport, or by the link. Holds the transport's server weakly.
    pub(crate) interest: OnceLock<InterestHook>,
    /// Whether broadcasts go through a durable transport's log (this
    /// server's, or the linked server's) and reach this node's subscribers
    /// from there, in log order, instead of at the call.
    pub(crate) durable: AtomicBool,
    /// The log position the durable transport has read up to, packed as
    /// a [`Position`] but with a sequence number that may be 0 (an empty
    /// log); [`NO_HEAD`] until the transport has read the log's head.
    /// Updated before the entry it names is dispatched.
    head: AtomicU64,
    /// Which failed broadcasts are logged at WARN.
    failure_log: FailureLog,
}

/// In [`Core::head`]: no log position known.
const NO_HEAD: u64 = u64::MAX;

/// See [`Core::interest`].
pub(crate) type InterestHook = Box<dyn Fn(Topic) + Send + Sync>;

impl<M: Send + Sync + 'static> Core<M> {
    /// The hook that tells this server's transport of interest changes.
    pub(crate) fn interest_hook(core: &Arc<Self>) -> InterestHook {
        let core = Arc::downgrade(core);
        Box::new(move |topic| {
            if let Some(transport) = core.upgrade().as_deref().and_then(Core::transport) {
                transport.interest_changed(topic);
            }
        })
    }
}

impl<M> Core<M> {
    pub(crate) fn has_transport(&self) -> bool {
        self.transport.get().is_some()
    }

    /// Whether broadcasts go through a durable log (see [`Core::durable`]).
    pub(crate) fn is_durable(&self) -> bool {
        self.durable.load(Ordering::Relaxed)
    }

    /// The log's id and the sequence number read up to (0: none yet).
    pub(crate) fn head(&self) -> Option<(u16, u64)> {
        let bits = self.head.load(Ordering::Acquire);
        // The top 16 bits are the log id: the shift leaves nothing else.
        (bits != NO_HEAD).then_some(((bits >> 48) as u16, bits & Position::MAX_SEQ))
    }

    fn set_head(&self, log: u16, seq: u64) {
        let bits = (u64::from(log) << 48) | (seq & Position::MAX_SEQ);
        self.head.store(bits, Ordering::Release);
    }

    /// The first subscriber of `topic` appeared (`present`) or the last one
    /// left: tells the transport that routes by interest, this server's
    /// or, without one, the linked server's. Called after the registry
    /// changed, outside its locks: notifications of one topic from several
    /// threads may arrive in either order, so a transport checks
    /// [`LocalNode::has_subscribers`] rather than trusting `present`.
    pub(crate) fn interest_changed(&self, topic: Topic, present: bool) {
        tracing::debug!(%topic, node = %self.node, present, "topic interest changed");
        if let Some(notify) = self.interest.get() {
            notify(topic);
        }
    }

    /// Whether this server or its linked one has a subscriber of `key`.
    pub(crate) fn has_subscribers(&self, key: TopicKey<'_>) -> bool {
        self.registry.contains(key)
            || self
                .peer
                .get()
                .is_some_and(|peer| peer.has_subscribers_here(key))
    }

    /// Every subscriber of this server gets a gap (not its peer's).
    ///
    /// Counted in `stats().gaps` when it is news to a subscriber (or there
    /// is none): a gap signalled again before the subscribers read the last
    /// one (a slow consumer dropping message after message) moves their
    /// markers to the end and is one gap, not one per signal.
    pub(crate) fn signal_gap_here(&self, gap: &Arc<Gap>) {
        // Counted before any subscriber is told, so that one that reads
        // the gap finds it counted. Gaps are rare: two passes.
        let mut any = false;
        let mut new = false;
        self.registry.for_each_inbox(|inbox| {
            any = true;
            new |= !inbox.has_gap();
        });
        if new || !any {
            self.counters.record_gap();
        }
        self.registry.for_each_inbox(|inbox| {
            inbox.signal_gap(gap);
        });
    }
}

impl<M: Send + Sync + 'static> Core<M> {
    pub(crate) fn transport(&self) -> Option<&dyn Transport<M>> {
        self.transport.get().map(|transport| &**transport)
    }
}

/// The other server of a linked pair (a spec and its extension), as this
/// server's `M` sees it: implemented in `link.rs`.
pub(crate) trait Peer<M>: Send + Sync {
    /// Dispatches `message`, dispatched on this server already, to the
    /// peer's subscribers of `topics` (each listed once).
    fn mirror(
        &self,
        topics: &mut dyn Iterator<Item = TopicKey<'_>>,
        message: &M,
        position: Option<Position>,
    );

    /// Publishes `message` through the peer's transport: `None` when the
    /// peer has none.
    fn publish<'a>(
        &'a self,
        mode: Mode<'a>,
        topics: &'a [Topic],
        message: &'a M,
    ) -> Option<BoxFuture<'a, Result<(), Error>>>;

    /// The peer's subscribers get a gap: this server's transport, which
    /// carries the peer's traffic too, lost messages.
    fn signal_gap(&self, gap: &Arc<Gap>);

    /// The peer's connection state, when the peer has the transport.
    fn connection(&self) -> Option<Connection>;

    /// Polls for the peer's connection state `wanted`, when the peer has
    /// the transport.
    fn poll_connection(&self, wanted: Connection, cx: &mut Context<'_>) -> Option<Poll<()>>;

    /// For finding the peer's server back (`crate::link::linked_base`).
    fn as_any(&self) -> &dyn std::any::Any;

    /// Whether the peer itself (not its own peer) has a subscriber of `key`.
    fn has_subscribers_here(&self, key: TopicKey<'_>) -> bool;

    /// The topics the peer itself has subscribers of.
    fn topics_here(&self) -> Vec<Topic>;

    /// [`PubSub::sync`] on the peer's transport.
    fn sync(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// How far the peer's durable transport has read its log, when the
    /// peer holds one (see [`Core::head`]).
    fn log_read_head(&self) -> Option<(u16, u64)>;

    /// [`Transport::log_head`] of the peer's transport.
    fn log_head(&self) -> BoxFuture<'_, Result<LogHead, TransportError>>;

    /// [`Transport::replay_limit`] of the peer's transport.
    fn replay_limit(&self) -> Option<u64>;

    /// [`Transport::replay`] of the peer's transport, its messages in this
    /// server's form (those that have none are left out).
    fn replay<'a>(
        &'a self,
        after: Position,
        through: Position,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Replay<M>, TransportError>>;
}

/// Where a server's durable log is read: its own transport's, or (one
/// bus) the linked server's.
enum LogSource<'a, M> {
    Own(&'a dyn Transport<M>),
    Peer(&'a dyn Peer<M>),
}

impl<M: Send + Sync + 'static> Core<M> {
    /// Where this server's durable log is read, if it has one.
    fn log_source(&self) -> Option<LogSource<'_, M>> {
        match (self.transport(), self.peer.get()) {
            (Some(transport), _) if transport.durable() => Some(LogSource::Own(transport)),
            (None, Some(peer)) if peer.log_read_head().is_some() => Some(LogSource::Peer(&**peer)),
            _ => None,
        }
    }
}

impl<M: Send + Sync + 'static> LogSource<'_, M> {
    fn replay_limit(&self) -> Option<u64> {
        match self {
            Self::Own(transport) => transport.replay_limit(),
            Self::Peer(peer) => peer.replay_limit(),
        }
    }

    async fn log_head(&self) -> Result<LogHead, TransportError> {
        match self {
            Self::Own(transport) => transport.log_head().await,
            Self::Peer(peer) => peer.log_head().await,
        }
    }

    async fn replay(
        &self,
        after: Position,
        through: Position,
        topics: &[Topic],
    ) -> Result<Replay<M>, TransportError> {
        match self {
            Self::Own(transport) => transport.replay(after, through, topics).await,
            Self::Peer(peer) => peer.replay(after, through, topics).await,
        }
    }
}

/// The server's side of the transport seam: what a [`LocalNode`] does.
impl<M: Send + Sync + 'static> NodeSink<M> for Core<M> {
    fn dispatch_wire(
        &self,
        topics: &mut dyn Iterator<Item = &str>,
        message: M,
        position: Option<Position>,
    ) -> u64 {
        if let Some(position) = position {
            // Before the dispatch: a resume that reads the head after
            // subscribing replays up to it and skips the live copies up to
            // it, so an entry dispatched meanwhile is neither lost nor
            // delivered twice (see `PubSub::subscribe_since`).
            self.set_head(position.log(), position.seq());
            // Pairs with the fence in `subscribe_since` (see there).
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        self.counters.record_received();
        let message = Arc::new(message);
        let mut tally = Tally::default();
        // Each distinct topic once. Envelopes list a handful of topics (the
        // generated routes, one per NATS subject): a linear scan of the
        // distinct ones so far, and a hash set only for a long list (bounded
        // by the transport's `max_topics`).
        let mut keys: Vec<TopicKey<'_>> = Vec::new();
        let mut seen: Option<hashbrown::HashSet<TopicKey<'_>, foldhash::fast::FixedState>> = None;
        for topic in topics {
            let key = TopicKey::from_wire(topic);
            let new = match &mut seen {
                Some(seen) => seen.insert(key),
                None if keys.len() < 16 => !keys.contains(&key),
                None => {
                    let mut set: hashbrown::HashSet<_, _> = keys.iter().copied().collect();
                    let new = set.insert(key);
                    seen = Some(set);
                    new
                }
            };
            if new {
                self.registry
                    .deliver(key, || Arc::clone(&message), position, None, &mut tally);
                keys.push(key);
            }
        }
        self.counters.record_dispatch(tally);
        if let Some(peer) = self.peer.get() {
            peer.mirror(&mut keys.into_iter(), &message, position);
        }
        tally.delivered
    }

    fn signal_gap(&self, gap: Gap) {
        let gap = Arc::new(gap);
        self.signal_gap_here(&gap);
        if let Some(peer) = self.peer.get() {
            peer.signal_gap(&gap);
        }
    }

    fn set_head(&self, log: u16, seq: u64) {
        Core::set_head(self, log, seq);
    }

    fn record_rejected(&self) {
        self.counters.record_rejected();
    }

    fn record_name_conflict(&self) {
        self.counters.record_name_conflict();
    }

    fn set_connection(&self, connection: Connection) {
        self.connection.set(connection);
    }

    fn has_subscribers(&self, topic: &Topic) -> bool {
        Core::has_subscribers(self, topic.as_key())
    }

    fn topics(&self) -> Vec<Topic> {
        let mut topics = self.registry.topics();
        if let Some(peer) = self.peer.get() {
            topics.extend(peer.topics_here());
            topics.sort_unstable();
            topics.dedup();
        }
        topics
    }
}

impl<M> Drop for Core<M> {
    fn drop(&mut self) {
        // Wake every waiting subscriber: nothing more will come.
        self.registry.for_each_inbox(|inbox| inbox.close());
    }
}

/// Configures a [`PubSub`]: made by [`PubSub::builder`].
#[must_use]
pub struct Builder<M> {
    capacity: usize,
    shards: usize,
    node_name: Option<String>,
    max_subscriptions: usize,
    message: PhantomData<fn() -> M>,
}

impl<M> Clone for Builder<M> {
    fn clone(&self) -> Self {
        Self {
            node_name: self.node_name.clone(),
            ..*self
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
            .finish()
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
            message: PhantomData,
        }
    }
}

impl<M: Send + Sync + 'static> Builder<M> {
    /// How many messages one subscription queues before the oldest are
    /// dropped and reported as [`RecvError::Lagged`]. At least 1.
    ///
    /// A wide topic shares one queue among its subscribers: once a topic
    /// has 32 subscriptions on this server, each new subscription on that
    /// topic alone reads the topic's shared ring of `capacity` slots (one
    /// per message, however many read it) instead of a queue of its own.
    /// What it receives is the same (messages, order, lag reports, gaps,
    /// [`Subscription::len`]), and so are the counts of [`PubSub::stats`].
    /// It reads the ring until it leaves the topic, adds another topic, is
    /// the `from` of [`PubSub::broadcast_from`] or
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
    /// ([`PubSub::subscribe_since`]): at most `capacity` log entries of
    /// the replay are read from the log and held at once.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many independently locked parts the topic registry has (rounded up
    /// to a power of two). More shards let more publishers run in parallel.
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
    /// `tracing` error and in [`Stats::name_conflicts`].
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
    pub async fn build_with<T, F, Fut>(mut self, connect: F) -> Result<PubSub<M>, Error>
    where
        T: Transport<M>,
        F: FnOnce(LocalNode<M>) -> Fut,
        Fut: Future<Output = Result<T, TransportError>>,
    {
        let name = match self.node_name.take() {
            Some(name) if name.trim().is_empty() => return Err(Error::EmptyNodeName),
            Some(name) => name,
            None => unique_node_name(),
        };
        let pubsub = PubSub {
            core: Arc::new(self.core(name, Connection::Disconnected)),
        };
        let transport = connect(pubsub.local_node()).await.map_err(Error::Connect)?;
        // The cells were created empty just above and nothing else can see
        // them.
        pubsub
            .core
            .durable
            .store(transport.durable(), Ordering::Relaxed);
        let _ = pubsub.core.transport.set(Box::new(transport));
        let _ = pubsub.core.interest.set(Core::interest_hook(&pubsub.core));
        Ok(pubsub)
    }

    fn core(self, name: String, connection: Connection) -> Core<M> {
        Core {
            registry: Registry::new(self.shards, self.capacity),
            counters: Counters::default(),
            node: Arc::from(name),
            instance: random_u64(),
            connection: ConnectionCell::new(connection),
            capacity: self.capacity,
            max_subscriptions: self.max_subscriptions,
            transport: OnceLock::new(),
            peer: OnceLock::new(),
            node_alias: OnceLock::new(),
            interest: OnceLock::new(),
            durable: AtomicBool::new(false),
            head: AtomicU64::new(NO_HEAD),
            failure_log: FailureLog::default(),
        }
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
        self.core.node_alias.get().unwrap_or(&self.core.node)
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
        let inbox = Arc::new(Inbox::new());
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
            topics,
            resume: None,
        })
    }

    /// Subscribes to `topics` and first replays what was broadcast to them
    /// after log position `after`: for a consumer that stored the position
    /// of the last message it handled ([`Subscription::recv_with_position`])
    /// and resumes after a restart, or a browser reconnecting with its
    /// `Last-Event-ID` (the SSE bridge calls this). Needs a durable
    /// transport on this server.
    ///
    /// The subscription then receives, in log order and each once (per
    /// reached topic, the delivery rule): the broadcasts to `topics` after
    /// `after` that this node had read when the call was made, then what
    /// it reads after, live. When the replay cannot be whole, a
    /// [`RecvError::Gap`] comes first, saying why: [`Gap::Trimmed`] (what
    /// was after `after` is partly gone from the log; the rest is
    /// replayed), [`Gap::LogLost`] (`after` is of another log: the log was
    /// lost since, or the position is not of this namespace; nothing is
    /// replayed), or [`Gap::ReplayLimit`] (more log entries than the
    /// transport's replay limit are after `after`; nothing is replayed).
    /// A position ahead of this node (a consumer that read another node's
    /// log further) replays nothing and skips the live messages up to it,
    /// unless the engine's log ends before it (the engine lost its last
    /// writes, and their sequence numbers will name other entries): then
    /// [`Gap::LogLost`] comes first and nothing is skipped.
    ///
    /// **Memory: the replay is paged as it is read**, when the transport
    /// says its replay limit ([`Transport::replay_limit`]). The range is
    /// then read from the log in pages of at most the subscription's
    /// capacity ([`Builder::capacity`]) of log entries: the first before
    /// this returns, each next one once the subscription has received the
    /// last (through [`Subscription::recv`], `try_recv`, their
    /// `_with_position` forms or the stream). A resumed subscription that
    /// is not read holds at most one page of replayed messages besides its
    /// queue (whose live messages wait behind the replay, and report
    /// [`RecvError::Lagged`] if it overflows, as any queue does): what a
    /// stalled live subscription costs, whatever the range. A paged replay
    /// keeps every guarantee above, and, because it reads the log while
    /// the consumer reads:
    /// - entries trimmed from the log before their page was read (the
    ///   consumer read slower than the retention keeps entries) come as one
    ///   [`Gap::Trimmed`] where they were, after the messages before them
    ///   and before those after; a log lost meanwhile comes as
    ///   [`Gap::LogLost`], and the replay ends there;
    /// - a page the log does not give in three attempts in a row (each
    ///   bounded by the transport's own timeout) ends the replay with
    ///   [`Gap::Disconnected`]: the rest of the range is not delivered, and
    ///   the live messages after it follow.
    ///
    /// The Redis and NATS transports say it. A transport that does not
    /// (the default) is asked for the whole range at once: the
    /// subscription then holds all of it, up to the transport's replay
    /// limit of entries, until it is received.
    ///
    /// [`Transport::replay_limit`]: crate::transport::Transport::replay_limit
    ///
    /// # Errors
    ///
    /// [`Error::NotDurable`] without a durable transport on this server;
    /// [`Error::Replay`] when the log could not be read (the subscription
    /// is dropped); as [`subscribe_many`](Self::subscribe_many) otherwise.
    pub async fn subscribe_since(
        &self,
        topics: impl IntoIterator<Item = Topic>,
        after: Position,
    ) -> Result<Subscription<M>, Error> {
        let core = &self.core;
        let Some(source) = core.log_source() else {
            return Err(Error::NotDurable);
        };
        let mut subscription = self.subscribe_many(topics)?;
        // Read after subscribing: what the transport dispatched up to here
        // may or may not have reached the new queue; what it dispatches
        // later does. Replaying up to the head and skipping queued copies
        // up to it is exactly once. The fence pairs with the one in
        // `dispatch_wire`: the registry's presence check is a relaxed load
        // before any lock, so without both fences the reader could miss the
        // new subscriber while this load misses the reader's new head.
        std::sync::atomic::fence(Ordering::SeqCst);
        let head = match &source {
            LogSource::Own(_) => core.head(),
            LogSource::Peer(peer) => peer.log_read_head(),
        };
        let Some((log, seq)) = head else {
            return Err(Error::NotDurable);
        };
        let mut resume = Resume {
            replayed: VecDeque::new(),
            through: Some(after),
            rest: None,
        };
        if after.log() != log {
            resume.replayed.push_back(Err(RecvError::Gap(Gap::LogLost)));
            resume.through = None;
        } else if after.seq() > seq {
            // Ahead of this node: a node that has not read as far yet (the
            // position came from another node), or a position the engine
            // lost with its last writes. The engine tells which.
            let lost = match source.log_head().await.map_err(Error::Replay)? {
                LogHead::Unknown => false,
                LogHead::Missing => true,
                LogHead::At { log, seq } => log != after.log() || seq < after.seq(),
            };
            if lost {
                // Sequence numbers past the loss name other entries now:
                // skip nothing.
                resume.replayed.push_back(Err(RecvError::Gap(Gap::LogLost)));
                resume.through = None;
            }
        } else if let Some(head) = Position::new(log, seq).filter(|_| after.seq() < seq) {
            // `after` is before `head`, in the same log.
            let entries = seq - after.seq();
            resume.through = Some(head);
            match source.replay_limit() {
                None => {
                    // The transport does not page: the whole range.
                    let replay = source
                        .replay(after, head, subscription.topics())
                        .await
                        .map_err(Error::Replay)?;
                    resume.take_page(replay);
                }
                Some(limit) if entries > limit => {
                    resume
                        .replayed
                        .push_back(Err(RecvError::Gap(Gap::ReplayLimit { missing: entries })));
                }
                Some(_) => {
                    // The first page now (so that an engine that does not
                    // answer fails the call), the others as they are read.
                    let mut rest = Paging {
                        after,
                        end: head,
                        topics: subscription.topics().into(),
                        page: u64::try_from(core.capacity).unwrap_or(u64::MAX),
                        fetching: Mutex::new(None),
                        failures: 0,
                        fetch: fetch_page::<M>,
                    };
                    let through = rest.next_through();
                    let replay = source
                        .replay(after, through, &rest.topics)
                        .await
                        .map_err(Error::Replay)?;
                    rest.after = through;
                    if resume.take_page(replay) && through != head {
                        resume.rest = Some(Box::new(rest));
                    }
                }
            }
        }
        tracing::debug!(
            %after,
            replayed = resume.replayed.len(),
            paged = resume.rest.is_some(),
            "resumed a subscription"
        );
        subscription.resume = Some(Box::new(resume));
        Ok(subscription)
    }

    /// The position in the durable transport's log this node has read up
    /// to: the last entry it delivered (or skipped: an entry for no
    /// subscriber here). `None` without a durable transport, or while the
    /// log is empty.
    #[must_use]
    pub fn log_position(&self) -> Option<Position> {
        if !self.core.is_durable() {
            return None;
        }
        let head = match (self.core.has_transport(), self.core.peer.get()) {
            (false, Some(peer)) => peer.log_read_head(),
            _ => self.core.head(),
        };
        let (log, seq) = head?;
        Position::new(log, seq)
    }

    /// Sends `message` to every subscriber of `topics`, on every node: one
    /// copy per reached topic per subscription.
    ///
    /// When this node's subscribers (and those of a linked server, see the
    /// README's "One bus per application") receive it depends on the mode
    /// (the README's "Guarantees in every mode" has the table):
    ///
    /// - **Live** (in process, Redis, NATS, Phoenix, and a server linked to
    ///   one of these): when `broadcast` is called, before the returned
    ///   future is first polled; the future sends it to other nodes, and
    ///   `Ok` then means the engine took it. In process the future is ready
    ///   at once with `Ok` and never fails. Dropping the future unpolled
    ///   skips the other nodes only: this node's subscribers have it, no
    ///   other node ever gets it.
    /// - **Durable** (`RedisConfig::durable`, `NatsConfig::durable`, and a
    ///   server linked to one): nothing is delivered at the call. The
    ///   future appends the message to the engine's log, and `Ok` means the
    ///   log holds it; every node, this one included, then delivers it from
    ///   the log, with its position. Dropping the future unpolled sends
    ///   nothing: nobody gets it.
    ///
    /// A topic listed more than once is one topic: every subscription, on
    /// this node (and a linked server's) and on every other node, in every
    /// mode (in process, Redis, NATS, durable or not, the Phoenix wire),
    /// receives one copy per *distinct* listed topic it has. So
    /// `broadcast([teams, teams], m)` gives a subscriber of `teams` one
    /// copy, and `broadcast([teams, team], m)` gives a subscription to both
    /// two (the delivery rule). Other nodes are sent the list without its
    /// repeats (the first of each, in the given order): one NATS subject
    /// or Phoenix frame per distinct topic, and one log entry listing each
    /// once. The check costs nothing when no topic of the list has a
    /// subscriber here, and a few comparisons of the topics' hashes (or of
    /// the topics, for a broadcast that goes to other nodes) otherwise; only
    /// a list with a repeat is copied.
    ///
    /// `topics` is anything that is a slice of topics: `&[Topic]`, an array,
    /// a `Vec<Topic>`, or the topic list of a generated function.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the engine did not take the message. Who has
    /// it then: live, this node's subscribers (they got it at the call);
    /// durable, nobody yet. Its [`outcome`](crate::TransportError::outcome)
    /// says whether it may still reach the others: with
    /// [`Outcome::NotSent`](crate::Outcome::NotSent) it never will (live:
    /// no other node; durable: no node, this one included); with
    /// [`Outcome::Unknown`](crate::Outcome::Unknown) it may, later, at most
    /// once per subscription and reached topic.
    pub fn broadcast<'a, T>(&'a self, topics: T, message: M) -> Broadcast<'a>
    where
        T: AsRef<[Topic]> + Send + 'a,
    {
        if self.core.is_durable() {
            return self.through_log(Listed::new(topics), message);
        }
        // The dispatch passes over repeated topics here, and the network
        // part sends the list without them.
        let shared = self.dispatch(topics.as_ref(), message, None, true).1;
        self.network(topics, shared)
    }

    /// A broadcast on a durable server: every node, this one included,
    /// delivers it from the log.
    fn through_log<'a, T>(&'a self, topics: Listed<T>, message: M) -> Broadcast<'a>
    where
        T: AsRef<[Topic]> + Send + 'a,
    {
        self.record(topics.as_ref(), Tally::default());
        Broadcast::Sending(Box::pin(async move {
            self.publish(Mode::All, topics.as_ref(), &message).await
        }))
    }

    /// As [`broadcast`](Self::broadcast), but not to `from` (the sender's own
    /// subscription). A topic listed more than once is one topic, as there.
    ///
    /// This node's other subscribers receive it when `broadcast_from` is
    /// called in every mode, durable too: there it does not go through the
    /// log on this node (no position; other nodes deliver it from the log).
    /// So after an [`Error::Transport`], or with the future dropped
    /// unpolled, this node's other subscribers have it in every mode; the
    /// other nodes as with [`broadcast`](Self::broadcast).
    ///
    /// # Errors
    ///
    /// As [`broadcast`](Self::broadcast).
    pub fn broadcast_from<'a, T>(
        &'a self,
        from: &Subscription<M>,
        topics: T,
        message: M,
    ) -> Broadcast<'a>
    where
        T: AsRef<[Topic]> + Send + 'a,
    {
        let except = self.excluded(from);
        let shared = self
            .dispatch(topics.as_ref(), message, Some(except), true)
            .1;
        self.network(topics, shared)
    }

    /// `from`'s inbox, to be left out of a dispatch. If it reads a wide
    /// topic's ring of this server (where every reader has the one slot),
    /// it gets a queue of its own first.
    fn excluded<'s>(&self, from: &'s Subscription<M>) -> &'s Arc<Inbox<M>> {
        if std::ptr::eq(from.core.as_ptr(), Arc::as_ptr(&self.core)) && from.inbox.reads_ring() {
            for topic in from.topics.as_slice() {
                self.core.registry.settle(topic, &from.inbox);
            }
        }
        &from.inbox
    }

    /// As [`broadcast`](Self::broadcast), the future owning its handle on
    /// the server: what a generated function returns for a scope's server.
    pub(crate) fn into_broadcast<T>(
        self,
        topics: T,
        message: M,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static
    where
        T: AsRef<[Topic]> + Send + 'static,
    {
        let durable = self.core.is_durable();
        let shared = if durable {
            self.record(topics.as_ref(), Tally::default());
            Some(Arc::new(message))
        } else {
            self.dispatch(topics.as_ref(), message, None, true).1
        };
        let mode = if durable {
            Mode::All
        } else {
            Mode::ExceptOrigin
        };
        async move {
            match shared {
                None => Ok(()),
                Some(message) => {
                    let topics = Listed::new(topics);
                    self.publish(mode, topics.as_ref(), &message).await
                }
            }
        }
    }

    /// The other nodes' part of a broadcast already dispatched here: a
    /// future only when there is a message for the network.
    ///
    /// Other nodes are sent `topics` without repeats ([`Listed`]): the
    /// list is checked here, once there is a message to send.
    fn network<'a, T>(&'a self, topics: T, shared: Option<Arc<M>>) -> Broadcast<'a>
    where
        T: AsRef<[Topic]> + Send + 'a,
    {
        match shared {
            None => Broadcast::Done,
            Some(message) => Broadcast::Sending(Box::pin(async move {
                let topics = Listed::new(topics);
                self.publish(Mode::ExceptOrigin, topics.as_ref(), &message)
                    .await
            })),
        }
    }

    /// Sends `message` to this node's subscribers only. Returns the number of
    /// copies queued. A topic listed more than once is one topic, as with
    /// [`broadcast`](Self::broadcast).
    pub fn local_broadcast(&self, topics: &[Topic], message: M) -> u64 {
        self.dispatch(topics, message, None, false).0
    }

    /// As [`local_broadcast`](Self::local_broadcast), but not to `from`.
    pub fn local_broadcast_from(
        &self,
        from: &Subscription<M>,
        topics: &[Topic],
        message: M,
    ) -> u64 {
        let except = self.excluded(from);
        self.dispatch(topics, message, Some(except), false).0
    }

    /// Sends `message` to the subscribers of `topics` on one node only.
    /// To this node's own name it is a [`local_broadcast`](Self::local_broadcast)
    /// (in durable mode too: not through the log, no position); to another
    /// node, a durable transport carries it through the log, and only that
    /// node delivers it. A topic listed more than once is one topic, as with
    /// [`broadcast`](Self::broadcast): the node is sent each once.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownNode`] if `node` is another node and the server has no
    /// transport; [`Error::Transport`] if the transport could not send it.
    pub async fn direct_broadcast(
        &self,
        node: &str,
        topics: &[Topic],
        message: M,
    ) -> Result<(), Error> {
        if node == self.node_name() {
            self.local_broadcast(topics, message);
            return Ok(());
        }
        let topics = Listed::new(topics);
        let topics = topics.as_ref();
        let Some(transport) = self.core.transport.get() else {
            let through_peer = self
                .core
                .peer
                .get()
                .and_then(|peer| peer.publish(Mode::Only(node), topics, &message));
            let Some(publishing) = through_peer else {
                return Err(Error::UnknownNode {
                    node: node.to_owned(),
                });
            };
            self.core.counters.record_broadcast(Tally::default());
            return publishing.await;
        };
        self.core.counters.record_broadcast(Tally::default());
        let envelope = Envelope {
            origin: &self.core.node,
            instance: Some(self.core.instance),
            mode: Mode::Only(node),
            topics,
            message: &message,
        };
        transport.publish(envelope).await.map_err(Error::Transport)
    }

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
        if !self.core.has_transport() {
            if let Some(state) = self.core.peer.get().and_then(|peer| peer.connection()) {
                return state;
            }
        }
        self.core.connection.get()
    }

    /// Waits until this node's transport has registered every topic
    /// subscribed before the call with the engine, so that what other
    /// nodes broadcast from then on reaches them. With NATS, which routes
    /// by interest, a new topic's subscription reaches the server a moment
    /// after [`subscribe`](Self::subscribe) returns; in process and with
    /// Redis (which receives every topic) it resolves at once. A server
    /// linked with another spec's waits for the linked one's transport.
    ///
    /// # Errors
    ///
    /// [`Error::Sync`] if the transport could not confirm it (not
    /// connected, no answer in time, a subscription refused).
    pub async fn sync(&self) -> Result<(), Error> {
        if let Some(transport) = self.core.transport() {
            return transport.sync().await.map_err(Error::Sync);
        }
        match self.core.peer.get() {
            Some(peer) => peer.sync().await,
            None => Ok(()),
        }
    }

    /// Waits until [`connection`](Self::connection) is `state` (at once if
    /// it is already): wait for [`Connection::Connected`] after a reconnect
    /// instead of sending test messages. Never resolves if the server never
    /// reaches `state`: bound it with a timeout.
    pub async fn wait_for_connection(&self, state: Connection) {
        poll_fn(|cx| {
            if !self.core.has_transport() {
                if let Some(poll) = self
                    .core
                    .peer
                    .get()
                    .and_then(|peer| peer.poll_connection(state, cx))
                {
                    return poll;
                }
            }
            self.core.connection.poll_until(state, cx)
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

    /// Queues `message` for this node's subscribers of `topics` but
    /// `except` (and the linked server's), each distinct topic once, and
    /// returns the number of copies queued here and, when `for_network`
    /// and it must also go to other nodes, the shared message.
    ///
    /// A list that repeats a topic is dispatched without its repeats; the
    /// callers that send to other nodes send the same list ([`Listed`]).
    ///
    /// Without a transport or a linked server, the message is moved into
    /// its one `Arc` when the first subscriber is found: a broadcast that
    /// reaches nobody allocates nothing, and does not look for repeats
    /// either; one that reaches a subscriber compares the topics' hashes.
    fn dispatch(
        &self,
        topics: &[Topic],
        message: M,
        except: Option<&Arc<Inbox<M>>>,
        for_network: bool,
    ) -> (u64, Option<Arc<M>>) {
        let core = &*self.core;
        let peer = core.peer.get();
        let mut tally = Tally::default();
        if peer.is_none() && !(for_network && core.has_transport()) {
            if topics.len() <= PROBED_TOPICS {
                // Hash each topic once: a broadcast that no topic of which
                // has a subscriber here ends before its message is touched.
                let mut hashes = [0_u64; PROBED_TOPICS];
                let mut any = false;
                for (hash, topic) in hashes.iter_mut().zip(topics) {
                    let (probed, present) = core.registry.probe(topic.as_key());
                    *hash = probed;
                    any |= present;
                }
                if !any {
                    self.record(topics, tally);
                    return (0, None);
                }
                // A repeated topic has a repeated hash: comparing the
                // hashes (a handful of words) finds any repeat, and only a
                // list with a repeated hash is compared in full, aside.
                if repeats_a_hash(hashes.get(..topics.len()).unwrap_or(&hashes))
                    && has_repeats(topics)
                {
                    return self.dispatch_here_without_repeats(topics, message, except);
                }
                let shared = LazyCell::new(move || Arc::new(message));
                for (hash, topic) in hashes.iter().zip(topics) {
                    core.registry.deliver_hashed(
                        *hash,
                        topic.as_key(),
                        || Arc::clone(&shared),
                        None,
                        except,
                        &mut tally,
                    );
                }
                self.record(topics, tally);
                return (tally.delivered, None);
            }
            if has_repeats(topics) {
                return self.dispatch_here_without_repeats(topics, message, except);
            }
            let shared = LazyCell::new(move || Arc::new(message));
            for topic in topics {
                core.registry.deliver(
                    topic.as_key(),
                    || Arc::clone(&shared),
                    None,
                    except,
                    &mut tally,
                );
            }
            self.record(topics, tally);
            return (tally.delivered, None);
        }
        let distinct: Box<[Topic]>;
        let topics = if has_repeats(topics) {
            distinct = without_repeats(topics);
            &*distinct
        } else {
            topics
        };
        let message = Arc::new(message);
        for topic in topics {
            core.registry.deliver(
                topic.as_key(),
                || Arc::clone(&message),
                None,
                except,
                &mut tally,
            );
        }
        self.record(topics, tally);
        if let Some(peer) = peer {
            peer.mirror(&mut topics.iter().map(Topic::as_key), &message, None);
        }
        (tally.delivered, for_network.then_some(message))
    }

    /// [`dispatch`](Self::dispatch) on this node alone (no linked server,
    /// nothing for the network) of a list that repeats a topic: of its
    /// topics each once. Out of the dispatch's way: no generated
    /// function's list comes here.
    #[cold]
    #[inline(never)]
    fn dispatch_here_without_repeats(
        &self,
        topics: &[Topic],
        message: M,
        except: Option<&Arc<Inbox<M>>>,
    ) -> (u64, Option<Arc<M>>) {
        let distinct = without_repeats(topics);
        // Distinct now: the dispatch finds no repeat in it. Without a
        // linked server it delivers on this node alone, whether or not for
        // the network (the message it returns then is dropped here); asked
        // as the broadcasts ask, so that the dispatch keeps one form.
        let (copies, _) = self.dispatch(&distinct, message, except, true);
        (copies, None)
    }

    fn record(&self, topics: &[Topic], tally: Tally) {
        self.core.counters.record_broadcast(tally);
        tracing::trace!(
            topics = topics.len(),
            delivered = tally.delivered,
            "broadcast"
        );
    }

    /// Sends to other nodes through this server's transport or, without
    /// one, its linked server's.
    async fn publish(&self, mode: Mode<'_>, topics: &[Topic], message: &M) -> Result<(), Error> {
        if !self.core.has_transport() {
            let through_peer = self
                .core
                .peer
                .get()
                .and_then(|peer| peer.publish(mode, topics, message));
            return match through_peer {
                Some(publishing) => publishing.await,
                None => Ok(()),
            };
        }
        self.publish_own(mode, topics, message).await
    }

    /// Sends to other nodes through this server's own transport, if any.
    pub(crate) async fn publish_own(
        &self,
        mode: Mode<'_>,
        topics: &[Topic],
        message: &M,
    ) -> Result<(), Error> {
        let Some(transport) = self.core.transport.get() else {
            return Ok(());
        };
        let envelope = Envelope {
            origin: &self.core.node,
            instance: Some(self.core.instance),
            mode,
            topics,
            message,
        };
        transport.publish(envelope).await.map_err(|error| {
            // Rate-limited: an engine that is down fails every broadcast.
            match self.core.failure_log.admit(&error.to_string()) {
                Some(unlogged) => {
                    tracing::warn!(%error, unlogged, "broadcast not sent to other nodes");
                }
                None => tracing::debug!(%error, "broadcast not sent to other nodes"),
            }
            Error::Transport(error)
        })
    }
}

/// A broadcast's topics as sent to other nodes: the caller's list when no
/// topic is listed twice (always, for the generated functions), else a
/// copy with each topic once, in the order first listed.
pub(crate) enum Listed<T> {
    /// The caller's list, which has no repeat.
    Given(T),
    /// The caller's list without its repeats.
    Distinct(Box<[Topic]>),
}

impl<T: AsRef<[Topic]>> Listed<T> {
    /// `topics`, each once.
    pub(crate) fn new(topics: T) -> Self {
        let listed = topics.as_ref();
        if has_repeats(listed) {
            Self::Distinct(without_repeats(listed))
        } else {
            Self::Given(topics)
        }
    }
}

impl<T: AsRef<[Topic]>> AsRef<[Topic]> for Listed<T> {
    fn as_ref(&self) -> &[Topic] {
        match self {
            Self::Given(topics) => topics.as_ref(),
            Self::Distinct(topics) => topics,
        }
    }
}

/// Up to this many topics, a list is searched for repeats by comparing
/// each topic with those before it; a longer one with a hash set.
const SCANNED_TOPICS: usize = 16;

/// Whether `topics` lists a topic more than once. Out of line: it runs for
/// a broadcast to other nodes, and for a probed list whose hashes may
/// repeat. Compares the topics
/// (ids first, then the names, equal at once when they are the same
/// static string): at most six comparisons for a membership broadcast's
/// four topics.
#[inline(never)]
fn has_repeats(topics: &[Topic]) -> bool {
    match topics {
        [] | [_] => false,
        [first, second] => first == second,
        _ if topics.len() <= SCANNED_TOPICS => topics.iter().enumerate().any(|(at, topic)| {
            topics
                .get(..at)
                .is_some_and(|before| before.contains(topic))
        }),
        _ => {
            let mut seen: hashbrown::HashSet<&Topic, foldhash::fast::FixedState> =
                hashbrown::HashSet::with_capacity_and_hasher(topics.len(), Default::default());
            !topics.iter().all(|topic| seen.insert(topic))
        }
    }
}

/// `topics` without its repeats: the first of each, in order.
fn without_repeats(topics: &[Topic]) -> Box<[Topic]> {
    let mut distinct: Vec<Topic> = Vec::with_capacity(topics.len());
    if topics.len() <= SCANNED_TOPICS {
        for topic in topics {
            if !distinct.contains(topic) {
                distinct.push(*topic);
            }
        }
    } else {
        let mut seen: hashbrown::HashSet<&Topic, foldhash::fast::FixedState> =
            hashbrown::HashSet::with_capacity_and_hasher(topics.len(), Default::default());
        distinct.extend(topics.iter().filter(|topic| seen.insert(topic)).copied());
    }
    distinct.into_boxed_slice()
}

/// Whether two of `hashes` (a probed list's, at most [`PROBED_TOPICS`])
/// are equal: each compared with those after it, six comparisons of words
/// for a membership broadcast's four topics. Equal topics have equal
/// hashes; equal hashes are compared as topics after.
#[inline]
fn repeats_a_hash(hashes: &[u64]) -> bool {
    let mut rest = hashes;
    while let Some((first, after)) = rest.split_first() {
        if after.iter().any(|hash| hash == first) {
            return true;
        }
        rest = after;
    }
    false
}

/// What [`PubSub::broadcast`] returns: the part of a broadcast that goes
/// through the engine.
///
/// Live (in process, Redis, NATS, Phoenix, and a server linked to one of
/// these), this node's subscribers have the message already when the
/// `Broadcast` is returned, and the future sends it to the other nodes;
/// dropped unpolled, no other node gets it. Durable (Redis or NATS with
/// `durable`, and a server linked to one), nothing is delivered yet: the
/// future appends the message to the engine's log, from which every node,
/// this one included, delivers it; dropped unpolled, nobody gets it.
///
/// Ready at once with `Ok` when there is nothing to send (in process);
/// boxed when there is, as the transport's own future is.
#[must_use = "other nodes receive the broadcast only when the future is awaited"]
pub enum Broadcast<'a> {
    /// Nothing to send to other nodes: resolves to `Ok(())` at once.
    #[doc(hidden)]
    Done,
    /// Sending to other nodes.
    #[doc(hidden)]
    Sending(BoxFuture<'a, Result<(), Error>>),
}

impl std::fmt::Debug for Broadcast<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Done => "Broadcast(done)",
            Self::Sending(_) => "Broadcast(sending to other nodes)",
        })
    }
}

impl Future for Broadcast<'_> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `Broadcast` is `Unpin`: the sending future is boxed.
        match self.get_mut() {
            Self::Done => Poll::Ready(Ok(())),
            Self::Sending(sending) => sending.as_mut().poll(cx),
        }
    }
}

/// Counters of one server, as read by [`PubSub::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Broadcasts made on this node.
    pub published: u64,
    /// Copies queued for this node's subscribers.
    pub delivered: u64,
    /// Queued copies dropped because a subscriber's queue was full.
    pub lagged: u64,
    /// Live subscriptions.
    pub subscriptions: usize,
    /// Topics with at least one subscription.
    pub topics: usize,
    /// Broadcasts this server took from the engine and dispatched. Live:
    /// those of other nodes. Durable: every entry read from the log, this
    /// node's own broadcasts included. On a server without a transport
    /// linked to one that has it (see the README's "One bus per
    /// application"), 0: the linked server, which receives them, counts
    /// them.
    pub received: u64,
    /// Messages from the wire that were malformed or refused, and skipped.
    pub rejected: u64,
    /// Times subscribers were told of a gap: the transport lost its
    /// connection, restarted its receive task, or dropped messages (a slow
    /// consumer). A gap signalled again before the subscribers read the
    /// previous one counts once.
    pub gaps: u64,
    /// Envelopes received from another live server that uses this node's
    /// name (each is also logged at ERROR level, and still delivered).
    pub name_conflicts: u64,
    /// The link to other nodes, as [`PubSub::connection`].
    pub connection: Connection,
}

/// The connection state and the tasks waiting for a change of it. Changes
/// are rare (start-up, reconnects), so one lock is plenty.
pub(crate) struct ConnectionCell {
    state: Mutex<(Connection, Vec<Waker>)>,
}

impl ConnectionCell {
    fn new(state: Connection) -> Self {
        Self {
            state: Mutex::new((state, Vec::new())),
        }
    }

    pub(crate) fn get(&self) -> Connection {
        self.state.lock().0
    }

    pub(crate) fn set(&self, connection: Connection) {
        let wakers = {
            let mut state = self.state.lock();
            if state.0 == connection {
                return;
            }
            state.0 = connection;
            std::mem::take(&mut state.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    pub(crate) fn poll_until(&self, wanted: Connection, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock();
        if state.0 == wanted {
            return Poll::Ready(());
        }
        if !state.1.iter().any(|waker| waker.will_wake(cx.waker())) {
            state.1.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A node name no other node has: host, process id and a random part.
fn unique_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        random_u64() & 0xffff_ffff
    )
}

/// A random number: std's hasher keys are random per process, and the
/// counter and clock make each call differ.
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    static CALLS: AtomicU64 = AtomicU64::new(0);
    std::collections::hash_map::RandomState::new().hash_one((
        CALLS.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now(),
        std::process::id(),
    ))
}

/// The server's counters. Those that every broadcast moves are striped:
/// each thread adds to its own stripe (on its own cache line) and
/// [`PubSub::stats`] sums the stripes, so that publishers on several cores do
/// not contend for one counter.
#[derive(Default)]
pub(crate) struct Counters {
    stripes: [Stripe; STRIPES],
    subscriptions: AtomicUsize,
    received: AtomicU64,
    rejected: AtomicU64,
    gaps: AtomicU64,
    name_conflicts: AtomicU64,
}

/// Stripes of the per-broadcast counters: a power of two.
const STRIPES: usize = 8;

/// Aligned to two cache lines, as the registry's shards.
#[derive(Default)]
#[repr(align(128))]
struct Stripe {
    published: AtomicU64,
    delivered: AtomicU64,
    lagged: AtomicU64,
}

thread_local! {
    /// This thread's stripe, given out round-robin on first use.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The next stripe to give out.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

fn stripe_index() -> usize {
    STRIPE.with(|stripe| {
        let mut index = stripe.get();
        if index == usize::MAX {
            index = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
            stripe.set(index);
        }
        index
    })
}

impl Counters {
    fn stripe(&self) -> &Stripe {
        &self.stripes[stripe_index()]
    }

    /// One broadcast made on this node, and what its local dispatch did.
    fn record_broadcast(&self, tally: Tally) {
        let stripe = self.stripe();
        stripe.published.fetch_add(1, Ordering::Relaxed);
        stripe.record(tally);
    }

    pub(crate) fn record_dispatch(&self, tally: Tally) {
        if tally != Tally::default() {
            self.stripe().record(tally);
        }
    }

    pub(crate) fn record_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_gap(&self) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_name_conflict(&self) {
        self.name_conflicts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Stripe {
    fn record(&self, tally: Tally) {
        if tally.delivered > 0 {
            self.delivered.fetch_add(tally.delivered, Ordering::Relaxed);
        }
        if tally.lagged > 0 {
            self.lagged.fetch_add(tally.lagged, Ordering::Relaxed);
        }
    }
}

/// A subscription to one or more topics: a queue of the messages broadcast
/// to them. Dropping it unsubscribes.
///
/// Its topics can change while it lives, into the same queue:
/// [`add_topic`](Self::add_topic) and [`remove_topic`](Self::remove_topic)
/// (a page that subscribes to more topics, or fewer, as its user
/// navigates).
///
/// Receive with [`recv`](Self::recv), [`try_recv`](Self::try_recv), or as a
/// [`Stream`](futures_core::Stream) of `Result<Arc<M>, RecvError>` that ends
/// when the server is gone.
pub struct Subscription<M> {
    inbox: Arc<Inbox<M>>,
    core: Weak<Core<M>>,
    topics: Topics,
    /// Made by [`PubSub::subscribe_since`]: what to deliver before the
    /// queue, and the queued copies to skip. Dropped once the queue is past
    /// the replay.
    resume: Option<Box<Resume<M>>>,
}

/// What a resumed subscription delivers before its queue.
///
/// Invariant: `replayed` holds the entries of at most one page of the
/// replay (at most the subscription's capacity of log entries, each with
/// its copies, sharing one `Arc`) while the transport pages (`rest`); the
/// next page is fetched only once `replayed` is empty.
struct Resume<M> {
    /// A gap, then the replayed messages of the page being read, in log
    /// order.
    replayed: VecDeque<Taken<M>>,
    /// Queued messages of this log up to here were replayed (or were
    /// already read by the consumer): skipped. `None`: nothing is.
    through: Option<Position>,
    /// The part of the range not fetched yet, when the transport pages.
    rest: Option<Box<Paging<M>>>,
}

impl<M> Resume<M> {
    /// Queues `gap`, merged into the gap queued last if nothing came
    /// after it (one loss that spans pages is one gap).
    fn push_gap(&mut self, gap: Gap) {
        match self.replayed.back_mut() {
            Some(Err(RecvError::Gap(earlier))) => *earlier = earlier.merge(gap),
            _ => self.replayed.push_back(Err(RecvError::Gap(gap))),
        }
    }

    /// Queues a page's gap and entries (each with its copies: one per
    /// reached topic, as live delivery queues). Returns whether the replay
    /// goes on after it: not after a gap that ends it (the log was lost,
    /// the range is past the replay limit).
    fn take_page(&mut self, replay: Replay<M>) -> bool {
        let ends = matches!(replay.gap, Some(Gap::LogLost | Gap::ReplayLimit { .. }));
        if let Some(gap) = replay.gap {
            self.push_gap(gap);
        }
        for (position, message, copies) in replay.into_copies() {
            let message = Arc::new(message);
            for _ in 0..copies {
                self.replayed
                    .push_back(Ok((Arc::clone(&message), Some(position))));
            }
        }
        !ends
    }
}

/// A paged replay's state: the range after `after` through `end` is still
/// to be fetched.
struct Paging<M> {
    /// Fetched through here.
    after: Position,
    /// The end of the range: the node's head when the subscription was
    /// made.
    end: Position,
    /// The topics replayed: the subscription's when it was made.
    topics: Arc<[Topic]>,
    /// Log entries per page: the subscription's capacity.
    page: u64,
    /// The page being fetched, and the end of its range. In a mutex only
    /// to keep `Subscription` `Sync` (the future is not): it is reached
    /// through `&mut` alone, never locked.
    fetching: Mutex<Option<(Position, Fetch<M>)>>,
    /// Fetches that failed in a row.
    failures: u32,
    /// Starts fetching a page: [`fetch_page`], for this `M`.
    fetch: FetchPage<M>,
}

/// See [`fetch_page`].
type FetchPage<M> = fn(&Weak<Core<M>>, Position, Position, Arc<[Topic]>) -> Option<Fetch<M>>;

/// Fetches the entries after `after` through `through` that list one of
/// `topics` from the server's log: `None` when the server is gone. A plain
/// function, stored in [`Paging`], so that the subscription's methods need
/// no bounds on `M`.
fn fetch_page<M: Send + Sync + 'static>(
    core: &Weak<Core<M>>,
    after: Position,
    through: Position,
    topics: Arc<[Topic]>,
) -> Option<Fetch<M>> {
    let core = core.upgrade()?;
    Some(Box::pin(async move {
        match core.log_source() {
            Some(source) => source.replay(after, through, &topics).await,
            None => Err(TransportError::msg("the server has no durable log now")),
        }
    }))
}

/// A page on its way from the log.
type Fetch<M> = BoxFuture<'static, Result<Replay<M>, TransportError>>;

/// A paged replay ends with [`Gap::Disconnected`] after this many failed
/// fetches of one page in a row (each bounded by the transport's own
/// timeout).
const PAGE_ATTEMPTS: u32 = 3;

impl<M> Paging<M> {
    /// The end of the next page's range.
    fn next_through(&self) -> Position {
        let through = self
            .after
            .seq()
            .saturating_add(self.page)
            .min(self.end.seq());
        // Between `after` and `end`, both of one log: a position.
        Position::new(self.after.log(), through).unwrap_or(self.end)
    }
}

impl<M> Paging<M> {
    /// Polls for the next page: `Ready(Some)` with its range's end and the
    /// replay, `Ready(None)` when the replay ends here (the server is gone,
    /// or the log does not answer: a gap, then the queue).
    fn poll_page(
        &mut self,
        core: &Weak<Core<M>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Position, Replay<M>), Gap>> {
        loop {
            if self.fetching.get_mut().is_none() {
                let through = self.next_through();
                let Some(fetch) = (self.fetch)(core, self.after, through, Arc::clone(&self.topics))
                else {
                    // The server is gone: nothing more to read.
                    return Poll::Ready(Err(Gap::Disconnected));
                };
                *self.fetching.get_mut() = Some((through, fetch));
            }
            let fetching = self.fetching.get_mut();
            let Some((through, fetch)) = fetching.as_mut() else {
                continue;
            };
            let through = *through;
            let outcome = std::task::ready!(fetch.as_mut().poll(cx));
            *fetching = None;
            match outcome {
                Ok(replay) => {
                    self.failures = 0;
                    self.after = through;
                    return Poll::Ready(Ok((through, replay)));
                }
                Err(error) => {
                    self.failures += 1;
                    tracing::warn!(
                        %error,
                        after = %self.after,
                        attempt = self.failures,
                        "a resumed subscription could not read its next page of the log"
                    );
                    if self.failures >= PAGE_ATTEMPTS {
                        return Poll::Ready(Err(Gap::Disconnected));
                    }
                }
            }
        }
    }
}

/// The topics of a subscription, distinct, in the order they were added:
/// one (the common case) inline, without an allocation; none or several in
/// a boxed slice. A boxed slice and not a `Vec`: it keeps the enum at 40
/// bytes (a `Vec` would make it 48, and every idle subscription 8 bytes
/// larger), and adding or removing a topic, which reallocates it, costs
/// O(n) anyway for the duplicate search.
#[derive(Debug)]
enum Topics {
    One(Topic),
    Many(Box<[Topic]>),
}

impl Topics {
    fn new(topics: impl IntoIterator<Item = Topic>) -> Self {
        let mut topics = topics.into_iter();
        match (topics.next(), topics.next()) {
            (Some(only), None) => Self::One(only),
            (None, _) => Self::Many(Box::default()),
            (Some(first), Some(second)) => {
                // A topic listed twice is one topic: one copy per broadcast.
                let mut distinct: Vec<Topic> = Vec::new();
                for topic in [first, second].into_iter().chain(topics) {
                    if !distinct.contains(&topic) {
                        distinct.push(topic);
                    }
                }
                match distinct.as_slice() {
                    [only] => Self::One(*only),
                    _ => Self::Many(distinct.into_boxed_slice()),
                }
            }
        }
    }

    /// No topic (allocates nothing).
    fn none() -> Self {
        Self::Many(Box::default())
    }

    fn as_slice(&self) -> &[Topic] {
        match self {
            Self::One(topic) => std::slice::from_ref(topic),
            Self::Many(topics) => topics,
        }
    }

    /// Adds `topic` at the end unless it is there; returns whether it was
    /// added.
    fn insert(&mut self, topic: Topic) -> bool {
        let topics = self.as_slice();
        if topics.contains(&topic) {
            return false;
        }
        *self = match topics {
            [] => Self::One(topic),
            _ => Self::Many(topics.iter().copied().chain([topic]).collect()),
        };
        true
    }

    /// Removes `topic`, keeping the others' order; returns whether it was
    /// there.
    fn remove(&mut self, topic: &Topic) -> bool {
        let topics = self.as_slice();
        let Some(at) = topics.iter().position(|held| held == topic) else {
            return false;
        };
        *self = match topics {
            [_] => Self::none(),
            [first, second] => Self::One(if at == 0 { *second } else { *first }),
            _ => Self::Many(
                topics
                    .iter()
                    .enumerate()
                    .filter_map(|(index, held)| (index != at).then_some(*held))
                    .collect(),
            ),
        };
        true
    }
}

impl<M> std::fmt::Debug for Subscription<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topics", &self.topics.as_slice())
            .field("queued", &self.inbox.len())
            .finish()
    }
}

impl<M> Subscription<M> {
    /// The topics this subscription receives, each once, in the order they
    /// were subscribed or added. Empty once every topic was removed, and
    /// after [`unsubscribe`](Self::unsubscribe).
    #[must_use]
    pub fn topics(&self) -> &[Topic] {
        self.topics.as_slice()
    }

    /// Starts receiving the broadcasts to `topic` too, into this
    /// subscription's one queue. Returns `Ok(true)` if the topic was added
    /// and `Ok(false)` if the subscription had it already: then nothing
    /// changes, and a broadcast reaching `topic` still queues one copy for
    /// it (the delivery rule is one copy per reached topic per
    /// subscription).
    ///
    /// The messages already queued stay, in order, and nothing broadcast
    /// before is replayed. Every broadcast that starts after this returns
    /// reaches the subscription through `topic`; one running during the
    /// call may or may not. It is still one subscription:
    /// [`Stats::subscriptions`] does not change and
    /// [`Builder::max_subscriptions`] does not apply.
    ///
    /// ```
    /// use staff_pubsub::{Error, PubSub, Topic};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// const ROOMS: Topic = Topic::new("chat:rooms");
    /// const USERS: Topic = Topic::new("chat:users");
    /// let pubsub = PubSub::<&str>::new();
    /// let mut subscription = pubsub.subscribe(ROOMS)?;
    ///
    /// assert!(subscription.add_topic(USERS)?);
    /// assert!(!subscription.add_topic(USERS)?); // had it: still one copy
    /// assert_eq!(subscription.topics(), [ROOMS, USERS]);
    /// pubsub.broadcast([USERS], "joined").await?;
    /// assert_eq!(*subscription.recv().await.unwrap(), "joined");
    /// assert!(subscription.is_empty());
    ///
    /// subscription.unsubscribe();
    /// assert!(matches!(subscription.add_topic(USERS), Err(Error::SubscriptionClosed)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::SubscriptionClosed`] after [`unsubscribe`](Self::unsubscribe)
    /// or once the server is gone; the subscription is unchanged.
    pub fn add_topic(&mut self, topic: Topic) -> Result<bool, Error> {
        let Some(core) = self.core.upgrade() else {
            return Err(Error::SubscriptionClosed);
        };
        let parked = self.topics.as_slice().is_empty();
        if let [only] = self.topics.as_slice() {
            if *only != topic && self.inbox.reads_ring() {
                // A ring reader is on its one topic only: it gets a queue
                // of its own first.
                core.registry.settle(only, &self.inbox);
            }
        }
        if !self.topics.insert(topic) {
            return Ok(false);
        }
        if core.registry.insert(topic, Arc::clone(&self.inbox), false) {
            core.interest_changed(topic, true);
        }
        if parked {
            core.registry.unpark(&self.inbox);
        }
        Ok(true)
    }

    /// Stops receiving the broadcasts to `topic`; returns whether the
    /// subscription had it (`false`: nothing changes).
    ///
    /// The messages already queued stay and are received as usual, those
    /// that came through `topic` included (a queued message does not
    /// record its topic). A broadcast to `topic` running during the call
    /// may still queue its copy; a broadcast that starts after this returns
    /// does not reach the subscription through `topic` (it still does
    /// through its other topics). If this was the topic's last
    /// subscription on this node, the topic is removed from the server
    /// ([`Stats::topics`], [`PubSub::subscriber_count`]).
    ///
    /// Removing the last topic leaves the subscription open, on no topic:
    /// nothing new arrives until [`add_topic`](Self::add_topic), and it
    /// still counts in [`Stats::subscriptions`]. Once the server is gone,
    /// the topic is only forgotten.
    ///
    /// ```
    /// use staff_pubsub::{PubSub, Topic};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), staff_pubsub::Error> {
    /// const ROOMS: Topic = Topic::new("chat:rooms");
    /// const USERS: Topic = Topic::new("chat:users");
    /// let pubsub = PubSub::<&str>::new();
    /// let mut subscription = pubsub.subscribe_many([ROOMS, USERS])?;
    /// pubsub.broadcast([USERS], "queued").await?;
    ///
    /// assert!(subscription.remove_topic(&USERS));
    /// assert!(!subscription.remove_topic(&USERS));
    /// assert_eq!(pubsub.subscriber_count(&USERS), 0); // the topic is gone
    /// pubsub.broadcast([USERS], "not received").await?;
    /// assert_eq!(*subscription.recv().await.unwrap(), "queued");
    /// assert!(subscription.is_empty());
    ///
    /// assert!(subscription.remove_topic(&ROOMS)); // on no topic, still open
    /// assert_eq!((pubsub.stats().topics, pubsub.stats().subscriptions), (0, 1));
    /// assert!(subscription.add_topic(ROOMS)?);
    /// # Ok(()) }
    /// ```
    pub fn remove_topic(&mut self, topic: &Topic) -> bool {
        if !self.topics.remove(topic) {
            return false;
        }
        if let Some(core) = self.core.upgrade() {
            if core.registry.remove(topic, &self.inbox) {
                core.interest_changed(*topic, false);
            }
            if self.topics.as_slice().is_empty() {
                // Parked, so that the server's end still closes it.
                core.registry.park(Arc::clone(&self.inbox));
            }
        }
        true
    }

    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`] after messages were dropped from a full queue,
    /// [`RecvError::Gap`] after the transport lost messages; receiving again
    /// continues with newer messages. [`RecvError::Closed`] once the server
    /// is gone and the queue is empty.
    pub async fn recv(&mut self) -> Result<Arc<M>, RecvError> {
        poll_fn(|cx| self.poll_message(cx)).await
    }

    /// The next message without its position: straight from the queue
    /// unless the subscription is resuming.
    #[inline]
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<M>, RecvError>> {
        if self.resume.is_none() {
            return self.inbox.poll_take_message(cx);
        }
        self.poll_entry(cx)
            .map(|item| item.map(|(message, _)| message))
    }

    /// As [`recv`](Self::recv), with the message's position in the log
    /// when the server's transport is durable (`None` otherwise, and for
    /// a message sent with [`PubSub::local_broadcast`] or, on this node,
    /// [`PubSub::broadcast_from`], which do not go through the log). Store
    /// the position of the last message handled to resume after it with
    /// [`PubSub::subscribe_since`].
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub async fn recv_with_position(&mut self) -> Result<(Arc<M>, Option<Position>), RecvError> {
        poll_fn(|cx| self.poll_entry(cx)).await
    }

    /// As [`try_recv`](Self::try_recv), with the message's position, as
    /// [`recv_with_position`](Self::recv_with_position) gives it.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_with_position(&mut self) -> Result<(Arc<M>, Option<Position>), TryRecvError> {
        // A paged replay's next page is polled once, without a waker: it
        // is `Empty` until the page has come.
        let mut cx = Context::from_waker(Waker::noop());
        match self.take_entry(&mut cx, |inbox, _| inbox.try_take()) {
            Some(item) => item.map_err(TryRecvError::from),
            None => Err(TryRecvError::Empty),
        }
    }

    fn poll_entry(&mut self, cx: &mut Context<'_>) -> Poll<Taken<M>> {
        // `take_entry` returns `None` only when the queue is pending, and
        // the queue has then registered the waker.
        match self.take_entry(cx, |inbox, cx| match inbox.poll_take(cx) {
            Poll::Ready(item) => Some(item),
            Poll::Pending => None,
        }) {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        }
    }

    /// The next item: a resumed subscription's replay first (fetching its
    /// next page, when it is paged, once the last is read), then the
    /// queue, skipping the copies the replay covered. `None` when nothing
    /// is ready (`cx` is registered).
    fn take_entry(
        &mut self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&Inbox<M>, &mut Context<'_>) -> Option<Taken<M>>,
    ) -> Option<Taken<M>> {
        let Some(resume) = self.resume.as_deref_mut() else {
            return take(&self.inbox, cx);
        };
        loop {
            // The next page is fetched once the last is read, or when the
            // last was a gap alone (entries trimmed or the log lost while
            // the consumer read): a gap the next page begins with merges
            // into it, so that a loss is one gap however many pages it
            // spans.
            let rest = match resume.rest.as_deref_mut() {
                Some(rest) if resume.replayed.back().is_none_or(Result::is_err) => rest,
                _ => match resume.replayed.pop_front() {
                    Some(item) => return Some(item),
                    None => break,
                },
            };
            match rest.poll_page(&self.core, cx) {
                Poll::Pending => return None,
                Poll::Ready(Ok((through, replay))) => {
                    let last = through == rest.end;
                    if !resume.take_page(replay) || last {
                        resume.rest = None;
                    }
                }
                Poll::Ready(Err(gap)) => {
                    // The rest of the range is not replayed: told, then
                    // the queue (still skipping the range's copies).
                    resume.push_gap(gap);
                    resume.rest = None;
                }
            }
        }
        if resume.replayed.capacity() > 0 {
            // The replay is delivered: its buffer goes.
            resume.replayed = VecDeque::new();
        }
        loop {
            let item = take(&self.inbox, cx)?;
            if let Ok((_, Some(position))) = &item {
                let covered = resume.through.is_some_and(|through| {
                    position.log() == through.log() && position.seq() <= through.seq()
                });
                if covered {
                    continue;
                }
                // The queue holds log entries in log order: nothing after
                // this one is covered by the replay.
                self.resume = None;
            }
            return Some(item);
        }
    }

    /// Takes the next message if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing is queued; otherwise as
    /// [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Arc<M>, TryRecvError> {
        if self.resume.is_none() {
            return match self.inbox.try_take_message() {
                Some(item) => item.map_err(TryRecvError::from),
                None => Err(TryRecvError::Empty),
            };
        }
        self.try_recv_with_position().map(|(message, _)| message)
    }

    /// The number of messages queued and not yet received (for a resumed
    /// subscription, the replayed ones read from the log so far, one page
    /// at most when the replay is paged, and the queued copies its replay
    /// covers until they are skipped).
    #[must_use]
    pub fn len(&self) -> usize {
        let replayed = self.resume.as_ref().map_or(0, |resume| {
            resume.replayed.iter().filter(|item| item.is_ok()).count()
        });
        self.inbox.len() + replayed
    }

    /// Whether no message is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leaves every topic of the subscription. Messages already queued can
    /// still be received; after them, [`RecvError::Closed`]. Dropping the
    /// subscription leaves too.
    pub fn unsubscribe(&mut self) {
        let topics = std::mem::replace(&mut self.topics, Topics::none());
        // The weak handle is emptied too, so that this runs once.
        let core = std::mem::take(&mut self.core);
        self.inbox.close();
        let Some(core) = core.upgrade() else {
            return;
        };
        if topics.as_slice().is_empty() {
            // Every topic was removed: the inbox is parked.
            core.registry.unpark(&self.inbox);
        }
        for topic in topics.as_slice() {
            if core.registry.remove(topic, &self.inbox) {
                core.interest_changed(*topic, false);
            }
        }
        core.counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<M> Drop for Subscription<M> {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

impl<M> futures_core::Stream for Subscription<M> {
    type Item = Result<Arc<M>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // `Subscription` is `Unpin`.
        self.get_mut().poll_message(cx).map(|item| match item {
            Err(RecvError::Closed) => None,
            item => Some(item),
        })
    }
}
