//! The broadcast paths: delivery on this node (`dispatch`), the topic
//! list without repeats, sending to other nodes, and [`Broadcast`].

use std::cell::LazyCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::handle::PubSub;
use super::subscription::Subscription;
use crate::error::Error;
use crate::inbox::Inbox;
use crate::loom::sync::Arc;
use crate::registry::Tally;
use crate::topic::Topic;
use crate::transport::{BoxFuture, Mode};

impl<M: Send + Sync + 'static> PubSub<M> {
    /// Sends `message` to every subscriber of `topics`, on every node: one
    /// copy per reached topic per subscription.
    ///
    /// When this node's subscribers (and those of a linked server, see the
    /// README's "One bus per application") receive it depends on the mode
    /// (the README's "Guarantees in every mode" has the table):
    ///
    /// - **Live** (in process, Redis, NATS, Phoenix, and a server linked to
    ///   one of these): when `broadcast` is called, before the returned
    ///   future is first polled; the future sends it to other nodes, and
    ///   `Ok` then means the engine took it. In process the future is ready
    ///   at once with `Ok` and never fails. Dropping the future unpolled
    ///   skips the other nodes only: this node's subscribers have it, no
    ///   other node ever gets it.
    /// - **Durable** (`RedisConfig::durable`, `NatsConfig::durable`, and a
    ///   server linked to one): nothing is delivered at the call. The
    ///   future appends the message to the engine's log, and `Ok` means the
    ///   log holds it; every node, this one included, then delivers it from
    ///   the log, with its position. Dropping the future unpolled sends
    ///   nothing: nobody gets it.
    ///
    /// A topic listed more than once is one topic: every subscription, on
    /// this node (and a linked server's) and on every other node, in every
    /// mode (in process, Redis, NATS, durable or not, the Phoenix wire),
    /// receives one copy per *distinct* listed topic it has. So
    /// `broadcast([teams, teams], m)` gives a subscriber of `teams` one
    /// copy, and `broadcast([teams, team], m)` gives a subscription to both
    /// two (the delivery rule). Other nodes are sent the list without its
    /// repeats (the first of each, in the given order): one NATS subject
    /// or Phoenix frame per distinct topic, and one log entry listing each
    /// once. The check costs nothing when no topic of the list has a
    /// subscriber here, and a few comparisons of the topics' hashes (or of
    /// the topics, for a broadcast that goes to other nodes) otherwise; only
    /// a list with a repeat is copied.
    ///
    /// `topics` is anything that is a slice of topics: `&[Topic]`, an array,
    /// a `Vec<Topic>`, or the topic list of a generated function.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the engine did not take the message. Who has
    /// it then: live, this node's subscribers (they got it at the call);
    /// durable, nobody yet. Its [`outcome`](crate::TransportError::outcome)
    /// says whether it may still reach the others: with
    /// [`Outcome::NotSent`](crate::Outcome::NotSent) it never will (live:
    /// no other node; durable: no node, this one included); with
    /// [`Outcome::Unknown`](crate::Outcome::Unknown) it may, later, at most
    /// once per subscription and reached topic.
    pub fn broadcast<'a, T>(&'a self, topics: T, message: M) -> Broadcast<'a>
    where
        T: AsRef<[Topic]> + Send + 'a,
    {
        if self.core.is_durable() {
            return self.through_log(Listed::new(topics), message);
        }
        // The dispatch passes over repeated topics here, and the network
        // part sends the list without them.
        let shared = self.dispatch(topics.as_ref(), message, None, true).1;
        self.network(topics, shared)
    }

    /// A broadcast on a durable server: every node, this one included,
    /// delivers it from the log.
    fn through_log<'a, T>(&'a self, topics: Listed<T>, message: M) -> Broadcast<'a>
    where
        T: AsRef<[Topic]> + Send + 'a,
    {
        self.record(topics.as_ref(), Tally::default());
        Broadcast(Sending::Boxed(Box::pin(async move {
            self.publish(Mode::All, topics.as_ref(), &message).await
        })))
    }

    /// As [`broadcast`](Self::broadcast), but not to `from` (the sender's own
    /// subscription). A topic listed more than once is one topic, as there.
    ///
    /// This node's other subscribers receive it when `broadcast_from` is
    /// called in every mode, durable too: there it does not go through the
    /// log on this node (no position; other nodes deliver it from the log).
    /// So after an [`Error::Transport`], or with the future dropped
    /// unpolled, this node's other subscribers have it in every mode; the
    /// other nodes as with [`broadcast`](Self::broadcast).
    ///
    /// # Errors
    ///
    /// As [`broadcast`](Self::broadcast).
    pub fn broadcast_from<'a, T>(
        &'a self,
        from: &Subscription<M>,
        topics: T,
        message: M,
    ) -> Broadcast<'a>
    where
        T: AsRef<[Topic]> + Send + 'a,
    {
        let except = self.excluded(from);
        let shared = self
            .dispatch(topics.as_ref(), message, Some(except), true)
            .1;
        self.network(topics, shared)
    }

    /// `from`'s inbox, to be left out of a dispatch. If it reads a wide
    /// topic's ring of this server (where every reader has the one slot),
    /// it gets a queue of its own first.
    fn excluded<'s>(&self, from: &'s Subscription<M>) -> &'s Arc<Inbox<M>> {
        if std::ptr::eq(from.core.as_ptr(), Arc::as_ptr(&self.core)) && from.inbox.reads_ring() {
            for topic in from.topics.as_slice() {
                self.core.registry.settle(topic, &from.inbox);
            }
        }
        &from.inbox
    }

    /// As [`broadcast`](Self::broadcast), the future owning its handle on
    /// the server: what a generated function returns for a scope's server.
    pub(crate) fn into_broadcast<T>(
        self,
        topics: T,
        message: M,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static
    where
        T: AsRef<[Topic]> + Send + 'static,
    {
        let durable = self.core.is_durable();
        let shared = if durable {
            self.record(topics.as_ref(), Tally::default());
            Some(Arc::new(message))
        } else {
            self.dispatch(topics.as_ref(), message, None, true).1
        };
        let mode = if durable {
            Mode::All
        } else {
            Mode::ExceptOrigin
        };
        async move {
            match shared {
                None => Ok(()),
                Some(message) => {
                    let topics = Listed::new(topics);
                    self.publish(mode, topics.as_ref(), &message).await
                }
            }
        }
    }

    /// The other nodes' part of a broadcast already dispatched here: a
    /// future only when there is a message for the network.
    ///
    /// Other nodes are sent `topics` without repeats ([`Listed`]): the
    /// list is checked here, once there is a message to send.
    fn network<'a, T>(&'a self, topics: T, shared: Option<Arc<M>>) -> Broadcast<'a>
    where
        T: AsRef<[Topic]> + Send + 'a,
    {
        match shared {
            None => Broadcast(Sending::Nothing),
            Some(message) => Broadcast(Sending::Boxed(Box::pin(async move {
                let topics = Listed::new(topics);
                self.publish(Mode::ExceptOrigin, topics.as_ref(), &message)
                    .await
            }))),
        }
    }

    /// Sends `message` to this node's subscribers only. Returns the number of
    /// copies queued. A topic listed more than once is one topic, as with
    /// [`broadcast`](Self::broadcast).
    pub fn local_broadcast(&self, topics: &[Topic], message: M) -> u64 {
        self.dispatch(topics, message, None, false).0
    }

    /// As [`local_broadcast`](Self::local_broadcast), but not to `from`.
    pub fn local_broadcast_from(
        &self,
        from: &Subscription<M>,
        topics: &[Topic],
        message: M,
    ) -> u64 {
        let except = self.excluded(from);
        self.dispatch(topics, message, Some(except), false).0
    }

    /// Sends `message` to the subscribers of `topics` on one node only.
    /// To this node's own name it is a [`local_broadcast`](Self::local_broadcast)
    /// (in durable mode too: not through the log, no position); to another
    /// node, a durable transport carries it through the log, and only that
    /// node delivers it. A topic listed more than once is one topic, as with
    /// [`broadcast`](Self::broadcast): the node is sent each once.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownNode`] if `node` is another node and the server has no
    /// transport; [`Error::Transport`] if the transport could not send it.
    pub async fn direct_broadcast(
        &self,
        node: &str,
        topics: &[Topic],
        message: M,
    ) -> Result<(), Error> {
        if node == self.node_name() {
            self.local_broadcast(topics, message);
            return Ok(());
        }
        let topics = Listed::new(topics);
        let topics = topics.as_ref();
        let Some(upstream) = self.core.upstream() else {
            return Err(Error::UnknownNode {
                node: node.to_owned(),
            });
        };
        self.core.counters.record_broadcast(Tally::default());
        upstream
            .publish(&self.core, Mode::Only(node), topics, &message)
            .await
    }
}

