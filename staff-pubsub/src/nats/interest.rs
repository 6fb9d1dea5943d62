//! Interest routing: the subjects this node reads (one per topic it has
//! subscribers of, and its direct subject), each read by a drain task and
//! a deliver task that tells a loss where it happened, and the task that
//! follows interest changes and `sync`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::{Client, Event};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::error::{Outcome, TransportError};
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::loom::sync::{Arc, Mutex};
use crate::net::{not_sent, AbortOnDrop, Inbound, RateLimit, Secrets, StopReport};
use crate::topic::Topic;
use crate::transport::{Connection, LocalNode, Mode};

use super::config::subject;

/// The client's own buffer per subscription in live mode: a hand-off to
/// the subject's drain task, which takes each message as it comes (see
/// `read_subject`), so it holds what arrives while that task waits to be
/// run (at most what the client reads in one turn of its own task). Far
/// above that, so that the client, whose drops are told out of band,
/// never drops; `subscription_capacity` bounds what waits for the node.
pub(super) const CLIENT_HANDOFF: usize = 1 << 20;

/// What the interest task has to do: the topics whose interest may have
/// changed (each once, however often it changed: bounded by the number of
/// topics) and the `sync` calls waiting for the next round trip. Shared
/// between the server's threads (which add) and the task (which drains).
#[derive(Default)]
pub(super) struct InterestQueue {
    pub(super) pending: Mutex<Pending>,
    pub(super) wake: tokio::sync::Notify,
}

#[derive(Default)]
pub(super) struct Pending {
    pub(super) topics: HashSet<Topic>,
    pub(super) syncs: Vec<oneshot::Sender<Result<(), String>>>,
}

impl InterestQueue {
    pub(super) fn changed(&self, topic: Topic) {
        self.pending.lock().topics.insert(topic);
        self.wake.notify_one();
    }

    /// Puts back topics whose subscription failed, to be retried on the
    /// next wake (a change, a sync, a reconnect), not at once.
    fn retry_later(&self, topics: impl IntoIterator<Item = Topic>) {
        self.pending.lock().topics.extend(topics);
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock())
    }
}

/// What a subject's drain task hands its deliver task: a received
/// message, or the mark of a loss after the messages handed before it.
enum Handed {
    Message(Bytes),
    Lost,
}

/// The two tasks that read one NATS subscription (see [`read_subject`]):
/// dropping this stops both, and dropping the client's subscriber
/// unsubscribes.
pub(super) struct SubjectReader {
    pub(super) _drain: AbortOnDrop,
    pub(super) _deliver: AbortOnDrop,
}

/// Reads one NATS subscription until it ends or the server is gone, with
/// two tasks, so that a message whose handling takes long (a slow decode)
/// never holds back the taking of the next ones from the client.
///
/// The drain task takes every message from the client's subscription as
/// it comes and queues it for the deliver task, which handles them in
/// order. At most `capacity` messages wait; one that comes while that many
/// wait is dropped, and the first one dropped after a queued message
/// queues [`Handed::Lost`] right behind it. The deliver task signals the
/// gap when it reaches the mark: after every message that came before the
/// loss, before every one that came after it. The loss is so found in the
/// order of the stream itself, not from the client's slow-consumer event,
/// which comes out of band (after messages that came later, or before
/// messages still buffered that came earlier). When the deliver task
/// reaches a mark while later marks are queued already (another loss
/// happened before it got there), it drops the messages up to the last of
/// them and signals one gap: each message that came before a loss is
/// delivered or dropped before the gap that tells it, and the gap comes
/// before every message that came after the losses.
///
/// Invariants: `held` is the number of messages queued and not yet taken
/// by the deliver task (the drain task, alone in adding, adds before it
/// queues; the deliver task subtracts when it takes one), at most
/// `capacity`; `marks` the number of marks the drain task queued (or is
/// about to: it adds first) and the deliver task has not taken. A mark is
/// never queued right after another, so the queue holds at most
/// `2 * capacity + 1` items.
///
/// On a topic's subject (`topic` is `Some`), an envelope must list that
/// topic alone: one that lists others (another namespace whose subjects
/// overlap this one's, a hand-made envelope) is skipped and counted, so that
/// a subject delivers to its own topic only. On the direct subject, only
/// direct (`only`) envelopes are taken.
pub(super) fn read_subject<M>(
    subscriber: async_nats::Subscriber,
    inbound: Arc<Inbound<M>>,
    topic: Option<Topic>,
    capacity: usize,
    slow_log: Arc<RateLimit>,
) -> SubjectReader
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    let (queue, handed) = tokio::sync::mpsc::unbounded_channel();
    let counts = Arc::new(Counts::default());
    let drain = tokio::spawn(drain(
        subscriber,
        queue,
        Arc::clone(&counts),
        capacity.max(1),
    ));
    let deliver = tokio::spawn(deliver(handed, counts, inbound, topic, slow_log));
    SubjectReader {
        _drain: AbortOnDrop(drain),
        _deliver: AbortOnDrop(deliver),
    }
}

