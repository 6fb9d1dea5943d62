//! The presence CRDT: a delta-state observed-remove set with the semantics
//! of `Phoenix.Tracker.State` (phoenix_pubsub 2.2).
//!
//! A [`State`] is one replica's copy. Its entries are presences
//! `{topic, pid, key} => meta`, each stamped with the dot ([`Tag`]) of the
//! event that added it. What the replica has seen is its causal context
//! (per replica, every dot up to a clock) plus its clouds (dots seen out of
//! order). Local operations consume dots of this replica and record what
//! they did in the pending [`Delta`]; merging a remote delta or full state
//! ([`Transfer`]) adds the values it has not seen and removes the values
//! the remote has seen and no longer has, and reports both as a [`Diff`].
//!
//! Independent of any runtime and of the wire: the replica machine that
//! sends heartbeats and transfers is [`Shard`](super::shard::Shard).
//!
//! Invariants kept by every method:
//! - `values` and `by_tag` hold the same presences, one per identity
//!   `{topic, pid, key}` and one per tag;
//! - this replica's own clock in `context` is the number of dots it has
//!   consumed, and its dots above the compacted context are in `clouds`;
//! - `clouds` hold no empty set and, after [`State::compact`], no dot the
//!   context covers.

use crate::loom::sync::Arc;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use super::clock::{self, Clocks, Context, Name, Replica, Tag};

/// What a presence's owner (Phoenix's pid) may be: any ordered, cloneable
/// value. Part of a presence's identity `{topic, pid, key}`: the same key
/// tracked by two owners is two presences (two devices of one user).
pub trait Pid: Clone + Ord + Debug + Send + Sync + 'static {}
impl<T: Clone + Ord + Debug + Send + Sync + 'static> Pid for T {}

/// Per replica, dots seen but not contiguous with the context yet.
pub type Clouds<N> = BTreeMap<Replica<N>, BTreeSet<u64>>;

/// One presence: who (`pid`) is on `topic` as `key`, with `meta`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value<P, M> {
    /// The owner of the presence.
    pub pid: P,
    /// The topic it is on.
    pub topic: Arc<str>,
    /// The key it is tracked as (a user id, say).
    pub key: Arc<str>,
    /// Its metadata.
    pub meta: M,
}

/// Whether a replica is up or down in a [`State`]: a down replica's
/// values are kept (it may come back) but not listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Heard from within the down period.
    Up,
    /// Silent for longer than the down period, not yet permanently down.
    Down,
}

/// A delta: what some replica's events changed, with the dots they
/// consumed (`clouds`, which may include other replicas' dots whose
/// removal is re-gossiped) and the values they added that are still
/// alive. `range` is the sender's clocks before and after (limited to the
/// replicas the deltas it accumulates came from).
#[derive(Clone, Debug, PartialEq)]
pub struct Delta<N, P, M> {
    /// The replica that produced or accumulated it.
    pub replica: Replica<N>,
    /// Dots added or removed.
    pub clouds: Clouds<N>,
    /// Values added and still alive, by tag.
    pub values: BTreeMap<Tag<N>, Value<P, M>>,
    /// The clocks the delta spans: `(start, end)`.
    pub range: (Context<N>, Context<N>),
}

/// A replica's entire state, limited to the replicas a requester knows:
/// the full-state form of a transfer.
#[derive(Clone, Debug, PartialEq)]
pub struct FullState<N, P, M> {
    /// The sender.
    pub replica: Replica<N>,
    /// The sender's context, limited to the requester's replicas.
    pub context: Context<N>,
    /// The sender's clouds, limited likewise.
    pub clouds: Clouds<N>,
    /// The sender's view of replica statuses (informational; merge ignores it).
    pub replicas: BTreeMap<Replica<N>, Status>,
    /// Every value of the sender whose replica the requester knows, the
    /// requester's own included.
    pub values: BTreeMap<Tag<N>, Value<P, M>>,
}

/// What a transfer carries: a delta generation, or the entire state.
#[derive(Clone, Debug, PartialEq)]
pub enum Transfer<N, P, M> {
    /// A delta (a heartbeat's, or an accumulated generation).
    Delta(Delta<N, P, M>),
    /// The sender's entire state.
    Full(FullState<N, P, M>),
}

