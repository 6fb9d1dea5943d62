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

use crate::error::TransportError;
use crate::loom::sync::{Arc, Weak};
use crate::position::{Gap, Position};
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

    /// The transport's durable log, if it keeps one: then it appends every
    /// envelope to the log and delivers every one from it on every node,
    /// the sending node included (with [`Mode::All`]), through
    /// [`LocalNode::dispatch_logged`], and the server does not dispatch a
    /// broadcast locally when it is made. Durable logging is an ability of
    /// its own ([`DurableLog`]): the default, `None`, is a live transport.
    fn durable_log(&self) -> Option<&dyn DurableLog<M>> {
        None
    }
}

/// A transport's durable log: what [`Transport::durable_log`] gives, and
/// what [`PubSub::subscribe_since`](crate::PubSub::subscribe_since) and
/// [`PubSub::log_position`](crate::PubSub::log_position) read. A reader of
/// the log follows the gap rule of [`LogCursor`].
pub trait DurableLog<M>: Send + Sync {
    /// Where the log ends on the engine now (not where this node has read
    /// to): asked by
    /// [`PubSub::subscribe_since`](crate::PubSub::subscribe_since) for a
    /// position ahead of this node, to tell a node that is behind from a
    /// position the engine lost. [`LogHead::Unknown`] when the engine
    /// cannot say: the position is then trusted.
    fn log_head(&self) -> BoxFuture<'_, Result<LogHead, TransportError>>;

    /// The entries after `after` up to and including `through` (same log,
    /// `after` before `through`) that list one of `topics`, decoded, in log
    /// order; with a [`Gap`] when some are gone (trimmed) or the range is
    /// longer than the log replays. What
    /// [`PubSub::subscribe_since`](crate::PubSub::subscribe_since) asks:
    /// the whole range at once, or, when the log says its
    /// [`replay_limit`](Self::replay_limit), in pages of at most the
    /// subscription's capacity of entries, one after the other, each when
    /// the consumer has read the last.
    fn replay<'a>(
        &'a self,
        after: Position,
        through: Position,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Replay<M>, TransportError>>
    where
        M: Send + 'a;

    /// The most log entries one resume may replay (the log's
    /// [`Retention::replay_limit`](crate::Retention::replay_limit)), if
    /// the log says it. Then a resume
    /// ([`PubSub::subscribe_since`](crate::PubSub::subscribe_since)) tells
    /// [`Gap::ReplayLimit`] itself for a longer range, and asks
    /// [`replay`](Self::replay) for the range in pages of at most its
    /// subscription's capacity of entries, the next when the consumer has
    /// read the last: its memory is bounded by the capacity, not by the
    /// range. `None`: a resume asks for the whole range at once, and holds
    /// all of it until it is read.
    fn replay_limit(&self) -> Option<u64>;
}

/// Where a durable transport's log ends, as the engine has it now: what
/// [`DurableLog::log_head`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogHead {
    /// The transport does not say (the default).
    Unknown,
    /// The engine holds no log at all (it lost it, and nothing was
    /// appended since).
    Missing,
    /// The log `log` ends at sequence number `seq` (0: empty).
    At {
        /// The log's id.
        log: u16,
        /// The last entry's sequence number.
        seq: u64,
    },
}

/// A reader's place in a durable log: the log's id and the sequence
/// number it reads next. It owns the gap rule every durable reader follows
/// (the Redis and NATS transports', live and replayed, and any other's):
///
/// - an entry of another log means the log was lost: [`Gap::LogLost`];
/// - an entry past the next sequence number means the entries between
///   are gone (trimmed): [`Gap::Trimmed`] from the next one, `missing`
///   the jump;
/// - an entry before it was read already: passed over.
///
/// ```
/// use staff_pubsub::transport::{LogCursor, LogRead};
/// use staff_pubsub::{Gap, Position};
///
/// let mut cursor = LogCursor::new(7, 1);
/// assert_eq!(cursor.read(7, 1), LogRead::Next);
/// assert_eq!(cursor.read(7, 1), LogRead::Read);
/// assert_eq!(
///     cursor.read(7, 5),
///     LogRead::After(Gap::Trimmed { first: Position::new(7, 2).unwrap(), missing: 3 })
/// );
/// assert_eq!(cursor.next(), 6);
/// assert_eq!(cursor.read(9, 1), LogRead::After(Gap::LogLost));
/// // A range read through 8 that ended at 5: 6..=8 are gone too.
/// let mut cursor = LogCursor::new(7, 6);
/// assert_eq!(
///     cursor.skip_through(8),
///     Some(Gap::Trimmed { first: Position::new(7, 6).unwrap(), missing: 3 })
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogCursor {
    log: u16,
    next: u64,
}

