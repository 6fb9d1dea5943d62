//! The presence API of a server: [`Tracker`], [`Tracked`] guards, lists
//! and streams of diffs, over this node's replica (driven across nodes by
//! `super::runtime` when the engine gossips).

use crate::loom::sync::atomic::{process, Ordering};
use crate::loom::sync::{Arc, Weak};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::loom::sync::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::clock::Replica;
use super::shard::{Shard, ShardConfig};
use super::state::{Diff, JoinError, Value};
use crate::server::PubSub;
use crate::topic::Topic;

/// How many diffs a [`PresenceDiffs`] queues before the oldest is dropped
/// and the receiver is told it lagged.
pub const DIFF_QUEUE_CAPACITY: usize = 1024;

/// Identifies one tracked presence: the owner half of the presence's
/// identity `{topic, owner, key}` (Phoenix's pid). Every [`Tracked`] has
/// its own, unique across nodes (a random number per tracker and a
/// counter), so the same key tracked twice (two devices of one user, or
/// one user on two nodes) is two presences, told apart by their ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PresenceId {
    /// The tracker's random number.
    origin: u64,
    /// The tracker's count of presences, this one's.
    seq: u64,
}

impl PresenceId {
    /// Its two numbers, as the wire carries them.
    #[cfg(any(test, feature = "redis", feature = "nats"))]
    pub(crate) fn parts(self) -> (u64, u64) {
        (self.origin, self.seq)
    }

    /// The id of the two numbers `parts`.
    pub(crate) fn from_parts((origin, seq): (u64, u64)) -> Self {
        Self { origin, seq }
    }
}

impl fmt::Display for PresenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "presence-{:016x}-{}", self.origin, self.seq)
    }
}

/// One presence on a topic: a key (a user id, say), its metadata, and the
/// id of the [`Tracked`] that holds it.
#[derive(Debug, PartialEq, Eq)]
pub struct Presence<Meta> {
    /// The key it is tracked as.
    pub key: Arc<str>,
    /// Its metadata, as of this presence (an update is a leave of the old
    /// metadata and a join of the new).
    pub meta: Arc<Meta>,
    /// Which tracked presence it is.
    pub id: PresenceId,
}

impl<Meta> Clone for Presence<Meta> {
    fn clone(&self) -> Self {
        Self {
            key: Arc::clone(&self.key),
            meta: Arc::clone(&self.meta),
            id: self.id,
        }
    }
}

/// What changed on a topic: presences that appeared and that disappeared
/// (Phoenix's `presence_diff`). An update of a presence is a leave of its
/// old metadata and a join of its new one, with the same id, in one diff.
#[derive(Debug, PartialEq, Eq)]
pub struct PresenceDiff<Meta> {
    /// The topic.
    pub topic: Topic,
    /// Presences that appeared.
    pub joins: Vec<Presence<Meta>>,
    /// Presences that disappeared.
    pub leaves: Vec<Presence<Meta>>,
}

/// Bounds on what a [`Tracker`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceLimits {
    /// Presences this node may track at once (default 100 000): a
    /// [`Tracker::track`] beyond it fails with
    /// [`PresenceError::TooManyPresences`].
    pub max_presences: usize,
    /// The largest metadata, measured as the length of its JSON encoding
    /// (default 4096 bytes): a larger one is refused with
    /// [`PresenceError::MetaTooLarge`].
    pub max_meta_bytes: usize,
}

impl Default for PresenceLimits {
    fn default() -> Self {
        Self {
            max_presences: 100_000,
            max_meta_bytes: 4096,
        }
    }
}

/// Why a presence was not tracked or updated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The node tracks [`PresenceLimits::max_presences`] presences already.
    #[error("presence limit reached: this node may track {limit} presences")]
    TooManyPresences {
        /// The limit.
        limit: usize,
    },
    /// The metadata's JSON encoding is longer than
    /// [`PresenceLimits::max_meta_bytes`].
    #[error("presence metadata of {size} bytes is larger than the limit of {limit}")]
    MetaTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The metadata could not be encoded as JSON.
    #[error("presence metadata cannot be encoded: {0}")]
    Meta(String),
}

