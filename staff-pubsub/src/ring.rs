//! The shared queue of a wide topic: one slot per message, read by every
//! subscription that reads the ring, instead of one push (a lock, a
//! reference count and a wake-up) into each subscriber's own queue.
//!
//! A topic's ring exists while at least one subscription reads it. Which
//! subscriptions read it is the registry's choice (see `registry.rs`): a
//! subscription on exactly that one topic, made while the topic already had
//! [`RING_FROM`] subscribers. Each reader keeps a [`Cursor`] in its inbox,
//! and its inbox's state (lag not yet reported, gap, closed, waker) works as
//! for a queue of its own: a reader sees exactly what a queue of the
//! server's capacity would have held for it.
//!
//! Invariants (under the lock of [`Ring::slots`]):
//! - the ring holds the messages of sequence numbers `head .. head + len`,
//!   at most `capacity` of them; a message pushed gets the next sequence
//!   number; a push first drops, from the front, the messages no reader
//!   has still to read, then the oldest if the ring is still full;
//! - a slot's `unread` is the number of readers whose cursor is at or
//!   before it (so that have it still to read), counted when it was pushed
//!   (every reader at that moment) and decreased when one of them takes it
//!   or leaves the ring with it unread (its unread messages then move into
//!   its own queue). When a full ring drops a slot, its `unread` is the
//!   number of copies lost, for the server's lag counter, as a full queue
//!   of each of those readers would have dropped one each.
//!
//! The loom model `loom_ring_each_reader_gets_every_message_once_or_an_exact_lag`
//! (`ring/loom_models.rs`) checks these two, and that each reader gets every
//! message once or an exact lag, with pushes, reads and a reader leaving at
//! once; `loom_wake_no_lost_wake_up` (`inbox/loom_models.rs`) checks that a
//! reader that waits is woken by the next push ([`Cursor::wait`]'s read
//! again after registering).
//!
//! Readers join and leave, and the set of readers is counted, under the
//! write lock of the topic's registry shard; pushes run under its read
//! lock. So the count a push records is the number of readers at that
//! moment, and a reader joins at the ring's tail with nothing unread.
//!
//! Lock order: a reader holds its inbox's lock, then takes the slots' or
//! the waiters' lock; a publisher takes the slots' lock, releases it, then
//! the waiters' lock; it wakes readers after releasing both.

use std::collections::VecDeque;
use std::task::Waker;

use crate::loom::sync::{Arc, Mutex};
use crate::position::Position;

/// Subscribers a topic has before a new subscription on it (and on no
/// other topic) reads the topic's ring instead of a queue of its own;
/// public as [`WIDE_TOPIC_FROM`](crate::WIDE_TOPIC_FROM).
pub(crate) const RING_FROM: usize = 32;

pub(crate) struct Ring<M> {
    /// A mutex and not a read-write lock: a read changes its slot's
    /// `unread` count, which a mutex lets be a plain integer (a reader's
    /// two atomic operations on the lock, and none on the slot).
    slots: Mutex<Slots<M>>,
    waiters: Mutex<Waiters>,
}

struct Slots<M> {
    /// The sequence number of the front slot.
    head: u64,
    queue: VecDeque<Slot<M>>,
    capacity: usize,
}

struct Slot<M> {
    message: Arc<M>,
    position: Option<Position>,
    /// Readers that still have this message to read (see the invariants).
    unread: usize,
}

/// The wakers of readers that found nothing to read. A reader has at most
/// one entry per `epoch`, at the index its cursor keeps: it replaces its
/// waker there, and empties the entry when it leaves (the index is then
/// free for the next reader to wait). A push takes every waker and starts a
/// new epoch. So the list holds at most one waker per reader, none of a
/// reader that left, and is no longer than the readers waiting at once.
struct Waiters {
    epoch: u64,
    wakers: Vec<Option<Waker>>,
    /// Emptied entries of this epoch.
    free: Vec<usize>,
    /// The vector of the previous wake-up, kept for its allocation.
    spare: Vec<Option<Waker>>,
}

/// A message a reader had still to read when it left: its sequence number,
/// the message and its log position.
pub(crate) type Unread<M> = (u64, Arc<M>, Option<Position>);

