//! The sharded map from topic to subscriber inboxes.
//!
//! A topic is hashed once per operation; the hash picks the shard and finds
//! the entry inside it, so publishers on different topics take different
//! locks, and publishers on the same topic share a read lock.
//!
//! Invariant: an entry exists exactly while it has at least one subscriber.
//! The last removal deletes the entry, so per-entity topics do not leak.
//!
//! A broadcast to topics nobody has is the common case (per-entity topics
//! nobody watches): a fixed table of presence counters, one per hash slot,
//! answers "certainly absent" with one atomic load, before any lock.
//!
//! Invariant: `presence[slot(hash)]` is the number of entries whose hash
//! falls in that slot, or `u16::MAX` once it reached that (it then stays:
//! "maybe present" forever, never a wrong "absent"). It changes under the
//! write lock of the entry's shard, after the entry is inserted and after it
//! is removed, so a count of zero means no entry of that slot exists (a
//! subscriber added before a broadcast, in the happens-before sense, is
//! counted when the broadcast reads it). Checked, with a topic of the same
//! slot counted in and out by another shard at once, and the counters back
//! at zero after, by the loom model
//! `loom_presence_no_broadcast_misses_a_subscriber_that_came_before_it`
//! (`registry/loom_models.rs`).
//!
//! An inbox on no topic (a subscription whose topics were all removed, and
//! that may add some again) is parked in a separate set instead, so that the
//! server's end still closes it: the server closes the inboxes it finds
//! through the entries, and the registry's drop closes the parked ones.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::inbox::{Inbox, Pushed};
use crate::loom::sync::atomic::{AtomicU16, Ordering};
use crate::loom::sync::{Arc, Mutex, RwLock};
use crate::position::Position;
use crate::ring::{Ring, RING_FROM};
use crate::topic::{Topic, TopicKey};

pub(crate) struct Registry<M> {
    hasher: Hasher,
    shards: Box<[Shard<M>]>,
    /// The queue capacity of every inbox (kept here, not in each inbox).
    capacity: usize,
    /// The inboxes on no topic, found by address. Usually empty: an inbox
    /// is here only between removing its last topic and adding one again
    /// (or unsubscribing).
    parked: Mutex<HashTable<Arc<Inbox<M>>>>,
    /// Entries per hash slot: see the module's invariant. 128 KiB per
    /// server: with 10,000 topics, 86% of the slots are empty.
    presence: Box<[AtomicU16]>,
}

/// The topics' hasher: seeded at random per registry; fixed in the loom
/// models, whose runs must repeat exactly.
#[cfg(not(loom))]
type Hasher = foldhash::fast::RandomState;
#[cfg(loom)]
type Hasher = foldhash::fast::FixedState;

/// Presence slots: a power of two (a few in the loom models, where every
/// atomic is tracked, so that slots are shared).
#[cfg(not(loom))]
const PRESENCE_SLOTS: usize = 1 << 16;
#[cfg(loom)]
const PRESENCE_SLOTS: usize = 1 << 2;

/// The presence slot of a hash: bits 40..56, apart from hashbrown's (the
/// low bits and the top 7) and, up to 256 shards, the shard's (from 32).
fn presence_slot(hash: u64) -> usize {
    (hash >> 40) as usize & (PRESENCE_SLOTS - 1)
}

/// Counts an entry in or out of its slot; a count that reached `u16::MAX`
/// stays there (two shards may share a slot, hence the atomic update).
fn count(slot: &AtomicU16, entry_added: bool) {
    let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        match (n, entry_added) {
            (u16::MAX, _) => None,
            (n, true) => Some(n + 1),
            (n, false) => Some(n.saturating_sub(1)),
        }
    });
}

/// Aligned to two cache lines so that two shards' locks never share one
/// (adjacent-line prefetch included).
#[repr(align(128))]
struct Shard<M> {
    table: RwLock<HashTable<Entry<M>>>,
}

/// One topic and its subscribers: 56 bytes. The hash is not kept: hashing a
/// topic formats nothing and costs less than the memory would, at a million
/// topics.
struct Entry<M> {
    topic: Topic,
    subscribers: Subscribers<M>,
}