/// Why [`PresenceDiffs::recv`] returned no diff.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PresenceRecvError {
    /// The receiver fell [`DIFF_QUEUE_CAPACITY`] diffs behind and the
    /// oldest `n` were dropped: what it built from diffs is stale. Take a
    /// fresh list ([`Tracker::watch`]) and go on from there.
    #[error("the presence receiver lagged: {0} diffs dropped")]
    Lagged(u64),
    /// The tracker is gone (its server and every [`Tracked`] of it were
    /// dropped): no diff will come.
    #[error("the presence tracker is gone")]
    Closed,
}

struct QueueState<Meta> {
    diffs: VecDeque<Arc<PresenceDiff<Meta>>>,
    lagged: u64,
    closed: bool,
    waker: Option<Waker>,
}

struct DiffQueue<Meta> {
    state: Mutex<QueueState<Meta>>,
}

impl<Meta> DiffQueue<Meta> {
    fn push(&self, diff: &Arc<PresenceDiff<Meta>>) {
        let mut state = self.state.lock();
        if state.diffs.len() >= DIFF_QUEUE_CAPACITY {
            state.diffs.pop_front();
            state.lagged += 1;
        }
        state.diffs.push_back(Arc::clone(diff));
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

/// The diffs of one topic, as they happen: from
/// [`Tracker::diffs`] or [`Tracker::watch`]. Also a
/// [`Stream`](futures_core::Stream), which ends when the tracker is gone.
/// Dropping it stops the delivery.
pub struct PresenceDiffs<Meta> {
    queue: Arc<DiffQueue<Meta>>,
    topic: Topic,
}

impl<Meta> fmt::Debug for PresenceDiffs<Meta> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresenceDiffs")
            .field("topic", &self.topic)
            .field("queued", &self.queue.state.lock().diffs.len())
            .finish()
    }
}