/// What an entry means to a reader at a [`LogCursor`]: see
/// [`LogCursor::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogRead {
    /// The entry the reader expected: deliver it.
    Next,
    /// An entry read already: pass over it.
    Read,
    /// Deliver it after telling this gap: [`Gap::Trimmed`] (entries
    /// between were trimmed; the cursor moved past the entry), or
    /// [`Gap::LogLost`] (the entry is of another log; the cursor did not
    /// move: the reader decides where it reads the new log from, with
    /// [`LogCursor::new`]).
    After(Gap),
}

impl LogCursor {
    /// A reader of log `log` that reads sequence number `next` next
    /// (sequence numbers start at 1).
    #[must_use]
    pub const fn new(log: u16, next: u64) -> Self {
        Self { log, next }
    }

    /// A reader that has read through `position`.
    #[must_use]
    pub fn after(position: Position) -> Self {
        Self::new(position.log(), position.seq().saturating_add(1))
    }

    /// The log's id.
    #[must_use]
    pub const fn log(&self) -> u16 {
        self.log
    }

    /// The sequence number read next.
    #[must_use]
    pub const fn next(&self) -> u64 {
        self.next
    }

    /// What an entry at sequence number `seq` of log `log` means here (the
    /// gap rule), moving past it unless it was read already or is of
    /// another log.
    pub fn read(&mut self, log: u16, seq: u64) -> LogRead {
        if log != self.log {
            return LogRead::After(Gap::LogLost);
        }
        if seq < self.next {
            return LogRead::Read;
        }
        let gap = self.skip_to(seq);
        self.next = seq.saturating_add(1);
        gap.map_or(LogRead::Next, LogRead::After)
    }

    /// The entries from the next one up to (not including) `seq` are
    /// gone: the gap that says so, if any, and the cursor moves to `seq`.
    pub fn skip_to(&mut self, seq: u64) -> Option<Gap> {
        if seq <= self.next {
            return None;
        }
        let gap = match Position::new(self.log, self.next) {
            Some(first) => Gap::Trimmed {
                first,
                missing: seq - self.next,
            },
            // Past the last sequence number a position holds: nothing of
            // this log can follow.
            None => Gap::LogLost,
        };
        self.next = seq;
        Some(gap)
    }

    /// [`skip_to`](Self::skip_to) past `through`: what a range read
    /// through `through` is missing at its end.
    pub fn skip_through(&mut self, through: u64) -> Option<Gap> {
        self.skip_to(through.saturating_add(1))
    }
}

/// What [`DurableLog::replay`] read from the log.
#[derive(Debug)]
#[non_exhaustive]
pub struct Replay<M> {
    /// Why some entries of the range are not replayed, if so: delivered
    /// before the entries.
    pub gap: Option<Gap>,
    /// The entries that list one of the asked topics, with their
    /// positions, in log order.
    pub entries: Vec<(Position, M)>,
    /// How many of the asked topics each entry lists, in the order of
    /// `entries`: the copies a subscription on them receives (one per
    /// reached topic, the delivery rule). Empty: one each.
    copies: Vec<usize>,
}

impl<M> Replay<M> {
    /// A replay of `entries`, preceded by `gap` if some are missing; each
    /// entry is delivered once, which is right only when each lists one of
    /// the asked topics: prefer [`with_copies`](Self::with_copies).
    #[must_use]
    pub fn new(gap: Option<Gap>, entries: Vec<(Position, M)>) -> Self {
        Self {
            gap,
            entries,
            copies: Vec::new(),
        }
    }

