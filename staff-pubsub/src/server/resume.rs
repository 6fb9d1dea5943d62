//! Resuming from a log position: `subscribe_since`, its replay, and the
//! pages a long replay is read in.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use super::core::Core;
use super::handle::PubSub;
use super::subscription::Subscription;
use crate::error::{Error, RecvError, TransportError};
use crate::inbox::{Inbox, Taken};
use crate::loom::sync::atomic::Ordering;
use crate::loom::sync::{Arc, Mutex, Weak};
use crate::position::{Gap, Position};
use crate::topic::Topic;
use crate::transport::{BoxFuture, LogHead, Replay};

impl<M: Send + Sync + 'static> PubSub<M> {
    /// Subscribes to `topics` and first replays what was broadcast to them
    /// after log position `after`: for a consumer that stored the position
    /// of the last message it handled ([`Subscription::recv_with_position`])
    /// and resumes after a restart, or a browser reconnecting with its
    /// `Last-Event-ID` (the SSE bridge calls this). Needs a durable
    /// transport on this server.
    ///
    /// The subscription then receives, in log order and each once (per
    /// reached topic, the delivery rule): the broadcasts to `topics` after
    /// `after` that this node had read when the call was made, then what
    /// it reads after, live. When the replay cannot be whole, a
    /// [`RecvError::Gap`] comes first, saying why: [`Gap::Trimmed`] (what
    /// was after `after` is partly gone from the log; the rest is
    /// replayed), [`Gap::LogLost`] (`after` is of another log: the log was
    /// lost since, or the position is not of this namespace; nothing is
    /// replayed), or [`Gap::ReplayLimit`] (more log entries than the
    /// transport's replay limit are after `after`; nothing is replayed).
    /// A position ahead of this node (a consumer that read another node's
    /// log further) replays nothing and skips the live messages up to it,
    /// unless the engine's log ends before it (the engine lost its last
    /// writes, and their sequence numbers will name other entries): then
    /// [`Gap::LogLost`] comes first and nothing is skipped.
    ///
    /// **Memory: the replay is paged as it is read**, when the transport
    /// says its replay limit ([`DurableLog::replay_limit`]). The range is
    /// then read from the log in pages of at most the subscription's
    /// capacity ([`Builder::capacity`](crate::Builder::capacity)) of log entries: the first before
    /// this returns, each next one once the subscription has received the
    /// last (through [`Subscription::recv`], `try_recv`, their
    /// `_with_position` forms or the stream). A resumed subscription that
    /// is not read holds at most one page of replayed messages besides its
    /// queue (whose live messages wait behind the replay, and report
    /// [`RecvError::Lagged`](crate::RecvError::Lagged) if it overflows, as any queue does,
    /// counting exactly the messages that will not come: a dropped live
    /// copy of an entry the replay delivers is not counted): what a
    /// stalled live subscription costs, whatever the range. A paged replay
    /// keeps every guarantee above, and, because it reads the log while
    /// the consumer reads:
    /// - entries trimmed from the log before their page was read (the
    ///   consumer read slower than the retention keeps entries) come as one
    ///   [`Gap::Trimmed`] where they were, after the messages before them
    ///   and before those after; a log lost meanwhile comes as
    ///   [`Gap::LogLost`], and the replay ends there;
    /// - a page the log does not give in three attempts in a row (each
    ///   bounded by the transport's own timeout) ends the replay with
    ///   [`Gap::Disconnected`]: the rest of the range is not delivered, and
    ///   the live messages after it follow.
    ///
    /// The Redis and NATS transports say it. A transport that does not
    /// (the default) is asked for the whole range at once: the
    /// subscription then holds all of it, up to the transport's replay
    /// limit of entries, until it is received.
    ///
    /// [`DurableLog::replay_limit`]: crate::transport::DurableLog::replay_limit
    ///
    /// # Errors
    ///
    /// [`Error::NotDurable`] without a durable transport on this server;
    /// [`Error::Replay`] when the log could not be read (the subscription
    /// is dropped); as [`subscribe_many`](Self::subscribe_many) otherwise.
    pub async fn subscribe_since(
        &self,
        topics: impl IntoIterator<Item = Topic>,
        after: Position,
    ) -> Result<Subscription<M>, Error> {
        let core = &self.core;
        let Some(source) = core.log_source() else {
            return Err(Error::NotDurable);
        };
        // A resuming inbox: what it drops for lack of room while the
        // replay is read is a miss only if the replay does not have it.
        let mut subscription = self.subscribe_with(topics, Inbox::resuming())?;
        // Read after subscribing: what the transport dispatched up to here
        // may or may not have reached the new queue; what it dispatches
        // later does. Replaying up to the head and skipping queued copies
        // up to it is exactly once. The fence pairs with the one in
        // `dispatch_wire`: the registry's presence check is a relaxed load
        // before any lock, so without both fences the reader could miss the
        // new subscriber while this load misses the reader's new head.
        crate::loom::sync::atomic::fence(Ordering::SeqCst);
        let Some((log, seq)) = source.read_head(core) else {
            return Err(Error::NotDurable);
        };
        let mut resume = Resume {
            replayed: VecDeque::new(),
            through: Some(after),
            rest: None,
        };
        // The replay's end, at once (see `Inbox::resume_through`): what the
        // queue drops from here is a miss unless the replay has it.
        if after.log() != log {
            subscription.inbox.resume_through(None);
        } else if after.seq() > seq {
            subscription.inbox.resume_maybe_through(after);
        } else {
            subscription
                .inbox
                .resume_through(Some(Position::new(log, seq).unwrap_or(after)));
        }
        if after.log() != log {
            resume.replayed.push_back(Err(RecvError::Gap(Gap::LogLost)));
            resume.through = None;
        } else if after.seq() > seq {
            // Ahead of this node: a node that has not read as far yet (the
            // position came from another node), or a position the engine
            // lost with its last writes. The engine tells which.
            let lost = match source.log_head().await.map_err(Error::Replay)? {
                LogHead::Unknown => false,
                LogHead::Missing => true,
                LogHead::At { log, seq } => log != after.log() || seq < after.seq(),
            };
            if lost {
                // Sequence numbers past the loss name other entries now:
                // skip nothing.
                resume.replayed.push_back(Err(RecvError::Gap(Gap::LogLost)));
                resume.through = None;
            }
        } else if let Some(head) = Position::new(log, seq).filter(|_| after.seq() < seq) {
            // `after` is before `head`, in the same log.
            let entries = seq - after.seq();
            resume.through = Some(head);
            match source.replay_limit() {
                None => {
                    // The transport does not page: the whole range.
                    let replay = source
                        .replay(after, head, subscription.topics())
                        .await
                        .map_err(Error::Replay)?;
                    resume.take_page(replay);
                }
                Some(limit) if entries > limit => {
                    resume
                        .replayed
                        .push_back(Err(RecvError::Gap(Gap::ReplayLimit { missing: entries })));
                }
                Some(_) => {
                    // The first page now (so that an engine that does not
                    // answer fails the call), the others as they are read.
                    let mut rest = Paging {
                        after,
                        end: head,
                        topics: subscription.topics().into(),
                        page: u64::try_from(core.capacity).unwrap_or(u64::MAX),
                        fetching: Mutex::new(None),
                        failures: 0,
                        fetch: fetch_page::<M>,
                    };
                    let through = rest.next_through();
                    let replay = source
                        .replay(after, through, &rest.topics)
                        .await
                        .map_err(Error::Replay)?;
                    rest.after = through;
                    if resume.take_page(replay) && through != head {
                        resume.rest = Some(Box::new(rest));
                    }
                }
            }
        }
        // The end is known now (the engine said whether it lost its writes).
        subscription.inbox.resume_through(resume.through);
        tracing::debug!(
            %after,
            replayed = resume.replayed.len(),
            paged = resume.rest.is_some(),
            "resumed a subscription"
        );
        subscription.topics.resume(resume);
        Ok(subscription)
    }

    /// The position in the durable transport's log this node has read up
    /// to: the last entry it delivered (or skipped: an entry for no
    /// subscriber here). `None` without a durable transport, or while the
    /// log is empty.
    #[must_use]
    pub fn log_position(&self) -> Option<Position> {
        let (log, seq) = self.core.log_source()?.read_head(&self.core)?;
        Position::new(log, seq)
    }
}

