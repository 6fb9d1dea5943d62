//! [`Subscription`]: receiving, the topics it has, leaving.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::core::Core;
use super::resume::Resume;
use crate::error::{Error, RecvError, TryRecvError};
use crate::inbox::{Inbox, Taken};
use crate::loom::sync::atomic::Ordering;
use crate::loom::sync::{Arc, Weak};
use crate::position::Position;
use crate::topic::Topic;

/// A subscription to one or more topics: a queue of the messages broadcast
/// to them. Dropping it unsubscribes.
///
/// Its topics can change while it lives, into the same queue:
/// [`add_topic`](Self::add_topic) and [`remove_topic`](Self::remove_topic)
/// (a page that subscribes to more topics, or fewer, as its user
/// navigates).
///
/// Receive with [`recv`](Self::recv), [`try_recv`](Self::try_recv), or as a
/// [`Stream`](futures_core::Stream) of `Result<Arc<M>, RecvError>` that ends
/// when the server is gone.
pub struct Subscription<M> {
    pub(super) inbox: Arc<Inbox<M>>,
    pub(super) core: Weak<Core<M>>,
    pub(super) topics: Held<M>,
}

/// A subscription's topics and, while it resumes, its replay.
///
/// One field for both, and not a `resume: Option<Box<_>>` beside the
/// topics: `Resuming` takes a value of the niche `Topics` leaves in its
/// `Topic`'s `Option<Uuid>` tag, so that `Held` is as large as `Topics`
/// (40 bytes) and every subscription 8 bytes smaller, and telling a
/// resuming subscription from the others on the receive path is one
/// compare of that tag, as the `Option`'s null check was.
pub(super) enum Held<M> {
    /// Not resuming (any more): the queue alone is read.
    Live(Topics),
    /// Made by [`PubSub::subscribe_since`](crate::PubSub::subscribe_since):
    /// back to `Live` once the queue is past the replay.
    Resuming(Box<Resuming<M>>),
}

// The niche holds `Resuming`: a `Held` is no larger than its `Topics`.
const _: () = assert!(std::mem::size_of::<Held<()>>() == std::mem::size_of::<Topics>());

/// A resumed subscription's topics and replay.
pub(super) struct Resuming<M> {
    topics: Topics,
    /// What to deliver before the queue, and the queued copies to skip.
    resume: Resume<M>,
}

impl<M> Held<M> {
    /// Starts resuming with `resume`.
    pub(super) fn resume(&mut self, resume: Resume<M>) {
        let topics = std::mem::replace(self.topics_mut(), Topics::none());
        *self = Self::Resuming(Box::new(Resuming { topics, resume }));
    }

    /// Back to `Live`, the replay dropped.
    fn end_resume(&mut self) {
        if let Self::Resuming(resuming) = self {
            *self = Self::Live(std::mem::replace(&mut resuming.topics, Topics::none()));
        }
    }

    fn is_resuming(&self) -> bool {
        matches!(self, Self::Resuming(_))
    }

    fn resume_mut(&mut self) -> Option<&mut Resume<M>> {
        match self {
            Self::Live(_) => None,
            Self::Resuming(resuming) => Some(&mut resuming.resume),
        }
    }

    fn topics(&self) -> &Topics {
        match self {
            Self::Live(topics) => topics,
            Self::Resuming(resuming) => &resuming.topics,
        }
    }

    fn topics_mut(&mut self) -> &mut Topics {
        match self {
            Self::Live(topics) => topics,
            Self::Resuming(resuming) => &mut resuming.topics,
        }
    }

    pub(super) fn as_slice(&self) -> &[Topic] {
        self.topics().as_slice()
    }
}

/// The topics of a subscription, distinct, in the order they were added:
/// one (the common case) inline, without an allocation; none or several in
/// a boxed slice. A boxed slice and not a `Vec`: it keeps the enum at 40
/// bytes (a `Vec` would make it 48, and every idle subscription 8 bytes
/// larger), and adding or removing a topic, which reallocates it, costs
/// O(n) anyway for the duplicate search.
#[derive(Debug)]
pub(super) enum Topics {
    One(Topic),
    Many(Box<[Topic]>),
}

impl Topics {
    pub(super) fn new(topics: impl IntoIterator<Item = Topic>) -> Self {
        let mut topics = topics.into_iter();
        match (topics.next(), topics.next()) {
            (Some(only), None) => Self::One(only),
            (None, _) => Self::Many(Box::default()),
            (Some(first), Some(second)) => {
                // A topic listed twice is one topic: one copy per broadcast.
                let mut distinct: Vec<Topic> = Vec::new();
                for topic in [first, second].into_iter().chain(topics) {
                    if !distinct.contains(&topic) {
                        distinct.push(topic);
                    }
                }
                match distinct.as_slice() {
                    [only] => Self::One(*only),
                    _ => Self::Many(distinct.into_boxed_slice()),
                }
            }
        }
    }