    /// A replay of `entries`, preceded by `gap` if some are missing: each
    /// entry with the number of the asked topics it lists (at least 1), so
    /// that a subscription on several of them receives one copy per
    /// reached topic, as it does live.
    #[must_use]
    pub fn with_copies(gap: Option<Gap>, entries: Vec<(Position, M, usize)>) -> Self {
        let mut copies = Vec::with_capacity(entries.len());
        let entries = entries
            .into_iter()
            .map(|(position, message, n)| {
                copies.push(n.max(1));
                (position, message)
            })
            .collect();
        Self {
            gap,
            entries,
            copies,
        }
    }

    /// The same replay with each message converted by `convert`, those it
    /// has no form for left out (a linked server's messages).
    pub(crate) fn convert<N>(self, mut convert: impl FnMut(&M) -> Option<N>) -> Replay<N> {
        let gap = self.gap;
        let entries = self
            .into_copies()
            .filter_map(|(position, message, copies)| {
                convert(&message).map(|converted| (position, converted, copies))
            })
            .collect();
        Replay::with_copies(gap, entries)
    }

    /// The entries, each with its number of copies.
    pub(crate) fn into_copies(self) -> impl Iterator<Item = (Position, M, usize)> {
        let copies = self.copies.into_iter().chain(std::iter::repeat(1));
        self.entries
            .into_iter()
            .zip(copies)
            .map(|((position, message), n)| (position, message, n))
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
/// core (in `server/core.rs`), so that this module names no part of it.
pub(crate) trait NodeSink<M>: Send + Sync {
    /// Dispatches a received message (at `position` in a durable log) to
    /// this node's subscribers of `topics`, each distinct topic once;
    /// returns the copies queued.
    fn dispatch_wire(
        &self,
        topics: &mut dyn Iterator<Item = &str>,
        message: M,
        position: Option<Position>,
    ) -> u64;
    /// Every subscriber gets a gap, in queue order.
    fn signal_gap(&self, gap: Gap);
    /// Records how far a durable transport has read its log.
    fn set_head(&self, log: u16, seq: u64);
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
        Some(sink.dispatch_wire(&mut topics.into_iter(), message, None))
    }

    /// As [`dispatch_wire`](Self::dispatch_wire), for a durable transport:
    /// the entry at `position` of its log. Subscribers receive the position
    /// with the message, and the node records it as read (what
    /// [`PubSub::log_position`](crate::PubSub::log_position) reports and a
    /// resume replays up to) before dispatching. Call it for every entry
    /// read, in log order, even one this node does not dispatch (pass no
    /// topics), so that the node's position stays exact.
    pub fn dispatch_logged<'t>(
        &self,
        position: Position,
        topics: impl IntoIterator<Item = &'t str>,
        message: M,
    ) -> Option<u64> {
        let sink = self.sink.upgrade()?;
        Some(sink.dispatch_wire(&mut topics.into_iter(), message, Some(position)))
    }

    /// Records that a durable transport has read its log `log` up to
    /// sequence number `seq` (0: the log is empty) without dispatching: at
    /// start, and for an entry it skips without decoding.
    pub fn set_log_head(&self, log: u16, seq: u64) {
        if let Some(sink) = self.sink.upgrade() {
            sink.set_head(log, seq);
        }
    }

    /// Tells every subscriber that messages may have been lost (the
    /// connection to the engine dropped): each receives
    /// [`RecvError::Gap`](crate::RecvError::Gap) with [`Gap::Disconnected`]
    /// once, after the messages it has queued already and before any
    /// dispatched after this call.
    pub fn signal_gap(&self) {
        self.signal_gap_with(Gap::Disconnected);
    }

    /// As [`signal_gap`](Self::signal_gap), saying what was lost: what a
    /// durable transport reports when its log no longer holds entries it
    /// had not read ([`Gap::Trimmed`]) or was lost ([`Gap::LogLost`]).
    pub fn signal_gap_with(&self, gap: Gap) {
        if let Some(sink) = self.sink.upgrade() {
            sink.signal_gap(gap);
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