impl<Meta> PresenceDiffs<Meta> {
    /// The topic whose diffs these are.
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// The next diff, waiting for one. A lag is reported before the diffs
    /// that follow it; [`PresenceRecvError::Closed`] once the tracker is
    /// gone and every queued diff was read.
    ///
    /// # Errors
    ///
    /// [`PresenceRecvError`].
    pub async fn recv(&mut self) -> Result<Arc<PresenceDiff<Meta>>, PresenceRecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next diff if one is queued (or the lag or closing it would
    /// report), without waiting: `None` when there is nothing.
    pub fn try_recv(&mut self) -> Option<Result<Arc<PresenceDiff<Meta>>, PresenceRecvError>> {
        let mut state = self.queue.state.lock();
        Self::take(&mut state)
    }

    fn take(
        state: &mut QueueState<Meta>,
    ) -> Option<Result<Arc<PresenceDiff<Meta>>, PresenceRecvError>> {
        if state.lagged > 0 {
            let lagged = std::mem::take(&mut state.lagged);
            return Some(Err(PresenceRecvError::Lagged(lagged)));
        }
        if let Some(diff) = state.diffs.pop_front() {
            return Some(Ok(diff));
        }
        state.closed.then_some(Err(PresenceRecvError::Closed))
    }

    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Arc<PresenceDiff<Meta>>, PresenceRecvError>> {
        let mut state = self.queue.state.lock();
        match Self::take(&mut state) {
            Some(taken) => Poll::Ready(taken),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<Meta> futures_core::Stream for PresenceDiffs<Meta> {
    type Item = Result<Arc<PresenceDiff<Meta>>, PresenceRecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().poll_recv(cx) {
            Poll::Ready(Err(PresenceRecvError::Closed)) => Poll::Ready(None),
            Poll::Ready(item) => Poll::Ready(Some(item)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// This node's replica of a tracker.
pub(crate) type ReplicaShard<Meta> = Shard<Arc<str>, PresenceId, Arc<Meta>>;

type JoinsLeaves<Meta> = (Vec<Presence<Meta>>, Vec<Presence<Meta>>);

struct Watchers<Meta> {
    topic: Topic,
    queues: Vec<Weak<DiffQueue<Meta>>>,
}

struct Locked<Meta> {
    /// The replicas, one per shard of the tracker (one, unless the engine
    /// has a pool of shards: Phoenix's `pool_size`). Never empty. A
    /// topic's presences are in shard [`shard_of`].
    shards: Vec<ReplicaShard<Meta>>,
    /// Whether a runtime sends the shard's deltas to other nodes; if not,
    /// they are dropped as they are made.
    gossiping: bool,
    /// The random half of this tracker's [`PresenceId`]s.
    origin: u64,
    /// Receivers of diffs, by topic name; dead ones are pruned when their
    /// topic next changes or gets a new receiver.
    watchers: HashMap<Arc<str>, Watchers<Meta>>,
    limits: PresenceLimits,
    next_id: u64,
}

pub(crate) struct Inner<Meta> {
    locked: Mutex<Locked<Meta>>,
}

impl<Meta> Inner<Meta> {
    /// The replica's configuration.
    #[cfg(any(test, feature = "redis", feature = "nats"))]
    pub(crate) fn config(&self) -> ShardConfig {
        self.locked.lock().shards[0].config().clone()
    }

    /// The random half of this tracker's [`PresenceId`]s.
    #[cfg(any(test, feature = "redis", feature = "nats"))]
    pub(crate) fn origin(&self) -> u64 {
        self.locked.lock().origin
    }

    /// Runs `step` on the replica of shard `shard` (a tick or a received
    /// message) and reports the diffs it returns: what the runtime does.
    /// Returns what to send and the liveness changes; nothing for a shard
    /// the tracker does not have.
    #[cfg(any(test, feature = "redis", feature = "nats"))]
    #[allow(clippy::type_complexity)]
    pub(crate) fn step(
        &self,
        shard: usize,
        step: impl FnOnce(
            &mut ReplicaShard<Meta>,
        ) -> super::shard::Effects<Arc<str>, PresenceId, Arc<Meta>>,
    ) -> (
        Vec<super::shard::Outgoing<Arc<str>, PresenceId, Arc<Meta>>>,
        Vec<super::shard::ReplicaEvent<Arc<str>>>,
    ) {
        let mut locked = self.locked.lock();
        let Some(replica) = locked.shards.get_mut(shard) else {
            return (Vec::new(), Vec::new());
        };
        let effects = step(replica);
        for diff in &effects.diffs {
            locked.report(diff);
        }
        (effects.outgoing, effects.events)
    }
}

impl<Meta> Drop for Inner<Meta> {
    fn drop(&mut self) {
        for watchers in self.locked.get_mut().watchers.values() {
            for queue in watchers.queues.iter().filter_map(Weak::upgrade) {
                queue.close();
            }
        }
    }
}

fn presence<Meta>(value: &Value<PresenceId, Arc<Meta>>) -> Presence<Meta> {
    Presence {
        key: Arc::clone(&value.key),
        meta: Arc::clone(&value.meta),
        id: value.pid,
    }
}

impl<Meta> Locked<Meta> {
    /// Delivers a diff of the state to the receivers of its topics. In
    /// process, drops the pending delta: there is no other replica to
    /// send it to, and it would grow with every change.
    fn report(&mut self, diff: &Diff<PresenceId, Arc<Meta>>) {
        if !self.gossiping {
            for shard in &mut self.shards {
                shard.discard_delta();
            }
        }
        let mut by_topic: BTreeMap<&str, JoinsLeaves<Meta>> = BTreeMap::new();
        for value in &diff.joins {
            by_topic
                .entry(&value.topic)
                .or_default()
                .0
                .push(presence(value));
        }
        for value in &diff.leaves {
            by_topic
                .entry(&value.topic)
                .or_default()
                .1
                .push(presence(value));
        }
        for (topic, (joins, leaves)) in by_topic {
            let Some(watchers) = self.watchers.get_mut(topic) else {
                continue;
            };
            let diff = Arc::new(PresenceDiff {
                topic: watchers.topic,
                joins,
                leaves,
            });
            watchers.queues.retain(|queue| match queue.upgrade() {
                Some(queue) => {
                    queue.push(&diff);
                    true
                }
                None => false,
            });
            if watchers.queues.is_empty() {
                self.watchers.remove(topic);
            }
        }
    }

    fn list(&self, topic: &str) -> Vec<Presence<Meta>> {
        self.shards[shard_of(topic, self.shards.len())]
            .list(topic)
            .iter()
            .map(presence)
            .collect()
    }

    /// How many presences this node tracks, in all its shards.
    fn local_len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.state().local_len())
            .sum()
    }
}

/// The shard of `topic` among `shards`: with one, it; with several (a
/// Phoenix tracker's pool), `:erlang.phash2(topic, shards)`, as
/// `Phoenix.Tracker.Shard.name_for_topic/3` places it.
fn shard_of(topic: &str, shards: usize) -> usize {
    #[cfg(feature = "phoenix")]
    if let Some(pool) = u32::try_from(shards)
        .ok()
        .and_then(std::num::NonZeroU32::new)
    {
        // A u32 widens into a usize on every target this crate builds for.
        return crate::phoenix::tracker::shard_for_topic(topic, pool) as usize;
    }
    let _ = (topic, shards);
    0
}

/// A unique replica version: the time in µs plus a process-wide counter,
/// as Phoenix makes its `vsn`.
fn unique_vsn() -> u64 {
    static COUNTER: process::AtomicU64 = process::AtomicU64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
        });
    micros.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The length of `meta`'s JSON encoding, without keeping it.
fn json_len<Meta: Serialize>(meta: &Meta) -> Result<usize, PresenceError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, meta)
        .map_err(|error| PresenceError::Meta(error.to_string()))?;
    Ok(count.0)
}

/// The presences of one metadata type on a server: who is on which topic
/// (the analog of a `Phoenix.Presence` module, or of a `Phoenix.Tracker`).
/// Get it with [`PubSub::tracker`]; cheap to clone, every clone is the
/// same tracker. A server has one tracker per metadata type.
///
/// It is this node's replica of a delta-state CRDT with Phoenix.Tracker's
/// semantics ([`presence::shard`](super::shard)). On a server whose engine
/// gossips (Redis live and durable, NATS live and durable), a task
/// replicates it with the other nodes' replicas of the same metadata type
/// (named after the type's path), and lists and diffs show every node's
/// presences; a local change reaches the others with the next heartbeat,
/// and a node silent for the down period has its presences reported as
/// leaves (timing: [`PresenceTiming`], set with
/// [`Builder::presence_timing`](crate::Builder::presence_timing)). On a
/// Phoenix server, a metadata type given an Elixir tracker with
/// [`PhoenixConfig::presence`](crate::phoenix::PhoenixConfig::presence)
/// is a replica of that tracker in the same way, in Phoenix.Tracker's
/// own protocol: Elixir's presences are listed here (their metas read by
/// `Meta`'s `Deserialize`) and this node's in Elixir's `Presence.list/1`.
/// In process, and on a Phoenix server for another metadata type, it is
/// this node's alone: presences tracked here are listed here. A linked
/// server gives its peer's tracker (see [`PubSub::tracker`]). The API is
/// the same.
pub struct Tracker<Meta> {
    inner: Arc<Inner<Meta>>,
}

impl<Meta> Clone for Tracker<Meta> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<Meta> fmt::Debug for Tracker<Meta> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let locked = self.inner.locked.lock();
        f.debug_struct("Tracker")
            .field("replica", locked.shards[0].replica())
            .field("shards", &locked.shards.len())
            .field(
                "presences",
                &locked
                    .shards
                    .iter()
                    .map(|shard| shard.state().len())
                    .sum::<usize>(),
            )
            .finish_non_exhaustive()
    }
}

