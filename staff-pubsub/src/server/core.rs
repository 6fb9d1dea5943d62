//! The server's shared state: the registry, counters, the transport or
//! linked server, and what a transport calls to deliver here (`NodeSink`).

use std::task::{Context, Poll};

use super::stats::{ConnectionCell, Counters};
use crate::error::{Error, TransportError};
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::loom::sync::{Arc, OnceLock};
use crate::position::{Gap, Position};
use crate::registry::{Registry, Tally};
use crate::throttle::FailureLog;
use crate::topic::Topic;
use crate::topic::TopicKey;
use crate::transport::{BoxFuture, Connection, LogHead, Mode, NodeSink, Replay, Transport};

pub(crate) struct Core<M> {
    pub(crate) registry: Registry<M>,
    pub(crate) counters: Counters,
    pub(crate) node: Arc<str>,
    /// A random number telling this server apart from any other, even one
    /// that shares its node name: it travels in every envelope.
    pub(crate) instance: u64,
    pub(crate) connection: ConnectionCell,
    pub(super) capacity: usize,
    pub(super) max_subscriptions: usize,
    /// Set once, right after the core is built, by [`Builder::build_with`].
    pub(super) transport: OnceLock<Box<dyn Transport<M>>>,
    /// The server this one shares delivery with (a spec and its
    /// extension): set once by [`crate::link::link`].
    pub(super) peer: OnceLock<Box<dyn Peer<M>>>,
    /// The node name of the linked server whose transport carries this
    /// one's traffic, when this one has none: what [`PubSub::node_name`]
    /// reports.
    pub(super) node_alias: OnceLock<Arc<str>>,
    /// Tells the transport that routes by interest (this server's or the
    /// linked one's) that a topic appeared or went: set with the
    /// transport, or by the link. Holds the transport's server weakly.
    pub(super) interest: OnceLock<InterestHook>,
    /// Whether broadcasts go through a durable transport's log (this
    /// server's, or the linked server's) and reach this node's subscribers
    /// from there, in log order, instead of at the call.
    pub(super) durable: AtomicBool,
    /// The log position the durable transport has read up to, packed as
    /// a [`Position`] but with a sequence number that may be 0 (an empty
    /// log); [`NO_HEAD`] until the transport has read the log's head.
    /// Updated before the entry it names is dispatched.
    pub(super) head: AtomicU64,
    /// Which failed broadcasts are logged at WARN.
    pub(super) failure_log: FailureLog,
}

/// In [`Core::head`]: no log position known.
pub(super) const NO_HEAD: u64 = u64::MAX;

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

    /// This server, which has no transport, sends through `carrier`'s: it
    /// answers to `carrier`'s node name, and its topics are that
    /// transport's interest too (the ones it has now included).
    pub(crate) fn carried_by<N: Send + Sync + 'static>(&self, carrier: &Arc<Core<N>>) {
        let _ = self.node_alias.set(Arc::clone(&carrier.node));
        let _ = self.interest.set(Core::interest_hook(carrier));
        for topic in self.registry.topics() {
            self.interest_changed(topic, true);
        }
    }
}

impl<M> Core<M> {
    pub(crate) fn has_transport(&self) -> bool {
        self.transport.get().is_some()
    }

    /// The server this one is linked with, if it is.
    pub(crate) fn peer(&self) -> Option<&dyn Peer<M>> {
        self.peer.get().map(|peer| &**peer)
    }

    /// Links this server to its peer (see [`crate::link::link`]): false,
    /// changing nothing, when it is linked already.
    pub(crate) fn set_peer(&self, peer: Box<dyn Peer<M>>) -> bool {
        self.peer.set(peer).is_ok()
    }

    /// Whether broadcasts go through a durable log: set by the link when
    /// the linked server's transport is durable.
    pub(crate) fn set_durable(&self, durable: bool) {
        self.durable.store(durable, Ordering::Relaxed);
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
pub(super) enum LogSource<'a, M> {
    Own(&'a dyn Transport<M>),
    Peer(&'a dyn Peer<M>),
}

impl<M: Send + Sync + 'static> Core<M> {
    /// Where this server's durable log is read, if it has one.
    pub(super) fn log_source(&self) -> Option<LogSource<'_, M>> {
        match (self.transport(), self.peer.get()) {
            (Some(transport), _) if transport.durable() => Some(LogSource::Own(transport)),
            (None, Some(peer)) if peer.log_read_head().is_some() => Some(LogSource::Peer(&**peer)),
            _ => None,
        }
    }
}

impl<M: Send + Sync + 'static> LogSource<'_, M> {
    pub(super) fn replay_limit(&self) -> Option<u64> {
        match self {
            Self::Own(transport) => transport.replay_limit(),
            Self::Peer(peer) => peer.replay_limit(),
        }
    }

    pub(super) async fn log_head(&self) -> Result<LogHead, TransportError> {
        match self {
            Self::Own(transport) => transport.log_head().await,
            Self::Peer(peer) => peer.log_head().await,
        }
    }

    pub(super) async fn replay(
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
            crate::loom::sync::atomic::fence(Ordering::SeqCst);
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
