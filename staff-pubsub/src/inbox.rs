//! The bounded queue behind one subscription.
//!
//! Publishers push, the one subscriber pops. A full queue drops its *oldest*
//! message and counts it, so a slow subscriber never blocks a publisher and
//! never loses a message without being told: the next receive reports the
//! count, then the subscriber continues with the newest messages.
//!
//! A gap (the transport lost messages during a reconnect) takes its place
//! in queue order: it is a marker queued after every message queued before
//! it, so a subscriber that reloads its state on a gap never applies an
//! older message over the fresh state.
//!
//! A resumed subscription's inbox ([`Queue::Resuming`]) knows which log
//! entries its replay covers: a covered entry it drops for lack of room
//! is not counted as missed, since the replay delivers it (the subscription
//! skips the covered copies it finds queued).
//!
//! An inbox on a wide topic may read the topic's shared ring instead of a
//! queue of its own ([`Queue::Ring`], see `ring.rs`): the same rules hold,
//! the ring standing for the queue (its capacity is the server's too), and
//! the gap marker being a position in the ring.
//!
//! Invariants: for every inbox, messages popped + misses reported + misses
//! still pending + messages still queued + covered entries dropped ==
//! messages pushed (while fewer than 2^61 misses are pending, where their
//! count saturates); only a resuming inbox drops covered entries. The queue
//! holds at most one gap marker ([`Entry::Gap`]; for a ring reader,
//! `gap_at` with [`RingReader::gap`]), exactly while the flag [`GAP`] is
//! set, and at most `capacity` messages besides it.
//!
//! Checked by loom models (`*/loom_models.rs`), every interleaving within a
//! bound: the count above, for a ring reader, by
//! `loom_ring_each_reader_gets_every_message_once_or_an_exact_lag`, and
//! for a resuming inbox, whose covered drops are the replay's, by
//! `loom_resume_each_entry_once_across_the_boundary`; the gap marker's
//! place by `loom_gap_never_read_before_a_message_queued_before_it`; and a
//! waiting subscriber woken by the next message by
//! `loom_wake_no_lost_wake_up`.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use crate::loom::sync::{Arc, Mutex};
use crate::position::{Gap, Position};
use crate::ring::{Cursor, Read, Ring};
use crate::RecvError;

/// 64 bytes: the queue's capacity is the server's, passed to each push, the
/// flags share a word with the count of misses, and what a gap reports
/// rides in its marker.
pub(crate) struct Inbox<M> {
    state: Mutex<State<M>>,
}

/// One queued item: a message and, in durable mode, its log position; or
/// the gap marker, with what it reports (shared by every inbox the gap was
/// signalled to at once). Two words: the marker's tag is the message's
/// niche.
enum Entry<M> {
    Message(Arc<M>, Option<Position>),
    Gap(Arc<Gap>),
}

/// What a receive takes: a message with its log position (durable mode
/// only), or why there is none.
pub(crate) type Taken<M> = Result<(Arc<M>, Option<Position>), RecvError>;

struct State<M> {
    /// Where the messages are.
    queue: Queue<M>,
    /// Messages dropped for lack of room and not yet reported (the low bits,
    /// [`MISSED`]), and the flags [`GAP`] and [`CLOSED`].
    word: u64,
    waker: Option<Waker>,
}

/// The messages of an inbox: a queue of its own or a place in a wide
/// topic's ring. The same size as the queue alone.
enum Queue<M> {
    /// Grows on demand up to the capacity: an idle subscription allocates
    /// no queue at all.
    Own(VecDeque<Entry<M>>),
    Ring(Box<RingReader<M>>),
    /// A resumed subscription's queue while its replay may cover what is
    /// pushed: never a ring reader. Boxed: the enum stays the queue's size.
    Resuming(Box<Resuming<M>>),
}

/// A ring reader's place in the ring, and what its gap marker reports
/// while it has one.
struct RingReader<M> {
    cursor: Cursor<M>,
    /// Set exactly while [`GAP`] is.
    gap: Option<Arc<Gap>>,
}