impl<M: Send + Sync + 'static> PubSub<M> {
    /// Queues `message` for this node's subscribers of `topics` but
    /// `except` (and the linked server's), each distinct topic once, and
    /// returns the number of copies queued here and, when `for_network`
    /// and it must also go to other nodes, the shared message.
    ///
    /// A list that repeats a topic is dispatched without its repeats; the
    /// callers that send to other nodes send the same list ([`Listed`]).
    ///
    /// Without a transport or a linked server, the message is moved into
    /// its one `Arc` when the first subscriber is found: a broadcast that
    /// reaches nobody allocates nothing, and does not look for repeats
    /// either; one that reaches a subscriber compares the topics' hashes.
    fn dispatch(
        &self,
        topics: &[Topic],
        message: M,
        except: Option<&Arc<Inbox<M>>>,
        for_network: bool,
    ) -> (u64, Option<Arc<M>>) {
        let core = &*self.core;
        let peer = core.peer();
        let mut tally = Tally::default();
        if peer.is_none() && !(for_network && core.upstream().is_some()) {
            if topics.len() <= PROBED_TOPICS {
                // Hash each topic once: a broadcast that no topic of which
                // has a subscriber here ends before its message is touched.
                let mut hashes = [0_u64; PROBED_TOPICS];
                let mut any = false;
                for (hash, topic) in hashes.iter_mut().zip(topics) {
                    let (probed, present) = core.registry.probe(topic.as_key());
                    *hash = probed;
                    any |= present;
                }
                if !any {
                    self.record(topics, tally);
                    return (0, None);
                }
                // A repeated topic has a repeated hash: comparing the
                // hashes (a handful of words) finds any repeat, and only a
                // list with a repeated hash is compared in full, aside.
                if repeats_a_hash(hashes.get(..topics.len()).unwrap_or(&hashes))
                    && has_repeats(topics)
                {
                    return self.dispatch_here_without_repeats(topics, message, except);
                }
                let shared = LazyCell::new(move || Arc::new(message));
                for (hash, topic) in hashes.iter().zip(topics) {
                    core.registry.deliver_hashed(
                        *hash,
                        topic.as_key(),
                        || Arc::clone(&shared),
                        None,
                        except,
                        &mut tally,
                    );
                }
                self.record(topics, tally);
                return (tally.delivered, None);
            }
            if has_repeats(topics) {
                return self.dispatch_here_without_repeats(topics, message, except);
            }
            let shared = LazyCell::new(move || Arc::new(message));
            for topic in topics {
                core.registry.deliver(
                    topic.as_key(),
                    || Arc::clone(&shared),
                    None,
                    except,
                    &mut tally,
                );
            }
            self.record(topics, tally);
            return (tally.delivered, None);
        }
        let distinct: Box<[Topic]>;
        let topics = if has_repeats(topics) {
            distinct = without_repeats(topics);
            &*distinct
        } else {
            topics
        };
        let message = Arc::new(message);
        for topic in topics {
            core.registry.deliver(
                topic.as_key(),
                || Arc::clone(&message),
                None,
                except,
                &mut tally,
            );
        }
        self.record(topics, tally);
        if let Some(peer) = peer {
            peer.mirror(&mut topics.iter().map(Topic::as_key), &message, None);
        }
        (tally.delivered, for_network.then_some(message))
    }

    /// [`dispatch`](Self::dispatch) on this node alone (no linked server,
    /// nothing for the network) of a list that repeats a topic: of its
    /// topics each once. Out of the dispatch's way: no generated
    /// function's list comes here.
    #[cold]
    #[inline(never)]
    fn dispatch_here_without_repeats(
        &self,
        topics: &[Topic],
        message: M,
        except: Option<&Arc<Inbox<M>>>,
    ) -> (u64, Option<Arc<M>>) {
        let distinct = without_repeats(topics);
        // Distinct now: the dispatch finds no repeat in it. Without a
        // linked server it delivers on this node alone, whether or not for
        // the network (the message it returns then is dropped here); asked
        // as the broadcasts ask, so that the dispatch keeps one form.
        let (copies, _) = self.dispatch(&distinct, message, except, true);
        (copies, None)
    }

    fn record(&self, topics: &[Topic], tally: Tally) {
        self.core.counters.record_broadcast(tally);
        tracing::trace!(
            topics = topics.len(),
            delivered = tally.delivered,
            "broadcast"
        );
    }

    /// Sends to other nodes through this server's upstream, if it has one.
    async fn publish(&self, mode: Mode<'_>, topics: &[Topic], message: &M) -> Result<(), Error> {
        match self.core.upstream() {
            Some(upstream) => upstream.publish(&self.core, mode, topics, message).await,
            None => Ok(()),
        }
    }
}