/// The presences an operation made appear (`joins`) and disappear
/// (`leaves`). An update is a leave of the old meta and a join of the new,
/// for the same `{topic, pid, key}`, in one diff.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff<P, M> {
    /// Presences that appeared, in tag order.
    pub joins: Vec<Value<P, M>>,
    /// Presences that disappeared, in `{topic, pid, key}` order.
    pub leaves: Vec<Value<P, M>>,
}

impl<P, M> Default for Diff<P, M> {
    fn default() -> Self {
        Self {
            joins: Vec::new(),
            leaves: Vec::new(),
        }
    }
}

impl<P, M> Diff<P, M> {
    /// Whether nothing joined or left.
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

/// Bounds on what one [`State`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLimits {
    /// Presences this replica may own: a [`State::join`] beyond it fails
    /// with [`JoinError::TooManyPresences`].
    pub max_local: usize,
    /// Presences the state may hold in all, other replicas' included.
    /// Joins a merge would add beyond it are not stored and are counted in
    /// [`State::dropped`]; the state then no longer converges with the
    /// others, so size it above the real population (it is a safety valve
    /// against a hostile or runaway peer, not flow control).
    pub max_total: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            max_local: 100_000,
            max_total: 1_000_000,
        }
    }
}

/// Why a local [`State::join`] did nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The `{topic, pid, key}` is tracked already.
    #[error("this owner already tracks this key on this topic")]
    AlreadyTracked,
    /// The replica owns [`StateLimits::max_local`] presences already.
    #[error("presence limit reached: a node may track {limit} presences")]
    TooManyPresences {
        /// The limit.
        limit: usize,
    },
}

/// A local update or leave named a presence that is not tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no such presence")]
pub struct NoPresence;

/// Merging two deltas whose ranges do not touch (`merge_deltas`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the deltas are not contiguous")]
pub struct NotContiguous;

#[derive(Clone, Debug)]
struct Stored<N, M> {
    meta: M,
    tag: Tag<N>,
}

type Ident<P> = (Arc<str>, P, Arc<str>);

/// topic => (pid, key) => meta and tag.
type Table<N, P, M> = BTreeMap<Arc<str>, BTreeMap<(P, Arc<str>), Stored<N, M>>>;

/// An update's old and new value.
pub type Replaced<P, M> = (Value<P, M>, Value<P, M>);

/// One replica's copy of the presence set. See the [module](self).
#[derive(Clone, Debug)]
pub struct State<N, P, M> {
    replica: Replica<N>,
    context: Context<N>,
    clouds: Clouds<N>,
    /// topic => (pid, key) => meta and tag: Phoenix's ordered ETS table
    /// keyed `{topic, pid, key}`.
    values: Table<N, P, M>,
    by_tag: BTreeMap<Tag<N>, Ident<P>>,
    replicas: BTreeMap<Replica<N>, Status>,
    delta: Delta<N, P, M>,
    limits: StateLimits,
    local: usize,
    total: usize,
    dropped: u64,
}

fn in_context<N: Name>(context: &Context<N>, clouds: &Clouds<N>, tag: &Tag<N>) -> bool {
    context
        .get(&tag.replica)
        .is_some_and(|clock| *clock >= tag.clock)
        || clouds
            .get(&tag.replica)
            .is_some_and(|cloud| cloud.contains(&tag.clock))
}

fn put_tag<N: Name>(clouds: &mut Clouds<N>, tag: &Tag<N>) {
    clouds
        .entry(tag.replica.clone())
        .or_default()
        .insert(tag.clock);
}

fn delete_tag<N: Name>(clouds: &mut Clouds<N>, tag: &Tag<N>) {
    if let Some(cloud) = clouds.get_mut(&tag.replica) {
        cloud.remove(&tag.clock);
        if cloud.is_empty() {
            clouds.remove(&tag.replica);
        }
    }
}

fn union_into<N: Name>(into: &mut Clouds<N>, from: &Clouds<N>, only: Option<&Context<N>>) {
    for (replica, cloud) in from {
        if cloud.is_empty() || only.is_some_and(|context| !context.contains_key(replica)) {
            continue;
        }
        into.entry(replica.clone())
            .or_default()
            .extend(cloud.iter().copied());
    }
}

