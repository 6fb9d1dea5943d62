//! The NATS transport: the same [`PubSub`] on several nodes, over NATS,
//! routed by interest (feature `nats`), or durable over JetStream (see
//! [Durable delivery](#durable-delivery)).
//!
//! Each topic is a NATS subject under the namespace: `staff:team:<uuid>`
//! in namespace `my-app` is `my-app.staff.team.<uuid>`. A node subscribes
//! to a topic's subject when its first local subscriber of the topic
//! appears and leaves it when the last one goes, so a node receives
//! nothing for topics nobody on it wants. A broadcast publishes one
//! [`wire`] envelope (JSON) per topic, on the topic's subject, listing that
//! topic alone; [`PubSub::direct_broadcast`] publishes one envelope, with
//! every topic, on `<namespace>._direct`, which every node reads.
//!
//! ```no_run
//! use staff_pubsub::nats::NatsConfig;
//! use staff_pubsub::staff;
//!
//! # async fn start() -> Result<(), staff_pubsub::Error> {
//! let config = NatsConfig::new("nats://127.0.0.1:4222").namespace("my-app");
//! let pubsub = staff::builder().node_name("web-1").nats(config).await?;
//! staff::install(pubsub).expect("installed at start-up, before first use");
//! # Ok(()) }
//! ```
//!
//! Order is kept per topic, not across topics: each topic's subject is read
//! by a task of its own, so a subscription to several topics may receive
//! broadcasts to different topics in another order than they were made.
//!
//! # Faults
//!
//! - [`NatsTransport::connect`] fails within the connect timeout when no
//!   NATS server can be reached: `cannot connect to NATS at <url>: <cause>`.
//! - A broadcast while the client is not connected fails at once with
//!   [`Outcome::NotSent`]: the client's own buffering of publishes during a
//!   reconnect is never relied on. `Ok` means the envelopes were written to
//!   the connection to a NATS server (core NATS does not acknowledge a
//!   publish): a server that dies right after may not pass them on. A
//!   flush that does not complete within the response timeout is
//!   [`Outcome::Unknown`].
//! - After a reconnect (the client resubscribes by itself), every local
//!   subscriber receives [`RecvError::Gap`](crate::RecvError::Gap).
//! - A slow consumer: the messages of a topic wait, at most
//!   [`NatsConfig::subscription_capacity`] of them, for this node to handle
//!   them in order (decode and queue for its subscribers). One that comes
//!   while that many wait is dropped, and every subscriber receives
//!   [`RecvError::Gap`](crate::RecvError::Gap) exactly there: after every
//!   message of the topic that came before the loss (those are delivered,
//!   none after the gap) and before every one that came after it. Losses
//!   the node finds together (a second one before it reached the first)
//!   are one gap, the messages between them dropped too. A gap a
//!   subscriber has not received yet when another comes moves after the
//!   messages queued meanwhile and covers both (as for every gap).
//! - Anything on a subject that is not a valid envelope for this node is
//!   skipped, counted in [`Stats::rejected`](crate::Stats::rejected) and
//!   logged, as with Redis; so is a message whose own code panics.
//! - A topic whose string is not a valid subject (a segment that is empty,
//!   holds white space, `.`, `*` or `>`, or starts with `_`) cannot be
//!   routed: subscribing to it works on this node only (an
//!   error is logged) and broadcasting to it fails with
//!   [`Outcome::NotSent`]. The generated topics are always valid.
//! - A subscription the server refuses (over its limits, without
//!   permission) is logged at ERROR; the next [`PubSub::sync`] fails with
//!   the refusal (each refusal is reported to one `sync`).
//! - Credentials (a user and password, a token, or in the URL) never
//!   appear in `Debug`, errors or logs, the client's own included at
//!   every level: each server address is handed to async-nats without its
//!   user information (nor query pairs named `pass`, `password`, `token`
//!   or `auth_token`), and the credentials as its connect options.
//!
//! # Presence
//!
//! A server built with [`Builder::nats`] shares its presence trackers
//! ([`PubSub::tracker`]) with the namespace's other nodes, in live and
//! durable mode alike: presence gossip is always live (core NATS, never
//! the JetStream log; a heartbeat or a transfer lost is made up for by the
//! next). Each tracker has subjects of its own, reserved (no topic's
//! subject can be one):
//!
//! - `<namespace>._presence.<tracker>`, read by every node that runs the
//!   tracker: heartbeats, with what changed;
//! - `<namespace>._presence.<tracker>.<node>`, read by `<node>` alone:
//!   transfer requests and their answers,
//!
//! `<tracker>` the tracker's name on the wire (its metadata type's path)
//! and `<node>` the node's name, each written as one token (bytes other
//! than ASCII letters, digits and `-` written `_XX`). Each message names
//! its sender and addressee; one that does not decode, or whose sender is
//! not the node it says it comes from, is skipped and counted in
//! [`Stats::rejected`](crate::Stats::rejected). Sends never wait and never
//! fail: a message that cannot go (not connected, a full queue of 1024) is
//! dropped. A node taken down for silence (crashed, cut off for longer
//! than the down period of [`PresenceTiming`](crate::presence::PresenceTiming))
//! has its presences reported as leaves by the others; they join again
//! when it is heard again. A server built with
//! [`build_with`](Builder::build_with) and a [`NatsTransport`] keeps its
//! trackers in process.
//!
//! # Durable delivery
//!
//! With [`NatsConfig::durable`] (the server needs JetStream: `nats-server
//! -js`), every broadcast of the namespace is appended to one JetStream
//! stream and every node, the sender included, delivers it from there, in
//! log order, with its [`Position`] (what
//! [`Subscription::recv_with_position`](crate::Subscription::recv_with_position)
//! gives):
//!
//! - The stream is `staff-pubsub-<namespace>` (bytes other than ASCII
//!   letters, digits and `-` written `_XX`), on the subject
//!   `<namespace>._log`, file storage, its limits the [`Retention`]'s
//!   (`max_msgs`, `max_age`, discard old). The first node to connect
//!   creates it; a node that finds it with other limits keeps them and
//!   logs a WARN. Each broadcast is one entry listing all its topics (a
//!   [`direct_broadcast`](PubSub::direct_broadcast) too: the named node
//!   alone delivers it); the entry's stream sequence number is the
//!   position's, and the log id is a 16-bit hash of the stream's creation
//!   time, so all nodes agree on both.
//! - A broadcast returns `Ok` once JetStream acknowledged the entry
//!   (stored). [`Outcome::NotSent`] when it certainly was not stored (not
//!   connected, too large, no stream or JetStream refused it);
//!   [`Outcome::Unknown`] when the acknowledgement did not come within the
//!   response timeout (it may be stored, and then delivered). It is not
//!   dispatched on this node when made: this node's subscribers get it from
//!   the log like every other node's.
//! - A node starts at the end of the log (it does not replay history). It
//!   reads the log with an ephemeral pull consumer from the entry after the
//!   last one it read; after a reconnect, a server restart with its store,
//!   a failed or silent consumer (no heartbeat for 6 s) or messages the
//!   client dropped, it starts a new one from there. So a subscriber
//!   receives every acknowledged broadcast to its topics exactly once, in
//!   log order, with no [`Gap`](crate::Gap), as long as the entries it missed are still
//!   in the stream; a broadcast that failed with [`Outcome::Unknown`] at most
//!   once.
//! - When entries it had not read were trimmed (the outage outlived the
//!   retention), every subscriber gets one [`Gap::Trimmed`](crate::Gap::Trimmed) naming the
//!   first lost position and how many entries were lost, then delivery
//!   continues with the oldest entry kept. When the stream was lost (deleted,
//!   or the server restarted without its store) it is created afresh and
//!   every subscriber gets [`Gap::LogLost`](crate::Gap::LogLost), then the new log's entries
//!   from its first; so it does when the stream went back (the server lost
//!   entries it had acknowledged).
//! - [`PubSub::subscribe_since`] replays from the stream (a bounded
//!   ephemeral consumer): the entries of the range for this node that list
//!   one of the subscription's topics, [`Gap::Trimmed`](crate::Gap::Trimmed) first if the
//!   start of the range is gone, [`Gap::ReplayLimit`](crate::Gap::ReplayLimit) and nothing
//!   replayed when the range is longer than
//!   [`Retention::replay_limit`], [`Gap::LogLost`](crate::Gap::LogLost) when the position is of
//!   another log.
//! - Cost: interest routing is not used. Every node reads and decodes
//!   every entry of the namespace (as with Redis), and each broadcast waits
//!   for JetStream to store it (a round trip and a file write) before it
//!   returns. [`PubSub::sync`] returns at once: a node reads every entry
//!   whatever its subscriptions. Every node of a namespace must use the
//!   same mode: live nodes neither read the log nor write to it.
//!
//! Tested against a real `nats-server -js` (`tests/nats_durable.rs`):
//! 10,000 broadcasts while the subscriber's connection is cut twice and
//! the server is killed and restarted with its store, each acknowledged
//! one received once, in order, with consecutive positions and no gap; an
//! outage past a 100-entry retention is exactly one `Gap::Trimmed` with
//! the exact first position and count; a server restarted without its
//! store and a deleted stream are each a `Gap::LogLost`; a resume replays
//! exactly the missed entries of its topics while another node keeps
//! broadcasting, then live, each once; `Gap::ReplayLimit` and
//! `Gap::Trimmed` for a resume too far behind.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::{Error, Outcome, TransportError};
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::loom::sync::{Arc, Mutex};
use crate::net::{encode_bounded, not_sent, AbortOnDrop, Inbound, RateLimit, Secrets, StopReport};
use crate::position::{Position, Retention};
use crate::server::{Builder, PubSub};
use crate::topic::Topic;
use crate::transport::{
    BoxFuture, Connection, DurableLog, Envelope, LocalNode, LogHead, Mode, Replay, Transport,
};
use crate::wire;