/// The subscribers of one topic. Most topics (the per-entity ones) have
/// exactly one, kept inline: no allocation, and one pointer less to follow
/// per delivery.
enum Subscribers<M> {
    One(Arc<Inbox<M>>),
    /// Two or more, behind one pointer so that the entry stays small.
    Many(Box<Crowd<M>>),
}

/// Two or more subscribers: those with a queue of their own, and those
/// that read the topic's ring (see `ring.rs`: a subscription on this topic
/// alone, made once the topic had [`RING_FROM`] subscribers).
struct Crowd<M> {
    inboxes: Vec<Arc<Inbox<M>>>,
    /// While `readers` is not empty.
    ring: Option<Arc<Ring<M>>>,
    readers: Vec<Arc<Inbox<M>>>,
}

impl<M> Crowd<M> {
    fn len(&self) -> usize {
        self.inboxes.len() + self.readers.len()
    }
}

impl<M> Subscribers<M> {
    fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(crowd) => crowd.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Inbox<M>>> {
        let (one, crowd) = match self {
            Self::One(inbox) => (Some(inbox), None),
            Self::Many(crowd) => (None, Some(crowd)),
        };
        one.into_iter().chain(
            crowd
                .into_iter()
                .flat_map(|crowd| crowd.inboxes.iter().chain(&crowd.readers)),
        )
    }

    /// Adds `inbox`: as a reader of the topic's ring if `sole` (it is on
    /// this topic only, and new) and the topic has [`RING_FROM`]
    /// subscribers already.
    fn push(&mut self, inbox: Arc<Inbox<M>>, sole: bool, capacity: usize) {
        match self {
            Self::One(first) => {
                let inboxes = vec![Arc::clone(first), inbox];
                *self = Self::Many(Box::new(Crowd {
                    inboxes,
                    ring: None,
                    readers: Vec::new(),
                }));
            }
            Self::Many(crowd) => {
                if sole && crowd.len() >= RING_FROM {
                    let ring = crowd
                        .ring
                        .get_or_insert_with(|| Arc::new(Ring::new(capacity)));
                    if inbox.join_ring(ring) {
                        crowd.readers.push(inbox);
                        return;
                    }
                }
                crowd.inboxes.push(inbox);
            }
        }
    }

    /// Removes `inbox`; returns whether none is left, and the ring if its
    /// last reader left (to be dropped after the shard's lock: it may hold
    /// the last reference to messages).
    fn remove(&mut self, inbox: &Arc<Inbox<M>>) -> (bool, Option<Arc<Ring<M>>>) {
        match self {
            Self::One(only) => (Arc::ptr_eq(only, inbox), None),
            Self::Many(crowd) => {
                let mut ring = None;
                if let Some(at) = crowd.inboxes.iter().position(|s| Arc::ptr_eq(s, inbox)) {
                    crowd.inboxes.swap_remove(at);
                } else if let Some(at) = crowd.readers.iter().position(|s| Arc::ptr_eq(s, inbox)) {
                    // What it had still to read stays readable, in a queue
                    // of its own.
                    inbox.leave_ring();
                    crowd.readers.swap_remove(at);
                    if crowd.readers.is_empty() {
                        ring = crowd.ring.take();
                    }
                }
                if crowd.len() > 1 {
                    return (false, ring);
                }
                // One left at most: it keeps a queue of its own, inline.
                if let Some(last) = crowd.readers.pop() {
                    last.leave_ring();
                    crowd.inboxes.push(last);
                    ring = crowd.ring.take().or(ring);
                }
                match crowd.inboxes.pop() {
                    None => (true, ring),
                    Some(last) => {
                        *self = Self::One(last);
                        (false, ring)
                    }
                }
            }
        }
    }

    /// Makes `inbox` read a queue of its own if it reads the ring. Returns
    /// the ring if that was its last reader.
    fn settle(&mut self, inbox: &Arc<Inbox<M>>) -> Option<Arc<Ring<M>>> {
        let Self::Many(crowd) = self else {
            return None;
        };
        let at = crowd.readers.iter().position(|s| Arc::ptr_eq(s, inbox))?;
        inbox.leave_ring();
        let reader = crowd.readers.swap_remove(at);
        crowd.inboxes.push(reader);
        if crowd.readers.is_empty() {
            crowd.ring.take()
        } else {
            None
        }
    }
}