fn cloud_dots<N>(clouds: &Clouds<N>) -> usize {
    clouds.values().map(BTreeSet::len).sum()
}

impl<N: Name, P: Pid, M: Clone> Delta<N, P, M> {
    /// An empty delta of `replica` whose range is `clock` to `clock`.
    pub fn empty(replica: Replica<N>, clock: u64) -> Self {
        let at: Context<N> = [(replica.clone(), clock)].into_iter().collect();
        Self {
            replica,
            clouds: Clouds::new(),
            values: BTreeMap::new(),
            range: (at.clone(), at),
        }
    }

    /// Whether it records any dot (`State.has_delta?`).
    pub fn has_dots(&self) -> bool {
        self.clouds.values().any(|cloud| !cloud.is_empty())
    }

    /// Its size as delta generations measure it: values plus cloud dots.
    pub fn size(&self) -> usize {
        self.values.len() + cloud_dots(&self.clouds)
    }

    /// Accumulates `other` into this delta (`State.merge_deltas/2`): only
    /// when their ranges touch (`other`'s end reaches this one's start and
    /// this one's end reaches `other`'s start); the range becomes their
    /// span, the clouds their union, and a value survives unless the other
    /// side has seen its dot without keeping it.
    ///
    /// # Errors
    ///
    /// [`NotContiguous`], changing nothing, when the ranges do not touch.
    pub fn merge(&mut self, other: &Self) -> Result<(), NotContiguous> {
        let (local_start, local_end) = &self.range;
        let (remote_start, remote_end) = &other.range;
        if !(clock::dominates_or_equal(remote_end, local_start)
            && clock::dominates_or_equal(local_end, remote_start))
        {
            return Err(NotContiguous);
        }
        let range = (
            clock::lowerbound(local_start, remote_start),
            clock::upperbound(local_end, remote_end),
        );
        // Deltas carry no context: "seen" is the clouds alone.
        let empty = Context::new();
        let mut values: BTreeMap<Tag<N>, Value<P, M>> = self
            .values
            .iter()
            .filter(|(tag, _)| {
                other.values.contains_key(*tag) || !in_context(&empty, &other.clouds, tag)
            })
            .map(|(tag, value)| (tag.clone(), value.clone()))
            .collect();
        for (tag, value) in &other.values {
            if !self.values.contains_key(tag) && !in_context(&empty, &self.clouds, tag) {
                values.insert(tag.clone(), value.clone());
            }
        }
        union_into(&mut self.clouds, &other.clouds, None);
        self.values = values;
        self.range = range;
        Ok(())
    }

    /// This delta as sent to a requester whose context is
    /// `remote_context` (`State.extract/3`, delta clause): clouds, range
    /// and values limited to the requester's replicas.
    pub fn extract(&self, remote_context: &Context<N>) -> Self {
        Self {
            replica: self.replica.clone(),
            clouds: clock::restrict(&self.clouds, remote_context),
            values: self
                .values
                .iter()
                .filter(|(tag, _)| remote_context.contains_key(&tag.replica))
                .map(|(tag, value)| (tag.clone(), value.clone()))
                .collect(),
            range: (
                clock::restrict(&self.range.0, remote_context),
                clock::restrict(&self.range.1, remote_context),
            ),
        }
    }

    /// Forgets everything of `replica` (a permanently down one).
    pub fn remove_replica(&mut self, replica: &Replica<N>) {
        self.range.0.remove(replica);
        self.range.1.remove(replica);
        self.clouds.remove(replica);
        self.values.retain(|tag, _| tag.replica != *replica);
    }
}

impl<N: Name, P: Pid, M: Clone> State<N, P, M> {
    /// A new, empty state of `replica`, which is up, with clock 0.
    pub fn new(replica: Replica<N>) -> Self {
        Self::with_limits(replica, StateLimits::default())
    }

    /// [`new`](Self::new) with `limits`.
    pub fn with_limits(replica: Replica<N>, limits: StateLimits) -> Self {
        Self {
            context: [(replica.clone(), 0)].into_iter().collect(),
            replicas: [(replica.clone(), Status::Up)].into_iter().collect(),
            delta: Delta::empty(replica.clone(), 0),
            replica,
            clouds: Clouds::new(),
            values: BTreeMap::new(),
            by_tag: BTreeMap::new(),
            limits,
            local: 0,
            total: 0,
            dropped: 0,
        }
    }