/// What a resumed subscription delivers before its queue.
///
/// Invariant: `replayed` holds the entries of at most one page of the
/// replay (at most the subscription's capacity of log entries, each with
/// its copies, sharing one `Arc`) while the transport pages (`rest`); the
/// next page is fetched only once `replayed` is empty.
pub(super) struct Resume<M> {
    /// A gap, then the replayed messages of the page being read, in log
    /// order.
    pub(super) replayed: VecDeque<Taken<M>>,
    /// Queued messages of this log up to here were replayed (or were
    /// already read by the consumer): skipped. `None`: nothing is.
    pub(super) through: Option<Position>,
    /// The part of the range not fetched yet, when the transport pages.
    pub(super) rest: Option<Box<Paging<M>>>,
}

impl<M> Resume<M> {
    /// Queues `gap`, merged into the gap queued last if nothing came
    /// after it (one loss that spans pages is one gap).
    pub(super) fn push_gap(&mut self, gap: Gap) {
        match self.replayed.back_mut() {
            Some(Err(RecvError::Gap(earlier))) => *earlier = earlier.merge(gap),
            _ => self.replayed.push_back(Err(RecvError::Gap(gap))),
        }
    }

    /// Queues a page's gap and entries (each with its copies: one per
    /// reached topic, as live delivery queues). Returns whether the replay
    /// goes on after it: not after a gap that ends it (the log was lost,
    /// the range is past the replay limit).
    pub(super) fn take_page(&mut self, replay: Replay<M>) -> bool {
        let ends = matches!(replay.gap, Some(Gap::LogLost | Gap::ReplayLimit { .. }));
        if let Some(gap) = replay.gap {
            self.push_gap(gap);
        }
        for (position, message, copies) in replay.into_copies() {
            let message = Arc::new(message);
            for _ in 0..copies {
                self.replayed
                    .push_back(Ok((Arc::clone(&message), Some(position))));
            }
        }
        !ends
    }
}