/// What one dispatch did.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Copies queued (including those that displaced an older message).
    pub(crate) delivered: u64,
    /// Older messages dropped from full queues to make room.
    pub(crate) lagged: u64,
}

impl<M> Registry<M> {
    pub(crate) fn new(shards: usize, capacity: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Self {
            capacity: capacity.max(1),
            hasher: Hasher::default(),
            shards: (0..shards)
                .map(|_| Shard {
                    table: RwLock::new(HashTable::new()),
                })
                .collect(),
            parked: Mutex::new(HashTable::new()),
            presence: (0..PRESENCE_SLOTS).map(|_| AtomicU16::new(0)).collect(),
        }
    }

    /// Whether an entry of `hash`'s slot may exist: `false` is certain.
    #[inline]
    fn maybe_present(&self, hash: u64) -> bool {
        self.presence[presence_slot(hash)].load(Ordering::Relaxed) != 0
    }

    fn hash(&self, key: TopicKey<'_>) -> u64 {
        self.hasher.hash_one(key)
    }

    fn hash_inbox(&self, inbox: &Arc<Inbox<M>>) -> u64 {
        self.hasher.hash_one(Arc::as_ptr(inbox).addr())
    }

    fn shard(&self, hash: u64) -> &Shard<M> {
        // hashbrown uses the low bits for the bucket and the top 7 for its
        // tag; shard on bits in between so the three stay independent. The
        // shard count is a power of two, so the mask is exact.
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        &self.shards[index]
    }

    /// Adds a subscriber; returns whether the topic is new. `sole`: the
    /// inbox is new and on this topic only, so it may read the topic's
    /// ring.
    pub(crate) fn insert(&self, topic: Topic, inbox: Arc<Inbox<M>>, sole: bool) -> bool {
        let hash = self.hash(topic.as_key());
        let mut table = self.shard(hash).table.write();
        match table.find_mut(hash, |entry| entry.topic == topic) {
            Some(entry) => {
                entry.subscribers.push(inbox, sole, self.capacity);
                false
            }
            None => {
                let entry = Entry {
                    topic,
                    subscribers: Subscribers::One(inbox),
                };
                table.insert_unique(hash, entry, |entry| self.hash(entry.topic.as_key()));
                count(&self.presence[presence_slot(hash)], true);
                true
            }
        }
    }

    /// Removes one subscriber; returns whether the topic is now gone.
    pub(crate) fn remove(&self, topic: &Topic, inbox: &Arc<Inbox<M>>) -> bool {
        let hash = self.hash(topic.as_key());
        let mut table = self.shard(hash).table.write();
        let Ok(mut occupied) = table.find_entry(hash, |entry| entry.topic == *topic) else {
            return false;
        };
        let (gone, ring) = occupied.get_mut().subscribers.remove(inbox);
        if !gone {
            drop(table);
            drop(ring);
            return false;
        }
        occupied.remove();
        count(&self.presence[presence_slot(hash)], false);
        // Give memory back after a wave of short-lived per-entity topics.
        shrink(&mut table, |entry| self.hash(entry.topic.as_key()));
        drop(table);
        drop(ring);
        true
    }

    /// Makes `inbox`, a subscriber of `topic`, read a queue of its own if
    /// it reads the topic's ring (before a broadcast that excludes it: a
    /// ring has one slot for every reader).
    pub(crate) fn settle(&self, topic: &Topic, inbox: &Arc<Inbox<M>>) {
        let hash = self.hash(topic.as_key());
        let mut table = self.shard(hash).table.write();
        let ring = table
            .find_mut(hash, |entry| entry.topic == *topic)
            .and_then(|entry| entry.subscribers.settle(inbox));
        drop(table);
        drop(ring);
    }