mod config;
mod gossip;
mod interest;
mod jetstream;

use config::{check_namespace, parse_servers, subject, Credentials};
pub use config::{NatsConfig, DEFAULT_NAMESPACE};
use interest::{read_subject, Events, InterestQueue, InterestTask, SyncEcho, CLIENT_HANDOFF};
use jetstream::{stream_name, JetStreamLog, LogReader, LOG};

/// The suffix of the subject that carries direct broadcasts.
const DIRECT: &str = "_direct";

/// The NATS transport of one node. Made by [`NatsTransport::connect`],
/// usually through [`Builder::nats`]. Dropping it (which dropping the last
/// [`PubSub`] handle does) stops its tasks and closes the connection.
pub struct NatsTransport<M> {
    client: Client,
    pub(super) namespace: Arc<str>,
    pub(super) max_message_size: usize,
    max_topics: usize,
    pub(super) response_timeout: Duration,
    shown: Arc<str>,
    secrets: Arc<Secrets>,
    interest: Arc<InterestQueue>,
    /// Durable mode: the namespace's log.
    log: Option<LogHandle<M>>,
    _tasks: Vec<AbortOnDrop>,
    message: PhantomData<fn(&M)>,
}

/// A durable transport's log and how it decodes entries for a replay.
struct LogHandle<M> {
    log: Arc<JetStreamLog>,
    inbound: Arc<Inbound<M>>,
}