/// A paged replay's state: the range after `after` through `end` is still
/// to be fetched.
pub(super) struct Paging<M> {
    /// Fetched through here.
    after: Position,
    /// The end of the range: the node's head when the subscription was
    /// made.
    pub(super) end: Position,
    /// The topics replayed: the subscription's when it was made.
    pub(super) topics: Arc<[Topic]>,
    /// Log entries per page: the subscription's capacity.
    page: u64,
    /// The page being fetched, and the end of its range. In a mutex only
    /// to keep `Subscription` `Sync` (the future is not): it is reached
    /// through `&mut` alone, never locked.
    fetching: Mutex<Option<(Position, Fetch<M>)>>,
    /// Fetches that failed in a row.
    failures: u32,
    /// Starts fetching a page: [`fetch_page`], for this `M`.
    fetch: FetchPage<M>,
}

/// See [`fetch_page`].
type FetchPage<M> = fn(&Weak<Core<M>>, Position, Position, Arc<[Topic]>) -> Option<Fetch<M>>;

/// Fetches the entries after `after` through `through` that list one of
/// `topics` from the server's log: `None` when the server is gone. A plain
/// function, stored in [`Paging`], so that the subscription's methods need
/// no bounds on `M`.
fn fetch_page<M: Send + Sync + 'static>(
    core: &Weak<Core<M>>,
    after: Position,
    through: Position,
    topics: Arc<[Topic]>,
) -> Option<Fetch<M>> {
    let core = core.upgrade()?;
    Some(Box::pin(async move {
        match core.log_source() {
            Some(source) => source.replay(after, through, &topics).await,
            None => Err(TransportError::msg("the server has no durable log now")),
        }
    }))
}

/// A page on its way from the log.
type Fetch<M> = BoxFuture<'static, Result<Replay<M>, TransportError>>;

/// A paged replay ends with [`Gap::Disconnected`] after this many failed
/// fetches of one page in a row (each bounded by the transport's own
/// timeout).
const PAGE_ATTEMPTS: u32 = 3;

impl<M> Paging<M> {
    /// The end of the next page's range.
    fn next_through(&self) -> Position {
        let through = self
            .after
            .seq()
            .saturating_add(self.page)
            .min(self.end.seq());
        // Between `after` and `end`, both of one log: a position.
        Position::new(self.after.log(), through).unwrap_or(self.end)
    }
}

impl<M> Paging<M> {
    /// Polls for the next page: `Ready(Some)` with its range's end and the
    /// replay, `Ready(None)` when the replay ends here (the server is gone,
    /// or the log does not answer: a gap, then the queue).
    pub(super) fn poll_page(
        &mut self,
        core: &Weak<Core<M>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Position, Replay<M>), Gap>> {
        loop {
            if self.fetching.get_mut().is_none() {
                let through = self.next_through();
                let Some(fetch) = (self.fetch)(core, self.after, through, Arc::clone(&self.topics))
                else {
                    // The server is gone: nothing more to read.
                    return Poll::Ready(Err(Gap::Disconnected));
                };
                *self.fetching.get_mut() = Some((through, fetch));
            }
            let fetching = self.fetching.get_mut();
            let Some((through, fetch)) = fetching.as_mut() else {
                continue;
            };
            let through = *through;
            let outcome = std::task::ready!(fetch.as_mut().poll(cx));
            *fetching = None;
            match outcome {
                Ok(replay) => {
                    self.failures = 0;
                    self.after = through;
                    return Poll::Ready(Ok((through, replay)));
                }
                Err(error) => {
                    self.failures += 1;
                    tracing::warn!(
                        %error,
                        after = %self.after,
                        attempt = self.failures,
                        "a resumed subscription could not read its next page of the log"
                    );
                    if self.failures >= PAGE_ATTEMPTS {
                        return Poll::Ready(Err(Gap::Disconnected));
                    }
                }
            }
        }
    }
}