/// What a subject's queue holds: see [`read_subject`].
#[derive(Default)]
struct Counts {
    held: AtomicUsize,
    marks: AtomicUsize,
}

/// The drain task of [`read_subject`].
async fn drain(
    mut subscriber: async_nats::Subscriber,
    queue: tokio::sync::mpsc::UnboundedSender<Handed>,
    counts: Arc<Counts>,
    capacity: usize,
) {
    // Set from the first message dropped until the next one queued: the
    // mark of this loss is queued.
    let mut losing = false;
    while let Some(message) = subscriber.next().await {
        if counts.held.load(Ordering::Acquire) >= capacity {
            if !losing {
                losing = true;
                counts.marks.fetch_add(1, Ordering::AcqRel);
                if queue.send(Handed::Lost).is_err() {
                    break;
                }
            }
            continue;
        }
        losing = false;
        counts.held.fetch_add(1, Ordering::AcqRel);
        if queue.send(Handed::Message(message.payload)).is_err() {
            break;
        }
    }
}

/// The deliver task of [`read_subject`].
async fn deliver<M>(
    mut handed: tokio::sync::mpsc::UnboundedReceiver<Handed>,
    counts: Arc<Counts>,
    inbound: Arc<Inbound<M>>,
    topic: Option<Topic>,
    slow_log: Arc<RateLimit>,
) where
    M: DeserializeOwned + Send + Sync + 'static,
{
    let expected = topic.map(|topic| topic.to_string());
    while let Some(item) = handed.recv().await {
        let payload = match item {
            Handed::Message(payload) => {
                counts.held.fetch_sub(1, Ordering::AcqRel);
                payload
            }
            Handed::Lost => {
                // Later losses already marked: what came between them is
                // dropped too, and one gap tells them all.
                let mut later = counts.marks.fetch_sub(1, Ordering::AcqRel) - 1;
                while later > 0 {
                    match handed.recv().await {
                        Some(Handed::Message(_)) => {
                            counts.held.fetch_sub(1, Ordering::AcqRel);
                        }
                        Some(Handed::Lost) => {
                            later = counts.marks.fetch_sub(1, Ordering::AcqRel) - 1;
                        }
                        None => break,
                    }
                }
                inbound.local.signal_gap();
                if slow_log.allow() {
                    tracing::warn!(
                        topic = expected.as_deref().unwrap_or("(direct broadcasts)"),
                        node = inbound.local.node_name(),
                        "NATS slow consumer: messages that came while the topic's buffer \
                         (subscription_capacity) was full were dropped; subscribers told of \
                         a gap after the messages that came before"
                    );
                }
                continue;
            }
        };
        let alive = match &expected {
            Some(topic) => inbound.handle_checked(&payload, |incoming| {
                incoming.topics().eq(std::iter::once(topic.as_str()))
            }),
            None => inbound.handle_checked(&payload, |incoming| {
                matches!(incoming.mode(), Mode::Only(_))
            }),
        };
        if !alive {
            break;
        }
    }
}

/// Subscribes to and leaves topic subjects as the node's interest changes.
pub(super) struct InterestTask<M> {
    pub(super) client: Client,
    pub(super) namespace: Arc<str>,
    pub(super) inbound: Arc<Inbound<M>>,
    /// The reader of each subscribed subject: dropping it drops its
    /// subscriber, which unsubscribes.
    pub(super) subscribed: HashMap<Topic, SubjectReader>,
    /// How many messages of one subject may wait: `subscription_capacity`.
    pub(super) capacity: usize,
    /// One rate limit for every subject's slow-consumer WARN.
    pub(super) slow_log: Arc<RateLimit>,
    /// What comes back on the sync subject.
    pub(super) echo: Arc<SyncEcho>,
    pub(super) sync_subject: String,
    pub(super) next_sync: AtomicU64,
    pub(super) response_timeout: Duration,
    pub(super) secrets: Arc<Secrets>,
    pub(super) queue: Arc<InterestQueue>,
    pub(super) events: Arc<Events<M>>,
    /// The server errors already reported to a `sync`.
    pub(super) reported_refusals: u64,
}