    /// No topic (allocates nothing).
    pub(super) fn none() -> Self {
        Self::Many(Box::default())
    }

    pub(super) fn as_slice(&self) -> &[Topic] {
        match self {
            Self::One(topic) => std::slice::from_ref(topic),
            Self::Many(topics) => topics,
        }
    }

    /// Adds `topic` at the end unless it is there; returns whether it was
    /// added.
    fn insert(&mut self, topic: Topic) -> bool {
        let topics = self.as_slice();
        if topics.contains(&topic) {
            return false;
        }
        *self = match topics {
            [] => Self::One(topic),
            _ => Self::Many(topics.iter().copied().chain([topic]).collect()),
        };
        true
    }

    /// Removes `topic`, keeping the others' order; returns whether it was
    /// there.
    fn remove(&mut self, topic: &Topic) -> bool {
        let topics = self.as_slice();
        let Some(at) = topics.iter().position(|held| held == topic) else {
            return false;
        };
        *self = match topics {
            [_] => Self::none(),
            [first, second] => Self::One(if at == 0 { *second } else { *first }),
            _ => Self::Many(
                topics
                    .iter()
                    .enumerate()
                    .filter_map(|(index, held)| (index != at).then_some(*held))
                    .collect(),
            ),
        };
        true
    }
}

impl<M> std::fmt::Debug for Subscription<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topics", &self.topics.as_slice())
            .field("queued", &self.inbox.len())
            .finish()
    }
}

impl<M> Subscription<M> {
    /// The topics this subscription receives, each once, in the order they
    /// were subscribed or added. Empty once every topic was removed, and
    /// after [`unsubscribe`](Self::unsubscribe).
    #[must_use]
    pub fn topics(&self) -> &[Topic] {
        self.topics.as_slice()
    }

    /// Starts receiving the broadcasts to `topic` too, into this
    /// subscription's one queue. Returns `Ok(true)` if the topic was added
    /// and `Ok(false)` if the subscription had it already: then nothing
    /// changes, and a broadcast reaching `topic` still queues one copy for
    /// it (the delivery rule is one copy per reached topic per
    /// subscription).
    ///
    /// The messages already queued stay, in order, and nothing broadcast
    /// before is replayed. Every broadcast that starts after this returns
    /// reaches the subscription through `topic`; one running during the
    /// call may or may not. It is still one subscription:
    /// [`Stats::subscriptions`](crate::Stats::subscriptions) does not change and
    /// [`Builder::max_subscriptions`](crate::Builder::max_subscriptions) does not apply.
    ///
    /// ```
    /// use staff_pubsub::{Error, PubSub, Topic};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// const ROOMS: Topic = Topic::new("chat:rooms");
    /// const USERS: Topic = Topic::new("chat:users");
    /// let pubsub = PubSub::<&str>::new();
    /// let mut subscription = pubsub.subscribe(ROOMS)?;
    ///
    /// assert!(subscription.add_topic(USERS)?);
    /// assert!(!subscription.add_topic(USERS)?); // had it: still one copy
    /// assert_eq!(subscription.topics(), [ROOMS, USERS]);
    /// pubsub.broadcast([USERS], "joined").await?;
    /// assert_eq!(*subscription.recv().await.unwrap(), "joined");
    /// assert!(subscription.is_empty());
    ///
    /// subscription.unsubscribe();
    /// assert!(matches!(subscription.add_topic(USERS), Err(Error::SubscriptionClosed)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::SubscriptionClosed`] after [`unsubscribe`](Self::unsubscribe)
    /// or once the server is gone; the subscription is unchanged.
    pub fn add_topic(&mut self, topic: Topic) -> Result<bool, Error> {
        let Some(core) = self.core.upgrade() else {
            return Err(Error::SubscriptionClosed);
        };
        let parked = self.topics.as_slice().is_empty();
        if let [only] = self.topics.as_slice() {
            if *only != topic && self.inbox.reads_ring() {
                // A ring reader is on its one topic only: it gets a queue
                // of its own first.
                core.registry.settle(only, &self.inbox);
            }
        }
        if !self.topics.topics_mut().insert(topic) {
            return Ok(false);
        }
        if core.registry.insert(topic, Arc::clone(&self.inbox), false) {
            core.interest_changed(topic, true);
        }
        if parked {
            core.registry.unpark(&self.inbox);
        }
        Ok(true)
    }