    /// Keeps `inbox`, which is on no topic now, until [`unpark`](Self::unpark)
    /// or the registry's drop, which closes it. Park an inbox only while it
    /// is on no topic, and at most once.
    pub(crate) fn park(&self, inbox: Arc<Inbox<M>>) {
        let hash = self.hash_inbox(&inbox);
        self.parked
            .lock()
            .insert_unique(hash, inbox, |held| self.hash_inbox(held));
    }

    /// Forgets a parked inbox (it is on a topic again, or unsubscribed);
    /// nothing if it is not parked.
    pub(crate) fn unpark(&self, inbox: &Arc<Inbox<M>>) {
        let hash = self.hash_inbox(inbox);
        let mut parked = self.parked.lock();
        if let Ok(held) = parked.find_entry(hash, |held| Arc::ptr_eq(held, inbox)) {
            held.remove();
            shrink(&mut parked, |held| self.hash_inbox(held));
        }
    }

    /// Queues a message for every subscriber of the topic but `except`,
    /// made by `share` once per copy queued: a topic nobody has costs the
    /// lookup and nothing else, not even the message's allocation. The one
    /// dispatch function: local broadcasts, the wire and linked servers all
    /// come through here.
    pub(crate) fn deliver(
        &self,
        key: TopicKey<'_>,
        share: impl FnMut() -> Arc<M>,
        position: Option<Position>,
        except: Option<&Arc<Inbox<M>>>,
        tally: &mut Tally,
    ) {
        let (hash, present) = self.probe(key);
        if present {
            self.deliver_hashed(hash, key, share, position, except, tally);
        }
    }

    /// `key`'s hash, and whether a subscriber of it may exist (`false` is
    /// certain): a broadcast that finds none for any of its topics is done
    /// before its message is shared.
    #[inline]
    pub(crate) fn probe(&self, key: TopicKey<'_>) -> (u64, bool) {
        let hash = self.hash(key);
        (hash, self.maybe_present(hash))
    }

    /// [`deliver`](Self::deliver), `hash` being `key`'s (from
    /// [`probe`](Self::probe)).
    pub(crate) fn deliver_hashed(
        &self,
        hash: u64,
        key: TopicKey<'_>,
        mut share: impl FnMut() -> Arc<M>,
        position: Option<Position>,
        except: Option<&Arc<Inbox<M>>>,
        tally: &mut Tally,
    ) {
        // Messages dropped from full queues are released after the shard
        // lock (declared before the guard, so dropped after it): the last
        // reference runs the user's destructor, which must not run under
        // our lock. Empty, and so allocation-free, unless a queue is full.
        if !self.maybe_present(hash) {
            return;
        }
        let mut evicted = Vec::new();
        let table = self.shard(hash).table.read();
        let Some(entry) = table.find(hash, |entry| key.matches(&entry.topic)) else {
            return;
        };
        let capacity = self.capacity;
        match &entry.subscribers {
            Subscribers::One(inbox) => push_one(
                inbox,
                share(),
                position,
                capacity,
                except,
                tally,
                &mut evicted,
            ),
            Subscribers::Many(crowd) => {
                for inbox in &crowd.inboxes {
                    push_one(
                        inbox,
                        share(),
                        position,
                        capacity,
                        except,
                        tally,
                        &mut evicted,
                    );
                }
                // One slot for every reader: a reader is never `except`
                // (the broadcast settled it first).
                if let Some(ring) = &crowd.ring {
                    let readers = crowd.readers.len();
                    tally.lagged += ring.push(share(), position, readers, &mut evicted);
                    tally.delivered += readers as u64;
                }
            }
        }
        drop(table);
        drop(evicted);
    }

    /// Every topic with a subscriber, in no particular order.
    pub(crate) fn topics(&self) -> Vec<Topic> {
        let mut topics = Vec::new();
        for shard in self.shards.iter() {
            topics.extend(shard.table.read().iter().map(|entry| entry.topic));
        }
        topics
    }

    /// Whether the topic has a subscriber.
    pub(crate) fn contains(&self, key: TopicKey<'_>) -> bool {
        let hash = self.hash(key);
        if !self.maybe_present(hash) {
            return false;
        }
        let table = self.shard(hash).table.read();
        table
            .find(hash, |entry| key.matches(&entry.topic))
            .is_some()
    }