impl<M> InterestTask<M>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    /// `stopped`, dropped without being disarmed: this task was stopped
    /// from outside, and so was the client's connection.
    pub(super) async fn run(self, initial: Vec<Topic>, mut stopped: StopReport<M>) {
        let mut task = self;
        task.queue.retry_later(initial);
        task.queue.wake.notify_one();
        loop {
            task.queue.wake.notified().await;
            if !task.inbound.local.is_alive() {
                stopped.disarm();
                break;
            }
            let Pending { topics, syncs } = task.queue.take();
            let mut failed = Vec::new();
            for topic in topics {
                if !task.update(topic).await {
                    failed.push(topic);
                }
            }
            let retry = !failed.is_empty();
            task.queue.retry_later(failed);
            if syncs.is_empty() {
                continue;
            }
            let result = if retry {
                Err(
                    "some topics could not be subscribed at NATS now (not connected?): \
                     they are retried on the next change or reconnect"
                        .to_owned(),
                )
            } else {
                task.round_trip().await.map_err(|error| error.to_string())
            };
            for reply in syncs {
                let _ = reply.send(result.clone());
            }
        }
    }

    /// Subscribes to or leaves `topic`'s subject so that it matches whether
    /// the node has a subscriber of it now.
    /// Returns false when the subscription could not be made now (to be
    /// retried).
    async fn update(&mut self, topic: Topic) -> bool {
        let wanted = self.inbound.local.has_subscribers(&topic);
        let held = self.subscribed.contains_key(&topic);
        if wanted == held {
            return true;
        }
        if !wanted {
            self.subscribed.remove(&topic);
            tracing::debug!(%topic, "left the NATS subject");
            return true;
        }
        let subject = match subject(&self.namespace, &topic) {
            Ok(subject) => subject,
            Err(error) => {
                tracing::error!(%error, %topic, "topic not routed over NATS: its subscribers receive this node's broadcasts only");
                return true;
            }
        };
        let subscribing = tokio::time::timeout(
            self.response_timeout,
            self.client.subscribe(subject.clone()),
        );
        match subscribing.await {
            Ok(Ok(subscriber)) => {
                let reader = read_subject(
                    subscriber,
                    Arc::clone(&self.inbound),
                    Some(topic),
                    self.capacity,
                    Arc::clone(&self.slow_log),
                );
                self.subscribed.insert(topic, reader);
                tracing::debug!(%topic, "subscribed to the NATS subject");
                true
            }
            Ok(Err(error)) => {
                tracing::warn!(
                    cause = %self.secrets.cause(&error),
                    %topic,
                    "cannot subscribe to a topic's NATS subject now: retried on the next change or reconnect"
                );
                false
            }
            Err(_) => {
                tracing::warn!(%topic, "the NATS client took no subscription within the response timeout: retried on the next change or reconnect");
                false
            }
        }
    }

    /// Publishes a token to this node's sync subject and waits for it: the
    /// server handles one connection's commands in order, so every earlier
    /// subscription is in place once it comes back.
    async fn round_trip(&mut self) -> Result<(), TransportError> {
        let token = Bytes::from(self.next_sync.fetch_add(1, Ordering::Relaxed).to_string());
        let echoed = self.echo.expect(token.clone());
        let waiting = async {
            self.client
                .publish(self.sync_subject.clone(), token)
                .await
                .map_err(|error| {
                    not_sent(format!("NATS sync failed: {}", self.secrets.cause(&error)))
                })?;
            echoed
                .await
                .map_err(|_| not_sent("the NATS connection closed"))
        };
        let answered = match tokio::time::timeout(self.response_timeout, waiting).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::msg(format!(
                "NATS did not answer within {:?}",
                self.response_timeout
            ))
            .with_outcome(Outcome::Unknown)),
        };
        answered?;
        // A refusal (too many subscriptions, no permission) comes as a
        // server error, reported through the client's events: each is
        // reported to one sync, the first that finds it.
        let refused = self.events.refused.load(Ordering::Relaxed);
        if refused != self.reported_refusals {
            self.reported_refusals = refused;
            let what = self.events.last_refusal.lock().clone().unwrap_or_default();
            return Err(TransportError::msg(format!(
                "the NATS server refused a subscription: {what}"
            ))
            .with_outcome(Outcome::NotSent));
        }
        Ok(())
    }
}

/// The sync subject's reader: takes every message as it comes (so that
/// nothing sent there piles up in the client) and answers the round trip
/// waiting for its token.
#[derive(Default)]
pub(super) struct SyncEcho {
    /// The token a round trip waits for, and where to say it came.
    waiting: Mutex<Option<(Bytes, oneshot::Sender<()>)>>,
    /// Set when the subscription ended: a round trip then fails at once.
    closed: AtomicBool,
}