/// Broadcasts to at most this many topics (every generated route) are
/// probed for subscribers before their message is shared.
const PROBED_TOPICS: usize = 8;

/// A broadcast's topics as sent to other nodes: the caller's list when no
/// topic is listed twice (always, for the generated functions), else a
/// copy with each topic once, in the order first listed.
pub(crate) enum Listed<T> {
    /// The caller's list, which has no repeat.
    Given(T),
    /// The caller's list without its repeats.
    Distinct(Box<[Topic]>),
}

impl<T: AsRef<[Topic]>> Listed<T> {
    /// `topics`, each once.
    pub(crate) fn new(topics: T) -> Self {
        let listed = topics.as_ref();
        if has_repeats(listed) {
            Self::Distinct(without_repeats(listed))
        } else {
            Self::Given(topics)
        }
    }
}

impl<T: AsRef<[Topic]>> AsRef<[Topic]> for Listed<T> {
    fn as_ref(&self) -> &[Topic] {
        match self {
            Self::Given(topics) => topics.as_ref(),
            Self::Distinct(topics) => topics,
        }
    }
}

/// Up to this many topics, a list is searched for repeats by comparing
/// each topic with those before it; a longer one with a hash set.
const SCANNED_TOPICS: usize = 16;

/// Whether `topics` lists a topic more than once. Out of line: it runs for
/// a broadcast to other nodes, and for a probed list whose hashes may
/// repeat. Compares the topics
/// (ids first, then the names, equal at once when they are the same
/// static string): at most six comparisons for a membership broadcast's
/// four topics.
#[inline(never)]
fn has_repeats(topics: &[Topic]) -> bool {
    match topics {
        [] | [_] => false,
        [first, second] => first == second,
        _ if topics.len() <= SCANNED_TOPICS => topics.iter().enumerate().any(|(at, topic)| {
            topics
                .get(..at)
                .is_some_and(|before| before.contains(topic))
        }),
        _ => {
            let mut seen: hashbrown::HashSet<&Topic, foldhash::fast::FixedState> =
                hashbrown::HashSet::with_capacity_and_hasher(topics.len(), Default::default());
            !topics.iter().all(|topic| seen.insert(topic))
        }
    }
}