impl<Meta: Serialize + Send + Sync + 'static> Tracker<Meta> {
    /// A tracker of `shards` replicas (at least one), each named `node`
    /// with a version of its own.
    fn new(node: &str, config: ShardConfig, gossiping: bool, shards: usize) -> Self {
        let limits = PresenceLimits {
            max_presences: config.limits.max_local,
            ..PresenceLimits::default()
        };
        let shards = (0..shards.max(1))
            .map(|_| {
                let replica = Replica::new(Arc::<str>::from(node), unique_vsn());
                match Shard::new(replica, config.clone()) {
                    Ok(shard) => shard,
                    // Made with a configuration that validates: the
                    // default's, a `PresenceTiming`'s (validated by
                    // `Builder::presence_timing`), or one a test validated.
                    Err(error) => unreachable!("the presence configuration validates: {error}"),
                }
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                locked: Mutex::new(Locked {
                    shards,
                    gossiping,
                    // The top bit clear: a Phoenix replica marks the ids
                    // of Elixir pids with it (`presence::phoenix_codec`).
                    origin: crate::server::random_u64() >> 1,
                    watchers: HashMap::new(),
                    limits,
                    next_id: 0,
                }),
            }),
        }
    }

    /// Tracks `key` on `topic` with `meta` (Phoenix's `track`): the
    /// presence is listed and a join is delivered to the topic's
    /// receivers before this returns. It lasts until the returned guard
    /// is dropped or [`Tracked::untrack`]ed.
    ///
    /// # Errors
    ///
    /// [`PresenceError::MetaTooLarge`] or [`PresenceError::Meta`] for
    /// metadata over the limit or not encodable as JSON;
    /// [`PresenceError::TooManyPresences`] at the limit of presences.
    pub fn track(
        &self,
        topic: Topic,
        key: impl Into<Arc<str>>,
        meta: Meta,
    ) -> Result<Tracked<Meta>, PresenceError> {
        let key = key.into();
        let mut locked = self.inner.locked.lock();
        check_meta(&meta, locked.limits)?;
        locked.next_id += 1;
        let id = PresenceId::from_parts((locked.origin, locked.next_id));
        let topic_name: Arc<str> = topic.to_string().into();
        // The limit is the tracker's, whatever the shards.
        if locked.local_len() >= locked.limits.max_presences {
            return Err(PresenceError::TooManyPresences {
                limit: locked.limits.max_presences,
            });
        }
        let meta = Arc::new(meta);
        let shard = shard_of(&topic_name, locked.shards.len());
        let diff = locked.shards[shard]
            .track(id, &topic_name, &key, Arc::clone(&meta))
            .map_err(|error| match error {
                JoinError::TooManyPresences { limit } => PresenceError::TooManyPresences { limit },
                JoinError::AlreadyTracked => {
                    unreachable!("ids only grow: a fresh id has no presence yet")
                }
            })?;
        locked.report(&diff);
        Ok(Tracked {
            inner: Arc::clone(&self.inner),
            topic,
            topic_name,
            shard,
            key,
            id,
            meta,
        })
    }

    /// The presences on `topic`, in the order they were tracked (Phoenix's
    /// `Phoenix.Tracker.list`).
    pub fn presences(&self, topic: Topic) -> Vec<Presence<Meta>> {
        self.inner.locked.lock().list(&topic.to_string())
    }

    /// The presences on `topic` grouped by key, each key's in the order
    /// they were tracked (Phoenix's `Phoenix.Presence.list`: `%{key =>
    /// %{metas: [...]}}`).
    pub fn list(&self, topic: Topic) -> BTreeMap<Arc<str>, Vec<Presence<Meta>>> {
        let mut grouped: BTreeMap<Arc<str>, Vec<Presence<Meta>>> = BTreeMap::new();
        for presence in self.presences(topic) {
            grouped
                .entry(Arc::clone(&presence.key))
                .or_default()
                .push(presence);
        }
        grouped
    }

    /// The diffs of `topic` from now on. To build a view, prefer
    /// [`watch`](Self::watch), which also gives the list the diffs apply to.
    pub fn diffs(&self, topic: Topic) -> PresenceDiffs<Meta> {
        self.watch(topic).1
    }

    /// The presences on `topic` now, and its diffs from then on, taken
    /// together: applying the diffs in order to the list (remove the
    /// leaves by id, add the joins) gives the list of every later moment,
    /// with nothing missed or counted twice.
    pub fn watch(&self, topic: Topic) -> (Vec<Presence<Meta>>, PresenceDiffs<Meta>) {
        let name = topic.to_string();
        let queue = Arc::new(DiffQueue {
            state: Mutex::new(QueueState {
                diffs: VecDeque::new(),
                lagged: 0,
                closed: false,
                waker: None,
            }),
        });
        let mut locked = self.inner.locked.lock();
        let list = locked.list(&name);
        let watchers = locked
            .watchers
            .entry(Arc::from(name))
            .or_insert_with(|| Watchers {
                topic,
                queues: Vec::new(),
            });
        watchers.queues.retain(|queue| queue.strong_count() > 0);
        watchers.queues.push(Arc::downgrade(&queue));
        (list, PresenceDiffs { queue, topic })
    }

    /// How many presences this node tracks, on every topic.
    pub fn len(&self) -> usize {
        self.inner.locked.lock().local_len()
    }

    /// Whether this node tracks no presence.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This replica and the others it knows, each with whether it is up.
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub(crate) fn replicas(&self) -> (Replica<Arc<str>>, Vec<(Replica<Arc<str>>, bool)>) {
        let locked = self.inner.locked.lock();
        (
            locked.shards[0].replica().clone(),
            locked.shards[0].peers().collect(),
        )
    }

    /// The limits in force.
    pub fn limits(&self) -> PresenceLimits {
        self.inner.locked.lock().limits
    }

    /// Sets the limits for what is tracked and updated from now on
    /// (presences tracked already stay, even beyond a lower limit).
    pub fn set_limits(&self, limits: PresenceLimits) {
        let mut locked = self.inner.locked.lock();
        locked.limits = limits;
        for shard in &mut locked.shards {
            let mut state_limits = shard.state().limits();
            state_limits.max_local = limits.max_presences;
            shard.set_limits(state_limits);
        }
    }
}