/// The queue of a resumed subscription and the log entries its replay
/// covers.
struct Resuming<M> {
    queue: VecDeque<Entry<M>>,
    covered: Covered,
}

/// Which dropped log entries are not misses, because the replay has them.
enum Covered {
    /// The replay's end is not known yet (the subscription is registered
    /// before the log's head is read): the positions of the log entries
    /// dropped meanwhile, each decided by the end once it is set, as
    /// [`Self::Through`] decides. Not by their log alone: entries past the
    /// head can be dispatched, and dropped, between the head's read and
    /// the end's setting. A handful in practice: the end is set at once
    /// after the head is read.
    Unread(Vec<Position>),
    /// The replay will cover the entries of `through`'s log up to it, or
    /// nothing (the engine is being asked whether it lost its last
    /// writes): `dropped` of those were dropped meanwhile.
    Maybe { through: Position, dropped: u64 },
    /// The entries of this position's log up to it.
    Through(Position),
}

impl Covered {
    /// Whether dropping an entry at `position` is a miss to report now;
    /// records it while the end is not known.
    fn is_miss(&mut self, position: Option<Position>) -> bool {
        let Some(position) = position else {
            // Not a log entry (`broadcast_from`, `local_broadcast`): no
            // replay has it.
            return true;
        };
        let within =
            |through: &Position| position.log() == through.log() && position.seq() <= through.seq();
        match self {
            Self::Through(through) => !within(through),
            Self::Maybe { through, dropped } => {
                let within = within(through);
                *dropped += u64::from(within);
                !within
            }
            Self::Unread(early) => {
                early.push(position);
                false
            }
        }
    }
}

/// In [`State::word`]: the server is gone: nothing more will arrive once
/// the queue is empty.
const CLOSED: u64 = 1 << 62;
/// In [`State::word`]: a gap marker is queued, not yet received.
const GAP: u64 = 1 << 61;
/// In [`State::word`]: the misses not yet reported. The count saturates at
/// 2^61 - 1, seventy years of drops at a billion a second without one
/// receive.
const MISSED: u64 = GAP - 1;

/// What a push did, for the server's counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pushed {
    /// Queued (a resuming inbox may have dropped its oldest entry, one its
    /// replay covers: not a miss).
    Queued,
    /// Queued after dropping the oldest queued message: a miss.
    QueuedDroppingOldest,
    /// The inbox is closed (or reads a ring, which the registry never
    /// pushes to).
    Refused,
}