/// `topics` without its repeats: the first of each, in order.
fn without_repeats(topics: &[Topic]) -> Box<[Topic]> {
    let mut distinct: Vec<Topic> = Vec::with_capacity(topics.len());
    if topics.len() <= SCANNED_TOPICS {
        for topic in topics {
            if !distinct.contains(topic) {
                distinct.push(*topic);
            }
        }
    } else {
        let mut seen: hashbrown::HashSet<&Topic, foldhash::fast::FixedState> =
            hashbrown::HashSet::with_capacity_and_hasher(topics.len(), Default::default());
        distinct.extend(topics.iter().filter(|topic| seen.insert(topic)).copied());
    }
    distinct.into_boxed_slice()
}

/// Whether two of `hashes` (a probed list's, at most [`PROBED_TOPICS`])
/// are equal: each compared with those after it, six comparisons of words
/// for a membership broadcast's four topics. Equal topics have equal
/// hashes; equal hashes are compared as topics after.
#[inline]
fn repeats_a_hash(hashes: &[u64]) -> bool {
    let mut rest = hashes;
    while let Some((first, after)) = rest.split_first() {
        if after.iter().any(|hash| hash == first) {
            return true;
        }
        rest = after;
    }
    false
}

/// What [`PubSub::broadcast`] returns: the part of a broadcast that goes
/// through the engine.
///
/// Live (in process, Redis, NATS, Phoenix, and a server linked to one of
/// these), this node's subscribers have the message already when the
/// `Broadcast` is returned, and the future sends it to the other nodes;
/// dropped unpolled, no other node gets it. Durable (Redis or NATS with
/// `durable`, and a server linked to one), nothing is delivered yet: the
/// future appends the message to the engine's log, from which every node,
/// this one included, delivers it; dropped unpolled, nobody gets it.
///
/// Ready at once with `Ok` when there is nothing to send (in process);
/// boxed when there is, as the transport's own future is.
#[must_use = "other nodes receive the broadcast only when the future is awaited"]
pub struct Broadcast<'a>(Sending<'a>);

/// What a [`Broadcast`] has left to do.
enum Sending<'a> {
    /// Nothing to send to other nodes: resolves to `Ok(())` at once.
    Nothing,
    /// Sending to other nodes, or appending to the log.
    Boxed(BoxFuture<'a, Result<(), Error>>),
}

impl std::fmt::Debug for Broadcast<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Sending::Nothing => "Broadcast(done)",
            Sending::Boxed(_) => "Broadcast(sending to other nodes)",
        })
    }
}

impl Future for Broadcast<'_> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `Broadcast` is `Unpin`: the sending future is boxed.
        match &mut self.get_mut().0 {
            Sending::Nothing => Poll::Ready(Ok(())),
            Sending::Boxed(sending) => sending.as_mut().poll(cx),
        }
    }
}