fn check_meta<Meta: Serialize>(meta: &Meta, limits: PresenceLimits) -> Result<(), PresenceError> {
    let size = json_len(meta)?;
    if size > limits.max_meta_bytes {
        return Err(PresenceError::MetaTooLarge {
            size,
            limit: limits.max_meta_bytes,
        });
    }
    Ok(())
}

/// A tracked presence: it lasts as long as this guard. Dropping it, or
/// [`untrack`](Self::untrack), removes the presence (a leave); a task that
/// owns it and ends takes it along. [`update`](Self::update) replaces its
/// metadata.
#[must_use = "dropping the guard untracks the presence at once"]
pub struct Tracked<Meta> {
    inner: Arc<Inner<Meta>>,
    topic: Topic,
    topic_name: Arc<str>,
    /// The tracker's shard of the topic.
    shard: usize,
    key: Arc<str>,
    id: PresenceId,
    meta: Arc<Meta>,
}

impl<Meta> fmt::Debug for Tracked<Meta> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("topic", &self.topic)
            .field("key", &self.key)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<Meta: Serialize + Send + Sync + 'static> Tracked<Meta> {
    /// Replaces the metadata (Phoenix's `update`): one diff with the new
    /// metadata joining and the old one leaving, delivered before this
    /// returns.
    ///
    /// # Errors
    ///
    /// [`PresenceError::MetaTooLarge`] or [`PresenceError::Meta`],
    /// changing nothing.
    pub fn update(&mut self, meta: Meta) -> Result<(), PresenceError> {
        let mut locked = self.inner.locked.lock();
        check_meta(&meta, locked.limits)?;
        let meta = Arc::new(meta);
        // The guard's presence is tracked until the guard goes: the
        // update always finds it.
        if let Ok(diff) = locked.shards[self.shard].update(
            &self.id,
            &self.topic_name,
            &self.key,
            Arc::clone(&meta),
        ) {
            locked.report(&diff);
        }
        self.meta = meta;
        Ok(())
    }
}

