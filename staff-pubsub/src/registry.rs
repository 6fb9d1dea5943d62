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
//! counted when the broadcast reads it).
//!
//! An inbox on no topic (a subscription whose topics were all removed, and
//! that may add some again) is parked in a separate set instead, so that the
//! server's end still closes it: the server closes the inboxes it finds
//! through the entries, and the registry's drop closes the parked ones.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};

use crate::inbox::{Inbox, Pushed};
use crate::log::Position;
use crate::topic::{Topic, TopicKey};

pub(crate) struct Registry<M> {
    hasher: foldhash::fast::RandomState,
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

/// Presence slots: a power of two.
const PRESENCE_SLOTS: usize = 1 << 16;

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

struct Crowd<M> {
    inboxes: Vec<Arc<Inbox<M>>>,
}

impl<M> Subscribers<M> {
    fn as_slice(&self) -> &[Arc<Inbox<M>>] {
        match self {
            Self::One(inbox) => std::slice::from_ref(inbox),
            Self::Many(crowd) => &crowd.inboxes,
        }
    }

    fn push(&mut self, inbox: Arc<Inbox<M>>) {
        match self {
            Self::One(first) => {
                let inboxes = vec![Arc::clone(first), inbox];
                *self = Self::Many(Box::new(Crowd { inboxes }));
            }
            Self::Many(crowd) => crowd.inboxes.push(inbox),
        }
    }

    /// Removes `inbox`; returns whether none is left.
    fn remove(&mut self, inbox: &Arc<Inbox<M>>) -> bool {
        match self {
            Self::One(only) => Arc::ptr_eq(only, inbox),
            Self::Many(crowd) => {
                let inboxes = &mut crowd.inboxes;
                if let Some(at) = inboxes.iter().position(|s| Arc::ptr_eq(s, inbox)) {
                    inboxes.swap_remove(at);
                }
                match inboxes.as_slice() {
                    [] => true,
                    [last] => {
                        *self = Self::One(Arc::clone(last));
                        false
                    }
                    _ => false,
                }
            }
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
            hasher: foldhash::fast::RandomState::default(),
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

    /// Adds a subscriber; returns whether the topic is new.
    pub(crate) fn insert(&self, topic: Topic, inbox: Arc<Inbox<M>>) -> bool {
        let hash = self.hash(topic.as_key());
        let mut table = self.shard(hash).table.write();
        match table.find_mut(hash, |entry| entry.topic == topic) {
            Some(entry) => {
                entry.subscribers.push(inbox);
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
        if !occupied.get_mut().subscribers.remove(inbox) {
            return false;
        }
        occupied.remove();
        count(&self.presence[presence_slot(hash)], false);
        // Give memory back after a wave of short-lived per-entity topics.
        shrink(&mut table, |entry| self.hash(entry.topic.as_key()));
        true
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
        for inbox in entry.subscribers.as_slice() {
            if except.is_some_and(|except| Arc::ptr_eq(except, inbox)) {
                continue;
            }
            match inbox.push_returning_evicted(share(), position, self.capacity) {
                (Pushed::Queued, _) => tally.delivered += 1,
                (Pushed::QueuedDroppingOldest, old) => {
                    tally.delivered += 1;
                    tally.lagged += 1;
                    evicted.extend(old);
                }
                (Pushed::Refused, _) => {}
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
            .map_or(0, |entry| entry.subscribers.as_slice().len())
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
                for inbox in entry.subscribers.as_slice() {
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

#[cfg(test)]
mod tests {
    use super::*;

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
                    registry.insert(topic, Arc::clone(inbox));
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

    #[test]
    fn an_entry_is_56_bytes() {
        assert_eq!(std::mem::size_of::<Entry<()>>(), 56);
    }

    #[test]
    fn subscribers_go_from_one_to_many_and_back() {
        let registry = Registry::<u32>::new(1, 8);
        let topic = Topic::new("chat:rooms");
        let inboxes: Vec<_> = (0..3).map(|_| Arc::new(Inbox::new())).collect();
        assert!(registry.insert(topic, Arc::clone(&inboxes[0])));
        assert!(!registry.insert(topic, Arc::clone(&inboxes[1])));
        assert!(!registry.insert(topic, Arc::clone(&inboxes[2])));
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