    /// This replica.
    pub fn replica(&self) -> &Replica<N> {
        &self.replica
    }

    /// The causal context.
    pub fn context(&self) -> &Context<N> {
        &self.context
    }

    /// The clouds (dots seen out of order).
    pub fn clouds(&self) -> &Clouds<N> {
        &self.clouds
    }

    /// Known replicas and their status (permanently down ones are gone).
    pub fn replicas(&self) -> &BTreeMap<Replica<N>, Status> {
        &self.replicas
    }

    /// The pending delta: what local operations and observed removals did
    /// since the last [`take_delta`](Self::take_delta).
    pub fn delta(&self) -> &Delta<N, P, M> {
        &self.delta
    }

    /// The limits.
    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    /// Sets the limits for what is added from now on (what is held stays).
    pub fn set_limits(&mut self, limits: StateLimits) {
        self.limits = limits;
    }

    /// How many presences the state holds, of every replica, down ones
    /// included.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the state holds no presence.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many presences this replica owns.
    pub fn local_len(&self) -> usize {
        self.local
    }

    /// Joins that merges did not store because of [`StateLimits::max_total`].
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The clocks this replica advertises (`State.clocks/1`): itself and
    /// its context without the replicas it has marked down.
    pub fn clocks(&self) -> Clocks<N> {
        let context = self
            .context
            .iter()
            .filter(|(replica, _)| self.replicas.get(*replica) != Some(&Status::Down))
            .map(|(replica, clock)| (replica.clone(), *clock))
            .collect();
        (self.replica.clone(), context)
    }

    fn is_down(&self, replica: &Replica<N>) -> bool {
        self.replicas.get(replica) == Some(&Status::Down)
    }

    fn own_clock(&self) -> u64 {
        self.context.get(&self.replica).copied().unwrap_or(0)
    }

    fn value_of(ident: &Ident<P>, stored: &Stored<N, M>) -> Value<P, M> {
        Value {
            pid: ident.1.clone(),
            topic: Arc::clone(&ident.0),
            key: Arc::clone(&ident.2),
            meta: stored.meta.clone(),
        }
    }

    fn lookup(&self, topic: &str, pid: &P, key: &Arc<str>) -> Option<&Stored<N, M>> {
        self.values.get(topic)?.get(&(pid.clone(), Arc::clone(key)))
    }

    fn count(&mut self, tag: &Tag<N>, added: bool) {
        let local = tag.replica == self.replica;
        if added {
            self.total += 1;
            self.local += usize::from(local);
        } else {
            self.total -= 1;
            self.local -= usize::from(local);
        }
    }

    /// Stores a value, replacing the one of the same identity if any.
    fn insert(&mut self, ident: Ident<P>, meta: M, tag: Tag<N>) {
        let old = self.values.entry(Arc::clone(&ident.0)).or_default().insert(
            (ident.1.clone(), Arc::clone(&ident.2)),
            Stored {
                meta,
                tag: tag.clone(),
            },
        );
        if let Some(old) = old {
            self.by_tag.remove(&old.tag);
            self.count(&old.tag, false);
        }
        self.count(&tag, true);
        self.by_tag.insert(tag, ident);
    }

    fn remove(&mut self, ident: &Ident<P>) -> Option<Stored<N, M>> {
        let per_topic = self.values.get_mut(&ident.0)?;
        let stored = per_topic.remove(&(ident.1.clone(), Arc::clone(&ident.2)))?;
        if per_topic.is_empty() {
            self.values.remove(&ident.0);
        }
        self.by_tag.remove(&stored.tag);
        self.count(&stored.tag, false);
        Some(stored)
    }

    fn put_context(&mut self, context: Context<N>) {
        self.context = context;
        let own = self.own_clock();
        self.delta.range.1.insert(self.replica.clone(), own);
    }