/// The JetStream log as the server reads it.
impl<M> DurableLog<M> for LogHandle<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn log_head(&self) -> BoxFuture<'_, Result<LogHead, TransportError>> {
        Box::pin(async move {
            Ok(match self.log.info().await? {
                Some(info) => LogHead::At {
                    log: info.log(),
                    seq: info.state.last_seq,
                },
                None => LogHead::Missing,
            })
        })
    }

    fn replay_limit(&self) -> Option<u64> {
        Some(self.log.retention.replay_limit())
    }

    fn replay<'a>(
        &'a self,
        after: Position,
        through: Position,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Replay<M>, TransportError>>
    where
        M: Send + 'a,
    {
        Box::pin(self.log.replay(&self.inbound, after, through, topics))
    }
}

impl<M> fmt::Debug for NatsTransport<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field("url", &self.shown)
            .field("namespace", &self.namespace)
            .field("max_message_size", &self.max_message_size)
            .finish_non_exhaustive()
    }
}

impl<M> NatsTransport<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Connects to NATS, subscribes to the subjects of the topics `local`
    /// has subscribers of and to the direct subject, and starts the tasks
    /// that dispatch what arrives. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// An invalid namespace or maximum size, no tokio runtime, or no NATS
    /// server reachable within the connect timeout (refused, timed out,
    /// authentication failed): `cannot connect to NATS at <url>: <cause>`,
    /// credentials hidden.
    pub async fn connect(config: NatsConfig, local: LocalNode<M>) -> Result<Self, TransportError> {
        config.engine.check("NATS")?;
        check_namespace(&config.engine.namespace)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
            TransportError::new("the NATS transport needs a tokio runtime", error)
                .with_outcome(Outcome::NotSent)
        })?;
        let secrets = Arc::new(config.secrets());
        let shown: Arc<str> = Arc::from(config.shown());
        // Credentials written in the URL go to the client as options, and
        // the servers without them: the client logs the addresses it
        // connects to (at DEBUG, TRACE).
        let servers = parse_servers(&config.url).map_err(|cause| {
            not_sent(format!(
                "cannot connect to NATS at {shown}: {}",
                secrets.scrub(&cause)
            ))
        })?;
        let namespace: Arc<str> = Arc::from(config.engine.namespace.as_str());
        let events = Arc::new(Events {
            local: local.clone(),
            lost: AtomicBool::new(false),
            source: Arc::clone(&namespace),
            log: RateLimit::default(),
            queue: Mutex::new(None),
            refused: AtomicU64::new(0),
            last_refusal: Mutex::new(None),
            restart: config
                .durable
                .is_some()
                .then(|| Arc::new(tokio::sync::Notify::new())),
        });
        let credentials = match (&config.credentials, servers.credentials) {
            (Credentials::None, Some(from_url)) => from_url,
            (credentials, _) => credentials.clone(),
        };
        let options = match &credentials {
            Credentials::None => ConnectOptions::new(),
            Credentials::UserPassword { user, password } => {
                ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => ConnectOptions::with_token(token.clone()),
        };
        let on_event = Arc::clone(&events);
        let options = options
            .name(local.node_name())
            .connection_timeout(config.engine.connect_timeout)
            // Live mode: the client only hands messages over to each
            // subject's drain task, which bounds what waits by
            // `subscription_capacity` and marks losses in order (see
            // `read_subject`). Durable mode: the log reader finds what the
            // client dropped by its sequence numbers and reads it again.
            .subscription_capacity(if config.durable.is_some() {
                config.subscription_capacity
            } else {
                CLIENT_HANDOFF
            })
            .max_reconnects(None)
            .event_callback(move |event| {
                let events = Arc::clone(&on_event);
                async move { events.on(event) }
            });
        let connecting = tokio::time::timeout(
            config.engine.connect_timeout,
            options.connect(servers.addresses),
        );
        let client = match connecting.await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                return Err(not_sent(format!(
                    "cannot connect to NATS at {shown}: {}",
                    secrets.cause(&error)
                )))
            }
            Err(_) => {
                return Err(not_sent(format!(
                    "cannot connect to NATS at {shown}: no answer within {:?}",
                    config.engine.connect_timeout
                )))
            }
        };
        let inbound = Arc::new(Inbound::new(
            local.clone(),
            "NATS",
            Arc::clone(&namespace),
            config.engine.max_message_size,
            // One topic per envelope on a topic's subject; a direct
            // broadcast or a log entry lists a broadcast's topics.
            config.engine.max_topics,
        ));
        if let Some(retention) = config.durable.clone() {
            return Self::connect_durable(
                config, retention, local, client, events, inbound, runtime, secrets, shown,
                namespace,
            )
            .await;
        }
        let fail = |error: async_nats::SubscribeError| {
            not_sent(format!(
                "cannot subscribe at NATS {shown}: {}",
                secrets.cause(&error)
            ))
        };
        let direct = client
            .subscribe(format!("{namespace}.{DIRECT}"))
            .await
            .map_err(fail)?;
        let sync_subject = format!("{namespace}._sync.{:016x}", local.instance());
        let sync = client.subscribe(sync_subject.clone()).await.map_err(fail)?;
        let echo = Arc::new(SyncEcho::default());
        let queue = Arc::new(InterestQueue::default());
        *events.queue.lock() = Some(Arc::clone(&queue));
        let interests = InterestTask {
            client: client.clone(),
            namespace: Arc::clone(&namespace),
            inbound: Arc::clone(&inbound),
            subscribed: HashMap::new(),
            capacity: config.subscription_capacity,
            slow_log: Arc::new(RateLimit::default()),
            echo: Arc::clone(&echo),
            sync_subject,
            next_sync: AtomicU64::new(0),
            response_timeout: config.engine.response_timeout,
            secrets: Arc::clone(&secrets),
            queue: Arc::clone(&queue),
            events: Arc::clone(&events),
            reported_refusals: 0,
        };
        let initial = local.topics();
        let direct = read_subject(
            direct,
            Arc::clone(&inbound),
            None,
            config.subscription_capacity,
            Arc::clone(&interests.slow_log),
        );
        let tasks = vec![
            direct._drain,
            direct._deliver,
            AbortOnDrop(runtime.spawn(echo.run(sync))),
            // The report is made here, not in the task: a task the runtime
            // drops before ever polling it still reports.
            AbortOnDrop(
                runtime.spawn(interests.run(initial, StopReport::new(local.clone(), "NATS"))),
            ),
        ];
        tracing::info!(url = %shown, namespace = %namespace, node = local.node_name(), "connected to NATS");
        local.set_connection(Connection::Connected);
        Ok(Self {
            client,
            namespace,
            max_message_size: config.engine.max_message_size,
            max_topics: config.engine.max_topics,
            response_timeout: config.engine.response_timeout,
            shown,
            secrets,
            interest: queue,
            log: None,
            _tasks: tasks,
            message: PhantomData,
        })
    }

    /// The rest of [`connect`](Self::connect) in durable mode: binds (or
    /// creates) the namespace's stream, records the node's position as
    /// its last entry, and starts the log reader from the next.
    #[allow(clippy::too_many_arguments)]
    async fn connect_durable(
        config: NatsConfig,
        retention: Retention,
        local: LocalNode<M>,
        client: Client,
        events: Arc<Events<M>>,
        inbound: Arc<Inbound<M>>,
        runtime: tokio::runtime::Handle,
        secrets: Arc<Secrets>,
        shown: Arc<str>,
        namespace: Arc<str>,
    ) -> Result<Self, TransportError> {
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(config.engine.response_timeout)
            .build(client.clone());
        let log = Arc::new(JetStreamLog {
            js,
            stream: stream_name(&namespace),
            subject: format!("{namespace}.{LOG}"),
            retention,
            secrets: Arc::clone(&secrets),
            response_timeout: config.engine.response_timeout,
        });
        let info = log.bind().await.map_err(|error| {
            not_sent(format!(
                "cannot use the JetStream stream at NATS {shown} (is JetStream enabled? \
                 nats-server -js): {error}"
            ))
        })?;
        let id = info.log();
        local.set_log_head(id, info.state.last_seq);
        // `Events::restart` is set in durable mode.
        let restart = events
            .restart
            .clone()
            .unwrap_or_else(|| Arc::new(tokio::sync::Notify::new()));
        let reader = LogReader {
            log: Arc::clone(&log),
            inbound: Arc::clone(&inbound),
            id,
            next: info.state.last_seq + 1,
            restart,
            failure_log: RateLimit::default(),
        };
        let tasks = vec![AbortOnDrop(
            runtime.spawn(reader.run(StopReport::new(local.clone(), "NATS"))),
        )];
        tracing::info!(url = %shown, namespace = %namespace, stream = %log.stream, log = %format_args!("{id:04x}"), seq = info.state.last_seq, node = local.node_name(), "connected to NATS, durable");
        local.set_connection(Connection::Connected);
        Ok(Self {
            client,
            namespace,
            max_message_size: config.engine.max_message_size,
            max_topics: config.engine.max_topics,
            response_timeout: config.engine.response_timeout,
            shown,
            secrets,
            interest: Arc::new(InterestQueue::default()),
            log: Some(LogHandle { log, inbound }),
            _tasks: tasks,
            message: PhantomData,
        })
    }

    /// The namespace: the subject prefix.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Publishes the envelopes and flushes them, all within the response
    /// timeout: a stalled server (whose connection still reads as
    /// connected) cannot hold a broadcast longer.
    async fn send(&self, subjects: Vec<(String, Vec<u8>)>) -> Result<(), TransportError> {
        if !matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        ) {
            return Err(not_sent(format!(
                "not connected to NATS at {}: the client is reconnecting",
                self.shown
            )));
        }
        // Set once an envelope may have been handed to the client: from then
        // on a failure's outcome is unknown.
        let handed = AtomicBool::new(false);
        let outcome = |handed: &AtomicBool| {
            if handed.load(Ordering::Relaxed) {
                Outcome::Unknown
            } else {
                Outcome::NotSent
            }
        };
        let sending = async {
            for (subject, bytes) in subjects {
                self.client
                    .publish(subject, Bytes::from(bytes))
                    .await
                    .map_err(|error| {
                        TransportError::msg(format!(
                            "NATS publish failed: {}",
                            self.secrets.cause(&error)
                        ))
                        .with_outcome(outcome(&handed))
                    })?;
                handed.store(true, Ordering::Relaxed);
            }
            self.client.flush().await.map_err(|error| {
                TransportError::msg(format!("NATS flush failed: {}", self.secrets.cause(&error)))
                    .with_outcome(Outcome::Unknown)
            })
        };
        match tokio::time::timeout(self.response_timeout, sending).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::msg(format!(
                "NATS did not take the broadcast within {:?}",
                self.response_timeout
            ))
            .with_outcome(outcome(&handed))),
        }
    }
}