impl SyncEcho {
    /// Waits for `token` from now on (a round trip at a time: the interest
    /// task makes them one after another). The answer fails when the
    /// subscription ends.
    fn expect(&self, token: Bytes) -> oneshot::Receiver<()> {
        let (reply, answer) = oneshot::channel();
        let mut waiting = self.waiting.lock();
        // Checked under the lock the reader takes to close: either it sees
        // this reply and drops it, or this sees it closed.
        if !self.closed.load(Ordering::Acquire) {
            *waiting = Some((token, reply));
        }
        answer
    }

    pub(super) async fn run(self: Arc<Self>, mut sync: async_nats::Subscriber) {
        while let Some(message) = sync.next().await {
            let mut waiting = self.waiting.lock();
            if waiting
                .as_ref()
                .is_some_and(|(token, _)| *token == message.payload)
            {
                if let Some((_, reply)) = waiting.take() {
                    let _ = reply.send(());
                }
            }
        }
        let mut waiting = self.waiting.lock();
        self.closed.store(true, Ordering::Release);
        *waiting = None;
    }
}

/// The client's connection events: state changes, gaps.
pub(super) struct Events<M> {
    pub(super) local: LocalNode<M>,
    /// Set when the connection dropped: the next `Connected` is a
    /// reconnect, after which subscribers are told of the gap.
    pub(super) lost: AtomicBool,
    pub(super) source: Arc<str>,
    pub(super) log: RateLimit,
    /// The interest task's queue: woken on a reconnect, to retry what
    /// failed while the server was away.
    pub(super) queue: Mutex<Option<Arc<InterestQueue>>>,
    /// Errors the server sent (a refused subscription, a permission):
    /// how many, and the last one, for `sync` to report.
    pub(super) refused: AtomicU64,
    pub(super) last_refusal: Mutex<Option<String>>,
    /// Durable mode: the log reader's restart signal. A reconnect or a
    /// slow consumer restarts the reader from where the node is, instead
    /// of a gap.
    pub(super) restart: Option<Arc<tokio::sync::Notify>>,
}

impl<M: Send + Sync + 'static> Events<M> {
    pub(super) fn on(&self, event: Event) {
        match event {
            Event::Disconnected => {
                self.lost.store(true, Ordering::Relaxed);
                self.local.set_connection(Connection::Disconnected);
                tracing::warn!(namespace = %self.source, node = self.local.node_name(), "lost the NATS connection: reconnecting");
            }
            Event::Connected => {
                let reconnect = self.lost.swap(false, Ordering::Relaxed);
                if let (true, Some(restart)) = (reconnect, &self.restart) {
                    // The log reader reads what was missed from the log.
                    restart.notify_one();
                    tracing::info!(namespace = %self.source, node = self.local.node_name(), "reconnected to NATS: reading the log from where this node is");
                } else if reconnect {
                    // The client has resubscribed: what was published
                    // meanwhile is lost, and every subscriber is told.
                    self.local.signal_gap();
                    tracing::info!(namespace = %self.source, node = self.local.node_name(), "reconnected to NATS: subscribers told of the gap");
                }
                self.local.set_connection(Connection::Connected);
                if let Some(queue) = &*self.queue.lock() {
                    queue.wake.notify_one();
                }
            }
            Event::SlowConsumer(_) if self.restart.is_some() => {
                // The log reader notices the entries it did not get and
                // reads them again.
                if self.log.allow() {
                    tracing::warn!(namespace = %self.source, node = self.local.node_name(), "NATS slow consumer: the log reader reads the dropped entries again");
                }
            }
            Event::SlowConsumer(_) => {
                // The client's own hand-off buffer overflowed (see
                // `CLIENT_HANDOFF`: a drain task not run while a million
                // messages came). It does not say which topic's, nor where
                // in the stream: every subscriber is told now.
                self.local.signal_gap();
                if self.log.allow() {
                    tracing::warn!(namespace = %self.source, node = self.local.node_name(), "NATS slow consumer: the client's own buffer overflowed and it dropped messages, subscribers told of a gap");
                }
            }
            Event::Closed => self.local.set_connection(Connection::Disconnected),
            Event::ServerError(error) => {
                let text = error.to_string();
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %text, namespace = %self.source, node = self.local.node_name(), "the NATS server refused a command (a topic's subscription may receive nothing from other nodes)");
                *self.last_refusal.lock() = Some(text);
            }
            other => {
                if self.log.allow() {
                    tracing::warn!(event = %other, namespace = %self.source, "NATS event");
                }
            }
        }
    }
}