    /// Consumes this replica's next dot: in the context, the clouds and
    /// the delta's clouds and range.
    fn bump_clock(&mut self) -> Tag<N> {
        let tag = Tag::new(self.replica.clone(), self.own_clock() + 1);
        put_tag(&mut self.clouds, &tag);
        put_tag(&mut self.delta.clouds, &tag);
        let mut context = std::mem::take(&mut self.context);
        context.insert(self.replica.clone(), tag.clock);
        self.put_context(context);
        tag
    }

    /// The delta records that `tag` is gone: its dot in the clouds, its
    /// value out (`remove_delta_tag`).
    fn remove_delta_tag(&mut self, tag: &Tag<N>) {
        put_tag(&mut self.delta.clouds, tag);
        self.delta.values.remove(tag);
    }

    /// Tracks `key` on `topic` for `pid` with `meta` (`State.join`):
    /// consumes one dot, which tags the new value; the value goes into the
    /// pending delta. Returns the joined value.
    ///
    /// # Errors
    ///
    /// [`JoinError::AlreadyTracked`] if `{topic, pid, key}` is tracked;
    /// [`JoinError::TooManyPresences`] at [`StateLimits::max_local`].
    pub fn join(
        &mut self,
        pid: P,
        topic: Arc<str>,
        key: Arc<str>,
        meta: M,
    ) -> Result<Value<P, M>, JoinError> {
        if self.lookup(&topic, &pid, &key).is_some() {
            return Err(JoinError::AlreadyTracked);
        }
        if self.local >= self.limits.max_local {
            return Err(JoinError::TooManyPresences {
                limit: self.limits.max_local,
            });
        }
        let tag = self.bump_clock();
        let value = Value {
            pid,
            topic,
            key,
            meta,
        };
        self.insert(
            (
                Arc::clone(&value.topic),
                value.pid.clone(),
                Arc::clone(&value.key),
            ),
            value.meta.clone(),
            tag.clone(),
        );
        self.delta.values.insert(tag, value.clone());
        Ok(value)
    }

    /// Untracks `{topic, pid, key}` (`State.leave/4`): the value's dot is
    /// recorded as removed in the delta and one new dot is consumed.
    /// Returns the value that left, `None` (changing nothing) if it was
    /// not tracked. Any replica's value may be untracked this way, as
    /// Phoenix allows; the runtime only untracks its own.
    pub fn leave(&mut self, pid: &P, topic: &str, key: &str) -> Option<Value<P, M>> {
        let ident: Ident<P> = (Arc::from(topic), pid.clone(), Arc::from(key));
        let stored = self.remove(&ident)?;
        delete_tag(&mut self.clouds, &stored.tag);
        self.remove_delta_tag(&stored.tag);
        self.bump_clock();
        Some(Self::value_of(&ident, &stored))
    }

    /// Untracks every presence of `pid` (`State.leave/2`), in
    /// `{topic, key}` order; a scan of the whole state.
    pub fn leave_pid(&mut self, pid: &P) -> Vec<Value<P, M>> {
        let idents: Vec<(Arc<str>, Arc<str>)> = self
            .values
            .iter()
            .flat_map(|(topic, per_topic)| {
                per_topic
                    .keys()
                    .filter(|(owner, _)| owner == pid)
                    .map(move |(_, key)| (Arc::clone(topic), Arc::clone(key)))
            })
            .collect();
        idents
            .into_iter()
            .filter_map(|(topic, key)| self.leave(pid, &topic, &key))
            .collect()
    }

    /// Replaces the meta of `{topic, pid, key}` (`State.leave_join`): the
    /// old dot is removed, one dot is consumed for the removal and one for
    /// the new value. Returns the old and the new value.
    ///
    /// # Errors
    ///
    /// [`NoPresence`], changing nothing, if it is not tracked.
    pub fn leave_join(
        &mut self,
        pid: &P,
        topic: &str,
        key: &str,
        meta: M,
    ) -> Result<Replaced<P, M>, NoPresence> {
        let ident: Ident<P> = (Arc::from(topic), pid.clone(), Arc::from(key));
        let old = self
            .lookup(&ident.0, &ident.1, &ident.2)
            .cloned()
            .ok_or(NoPresence)?;
        delete_tag(&mut self.clouds, &old.tag);
        self.remove_delta_tag(&old.tag);
        self.bump_clock();
        let tag = self.bump_clock();
        let new = Value {
            pid: ident.1.clone(),
            topic: Arc::clone(&ident.0),
            key: Arc::clone(&ident.2),
            meta,
        };
        let previous = Self::value_of(&ident, &old);
        self.insert(ident, new.meta.clone(), tag.clone());
        self.delta.values.insert(tag, new.clone());
        Ok((previous, new))
    }