impl<M> Inbox<M> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                queue: Queue::Own(VecDeque::new()),
                word: 0,
                waker: None,
            }),
        }
    }

    /// The inbox of a resumed subscription, until its replay's end is known
    /// ([`Inbox::resume_through`]): never reads a ring.
    pub(crate) fn resuming() -> Self {
        Self {
            state: Mutex::new(State {
                queue: Queue::Resuming(Box::new(Resuming {
                    queue: VecDeque::new(),
                    covered: Covered::Unread(Vec::new()),
                })),
                word: 0,
                waker: None,
            }),
        }
    }

    /// Sets the end of a resumed subscription's replay, once known: the
    /// entries of `through`'s log up to it are covered; `None`, nothing is
    /// (the queue is then an ordinary one). Entries dropped before this
    /// call that it does not cover become misses. Call it (or
    /// [`resume_maybe_through`](Self::resume_maybe_through)) at once after
    /// reading the log's head: see [`Covered::Unread`]. An end already set
    /// stays.
    pub(crate) fn resume_through(&self, through: Option<Position>) {
        self.resume_until(through, false);
    }

    /// Sets the end a resumed subscription's replay will have unless the
    /// log lost its last writes (then it covers nothing): call
    /// [`resume_through`](Self::resume_through) when that is known.
    pub(crate) fn resume_maybe_through(&self, through: Position) {
        self.resume_until(Some(through), true);
    }

    fn resume_until(&self, through: Option<Position>, maybe: bool) {
        self.update(|state| {
            let Queue::Resuming(resuming) = &mut state.queue else {
                return;
            };
            let (missed, covered) = match &resuming.covered {
                Covered::Through(_) => return,
                Covered::Unread(early) => {
                    let covered = early
                        .iter()
                        .filter(|position| {
                            through.is_some_and(|through| {
                                position.log() == through.log() && position.seq() <= through.seq()
                            })
                        })
                        .count() as u64;
                    (early.len() as u64 - covered, covered)
                }
                Covered::Maybe { dropped, .. } if through.is_none() => (*dropped, 0),
                Covered::Maybe { dropped, .. } => (0, *dropped),
            };
            state.word =
                (state.word & !MISSED) | (state.word & MISSED).saturating_add(missed).min(MISSED);
            match through {
                Some(through) if maybe => {
                    resuming.covered = Covered::Maybe {
                        through,
                        dropped: covered,
                    };
                }
                Some(through) => resuming.covered = Covered::Through(through),
                None => state.queue = Queue::Own(std::mem::take(&mut resuming.queue)),
            }
        });
    }

    /// Ends a resumed subscription's replay: the queue is an ordinary one
    /// from here (what is pushed now is after what the replay covers).
    pub(crate) fn end_resume(&self) {
        let mut state = self.state.lock();
        if let Queue::Resuming(resuming) = &mut state.queue {
            if matches!(resuming.covered, Covered::Through(_)) {
                state.queue = Queue::Own(std::mem::take(&mut resuming.queue));
            }
        }
    }

    /// Queues `message` (at `position` in the log, in durable mode), first
    /// dropping the oldest message if `capacity` (at least 1) are queued
    /// already, and wakes a waiting subscriber. Hands back the message that
    /// was dropped to make room, so that the caller can release it after
    /// its own locks: it may be the last reference, and its destructor is
    /// the user's code.
    pub(crate) fn push_returning_evicted(
        &self,
        message: Arc<M>,
        position: Option<Position>,
        capacity: usize,
    ) -> (Pushed, Option<Arc<M>>) {
        let (waker, evicted, pushed) = {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            if state.word & CLOSED != 0 {
                return (Pushed::Refused, None);
            }
            let gap = state.word & GAP != 0;
            let (pushed, evicted) = match &mut state.queue {
                // The common case first: room in a queue of its own.
                Queue::Own(queue) if queue.len() - usize::from(gap) < capacity.max(1) => {
                    queue.push_back(Entry::Message(message, position));
                    (Pushed::Queued, None)
                }
                _ => state.push_making_room(message, position, capacity),
            };
            if pushed == Pushed::Refused {
                return (pushed, None);
            }
            (state.waker.take(), evicted, pushed)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        (pushed, evicted)
    }

    /// Starts reading `ring` from its tail, if nothing is queued, pending
    /// or closed here (a new subscription's inbox); returns whether it
    /// does. Call under the lock of the topic's registry shard.
    pub(crate) fn join_ring(&self, ring: &Arc<Ring<M>>) -> bool {
        let mut state = self.state.lock();
        let fresh =
            matches!(&state.queue, Queue::Own(queue) if queue.is_empty()) && state.word == 0;
        if fresh {
            state.queue = Queue::Ring(Box::new(RingReader {
                cursor: ring.cursor(),
                gap: None,
            }));
        }
        fresh
    }

    /// Stops reading a ring, if it does: what it had still to read moves
    /// into a queue of its own, in order, with the lag and the gap marker
    /// where they were. Call under the lock of the ring's registry shard.
    pub(crate) fn leave_ring(&self) {
        let mut state = self.state.lock();
        let State { queue, word, .. } = &mut *state;
        let Queue::Ring(reader) = queue else {
            return;
        };
        let mut marker = reader.gap.take().map(|gap| (reader.cursor.gap_at, gap));
        let (lost, unread) = reader.cursor.leave();
        *word = (*word & !MISSED) | ((*word & MISSED).saturating_add(lost)).min(MISSED);
        let mut own = VecDeque::with_capacity(unread.len() + usize::from(marker.is_some()));
        for (seq, message, position) in unread {
            if marker.as_ref().is_some_and(|(at, _)| *at <= seq) {
                if let Some((_, gap)) = marker.take() {
                    own.push_back(Entry::Gap(gap));
                }
            }
            own.push_back(Entry::Message(message, position));
        }
        if let Some((_, gap)) = marker {
            own.push_back(Entry::Gap(gap));
        }
        *queue = Queue::Own(own);
    }

    /// Whether it reads a ring.
    pub(crate) fn reads_ring(&self) -> bool {
        matches!(self.state.lock().queue, Queue::Ring(_))
    }

    /// Marks a gap after every message queued so far: receiving reports
    /// [`RecvError::Gap`] with `gap` after them and before any message
    /// queued later. A second gap before the first is received moves the
    /// one marker to the end (reloading there covers both losses) and
    /// merges what the two report.
    ///
    /// Returns whether the gap is new to the subscriber (no marker was
    /// waiting), for the count of gaps subscribers were told of.
    pub(crate) fn signal_gap(&self, gap: &Arc<Gap>) -> bool {
        let mut new = false;
        self.update(|state| {
            new = state.word & GAP == 0;
            state.word |= GAP;
            // The marker waiting, if any, taken out of its place.
            let waiting = match &mut state.queue {
                Queue::Ring(reader) => reader.gap.take(),
                queue => queue.own_mut().and_then(|queue| {
                    let at = queue
                        .iter()
                        .position(|entry| matches!(entry, Entry::Gap(_)))?;
                    match queue.remove(at) {
                        Some(Entry::Gap(waiting)) => Some(waiting),
                        _ => None,
                    }
                }),
            };
            let gap = match waiting {
                Some(waiting) => Arc::new(waiting.merge(**gap)),
                None => Arc::clone(gap),
            };
            match &mut state.queue {
                Queue::Own(queue) => queue.push_back(Entry::Gap(gap)),
                Queue::Resuming(resuming) => resuming.queue.push_back(Entry::Gap(gap)),
                Queue::Ring(reader) => {
                    reader.cursor.gap_at = reader.cursor.ring.tail();
                    reader.gap = Some(gap);
                }
            }
        });
        new
    }

    /// Whether a gap marker is queued, not yet received.
    pub(crate) fn has_gap(&self) -> bool {
        self.state.lock().word & GAP != 0
    }

    /// Closes the inbox: queued messages can still be received, then
    /// [`RecvError::Closed`].
    pub(crate) fn close(&self) {
        self.update(|state| state.word |= CLOSED);
    }

    /// Changes the state under the lock and wakes the subscriber after it.
    fn update(&self, change: impl FnOnce(&mut State<M>)) {
        let waker = {
            let mut state = self.state.lock();
            change(&mut state);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes the next item: a lag report first (it concerns messages older
    /// than any still queued), then the queue in order, messages and the
    /// gap marker alike.
    pub(crate) fn try_take(&self) -> Option<Taken<M>> {
        let mut state = self.state.lock();
        state.take()
    }

    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Taken<M>> {
        self.poll_with(cx, State::take)
    }

    /// The next item `take` finds, or `Pending` with the waker kept.
    #[inline]
    fn poll_with<T>(&self, cx: &mut Context<'_>, take: fn(&mut State<M>) -> Option<T>) -> Poll<T> {
        let mut state = self.state.lock();
        if let Some(item) = take(&mut state) {
            return Poll::Ready(item);
        }
        let changed = match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => false,
            _ => {
                state.waker = Some(cx.waker().clone());
                true
            }
        };
        // A ring reader also waits on the ring; if a message came meanwhile,
        // it is read now rather than waited for.
        if let Queue::Ring(reader) = &mut state.queue {
            if reader.cursor.wait(cx.waker(), changed) {
                if let Some(item) = take(&mut state) {
                    return Poll::Ready(item);
                }
            }
        }
        Poll::Pending
    }

    /// [`try_take`](Self::try_take) without the position: the common
    /// receive, kept as short as it was before positions.
    #[inline]
    pub(crate) fn try_take_message(&self) -> Option<Result<Arc<M>, RecvError>> {
        let mut state = self.state.lock();
        state.take_message()
    }

    /// [`poll_take`](Self::poll_take) without the position.
    #[inline]
    pub(crate) fn poll_take_message(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Arc<M>, RecvError>> {
        self.poll_with(cx, State::take_message)
    }

    /// The number of messages queued (the gap marker is not one).
    pub(crate) fn len(&self) -> usize {
        self.state.lock().messages()
    }
}

/// Removes the oldest message, leaving a gap marker in front of it in
/// place: the marker stays after the messages that preceded the gap.
#[inline]
fn pop_oldest_message<M>(queue: &mut VecDeque<Entry<M>>, gap: bool) -> Option<Entry<M>> {
    match queue.front() {
        Some(Entry::Gap(_)) if gap => queue.remove(1),
        _ => queue.pop_front(),
    }
}

impl<M> Queue<M> {
    /// The queue of its own, when it does not read a ring.
    #[inline]
    fn own_mut(&mut self) -> Option<&mut VecDeque<Entry<M>>> {
        match self {
            Self::Own(queue) => Some(queue),
            Self::Resuming(resuming) => Some(&mut resuming.queue),
            Self::Ring(_) => None,
        }
    }
}

impl<M> State<M> {
    /// [`Inbox::push_returning_evicted`] but for a queue of its own with
    /// room: a full queue (the oldest message goes, a miss unless a
    /// resumed subscription's replay has it), a resuming queue, or a ring
    /// reader (refused: the registry pushes to its ring).
    #[cold]
    #[inline(never)]
    fn push_making_room(
        &mut self,
        message: Arc<M>,
        position: Option<Position>,
        capacity: usize,
    ) -> (Pushed, Option<Arc<M>>) {
        let (queue, mut covered) = match &mut self.queue {
            Queue::Own(queue) => (queue, None),
            Queue::Resuming(resuming) => (&mut resuming.queue, Some(&mut resuming.covered)),
            Queue::Ring(_) => {
                debug_assert!(false, "a push to an inbox that reads a ring");
                return (Pushed::Refused, None);
            }
        };
        let gap = self.word & GAP != 0;
        let mut pushed = Pushed::Queued;
        let evicted = if queue.len() - usize::from(gap) >= capacity.max(1) {
            let oldest = pop_oldest_message(queue, gap);
            let missed = match (&mut covered, &oldest) {
                (Some(covered), Some(Entry::Message(_, position))) => covered.is_miss(*position),
                _ => true,
            };
            if missed {
                pushed = Pushed::QueuedDroppingOldest;
                if self.word & MISSED != MISSED {
                    self.word += 1;
                }
            }
            match oldest {
                Some(Entry::Message(message, _)) => Some(message),
                _ => None,
            }
        } else {
            None
        };
        queue.push_back(Entry::Message(message, position));
        (pushed, evicted)
    }
}

impl<M> State<M> {
    fn messages(&self) -> usize {
        match &self.queue {
            Queue::Own(queue) => queue.len() - usize::from(self.word & GAP != 0),
            Queue::Resuming(resuming) => resuming.queue.len() - usize::from(self.word & GAP != 0),
            Queue::Ring(reader) => reader.cursor.len(),
        }
    }

    #[inline]
    fn take_message(&mut self) -> Option<Result<Arc<M>, RecvError>> {
        let Some(queue) = self.queue.own_mut() else {
            return self
                .take_from_ring()
                .map(|item| item.map(|(message, _)| message));
        };
        let missed = self.word & MISSED;
        if missed > 0 {
            self.word &= !MISSED;
            return Some(Err(RecvError::Lagged(missed)));
        }
        match queue.pop_front() {
            Some(Entry::Message(message, _)) => Some(Ok(message)),
            Some(Entry::Gap(gap)) => {
                self.word &= !GAP;
                Some(Err(RecvError::Gap(*gap)))
            }
            None => (self.word & CLOSED != 0).then_some(Err(RecvError::Closed)),
        }
    }

    fn take(&mut self) -> Option<Taken<M>> {
        let Some(queue) = self.queue.own_mut() else {
            return self.take_from_ring();
        };
        let missed = self.word & MISSED;
        if missed > 0 {
            self.word &= !MISSED;
            return Some(Err(RecvError::Lagged(missed)));
        }
        match queue.pop_front() {
            Some(Entry::Message(message, position)) => Some(Ok((message, position))),
            Some(Entry::Gap(gap)) => {
                self.word &= !GAP;
                Some(Err(RecvError::Gap(*gap)))
            }
            None => (self.word & CLOSED != 0).then_some(Err(RecvError::Closed)),
        }
    }

    /// [`take`](Self::take) for a ring reader: the same order (lag, then
    /// the gap where it was marked, then messages, then closed).
    fn take_from_ring(&mut self) -> Option<Taken<M>> {
        let missed = self.word & MISSED;
        if missed > 0 {
            self.word &= !MISSED;
            return Some(Err(RecvError::Lagged(missed)));
        }
        let Queue::Ring(reader) = &mut self.queue else {
            return None;
        };
        let marker = reader.gap.is_some().then_some(reader.cursor.gap_at);
        match reader.cursor.read(marker) {
            Read::Lost(lost) => Some(Err(RecvError::Lagged(lost.min(MISSED)))),
            Read::Message(message, position) => Some(Ok((message, position))),
            Read::Gap => {
                self.word &= !GAP;
                // `Read::Gap` only with a marker, so `gap` is set; the
                // fallback is never taken.
                let gap = reader.gap.take().map_or(Gap::Disconnected, |gap| *gap);
                Some(Err(RecvError::Gap(gap)))
            }
            Read::Empty => (self.word & CLOSED != 0).then_some(Err(RecvError::Closed)),
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models;

#[cfg(test)]
mod tests {
    use super::*;

    impl<M> Inbox<M> {
        /// Pushes and releases the evicted message at once.
        fn push(&self, message: Arc<M>, capacity: usize) -> Pushed {
            self.push_returning_evicted(message, None, capacity).0
        }

        fn gap(&self) -> bool {
            self.signal_gap(&Arc::new(Gap::Disconnected))
        }

        fn take_message(&self) -> Option<Result<Arc<M>, RecvError>> {
            self.try_take()
                .map(|taken| taken.map(|(message, _)| message))
        }
    }

    #[test]
    fn full_queue_drops_oldest_and_reports_the_count_first() {
        let inbox = Inbox::new();
        let pushed: Vec<_> = (0..5).map(|n| inbox.push(Arc::new(n), 2)).collect();
        assert_eq!(pushed[..2], [Pushed::Queued, Pushed::Queued]);
        assert!(pushed[2..]
            .iter()
            .all(|p| *p == Pushed::QueuedDroppingOldest));
        assert_eq!(inbox.take_message(), Some(Err(RecvError::Lagged(3))));
        assert_eq!(inbox.take_message(), Some(Ok(Arc::new(3))));
        assert_eq!(inbox.take_message(), Some(Ok(Arc::new(4))));
        assert_eq!(inbox.take_message(), None);
    }

    #[test]
    fn an_inbox_is_72_bytes() {
        assert_eq!(std::mem::size_of::<Inbox<u32>>(), 64);
        assert_eq!(std::mem::size_of::<Entry<u32>>(), 16);
    }

    #[test]
    fn lag_comes_first_the_gap_in_queue_order_and_closed_last() {
        let inbox = Inbox::new();
        inbox.push(Arc::new(1), 1);
        inbox.push(Arc::new(2), 1);
        inbox.gap();
        inbox.close();
        assert_eq!(inbox.push(Arc::new(3), 1), Pushed::Refused);
        assert_eq!(inbox.take_message(), Some(Err(RecvError::Lagged(1))));
        assert_eq!(inbox.take_message(), Some(Ok(Arc::new(2))));
        assert_eq!(
            inbox.take_message(),
            Some(Err(RecvError::Gap(Gap::Disconnected)))
        );
        assert_eq!(inbox.take_message(), Some(Err(RecvError::Closed)));
    }

    #[test]
    fn a_gap_comes_after_what_was_queued_before_it_and_before_what_came_after() {
        let inbox = Inbox::new();
        inbox.push(Arc::new(1), 8);
        inbox.push(Arc::new(2), 8);
        inbox.gap();
        inbox.push(Arc::new(3), 8);
        assert_eq!(inbox.len(), 3);
        assert_eq!(inbox.take_message(), Some(Ok(Arc::new(1))));
        assert_eq!(inbox.take_message(), Some(Ok(Arc::new(2))));
        assert_eq!(
            inbox.take_message(),
            Some(Err(RecvError::Gap(Gap::Disconnected)))
        );
        assert_eq!(inbox.take_message(), Some(Ok(Arc::new(3))));
        assert_eq!(inbox.take_message(), None);
    }

    #[test]
    fn a_second_gap_moves_the_marker_and_is_reported_once() {
        let inbox = Inbox::new();
        inbox.push(Arc::new(1), 8);
        inbox.gap();
        inbox.push(Arc::new(2), 8);
        inbox.gap();
        inbox.push(Arc::new(3), 8);
        let taken: Vec<_> = std::iter::from_fn(|| inbox.take_message()).collect();
        assert_eq!(
            taken,
            [
                Ok(Arc::new(1)),
                Ok(Arc::new(2)),
                Err(RecvError::Gap(Gap::Disconnected)),
                Ok(Arc::new(3))
            ]
        );
    }

    #[test]
    fn a_full_queue_with_a_gap_keeps_the_marker_and_the_capacity() {
        let inbox = Inbox::new();
        inbox.push(Arc::new(1), 2);
        inbox.gap();
        inbox.push(Arc::new(2), 2);
        // Full: 1 is dropped, the marker stays in front of 2.
        assert_eq!(inbox.push(Arc::new(3), 2), Pushed::QueuedDroppingOldest);
        assert_eq!(inbox.len(), 2);
        // Full again: 2 is dropped, behind the marker.
        assert_eq!(inbox.push(Arc::new(4), 2), Pushed::QueuedDroppingOldest);
        let taken: Vec<_> = std::iter::from_fn(|| inbox.take_message()).collect();
        assert_eq!(
            taken,
            [
                Err(RecvError::Lagged(2)),
                Err(RecvError::Gap(Gap::Disconnected)),
                Ok(Arc::new(3)),
                Ok(Arc::new(4))
            ]
        );
    }

    #[test]
    fn a_resuming_inbox_counts_only_the_drops_its_replay_does_not_have() {
        let at = |log, seq| Position::new(log, seq);
        let inbox = Inbox::resuming();
        // Before the replay's end is known: 1..=4 of log 7 dropped (kept
        // pending), then a local message (not a log entry) dropped: a miss
        // at once.
        for seq in 1..=4 {
            inbox.push_returning_evicted(Arc::new(seq), at(7, seq), 1);
        }
        inbox.push_returning_evicted(Arc::new(0), None, 1);
        assert_eq!(
            inbox.push_returning_evicted(Arc::new(5), at(7, 5), 1).0,
            Pushed::QueuedDroppingOldest
        );
        // The replay covers log 7 through 6: the pending drops are covered.
        inbox.resume_through(at(7, 6));
        // 5 (covered) dropped for 6 (covered), then 6 for 7 (not).
        assert_eq!(
            inbox.push_returning_evicted(Arc::new(6), at(7, 6), 1).0,
            Pushed::Queued
        );
        assert_eq!(
            inbox.push_returning_evicted(Arc::new(7), at(7, 7), 1).0,
            Pushed::Queued
        );
        assert_eq!(
            inbox.push_returning_evicted(Arc::new(8), at(7, 8), 1).0,
            Pushed::QueuedDroppingOldest
        );
        let taken: Vec<_> = std::iter::from_fn(|| inbox.try_take()).collect();
        assert_eq!(
            taken,
            [Err(RecvError::Lagged(2)), Ok((Arc::new(8), at(7, 8)))]
        );
        inbox.end_resume();
        assert!(!inbox.reads_ring());

        // A replay that covers nothing (the log was lost): every pending
        // drop is a miss, and the queue is an ordinary one.
        let lost = Inbox::resuming();
        for seq in 1..=3 {
            lost.push_returning_evicted(Arc::new(seq), at(7, seq), 1);
        }
        lost.resume_through(None);
        assert_eq!(
            lost.push_returning_evicted(Arc::new(4), at(7, 4), 1).0,
            Pushed::QueuedDroppingOldest
        );
        let taken: Vec<_> = std::iter::from_fn(|| lost.try_take()).collect();
        assert_eq!(
            taken,
            [Err(RecvError::Lagged(3)), Ok((Arc::new(4), at(7, 4)))]
        );
        // A position ahead of the head: it covers what it would cover, or
        // nothing if the engine lost its last writes.
        for lost_its_writes in [false, true] {
            let ahead = Inbox::resuming();
            ahead.push_returning_evicted(Arc::new(1), at(7, 1), 1);
            ahead.push_returning_evicted(Arc::new(2), at(7, 2), 1);
            ahead.resume_maybe_through(at(7, 3).unwrap());
            // 2 and 3 dropped (within), then 4 (beyond: a miss at once).
            for seq in 3..=5 {
                ahead.push_returning_evicted(Arc::new(seq), at(7, seq), 1);
            }
            ahead.resume_through(if lost_its_writes { None } else { at(7, 3) });
            let lagged = if lost_its_writes { 4 } else { 1 };
            let taken: Vec<_> = std::iter::from_fn(|| ahead.try_take()).collect();
            assert_eq!(
                taken,
                [Err(RecvError::Lagged(lagged)), Ok((Arc::new(5), at(7, 5)))]
            );
        }
    }

    /// An entry past the head that was read, dispatched and dropped before
    /// the replay's end is set, is not the replay's: a miss.
    #[test]
    fn a_drop_before_the_end_is_set_is_decided_by_its_sequence_number() {
        let at = |seq| Position::new(7, seq);
        let inbox = Inbox::resuming();
        // The head was read at 1; 2 and 3 come before the end is set, 3
        // dropping 2.
        inbox.push_returning_evicted(Arc::new(2), at(2), 1);
        inbox.push_returning_evicted(Arc::new(3), at(3), 1);
        inbox.resume_through(at(1));
        let taken: Vec<_> = std::iter::from_fn(|| inbox.try_take()).collect();
        assert_eq!(taken, [Err(RecvError::Lagged(1)), Ok((Arc::new(3), at(3)))]);
    }

    #[test]
    fn positions_travel_with_messages_and_two_gaps_merge() {
        let inbox = Inbox::new();
        let at = |seq| Position::new(1, seq);
        inbox.push_returning_evicted(Arc::new(1), at(1), 8);
        inbox.signal_gap(&Arc::new(Gap::Trimmed {
            first: at(2).unwrap(),
            missing: 3,
        }));
        inbox.push_returning_evicted(Arc::new(2), at(5), 8);
        inbox.signal_gap(&Arc::new(Gap::Trimmed {
            first: at(6).unwrap(),
            missing: 2,
        }));
        let taken: Vec<_> = std::iter::from_fn(|| inbox.try_take()).collect();
        assert_eq!(
            taken,
            [
                Ok((Arc::new(1), at(1))),
                Ok((Arc::new(2), at(5))),
                Err(RecvError::Gap(Gap::Trimmed {
                    first: at(2).unwrap(),
                    missing: 5
                })),
            ]
        );
    }
}