impl<M> Transport<M> for NatsTransport<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn publish<'a>(
        &'a self,
        envelope: Envelope<'a, M>,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        if let Some(durable) = &self.log {
            let encoded = encode_bounded("NATS", &envelope, self.max_message_size, self.max_topics);
            return Box::pin(async move {
                let bytes = encoded?;
                if !matches!(
                    self.client.connection_state(),
                    async_nats::connection::State::Connected
                ) {
                    return Err(not_sent(format!(
                        "not connected to NATS at {}: the client is reconnecting",
                        self.shown
                    )));
                }
                durable.log.append(bytes).await
            });
        }
        let encoded = encode(
            &self.namespace,
            &envelope,
            self.max_message_size,
            self.max_topics,
        );
        Box::pin(async move { self.send(encoded?).await })
    }

    fn interest_changed(&self, topic: Topic) {
        // A durable node reads the whole log: no interest to register.
        if self.log.is_none() {
            self.interest.changed(topic);
        }
    }

    fn durable_log(&self) -> Option<&dyn DurableLog<M>> {
        self.log.as_ref().map(|log| log as &dyn DurableLog<M>)
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        if self.log.is_some() {
            // The node reads every entry of the log from its start on.
            return Box::pin(std::future::ready(Ok(())));
        }
        let (reply, answer) = oneshot::channel();
        self.interest.pending.lock().syncs.push(reply);
        self.interest.wake.notify_one();
        // Bounded as a whole, waiting for the task (busy subscribing while
        // the server is away) included. Concurrent syncs share one round
        // trip.
        let bound = self.response_timeout * 2;
        Box::pin(async move {
            match tokio::time::timeout(bound, answer).await {
                Ok(Ok(result)) => {
                    result.map_err(|what| TransportError::msg(what).with_outcome(Outcome::Unknown))
                }
                Ok(Err(_)) => Err(not_sent("the NATS transport has stopped")),
                Err(_) => Err(TransportError::msg(format!(
                    "NATS did not confirm the subscriptions within {bound:?}"
                ))
                .with_outcome(Outcome::Unknown)),
            }
        })
    }
}