    /// The presence `{topic, pid, key}` and its tag, down replicas' included.
    pub fn get(&self, topic: &str, pid: &P, key: &str) -> Option<(&M, &Tag<N>)> {
        self.lookup(topic, pid, &Arc::from(key))
            .map(|stored| (&stored.meta, &stored.tag))
    }

    /// The presences on `topic` of replicas that are not down, in
    /// `{pid, key}` order (`Phoenix.Tracker.list/2`).
    pub fn list(&self, topic: &str) -> Vec<Value<P, M>> {
        let Some(per_topic) = self.values.get(topic) else {
            return Vec::new();
        };
        per_topic
            .iter()
            .filter(|(_, stored)| !self.is_down(&stored.tag.replica))
            .map(|((pid, key), stored)| Value {
                pid: pid.clone(),
                topic: Arc::from(topic),
                key: Arc::clone(key),
                meta: stored.meta.clone(),
            })
            .collect()
    }

    /// Every presence of replicas that are not down, by tag
    /// (`State.online_list/1`).
    pub fn online(&self) -> BTreeMap<Tag<N>, Value<P, M>> {
        self.all()
            .into_iter()
            .filter(|(tag, _)| !self.is_down(&tag.replica))
            .collect()
    }

    /// Every presence held, down replicas' included, by tag.
    pub fn all(&self) -> BTreeMap<Tag<N>, Value<P, M>> {
        self.by_tag
            .iter()
            .filter_map(|(tag, ident)| {
                let stored = self.lookup(&ident.0, &ident.1, &ident.2)?;
                Some((tag.clone(), Self::value_of(ident, stored)))
            })
            .collect()
    }

    /// Whether the pending delta records any dot (`State.has_delta?`).
    pub fn has_delta(&self) -> bool {
        self.delta.has_dots()
    }

    /// Takes the pending delta, leaving an empty one from the current
    /// clock, and compacts (what a heartbeat does before it is sent).
    pub fn take_delta(&mut self) -> Delta<N, P, M> {
        let fresh = Delta::empty(self.replica.clone(), self.own_clock());
        let delta = std::mem::replace(&mut self.delta, fresh);
        self.compact();
        delta
    }

    /// Folds cloud dots contiguous with the context into it and drops the
    /// dots it covers (`State.compact/1`).
    pub fn compact(&mut self) {
        let mut context = std::mem::take(&mut self.context);
        let clouds = std::mem::take(&mut self.clouds);
        for (replica, cloud) in clouds {
            let mut kept = BTreeSet::new();
            for dot in cloud {
                match context.get_mut(&replica) {
                    Some(clock) if *clock + 1 == dot => *clock = dot,
                    Some(clock) if *clock >= dot => {}
                    None if dot == 1 => {
                        context.insert(replica.clone(), 1);
                    }
                    _ => {
                        kept.insert(dot);
                    }
                }
            }
            if !kept.is_empty() {
                self.clouds.insert(replica, kept);
            }
        }
        self.put_context(context);
    }

    /// The entire state for a requester whose context is `remote_context`
    /// (`State.extract/3`, normal clause): context and clouds limited to
    /// its replicas, and every value of those replicas, including the
    /// requester's own (Phoenix compares the requester's name with refs,
    /// which never matches, so they come back; merge skips them).
    pub fn extract(&self, remote_context: &Context<N>) -> FullState<N, P, M> {
        FullState {
            replica: self.replica.clone(),
            context: clock::restrict(&self.context, remote_context),
            clouds: clock::restrict(&self.clouds, remote_context),
            replicas: self.replicas.clone(),
            values: self
                .all()
                .into_iter()
                .filter(|(tag, _)| remote_context.contains_key(&tag.replica))
                .collect(),
        }
    }