/// A reader's place in a ring, kept in its inbox's state.
pub(crate) struct Cursor<M> {
    pub(crate) ring: Arc<Ring<M>>,
    /// The sequence number of the next message to read.
    pub(crate) next: u64,
    /// Where the inbox's gap marker is, while it has one: after every
    /// message before this sequence number.
    pub(crate) gap_at: u64,
    /// The waiters' epoch this reader registered in (`u64::MAX`: none),
    /// and its entry's index there.
    epoch: u64,
    index: usize,
}

/// What a reader finds at its cursor.
pub(crate) enum Read<M> {
    /// Messages it had not read were dropped from the full ring: this many.
    Lost(u64),
    /// Its gap marker.
    Gap,
    Message(Arc<M>, Option<Position>),
    /// Nothing new.
    Empty,
}

impl<M> Ring<M> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: Mutex::new(Slots {
                head: 0,
                queue: VecDeque::new(),
                capacity: capacity.max(1),
            }),
            waiters: Mutex::new(Waiters {
                epoch: 0,
                wakers: Vec::new(),
                free: Vec::new(),
                spare: Vec::new(),
            }),
        }
    }

    /// A cursor at the ring's tail: a reader joining now reads what is
    /// pushed from now on. Call under the shard's write lock.
    pub(crate) fn cursor(self: &Arc<Self>) -> Cursor<M> {
        let slots = self.slots.lock();
        Cursor {
            ring: Arc::clone(self),
            next: slots.tail(),
            gap_at: 0,
            epoch: u64::MAX,
            index: 0,
        }
    }

    /// The sequence number the next message will get.
    pub(crate) fn tail(&self) -> u64 {
        self.slots.lock().tail()
    }

    /// Adds a message for `readers` readers (every reader of the ring) and
    /// wakes those waiting. First it drops the messages every reader has
    /// read (or left unread when it left the ring), from the front, and,
    /// if the ring is still full, the oldest message, whose unread count is
    /// the copies lost. Returns that count; the dropped messages go into
    /// `released`, to be released after the caller's locks (one may be the
    /// last reference).
    pub(crate) fn push(
        &self,
        message: Arc<M>,
        position: Option<Position>,
        readers: usize,
        released: &mut Vec<Arc<M>>,
    ) -> u64 {
        let lost = {
            let mut slots = self.slots.lock();
            // A slot nobody has still to read: no reader's cursor is at or
            // before it (see the invariants), so moving the head past it
            // loses nothing for anyone.
            while slots.queue.front().is_some_and(|slot| slot.unread == 0) {
                slots.head += 1;
                released.extend(slots.queue.pop_front().map(|slot| slot.message));
            }
            let lost = if slots.queue.len() >= slots.capacity {
                slots.head += 1;
                slots.queue.pop_front().map_or(0, |slot| {
                    let lost = slot.unread as u64;
                    released.push(slot.message);
                    lost
                })
            } else {
                0
            };
            slots.queue.push_back(Slot {
                message,
                position,
                unread: readers,
            });
            lost
        };
        self.wake_all();
        lost
    }

    /// Wakes every waiting reader, outside the lock.
    fn wake_all(&self) {
        let mut woken = {
            let mut waiters = self.waiters.lock();
            if waiters.wakers.is_empty() {
                return;
            }
            waiters.epoch = waiters.epoch.wrapping_add(1);
            waiters.free.clear();
            let spare = std::mem::take(&mut waiters.spare);
            std::mem::replace(&mut waiters.wakers, spare)
        };
        for waker in woken.drain(..).flatten() {
            waker.wake();
        }
        let mut waiters = self.waiters.lock();
        if waiters.spare.capacity() < woken.capacity() {
            waiters.spare = woken;
        }
    }
}

impl<M> Slots<M> {
    fn tail(&self) -> u64 {
        self.head + self.queue.len() as u64
    }
}