impl<Meta> Tracked<Meta> {
    /// Removes the presence now (dropping the guard does the same).
    pub fn untrack(self) {}

    /// The topic.
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The presence's id, as in the lists and diffs.
    pub fn id(&self) -> PresenceId {
        self.id
    }

    /// The current metadata.
    pub fn meta(&self) -> &Arc<Meta> {
        &self.meta
    }
}

impl<Meta> Drop for Tracked<Meta> {
    fn drop(&mut self) {
        let mut locked = self.inner.locked.lock();
        let diff = locked.shards[self.shard].untrack(&self.id, &self.topic_name, &self.key);
        if !diff.is_empty() {
            locked.report(&diff);
        }
    }
}

#[cfg(any(test, feature = "redis", feature = "nats"))]
/// The name a tracker of `Meta` has on the wire: its type's path, the same
/// on every node built from the same source.
fn tracker_name<Meta>() -> &'static str {
    std::any::type_name::<Meta>()
}

/// The tracker of `Meta` of a server, kept in its `extensions` and made on
/// first use: a replica that gossips with the other nodes through
/// `gossip`'s gossip, if it gives one.
fn tracker_of<Meta: Serialize + DeserializeOwned + Send + Sync + 'static>(
    extensions: &Extensions,
    node: &str,
    gossip: impl FnOnce() -> Option<(GossipHandle, CountRejected)>,
) -> Tracker<Meta> {
    // Read before `get_or_insert_with`, which holds the extensions' lock.
    let config = extensions
        .get::<PresenceTiming>()
        .map(|timing| timing.shard_config())
        .unwrap_or_default();
    extensions.get_or_insert_with(|alive| make::<Meta>(node, config, gossip(), alive))
}

