//! The bounded queue behind one subscription.
//!
//! Publishers push, the one subscriber pops. A full queue drops its *oldest*
//! message and counts it, so a slow subscriber never blocks a publisher and
//! never loses a message without being told: the next receive reports the
//! count, then the subscriber continues with the newest messages.
//!
//! Invariant: for every inbox, messages popped + misses reported + misses
//! still pending + messages still queued == messages pushed (while fewer
//! than 2^62 misses are pending, where their count saturates).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::RecvError;

/// 64 bytes: the queue's capacity is the server's, passed to each push, and
/// the two flags share a word with the count of misses.
pub(crate) struct Inbox<M> {
    state: Mutex<State<M>>,
}

struct State<M> {
    /// Grows on demand up to the capacity: an idle subscription allocates
    /// no queue at all.
    queue: VecDeque<Arc<M>>,
    /// Messages dropped for lack of room and not yet reported (the low bits,
    /// [`MISSED`]), and the flags [`GAP`] and [`CLOSED`].
    word: u64,
    waker: Option<Waker>,
}

/// In [`State::word`]: the transport lost messages (a reconnect); not yet
/// reported.
const GAP: u64 = 1 << 63;
/// In [`State::word`]: the server is gone: nothing more will arrive once
/// the queue is empty.
const CLOSED: u64 = 1 << 62;
/// In [`State::word`]: the misses not yet reported. The count saturates at
/// 2^62 - 1, a century of drops at a billion a second without one receive.
const MISSED: u64 = CLOSED - 1;

/// What a push did, for the server's counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pushed {
    Queued,
    /// Queued after dropping the oldest queued message.
    QueuedDroppingOldest,
    /// The inbox is closed.
    Refused,
}

impl<M> Inbox<M> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                word: 0,
                waker: None,
            }),
        }
    }

    /// Queues `message`, first dropping the oldest message if `capacity`
    /// (at least 1) are queued already, and wakes a waiting subscriber.
    // The registry uses `push_returning_evicted`; this is for the unit tests
    // and for the bench report's `floor`, which compiles this file.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn push(&self, message: Arc<M>, capacity: usize) -> Pushed {
        self.push_returning_evicted(message, capacity).0
    }

    /// As [`push`](Self::push), handing back the message that was dropped
    /// to make room, so that the caller can release it after its own locks:
    /// it may be the last reference, and its destructor is the user's code.
    pub(crate) fn push_returning_evicted(
        &self,
        message: Arc<M>,
        capacity: usize,
    ) -> (Pushed, Option<Arc<M>>) {
        let (waker, evicted, pushed) = {
            let mut state = self.state.lock();
            if state.word & CLOSED != 0 {
                return (Pushed::Refused, None);
            }
            let evicted = if state.queue.len() >= capacity.max(1) {
                if state.word & MISSED != MISSED {
                    state.word += 1;
                }
                state.queue.pop_front()
            } else {
                None
            };
            state.queue.push_back(message);
            let pushed = if evicted.is_some() {
                Pushed::QueuedDroppingOldest
            } else {
                Pushed::Queued
            };
            (state.waker.take(), evicted, pushed)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        (pushed, evicted)
    }

    /// Marks a gap: the next receive reports [`RecvError::Gap`].
    pub(crate) fn signal_gap(&self) {
        let waker = {
            let mut state = self.state.lock();
            state.word |= GAP;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Closes the inbox: queued messages can still be received, then
    /// [`RecvError::Closed`].
    pub(crate) fn close(&self) {
        let waker = {
            let mut state = self.state.lock();
            state.word |= CLOSED;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes the next item: a gap, then a lag report, then a message. Reports
    /// come first because they concern messages older than any still queued.
    pub(crate) fn try_take(&self) -> Option<Result<Arc<M>, RecvError>> {
        let mut state = self.state.lock();
        state.take()
    }

    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<Arc<M>, RecvError>> {
        let mut state = self.state.lock();
        if let Some(item) = state.take() {
            return Poll::Ready(item);
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().queue.len()
    }
}

impl<M> State<M> {
    fn take(&mut self) -> Option<Result<Arc<M>, RecvError>> {
        if self.word & GAP != 0 {
            self.word &= !GAP;
            return Some(Err(RecvError::Gap));
        }
        let missed = self.word & MISSED;
        if missed > 0 {
            self.word &= !MISSED;
            return Some(Err(RecvError::Lagged(missed)));
        }
        if let Some(message) = self.queue.pop_front() {
            return Some(Ok(message));
        }
        (self.word & CLOSED != 0).then_some(Err(RecvError::Closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_oldest_and_reports_the_count_first() {
        let inbox = Inbox::new();
        let pushed: Vec<_> = (0..5).map(|n| inbox.push(Arc::new(n), 2)).collect();
        assert_eq!(pushed[..2], [Pushed::Queued, Pushed::Queued]);
        assert!(pushed[2..]
            .iter()
            .all(|p| *p == Pushed::QueuedDroppingOldest));
        assert_eq!(inbox.try_take(), Some(Err(RecvError::Lagged(3))));
        assert_eq!(inbox.try_take(), Some(Ok(Arc::new(3))));
        assert_eq!(inbox.try_take(), Some(Ok(Arc::new(4))));
        assert_eq!(inbox.try_take(), None);
    }

    #[test]
    fn an_inbox_is_64_bytes() {
        assert_eq!(std::mem::size_of::<Inbox<u32>>(), 64);
    }

    #[test]
    fn gap_comes_before_lag_and_closed_comes_last() {
        let inbox = Inbox::new();
        inbox.push(Arc::new(1), 1);
        inbox.push(Arc::new(2), 1);
        inbox.signal_gap();
        inbox.close();
        assert_eq!(inbox.push(Arc::new(3), 1), Pushed::Refused);
        assert_eq!(inbox.try_take(), Some(Err(RecvError::Gap)));
        assert_eq!(inbox.try_take(), Some(Err(RecvError::Lagged(1))));
        assert_eq!(inbox.try_take(), Some(Ok(Arc::new(2))));
        assert_eq!(inbox.try_take(), Some(Err(RecvError::Closed)));
    }
}
