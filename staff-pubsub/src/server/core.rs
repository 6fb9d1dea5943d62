//! The server's shared state: the registry, counters, its upstream and
//! linked server, and what a transport calls to deliver here (`NodeSink`).

use super::stats::{ConnectionCell, Counters};
use super::upstream::Upstream;
use crate::extensions::Home;
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::loom::sync::{Arc, OnceLock};
use crate::position::{Gap, Position};
use crate::registry::{Registry, Tally};
use crate::throttle::FailureLog;
use crate::topic::Topic;
use crate::topic::TopicKey;
use crate::transport::{Connection, NodeSink};

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
    /// Where broadcasts go beyond this node: set once, right after the
    /// core is built with a transport ([`Builder::build_with`]), or when
    /// the server is linked to one that has a transport
    /// ([`crate::link::link`]). Unset: this node only.
    upstream: OnceLock<Box<dyn Upstream<M>>>,
    /// The server this one shares delivery with (a spec and its
    /// extension): set once by [`crate::link::link`].
    peer: OnceLock<Box<dyn Peer<M>>>,
    /// Whether broadcasts go through a durable log (the upstream's) and
    /// reach this node's subscribers from there, in log order, instead of
    /// at the call: set with the upstream, read on every broadcast.
    durable: AtomicBool,
    /// The log position the durable transport has read up to, packed as
    /// a [`Position`] but with a sequence number that may be 0 (an empty
    /// log); [`NO_HEAD`] until the transport has read the log's head.
    /// Updated before the entry it names is dispatched.
    pub(super) head: AtomicU64,
    /// Which failed broadcasts are logged at WARN.
    pub(super) failure_log: FailureLog,
    /// What features built on the server keep here (presence's
    /// trackers), one value per type.
    pub(crate) extensions: crate::extensions::Extensions,
}

/// In [`Core::head`]: no log position known.
pub(super) const NO_HEAD: u64 = u64::MAX;

impl<M> Core<M> {
    pub(super) fn new(
        registry: Registry<M>,
        node: Arc<str>,
        connection: Connection,
        capacity: usize,
        max_subscriptions: usize,
        preset: crate::extensions::Preset,
    ) -> Self {
        Self {
            registry,
            counters: Counters::default(),
            node,
            instance: super::stats::random_u64(),
            connection: ConnectionCell::new(connection),
            capacity,
            max_subscriptions,
            upstream: OnceLock::new(),
            peer: OnceLock::new(),
            durable: AtomicBool::new(false),
            head: AtomicU64::new(NO_HEAD),
            failure_log: FailureLog::default(),
            extensions: crate::extensions::Extensions::new(preset),
        }
    }

    /// Where broadcasts go beyond this node, if anywhere.
    pub(crate) fn upstream(&self) -> Option<&dyn Upstream<M>> {
        self.upstream.get().map(|upstream| &**upstream)
    }

    /// Sets where broadcasts go beyond this node, once: false, changing
    /// nothing, when it is set already. The topics the server has now
    /// become the upstream's interest.
    pub(crate) fn set_upstream(&self, upstream: Box<dyn Upstream<M>>) -> bool {
        let durable = upstream.durable();
        if self.upstream.set(upstream).is_err() {
            return false;
        }
        self.durable.store(durable, Ordering::Relaxed);
        for topic in self.registry.topics() {
            self.interest_changed(topic, true);
        }
        true
    }

    /// The node name this server answers to: its own, or that of the
    /// linked server whose transport carries it.
    pub(crate) fn node_name(&self) -> &str {
        self.upstream()
            .map_or(&self.node, |upstream| upstream.node_name(self))
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
    /// left: tells the upstream (a transport that routes by interest, this
    /// server's or the linked server's). Called after the registry
    /// changed, outside its locks: notifications of one topic from several
    /// threads may arrive in either order, so a transport checks
    /// [`LocalNode::has_subscribers`] rather than trusting `present`.
    pub(crate) fn interest_changed(&self, topic: Topic, present: bool) {
        tracing::debug!(%topic, node = %self.node, present, "topic interest changed");
        if let Some(upstream) = self.upstream() {
            upstream.interest_changed(topic);
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

/// The other server of a linked pair (a spec and its extension), as this
/// server's `M` sees it: what is dispatched here is dispatched there too.
/// Implemented in `link.rs`.
pub(crate) trait Peer<M>: Send + Sync {
    /// Dispatches `message`, dispatched on this server already, to the
    /// peer's subscribers of `topics` (each listed once).
    fn mirror(
        &self,
        topics: &mut dyn Iterator<Item = TopicKey<'_>>,
        message: &M,
        position: Option<Position>,
    );

    /// The peer's subscribers get a gap: this server's transport, which
    /// carries the peer's traffic too, lost messages.
    fn signal_gap(&self, gap: &Arc<Gap>);

    /// Whether the peer itself (not its own peer) has a subscriber of `key`.
    fn has_subscribers_here(&self, key: TopicKey<'_>) -> bool;

    /// The topics the peer itself has subscribers of.
    fn topics_here(&self) -> Vec<Topic>;

    /// The peer, when this server keeps its features' values there (see
    /// [`Core::home`]); `None`: this server keeps its own.
    fn home(&self) -> Option<Arc<dyn Home>>;
}

impl<M: Send + Sync + 'static> Core<M> {
    /// Where this server's features keep their values (presence's
    /// trackers): the linked server that shares them, if this server is
    /// linked to one that does (see [`crate::link::link`]), else this
    /// server itself.
    pub(crate) fn home(self: &Arc<Self>) -> Arc<dyn Home> {
        match self.peer().and_then(|peer| peer.home()) {
            Some(home) => home,
            None => Arc::clone(self) as Arc<dyn Home>,
        }
    }
}

impl<M: Send + Sync + 'static> Home for Core<M> {
    fn extensions(&self) -> &crate::extensions::Extensions {
        &self.extensions
    }

    fn node_name(&self) -> &str {
        Core::node_name(self)
    }

    fn gossip(&self) -> Option<crate::gossip::GossipHandle> {
        self.upstream().and_then(|upstream| upstream.gossip())
    }

    fn record_rejected(&self) {
        self.counters.record_rejected();
    }
}

impl<M> Core<M> {
    /// Where this server's durable log is read (its upstream's), if it
    /// has one.
    pub(super) fn log_source(&self) -> Option<&dyn Upstream<M>> {
        self.upstream().filter(|upstream| upstream.durable())
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