#[cfg(not(any(test, feature = "redis", feature = "nats")))]
fn make<Meta: Serialize + DeserializeOwned + Send + Sync + 'static>(
    node: &str,
    config: ShardConfig,
    gossip: Option<(GossipHandle, CountRejected)>,
    alive: Weak<()>,
) -> Tracker<Meta> {
    let _ = (gossip, alive);
    Tracker::new(node, config, false, 1)
}

/// `alive` lives as long as the server: the replica runtime holds it
/// weakly and stops once it is gone.
#[cfg(any(test, feature = "redis", feature = "nats"))]
fn make<Meta: Serialize + DeserializeOwned + Send + Sync + 'static>(
    node: &str,
    config: ShardConfig,
    gossip: Option<(GossipHandle, CountRejected)>,
    alive: Weak<()>,
) -> Tracker<Meta> {
    let name = tracker_name::<Meta>();
    let Some((gossip, rejected, channels)) = gossip.and_then(|(gossip, rejected)| {
        gossip
            .open(name, Arc::clone(&rejected))
            .filter(|channels| !channels.is_empty())
            .map(|channels| (gossip, rejected, channels))
    }) else {
        return Tracker::new(node, config, false, 1);
    };
    // The channels of one tracker name its replica alike.
    let replica = super::wire::replica_name(&channels[0].encoding, node);
    let tracker = Tracker::new(&replica, config, true, channels.len());
    for (shard, channel) in channels.into_iter().enumerate() {
        gossip.runtime().spawn(super::runtime::run::<Meta>(
            name.to_owned(),
            shard,
            Arc::downgrade(&tracker.inner),
            alive.clone(),
            channel,
            Arc::clone(&rejected),
        ));
    }
    tracker
}

use super::timing::PresenceTiming;
use crate::extensions::{Extensions, Home};
use crate::gossip::GossipHandle;