/// The subjects and bytes of one broadcast: one envelope per topic on the
/// topic's subject, or one on the direct subject for `Mode::Only`.
fn encode<M: Serialize>(
    namespace: &str,
    envelope: &Envelope<'_, M>,
    max_size: usize,
    max_topics: usize,
) -> Result<Vec<(String, Vec<u8>)>, TransportError> {
    let encode_error = |error: wire::WireError| {
        TransportError::new("message not encoded for NATS", error).with_outcome(Outcome::NotSent)
    };
    if let Mode::Only(_) = envelope.mode {
        let bytes = encode_bounded("NATS", envelope, max_size, max_topics)?;
        return Ok(vec![(format!("{namespace}.{DIRECT}"), bytes)]);
    }
    if envelope.topics.len() > max_topics {
        return Err(encode_error(wire::WireError::TooManyTopics {
            count: envelope.topics.len(),
            max: max_topics,
        }));
    }
    envelope
        .topics
        .iter()
        .map(|topic| {
            let subject = subject(namespace, topic)?;
            let single = Envelope {
                topics: std::slice::from_ref(topic),
                ..*envelope
            };
            let bytes = wire::encode(&single, max_size).map_err(encode_error)?;
            Ok((subject, bytes))
        })
        .collect()
}

impl<M> Builder<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Builds a server whose broadcasts reach every node of `config`'s
    /// namespace through NATS: [`build_with`](Self::build_with) and
    /// [`NatsTransport::connect`] in one call. Without a
    /// [`node_name`](Self::node_name), the node gets a unique one. Its
    /// presence trackers replicate with the namespace's other nodes over
    /// subjects of their own, `<namespace>._presence.<tracker>` and
    /// `<namespace>._presence.<tracker>.<node>` (see
    /// [Presence](crate::nats#presence)), live in durable mode too.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyNodeName`], or [`Error::Connect`] as
    /// [`NatsTransport::connect`].
    pub async fn nats(self, config: NatsConfig) -> Result<PubSub<M>, Error> {
        self.build_with_gossip(|local| async move {
            let node = local.node_name().to_owned();
            let transport = NatsTransport::connect(config, local).await?;
            let gossip = gossip::NatsGossip::new(
                transport.client.clone(),
                Arc::clone(&transport.namespace),
                &node,
                // `connect` above ran in this runtime: it is there.
                tokio::runtime::Handle::try_current().map_err(|error| {
                    TransportError::new("the NATS transport needs a tokio runtime", error)
                        .with_outcome(Outcome::NotSent)
                })?,
            );
            let gossip: crate::gossip::GossipHandle = Arc::new(gossip);
            Ok((transport, Some(gossip)))
        })
        .await
    }
}