    /// Stops receiving the broadcasts to `topic`; returns whether the
    /// subscription had it (`false`: nothing changes).
    ///
    /// The messages already queued stay and are received as usual, those
    /// that came through `topic` included (a queued message does not
    /// record its topic). A broadcast to `topic` running during the call
    /// may still queue its copy; a broadcast that starts after this returns
    /// does not reach the subscription through `topic` (it still does
    /// through its other topics). If this was the topic's last
    /// subscription on this node, the topic is removed from the server
    /// ([`Stats::topics`](crate::Stats::topics), [`PubSub::subscriber_count`](crate::PubSub::subscriber_count)).
    ///
    /// Removing the last topic leaves the subscription open, on no topic:
    /// nothing new arrives until [`add_topic`](Self::add_topic), and it
    /// still counts in [`Stats::subscriptions`](crate::Stats::subscriptions). Once the server is gone,
    /// the topic is only forgotten.
    ///
    /// ```
    /// use staff_pubsub::{PubSub, Topic};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), staff_pubsub::Error> {
    /// const ROOMS: Topic = Topic::new("chat:rooms");
    /// const USERS: Topic = Topic::new("chat:users");
    /// let pubsub = PubSub::<&str>::new();
    /// let mut subscription = pubsub.subscribe_many([ROOMS, USERS])?;
    /// pubsub.broadcast([USERS], "queued").await?;
    ///
    /// assert!(subscription.remove_topic(&USERS));
    /// assert!(!subscription.remove_topic(&USERS));
    /// assert_eq!(pubsub.subscriber_count(&USERS), 0); // the topic is gone
    /// pubsub.broadcast([USERS], "not received").await?;
    /// assert_eq!(*subscription.recv().await.unwrap(), "queued");
    /// assert!(subscription.is_empty());
    ///
    /// assert!(subscription.remove_topic(&ROOMS)); // on no topic, still open
    /// assert_eq!((pubsub.stats().topics, pubsub.stats().subscriptions), (0, 1));
    /// assert!(subscription.add_topic(ROOMS)?);
    /// # Ok(()) }
    /// ```
    pub fn remove_topic(&mut self, topic: &Topic) -> bool {
        if !self.topics.topics_mut().remove(topic) {
            return false;
        }
        if let Some(core) = self.core.upgrade() {
            if core.registry.remove(topic, &self.inbox) {
                core.interest_changed(*topic, false);
            }
            if self.topics.as_slice().is_empty() {
                // Parked, so that the server's end still closes it.
                core.registry.park(Arc::clone(&self.inbox));
            }
        }
        true
    }

    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`](crate::RecvError::Lagged) after messages were dropped from a full queue,
    /// [`RecvError::Gap`] after the transport lost messages; receiving again
    /// continues with newer messages. [`RecvError::Closed`] once the server
    /// is gone and the queue is empty.
    pub async fn recv(&mut self) -> Result<Arc<M>, RecvError> {
        poll_fn(|cx| self.poll_message(cx)).await
    }

    /// The next message without its position: straight from the queue
    /// unless the subscription is resuming.
    #[inline]
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<M>, RecvError>> {
        if !self.topics.is_resuming() {
            return self.inbox.poll_take_message(cx);
        }
        self.poll_entry(cx)
            .map(|item| item.map(|(message, _)| message))
    }

    /// As [`recv`](Self::recv), with the message's position in the log
    /// when the server's transport is durable (`None` otherwise, and for
    /// a message sent with [`PubSub::local_broadcast`](crate::PubSub::local_broadcast) or, on this node,
    /// [`PubSub::broadcast_from`](crate::PubSub::broadcast_from), which do not go through the log). Store
    /// the position of the last message handled to resume after it with
    /// [`PubSub::subscribe_since`](crate::PubSub::subscribe_since).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub async fn recv_with_position(&mut self) -> Result<(Arc<M>, Option<Position>), RecvError> {
        poll_fn(|cx| self.poll_entry(cx)).await
    }

    /// As [`try_recv`](Self::try_recv), with the message's position, as
    /// [`recv_with_position`](Self::recv_with_position) gives it.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_with_position(&mut self) -> Result<(Arc<M>, Option<Position>), TryRecvError> {
        // A paged replay's next page is polled once, without a waker: it
        // is `Empty` until the page has come.
        let mut cx = Context::from_waker(Waker::noop());
        match self.take_entry(&mut cx, |inbox, _| inbox.try_take()) {
            Some(item) => item.map_err(TryRecvError::from),
            None => Err(TryRecvError::Empty),
        }
    }

    fn poll_entry(&mut self, cx: &mut Context<'_>) -> Poll<Taken<M>> {
        // `take_entry` returns `None` only when the queue is pending, and
        // the queue has then registered the waker.
        match self.take_entry(cx, |inbox, cx| match inbox.poll_take(cx) {
            Poll::Ready(item) => Some(item),
            Poll::Pending => None,
        }) {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        }
    }

    /// The next item: a resumed subscription's replay first (fetching its
    /// next page, when it is paged, once the last is read), then the
    /// queue, skipping the copies the replay covered. `None` when nothing
    /// is ready (`cx` is registered).
    fn take_entry(
        &mut self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&Inbox<M>, &mut Context<'_>) -> Option<Taken<M>>,
    ) -> Option<Taken<M>> {
        let Some(resume) = self.topics.resume_mut() else {
            return take(&self.inbox, cx);
        };
        loop {
            // The next page is fetched once the last is read, or when the
            // last was a gap alone (entries trimmed or the log lost while
            // the consumer read): a gap the next page begins with merges
            // into it, so that a loss is one gap however many pages it
            // spans.
            let rest = match resume.rest.as_deref_mut() {
                Some(rest) if resume.replayed.back().is_none_or(Result::is_err) => rest,
                _ => match resume.replayed.pop_front() {
                    Some(item) => return Some(item),
                    None => break,
                },
            };
            match rest.poll_page(&self.core, cx) {
                Poll::Pending => return None,
                Poll::Ready(Ok((through, replay))) => {
                    let last = through == rest.end;
                    if !resume.take_page(replay) || last {
                        resume.rest = None;
                    }
                }
                Poll::Ready(Err(gap)) => {
                    // The rest of the range is not replayed: told, then
                    // the queue (still skipping the range's copies).
                    resume.push_gap(gap);
                    resume.rest = None;
                }
            }
        }
        if resume.replayed.capacity() > 0 {
            // The replay is delivered: its buffer goes.
            resume.replayed = VecDeque::new();
        }
        loop {
            let item = take(&self.inbox, cx)?;
            if let Ok((_, Some(position))) = &item {
                let covered = resume.through.is_some_and(|through| {
                    position.log() == through.log() && position.seq() <= through.seq()
                });
                if covered {
                    continue;
                }
                // The queue holds log entries in log order: nothing after
                // this one is covered by the replay.
                self.topics.end_resume();
                self.inbox.end_resume();
            }
            return Some(item);
        }
    }

    /// Takes the next message if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing is queued; otherwise as
    /// [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Arc<M>, TryRecvError> {
        if !self.topics.is_resuming() {
            return match self.inbox.try_take_message() {
                Some(item) => item.map_err(TryRecvError::from),
                None => Err(TryRecvError::Empty),
            };
        }
        self.try_recv_with_position().map(|(message, _)| message)
    }

    /// The number of messages queued and not yet received (for a resumed
    /// subscription, the replayed ones read from the log so far, one page
    /// at most when the replay is paged, and the queued copies its replay
    /// covers until they are skipped).
    #[must_use]
    pub fn len(&self) -> usize {
        let replayed = match &self.topics {
            Held::Live(_) => 0,
            Held::Resuming(resuming) => resuming
                .resume
                .replayed
                .iter()
                .filter(|item| item.is_ok())
                .count(),
        };
        self.inbox.len() + replayed
    }

    /// Whether no message is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leaves every topic of the subscription. Messages already queued can
    /// still be received; after them, [`RecvError::Closed`]. Dropping the
    /// subscription leaves too.
    pub fn unsubscribe(&mut self) {
        // The topics only: a resumed subscription's replay is still read.
        let topics = std::mem::replace(self.topics.topics_mut(), Topics::none());
        // The weak handle is emptied too, so that this runs once.
        let core = std::mem::take(&mut self.core);
        self.inbox.close();
        let Some(core) = core.upgrade() else {
            return;
        };
        if topics.as_slice().is_empty() {
            // Every topic was removed: the inbox is parked.
            core.registry.unpark(&self.inbox);
        }
        for topic in topics.as_slice() {
            if core.registry.remove(topic, &self.inbox) {
                core.interest_changed(*topic, false);
            }
        }
        core.counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<M> Drop for Subscription<M> {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

impl<M> futures_core::Stream for Subscription<M> {
    type Item = Result<Arc<M>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // `Subscription` is `Unpin`.
        self.get_mut().poll_message(cx).map(|item| match item {
            Err(RecvError::Closed) => None,
            item => Some(item),
        })
    }
}