#[cfg(any(test, feature = "redis", feature = "nats"))]
use super::runtime::CountRejected;
/// Nothing to count without an engine.
#[cfg(not(any(test, feature = "redis", feature = "nats")))]
type CountRejected = std::convert::Infallible;

/// Counts in `home`'s [`Stats::rejected`](crate::Stats::rejected), while
/// it lives.
#[cfg(any(test, feature = "redis", feature = "nats"))]
fn count_rejected(home: &Arc<dyn Home>) -> CountRejected {
    let home = Arc::downgrade(home);
    Arc::new(move || {
        if let Some(home) = home.upgrade() {
            home.record_rejected();
        }
    })
}

/// Never called: without an engine there is no gossip to count.
#[cfg(not(any(test, feature = "redis", feature = "nats")))]
fn count_rejected(home: &Arc<dyn Home>) -> CountRejected {
    let _ = home;
    unreachable!("no gossip without an engine: GossipHandle is uninhabited")
}

impl<M: Send + Sync + 'static> PubSub<M> {
    /// This server's tracker of presences with metadata `Meta`, made on
    /// first use. The same for every call and every clone of the server.
    ///
    /// Two linked servers (a spec's and its extension's, one bus: see the
    /// README's "One bus per application") share their trackers: both give
    /// the same tracker, kept by the server with the transport (or the
    /// extension's when neither has one), under its node name and with
    /// its [`PresenceTiming`]; its presences cross nodes as that server's
    /// engine allows. A tracker a server made before it was linked stays
    /// that server's own: the extension's generated `install` and
    /// `server` link before returning, so track after them. The shared
    /// tracker lives as long as the server that keeps it: once that one is
    /// gone, its replica stops (other nodes take its presences down after
    /// the down period) and the other server's `tracker` makes a tracker
    /// of its own.
    pub fn tracker<Meta: Serialize + DeserializeOwned + Send + Sync + 'static>(
        &self,
    ) -> Tracker<Meta> {
        let home = self.core().home();
        tracker_of(home.extensions(), home.node_name(), || {
            let gossip = home.gossip()?;
            Some((gossip, count_rejected(&home)))
        })
    }

    /// Tracks `key` on `topic` with `meta`: [`Tracker::track`] of
    /// [`tracker::<Meta>()`](Self::tracker).
    ///
    /// ```
    /// use staff_pubsub::{PubSub, Topic};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// const TEAM: Topic = Topic::new("team:7");
    /// let pubsub = PubSub::<String>::new();
    /// let (now, mut diffs) = pubsub.tracker::<String>().watch(TEAM);
    /// assert!(now.is_empty());
    ///
    /// let ada = pubsub.track(TEAM, "user-1", "viewing".to_owned())?;
    /// let diff = diffs.recv().await?;
    /// assert_eq!(&*diff.joins[0].key, "user-1");
    ///
    /// drop(ada); // leaves
    /// assert_eq!(diffs.recv().await?.leaves.len(), 1);
    /// assert!(pubsub.presences::<String>(TEAM).is_empty());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Tracker::track`].
    pub fn track<Meta: Serialize + DeserializeOwned + Send + Sync + 'static>(
        &self,
        topic: Topic,
        key: impl Into<Arc<str>>,
        meta: Meta,
    ) -> Result<Tracked<Meta>, PresenceError> {
        self.tracker::<Meta>().track(topic, key, meta)
    }

    /// The presences with metadata `Meta` on `topic`: [`Tracker::presences`].
    pub fn presences<Meta: Serialize + DeserializeOwned + Send + Sync + 'static>(
        &self,
        topic: Topic,
    ) -> Vec<Presence<Meta>> {
        self.tracker::<Meta>().presences(topic)
    }

    /// The diffs of presences with metadata `Meta` on `topic`:
    /// [`Tracker::diffs`].
    pub fn presence_diffs<Meta: Serialize + DeserializeOwned + Send + Sync + 'static>(
        &self,
        topic: Topic,
    ) -> PresenceDiffs<Meta> {
        self.tracker::<Meta>().diffs(topic)
    }
}

#[cfg(test)]
mod tests;