    /// Merges a delta or a full state ([`Transfer`]) (`State.merge/2`).
    pub fn merge(&mut self, remote: &Transfer<N, P, M>) -> Diff<P, M> {
        match remote {
            Transfer::Delta(delta) => self.merge_delta(delta),
            Transfer::Full(full) => self.merge_full(full),
        }
    }

    /// Merges a remote delta (which carries no context).
    pub fn merge_delta(&mut self, delta: &Delta<N, P, M>) -> Diff<P, M> {
        self.merge_parts(&Context::new(), &delta.clouds, &delta.values)
    }

    /// Merges a remote full state.
    pub fn merge_full(&mut self, full: &FullState<N, P, M>) -> Diff<P, M> {
        self.merge_parts(&full.context, &full.clouds, &full.values)
    }

    fn merge_parts(
        &mut self,
        remote_context: &Context<N>,
        remote_clouds: &Clouds<N>,
        remote_values: &BTreeMap<Tag<N>, Value<P, M>>,
    ) -> Diff<P, M> {
        // 1. Joins: remote values of known replicas whose dot is unseen.
        let joins: Vec<(&Tag<N>, &Value<P, M>)> = remote_values
            .iter()
            .filter(|(tag, _)| {
                #[cfg(test)]
                if fault::has(fault::Fault::JoinSeenDots) {
                    return self.context.contains_key(&tag.replica)
                        && !self.by_tag.contains_key(*tag);
                }
                self.context.contains_key(&tag.replica)
                    && !in_context(&self.context, &self.clouds, tag)
            })
            .filter(|(tag, value)| {
                // A replica holds one value per identity, and each new one
                // takes a higher dot: an older dot of the identity of a
                // value held is gone at its origin, even if this replica
                // has not seen the removal yet. Phoenix stores it over the
                // newer one (its table is keyed by identity), losing the
                // newer for good, since its dot is seen
                // (`fault::Fault::OverwriteNewer`).
                #[cfg(test)]
                if fault::has(fault::Fault::OverwriteNewer) {
                    return true;
                }
                self.lookup(&value.topic, &value.pid, &value.key)
                    .is_none_or(|held| {
                        held.tag.replica != tag.replica || held.tag.clock < tag.clock
                    })
            })
            .collect();
        // 2. Removes: local values of other replicas that the remote has
        // seen (its context or clouds cover the dot) and does not have.
        union_into(&mut self.clouds, remote_clouds, Some(&self.context));
        let mut seen: BTreeSet<Tag<N>> = BTreeSet::new();
        for (replica, cloud) in remote_clouds {
            for dot in cloud {
                let tag = Tag::new(replica.clone(), *dot);
                if self.by_tag.contains_key(&tag) {
                    seen.insert(tag);
                }
            }
        }
        #[cfg(test)]
        let no_context = Context::new();
        #[cfg(test)]
        let remote_context = if fault::has(fault::Fault::IgnoreRemoteContext) {
            &no_context
        } else {
            remote_context
        };
        for (replica, clock) in remote_context {
            let range = Tag::new(replica.clone(), 0)..=Tag::new(replica.clone(), *clock);
            seen.extend(self.by_tag.range(range).map(|(tag, _)| tag.clone()));
        }
        let mut leaves: Vec<(Ident<P>, Tag<N>)> = Vec::new();
        for tag in seen {
            if tag.replica == self.replica || remote_values.contains_key(&tag) {
                continue;
            }
            if let Some(ident) = self.by_tag.get(&tag) {
                leaves.push((ident.clone(), tag.clone()));
            }
            // Phoenix also deletes the removed value's dot from the clouds
            // here, forgetting that it was seen: when the context has a gap
            // below it, a full state sent before the removal then brings
            // the value back until a later transfer removes it again (and,
            // with Phoenix's join, over a newer value of its identity; see
            // `fault::Fault::Phoenix`). The dot stays in the clouds until
            // the context covers it.
            #[cfg(test)]
            if fault::has(fault::Fault::ForgetRemovedDot) {
                delete_tag(&mut self.clouds, &tag);
            }
            self.remove_delta_tag(&tag);
        }
        leaves.sort_by(|a, b| a.0.cmp(&b.0));
        // 3. Apply: remove what left unless it is re-joined under the same
        // identity (an update), then store the joins.
        let joined: BTreeSet<Ident<P>> = joins
            .iter()
            .map(|(_, value)| {
                (
                    Arc::clone(&value.topic),
                    value.pid.clone(),
                    Arc::clone(&value.key),
                )
            })
            .collect();
        let mut diff = Diff::default();
        let left: BTreeSet<Tag<N>> = leaves.iter().map(|(_, tag)| tag.clone()).collect();
        for (ident, _) in leaves {
            let stored = if joined.contains(&ident) {
                self.lookup(&ident.0, &ident.1, &ident.2).cloned()
            } else {
                self.remove(&ident)
            };
            // A down replica's values are not listed, so their coming and
            // going is not reported (Phoenix reports them: a join nobody
            // lists, and no leave when the replica is later forgotten).
            if let Some(stored) = stored.filter(|stored| !self.is_down(&stored.tag.replica)) {
                diff.leaves.push(Self::value_of(&ident, &stored));
            }
        }
        for (tag, value) in joins {
            let ident: Ident<P> = (
                Arc::clone(&value.topic),
                value.pid.clone(),
                Arc::clone(&value.key),
            );
            let replaced = self.lookup(&ident.0, &ident.1, &ident.2).cloned();
            if replaced.is_none() && self.total >= self.limits.max_total {
                self.dropped += 1;
                continue;
            }
            // A value replaced without being seen removed (a newer dot of
            // its identity) leaves.
            if let Some(old) =
                replaced.filter(|old| !left.contains(&old.tag) && !self.is_down(&old.tag.replica))
            {
                diff.leaves.push(Self::value_of(&ident, &old));
            }
            self.insert(ident, value.meta.clone(), tag.clone());
            if !self.is_down(&tag.replica) {
                diff.joins.push(value.clone());
            }
        }
        // 4. Context: the upper bound over the replicas known here.
        let mut context = std::mem::take(&mut self.context);
        for (replica, clock) in remote_context {
            if let Some(mine) = context.get_mut(replica) {
                *mine = (*mine).max(*clock);
            }
        }
        self.put_context(context);
        self.compact();
        diff
    }

