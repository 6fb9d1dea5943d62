//! The sharded map from topic to subscriber inboxes.
//!
//! A topic is hashed once per operation; the hash picks the shard and finds
//! the entry inside it, so publishers on different topics take different
//! locks, and publishers on the same topic share a read lock.
//!
//! Invariant: an entry exists exactly while it has at least one subscriber.
//! The last removal deletes the entry, so per-entity topics do not leak.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::RwLock;

use crate::inbox::{Inbox, Pushed};
use crate::topic::{Topic, TopicKey};

pub(crate) struct Registry<M> {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Shard<M>]>,
}

/// Aligned to two cache lines so that two shards' locks never share one
/// (adjacent-line prefetch included).
#[repr(align(128))]
struct Shard<M> {
    table: RwLock<HashTable<Entry<M>>>,
}

struct Entry<M> {
    topic: Topic,
    /// Kept so that growing the table needs no rehash of the topic.
    hash: u64,
    subscribers: Vec<Arc<Inbox<M>>>,
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
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..shards)
                .map(|_| Shard {
                    table: RwLock::new(HashTable::new()),
                })
                .collect(),
        }
    }

    fn hash(&self, key: TopicKey<'_>) -> u64 {
        self.hasher.hash_one(key)
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
                    hash,
                    subscribers: vec![inbox],
                };
                table.insert_unique(hash, entry, |entry| entry.hash);
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
        let subscribers = &mut occupied.get_mut().subscribers;
        if let Some(at) = subscribers.iter().position(|s| Arc::ptr_eq(s, inbox)) {
            subscribers.swap_remove(at);
        }
        if !subscribers.is_empty() {
            return false;
        }
        occupied.remove();
        // Give memory back after a wave of short-lived per-entity topics.
        if table.capacity() > 64 && table.len() * 4 < table.capacity() {
            let wanted = table.len() * 2;
            table.shrink_to(wanted, |entry| entry.hash);
        }
        true
    }

    /// Queues `message` for every subscriber of the topic but `except`.
    pub(crate) fn dispatch(
        &self,
        key: TopicKey<'_>,
        message: &Arc<M>,
        except: Option<&Arc<Inbox<M>>>,
        tally: &mut Tally,
    ) {
        let hash = self.hash(key);
        let table = self.shard(hash).table.read();
        let Some(entry) = table.find(hash, |entry| key.matches(&entry.topic)) else {
            return;
        };
        for inbox in &entry.subscribers {
            if except.is_some_and(|except| Arc::ptr_eq(except, inbox)) {
                continue;
            }
            match inbox.push(Arc::clone(message)) {
                Pushed::Queued => tally.delivered += 1,
                Pushed::QueuedDroppingOldest => {
                    tally.delivered += 1;
                    tally.lagged += 1;
                }
                Pushed::Refused => {}
            }
        }
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

    /// Calls `f` once for every distinct subscriber inbox.
    pub(crate) fn for_each_inbox(&self, mut f: impl FnMut(&Arc<Inbox<M>>)) {
        // An inbox on several topics is visited once per topic; the callers
        // (close, gap) are idempotent, so that is harmless.
        for shard in self.shards.iter() {
            for entry in shard.table.read().iter() {
                entry.subscribers.iter().for_each(&mut f);
            }
        }
    }
}