impl<M> Cursor<M> {
    /// The next item at the cursor, moving past it: lost messages first,
    /// then the gap marker if it is at `marker`, then a message.
    pub(crate) fn read(&mut self, marker: Option<u64>) -> Read<M> {
        let mut slots = self.ring.slots.lock();
        if self.next < slots.head {
            let lost = slots.head - self.next;
            self.next = slots.head;
            return Read::Lost(lost);
        }
        if marker.is_some_and(|at| at <= self.next) {
            return Read::Gap;
        }
        // `head <= next <= tail` here: a cursor starts at the tail and
        // moves one slot past a slot it read.
        match usize::try_from(self.next - slots.head)
            .ok()
            .and_then(|at| slots.queue.get_mut(at))
        {
            Some(slot) => {
                self.next += 1;
                slot.unread -= 1;
                Read::Message(Arc::clone(&slot.message), slot.position)
            }
            None => Read::Empty,
        }
    }

    /// The number of messages at and after the cursor still in the ring.
    pub(crate) fn len(&self) -> usize {
        let slots = self.ring.slots.lock();
        let from = self.next.max(slots.head);
        usize::try_from(slots.tail() - from).unwrap_or(usize::MAX)
    }

    /// Registers `waker` to be woken by the next push, unless it is
    /// registered already (`changed`: the inbox's waker is not the one
    /// registered before). Then whether something was pushed meanwhile:
    /// read again if so (a push that ran before the registration saw no
    /// waker to wake).
    pub(crate) fn wait(&mut self, waker: &Waker, changed: bool) -> bool {
        {
            let mut waiters = self.ring.waiters.lock();
            if waiters.epoch != self.epoch {
                self.epoch = waiters.epoch;
                match waiters.free.pop() {
                    Some(index) => {
                        self.index = index;
                        if let Some(entry) = waiters.wakers.get_mut(index) {
                            *entry = Some(waker.clone());
                        }
                    }
                    None => {
                        self.index = waiters.wakers.len();
                        waiters.wakers.push(Some(waker.clone()));
                    }
                }
            } else if changed {
                if let Some(entry) = waiters.wakers.get_mut(self.index) {
                    *entry = Some(waker.clone());
                }
            }
        }
        let slots = self.ring.slots.lock();
        self.next != slots.tail()
    }

    /// Leaves the ring: every message at and after the cursor, with the
    /// count of those lost before it, for the reader's own queue. Call
    /// under the shard's write lock.
    pub(crate) fn leave(&mut self) -> (u64, Vec<Unread<M>>) {
        let mut slots = self.ring.slots.lock();
        let lost = slots.head.saturating_sub(self.next);
        let from = self.next.max(slots.head);
        let skip = usize::try_from(from - slots.head).unwrap_or(usize::MAX);
        let tail = slots.tail();
        let unread = slots
            .queue
            .iter_mut()
            .skip(skip)
            .zip(from..)
            .map(|(slot, seq)| {
                slot.unread -= 1;
                (seq, Arc::clone(&slot.message), slot.position)
            })
            .collect();
        self.next = tail;
        (lost, unread)
    }
}

impl<M> Drop for Cursor<M> {
    /// A reader that leaves (its inbox goes back to a queue of its own, or
    /// is dropped) takes its waker out of the ring.
    fn drop(&mut self) {
        let waiters = &mut *self.ring.waiters.lock();
        if waiters.epoch == self.epoch {
            if let Some(entry) = waiters.wakers.get_mut(self.index) {
                if entry.take().is_some() {
                    waiters.free.push(self.index);
                }
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models;

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    /// Readers that wait and leave one after another, on a topic nobody
    /// broadcasts to, reuse one entry of the waiters' list.
    #[test]
    fn the_waiters_list_is_as_long_as_the_readers_waiting_at_once() {
        let ring = Arc::new(Ring::<u32>::new(4));
        let waker = Waker::noop();
        for _ in 0..1_000 {
            let mut cursor = ring.cursor();
            assert!(!cursor.wait(waker, true));
            drop(cursor);
        }
        assert_eq!(ring.waiters.lock().wakers.len(), 1);
        let mut cursors: Vec<_> = (0..3).map(|_| ring.cursor()).collect();
        for cursor in &mut cursors {
            cursor.wait(waker, true);
            // Waiting again in the same epoch keeps the one entry.
            cursor.wait(waker, true);
        }
        assert_eq!(ring.waiters.lock().wakers.len(), 3);
        ring.push(Arc::new(1), None, 3, &mut Vec::new());
        assert!(ring.waiters.lock().wakers.is_empty());
    }
}