    pub(crate) fn subscriber_count(&self, topic: &Topic) -> usize {
        let hash = self.hash(topic.as_key());
        let table = self.shard(hash).table.read();
        table
            .find(hash, |entry| entry.topic == *topic)
            .map_or(0, |entry| entry.subscribers.len())
    }

    pub(crate) fn topic_count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.table.read().len())
            .sum()
    }

    /// Calls `f` once for every distinct subscriber inbox on a topic (not
    /// the parked ones).
    pub(crate) fn for_each_inbox(&self, f: impl FnMut(&Arc<Inbox<M>>)) {
        // An inbox on several topics is listed under each of them, but a gap
        // must reach it once, not once per topic: collect the distinct
        // inboxes first. `f` then runs outside the shard locks. (A delivery
        // does wake its subscriber under the shard's read lock; waking only
        // schedules the task.) Rare (shutdown, reconnect),
        // so the allocation does not matter.
        let mut seen = std::collections::HashSet::new();
        let mut inboxes = Vec::new();
        for shard in self.shards.iter() {
            for entry in shard.table.read().iter() {
                for inbox in entry.subscribers.iter() {
                    if seen.insert(Arc::as_ptr(inbox)) {
                        inboxes.push(Arc::clone(inbox));
                    }
                }
            }
        }
        inboxes.iter().for_each(f);
    }
}

impl<M> Drop for Registry<M> {
    fn drop(&mut self) {
        // The server is gone: a subscription on no topic must learn it too
        // (the server closes the others through the entries).
        for inbox in self.parked.get_mut().drain() {
            inbox.close();
        }
    }
}

/// Gives memory back once a table is mostly empty.
fn shrink<T>(table: &mut HashTable<T>, hash: impl Fn(&T) -> u64) {
    if table.capacity() > 64 && table.len() * 4 < table.capacity() {
        let wanted = table.len() * 2;
        table.shrink_to(wanted, hash);
    }
}

#[cfg(all(test, loom))]
mod loom_models;