    fn replica_values(&self, replica: &Replica<N>) -> Vec<Value<P, M>> {
        let range = Tag::new(replica.clone(), 0)..=Tag::new(replica.clone(), u64::MAX);
        self.by_tag
            .range(range)
            .filter_map(|(_, ident)| {
                let stored = self.lookup(&ident.0, &ident.1, &ident.2)?;
                Some(Self::value_of(ident, stored))
            })
            .collect()
    }

    /// Marks `replica` up, adding it to the context at 0 if it is new
    /// (`State.replica_up/2`). Returns its values held here, which join.
    pub fn replica_up(&mut self, replica: &Replica<N>) -> Vec<Value<P, M>> {
        self.context.entry(replica.clone()).or_insert(0);
        self.replicas.insert(replica.clone(), Status::Up);
        self.replica_values(replica)
    }

    /// Marks `replica` down (`State.replica_down/2`): its values stay but
    /// are no longer listed, and are returned as leaves.
    pub fn replica_down(&mut self, replica: &Replica<N>) -> Vec<Value<P, M>> {
        self.replicas.insert(replica.clone(), Status::Down);
        self.replica_values(replica)
    }

    /// Forgets `replica` for good (`State.remove_down_replicas/2`): its
    /// values, context entry and clouds, and its part of the pending delta.
    /// Reports nothing: its values left when it went down. Phoenix keeps
    /// the replica in its status map as down forever; this state drops it,
    /// so that restarts of peers do not grow it.
    pub fn remove_replica(&mut self, replica: &Replica<N>) {
        let range = Tag::new(replica.clone(), 0)..=Tag::new(replica.clone(), u64::MAX);
        let idents: Vec<Ident<P>> = self
            .by_tag
            .range(range)
            .map(|(_, ident)| ident.clone())
            .collect();
        for ident in idents {
            self.remove(&ident);
        }
        self.context.remove(replica);
        self.clouds.remove(replica);
        self.replicas.remove(replica);
        self.delta.remove_replica(replica);
    }
}

/// Deliberate breakages of [`State::merge`], for tests that show the
/// convergence checks catch them. Per thread, off by default.
#[cfg(test)]
pub(crate) mod fault;