/// Queues `message` for `inbox` unless it is `except`, counting what
/// happened in `tally` and keeping a message dropped to make room in
/// `evicted` (released after the shard lock). Inlined into the delivery
/// loop: it runs once per copy.
#[inline(always)]
fn push_one<M>(
    inbox: &Arc<Inbox<M>>,
    message: Arc<M>,
    position: Option<Position>,
    capacity: usize,
    except: Option<&Arc<Inbox<M>>>,
    tally: &mut Tally,
    evicted: &mut Vec<Arc<M>>,
) {
    if except.is_some_and(|except| Arc::ptr_eq(except, inbox)) {
        return;
    }
    // A resumed subscription's queue may drop a covered entry without a
    // miss (its replay has it): queued, with an old one.
    let (pushed, old) = inbox.push_returning_evicted(message, position, capacity);
    tally.delivered += u64::from(pushed != Pushed::Refused);
    tally.lagged += u64::from(pushed == Pushed::QueuedDroppingOldest);
    if let Some(old) = old {
        evicted.push(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Gap;

    /// The presence counters hold the module's invariant through churn,
    /// and a counted slot never hides a topic.
    #[test]
    fn presence_counts_the_entries_of_each_slot() {
        let registry = Registry::<u32>::new(4, 8);
        let inboxes: Vec<_> = (0..3).map(|_| Arc::new(Inbox::new())).collect();
        let topics: Vec<_> = (0..5_000_u128)
            .map(|n| Topic::keyed("chat:room", uuid::Uuid::from_u128(n)))
            .collect();
        // Each inbox on a topic at most once, as subscriptions guarantee.
        let mut held = std::collections::HashSet::new();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let index = (seed % 5_000) as usize;
            let topic = topics[index];
            let inbox = &inboxes[round % 3];
            if seed & (1 << 40) == 0 {
                if held.insert((index, round % 3)) {
                    registry.insert(topic, Arc::clone(inbox), false);
                }
            } else if held.remove(&(index, round % 3)) {
                registry.remove(&topic, inbox);
            }
        }
        let mut expected = vec![0_u16; PRESENCE_SLOTS];
        for topic in registry.topics() {
            expected[presence_slot(registry.hash(topic.as_key()))] += 1;
            assert!(registry.contains(topic.as_key()), "{topic}");
        }
        let counted: Vec<u16> = registry
            .presence
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counted, expected);
        for (index, inbox) in held {
            registry.remove(&topics[index], &inboxes[inbox]);
        }
        assert!(registry
            .presence
            .iter()
            .all(|count| count.load(Ordering::Relaxed) == 0));
    }

    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Everything an inbox reports until it has nothing left.
    fn drain(inbox: &Inbox<u64>) -> Vec<crate::inbox::Taken<u64>> {
        std::iter::from_fn(|| inbox.try_take()).collect()
    }

    /// An inbox with a queue of its own and a ring reader that joined the
    /// topic at the same time.
    type Pair = (Arc<Inbox<u64>>, Arc<Inbox<u64>>);

    /// A ring reader receives exactly what a subscriber with a queue of
    /// its own receives (messages, lag reports, gaps, in the same order),
    /// through pushes, gaps, late joins and leaving the ring; the server's
    /// lag count is what the subscribers are told.
    #[test]
    fn a_ring_reader_receives_what_a_queue_of_its_own_would() {
        for seed in [1_u64, 2, 3, 0x2545_f491_4f6c_dd1d] {
            let mut seed = seed;
            let capacity = 1 + (xorshift(&mut seed) % 6) as usize;
            let registry = Registry::<u64>::new(1, capacity);
            let topic = Topic::new("chat:rooms");
            let background: Vec<_> = (0..RING_FROM).map(|_| Arc::new(Inbox::new())).collect();
            for inbox in &background {
                registry.insert(topic, Arc::clone(inbox), false);
            }
            // (own queue, ring reader) pairs that joined at the same time.
            let mut pairs: Vec<Pair> = Vec::new();
            let join = |pairs: &mut Vec<_>| {
                let own = Arc::new(Inbox::new());
                let reader = Arc::new(Inbox::new());
                registry.insert(topic, Arc::clone(&own), false);
                registry.insert(topic, Arc::clone(&reader), true);
                assert!(reader.reads_ring() && !own.reads_ring());
                pairs.push((own, reader));
            };
            join(&mut pairs);
            let mut tally = Tally::default();
            let mut reported_lag = 0;
            for step in 0..6_000_u64 {
                match xorshift(&mut seed) % 100 {
                    0..=44 => {
                        let message = Arc::new(step);
                        let position = Position::new(1, step + 1);
                        registry.deliver(
                            topic.as_key(),
                            || Arc::clone(&message),
                            position,
                            None,
                            &mut tally,
                        );
                    }
                    45..=49 => {
                        let gap = Arc::new(Gap::Trimmed {
                            first: Position::new(2, step + 1).unwrap(),
                            missing: step % 7 + 1,
                        });
                        for (own, reader) in &pairs {
                            assert_eq!(own.signal_gap(&gap), reader.signal_gap(&gap));
                        }
                    }
                    50..=51 if pairs.len() < 4 => join(&mut pairs),
                    52 => {
                        // One reader leaves the ring (a broadcast excluding
                        // it, or a second topic): its queue continues.
                        if let Some((_, reader)) = pairs.iter().find(|(_, r)| r.reads_ring()) {
                            registry.settle(&topic, reader);
                            assert!(!reader.reads_ring());
                        }
                    }
                    _ => {
                        for (own, reader) in &pairs {
                            assert_eq!(own.len(), reader.len(), "step {step}");
                            let taken = own.try_take();
                            assert_eq!(taken, reader.try_take(), "step {step}");
                            if let Some(Err(crate::RecvError::Lagged(n))) = taken {
                                reported_lag += 2 * n;
                            }
                        }
                    }
                }
            }
            for (own, reader) in &pairs {
                let (own, reader) = (drain(own), drain(reader));
                assert_eq!(own, reader);
                for taken in own {
                    if let Err(crate::RecvError::Lagged(n)) = taken {
                        reported_lag += 2 * n;
                    }
                }
            }
            for inbox in &background {
                for taken in drain(inbox) {
                    if let Err(crate::RecvError::Lagged(n)) = taken {
                        reported_lag += n;
                    }
                }
            }
            assert_eq!(tally.lagged, reported_lag, "capacity {capacity}");
            // Leaving: the last reader takes the ring away; the topic goes
            // with its last subscriber.
            for (own, reader) in &pairs {
                registry.remove(&topic, own);
                registry.remove(&topic, reader);
            }
            for inbox in &background[1..] {
                assert!(!registry.remove(&topic, inbox));
            }
            assert!(registry.remove(&topic, &background[0]));
            assert_eq!(registry.topic_count(), 0);
        }
    }

    /// A ring reader that leaves with messages unread keeps them, behind
    /// the lag it had not been told of and with its gap where it was.
    #[test]
    fn leaving_the_ring_keeps_what_was_unread_in_order() {
        let registry = Registry::<u64>::new(1, 3);
        let topic = Topic::new("chat:rooms");
        for _ in 0..RING_FROM {
            registry.insert(topic, Arc::new(Inbox::new()), false);
        }
        let reader = Arc::new(Inbox::new());
        registry.insert(topic, Arc::clone(&reader), true);
        assert!(reader.reads_ring());
        let mut tally = Tally::default();
        let mut send = |n: u64| {
            registry.deliver(topic.as_key(), || Arc::new(n), None, None, &mut tally);
        };
        send(1);
        send(2);
        reader.signal_gap(&Arc::new(Gap::Disconnected));
        send(3);
        send(4); // the ring holds 2, 3, 4: 1 is lost
        assert_eq!(reader.len(), 3);
        assert!(!registry.remove(&topic, &reader));
        assert!(!reader.reads_ring());
        assert_eq!(
            drain(&reader),
            [
                Err(crate::RecvError::Lagged(1)),
                Ok((Arc::new(2), None)),
                Err(crate::RecvError::Gap(Gap::Disconnected)),
                Ok((Arc::new(3), None)),
                Ok((Arc::new(4), None)),
            ]
        );
    }

    #[test]
    fn an_entry_is_56_bytes() {
        assert_eq!(std::mem::size_of::<Entry<()>>(), 56);
    }

    #[test]
    fn subscribers_go_from_one_to_many_and_back() {
        let registry = Registry::<u32>::new(1, 8);
        let topic = Topic::new("chat:rooms");
        let inboxes: Vec<_> = (0..3).map(|_| Arc::new(Inbox::new())).collect();
        assert!(registry.insert(topic, Arc::clone(&inboxes[0]), true));
        assert!(!registry.insert(topic, Arc::clone(&inboxes[1]), true));
        assert!(!registry.insert(topic, Arc::clone(&inboxes[2]), true));
        assert_eq!(registry.subscriber_count(&topic), 3);
        assert!(!registry.remove(&topic, &inboxes[1]));
        assert!(!registry.remove(&topic, &inboxes[0]));
        assert_eq!(registry.subscriber_count(&topic), 1);
        let mut tally = Tally::default();
        let seven = Arc::new(7);
        registry.deliver(
            topic.as_key(),
            || Arc::clone(&seven),
            None,
            None,
            &mut tally,
        );
        assert_eq!(tally.delivered, 1);
        assert_eq!(inboxes[2].try_take(), Some(Ok((Arc::new(7), None))));
        assert!(registry.remove(&topic, &inboxes[2]));
        assert_eq!(registry.topic_count(), 0);
    }

    #[test]
    fn dropping_the_registry_closes_the_parked_inboxes_not_the_unparked() {
        let registry = Registry::<u32>::new(1, 8);
        let parked = Arc::new(Inbox::new());
        let unparked = Arc::new(Inbox::new());
        registry.park(Arc::clone(&parked));
        registry.park(Arc::clone(&unparked));
        registry.unpark(&unparked);
        registry.unpark(&unparked);
        assert_eq!(registry.parked.lock().len(), 1);
        drop(registry);
        assert_eq!(parked.try_take(), Some(Err(crate::RecvError::Closed)));
        assert_eq!(unparked.try_take(), None);
    }
}
