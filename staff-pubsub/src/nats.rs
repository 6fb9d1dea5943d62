//! The NATS transport: the same [`PubSub`] on several nodes, over NATS,
//! routed by interest (feature `nats`).
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
//!   subscriber receives [`RecvError::Gap`](crate::RecvError::Gap). So
//!   does every subscriber when the client reports a slow consumer (its
//!   buffer for a subscription overflowed and messages were dropped).
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
//!   appear in `Debug`, errors or logs.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::{Error, Outcome, TransportError};
use crate::net::{redact, AbortOnDrop, Inbound, RateLimit, Secrets, StopReport};
use crate::pubsub::{Builder, PubSub};
use crate::topic::Topic;
use crate::transport::{BoxFuture, Connection, Envelope, LocalNode, Mode, Transport};
use crate::wire;

/// The namespace of a [`NatsConfig`] that sets none: the first token of
/// every subject.
pub const DEFAULT_NAMESPACE: &str = "staff-pubsub";

/// The suffix of the subject that carries direct broadcasts.
const DIRECT: &str = "_direct";

/// Where and how a node reaches NATS.
///
/// ```
/// use std::time::Duration;
/// use staff_pubsub::nats::NatsConfig;
/// use staff_pubsub::Topic;
///
/// let config = NatsConfig::new("nats://127.0.0.1:4222")
///     .namespace("tenant-42")
///     .user_and_password("app", "secret")
///     .connect_timeout(Duration::from_secs(2));
/// assert_eq!(config.subject(&Topic::new("staff:teams")).unwrap(), "tenant-42.staff.teams");
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
#[must_use]
pub struct NatsConfig {
    url: String,
    namespace: String,
    credentials: Credentials,
    max_message_size: usize,
    connect_timeout: Duration,
    response_timeout: Duration,
    subscription_capacity: usize,
}

#[derive(Clone)]
enum Credentials {
    None,
    UserPassword { user: String, password: String },
    Token(String),
}

impl NatsConfig {
    /// A configuration for the NATS server at `url` (`nats://host:port`;
    /// `nats://user:password@host:port` works too), with the defaults for
    /// everything else.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            credentials: Credentials::None,
            max_message_size: wire::DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            subscription_capacity: 65_536,
        }
    }

    /// The namespace: the subject prefix of every message, one or more
    /// `.`-separated tokens without white space, `*` or `>`. Nodes of one
    /// namespace reach each other, never those of another. Default
    /// [`DEFAULT_NAMESPACE`].
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Authenticates with a user and password.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Credentials::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.credentials = Credentials::Token(token.into());
        self
    }

    /// The largest encoded envelope, in bytes: a broadcast of a larger one
    /// fails, a received larger one is skipped. Default
    /// [`wire::DEFAULT_MAX_MESSAGE_SIZE`] (1 MiB); the server's own
    /// `max_payload` (1 MiB by default) applies too.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long [`NatsTransport::connect`] may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a broadcast waits for its envelopes to be written to the
    /// connection, and [`PubSub::sync`] for the server's answer. Default 5 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many received messages the client buffers per topic before it
    /// drops them (a slow consumer, which subscribers learn as a gap).
    /// Default 65,536.
    pub fn subscription_capacity(mut self, messages: usize) -> Self {
        self.subscription_capacity = messages.max(1);
        self
    }

    /// The subject that carries `topic` in this namespace.
    ///
    /// # Errors
    ///
    /// When the topic cannot be a subject: see the [module docs](self).
    pub fn subject(&self, topic: &Topic) -> Result<String, TransportError> {
        subject(&self.namespace, topic)
    }

    fn secrets(&self) -> Secrets {
        let secrets = Secrets::of(&self.url);
        match &self.credentials {
            Credentials::None => secrets,
            Credentials::UserPassword { password, .. } => secrets.with(password),
            Credentials::Token(token) => secrets.with(token),
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = match &self.credentials {
            Credentials::None => "none".to_owned(),
            Credentials::UserPassword { user, .. } => format!("user {user}, password ***"),
            Credentials::Token(_) => "token ***".to_owned(),
        };
        f.debug_struct("NatsConfig")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("credentials", &credentials)
            .field("max_message_size", &self.max_message_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("subscription_capacity", &self.subscription_capacity)
            .finish()
    }
}

/// The URL without user information, and the credentials it held:
/// `nats://user:password@host` or `nats://token@host`.
fn split_credentials(url: &str) -> (String, Option<Credentials>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let Some(at) = rest.rfind('@') else {
        return (url.to_owned(), None);
    };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    let clean = format!("{scheme}://{host}");
    let credentials = match userinfo.split_once(':') {
        Some((user, password)) => Credentials::UserPassword {
            user: crate::net::percent_decode(user),
            password: crate::net::percent_decode(password),
        },
        None => Credentials::Token(crate::net::percent_decode(userinfo)),
    };
    (clean, Some(credentials))
}

/// Whether `token` can be one token of a subject.
fn is_token(token: &str) -> bool {
    !token.is_empty()
        && !token
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
}

fn check_namespace(namespace: &str) -> Result<(), TransportError> {
    if namespace.split('.').all(is_token) {
        Ok(())
    } else {
        Err(TransportError::msg(format!(
            "the NATS namespace {namespace:?} is not a subject prefix: one or more \
             `.`-separated tokens without white space, `*` or `>`"
        ))
        .with_outcome(Outcome::NotSent))
    }
}

/// `<namespace>.<topic segments>`: see the module docs.
fn subject(namespace: &str, topic: &Topic) -> Result<String, TransportError> {
    let text = topic.to_string();
    // No segment starts with `_`: the subjects of the transport's own use
    // (`<ns>._direct`, `<ns>._sync.<id>`) stay apart from every topic's,
    // whatever the namespace.
    let valid = text
        .split(':')
        .all(|segment| is_token(segment) && !segment.starts_with('_'));
    if !valid {
        return Err(TransportError::msg(format!(
            "topic {text:?} cannot be a NATS subject (a segment is empty, holds white \
             space, `.`, `*` or `>`, or starts with `_`)"
        ))
        .with_outcome(Outcome::NotSent));
    }
    Ok(format!("{namespace}.{}", text.replace(':', ".")))
}

fn not_sent(what: impl Into<String>) -> TransportError {
    TransportError::msg(what).with_outcome(Outcome::NotSent)
}

/// What the interest task has to do: the topics whose interest may have
/// changed (each once, however often it changed: bounded by the number of
/// topics) and the `sync` calls waiting for the next round trip. Shared
/// between the server's threads (which add) and the task (which drains).
#[derive(Default)]
struct InterestQueue {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Pending {
    topics: HashSet<Topic>,
    syncs: Vec<oneshot::Sender<Result<(), String>>>,
}

impl InterestQueue {
    fn changed(&self, topic: Topic) {
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

/// The NATS transport of one node. Made by [`NatsTransport::connect`],
/// usually through [`Builder::nats`]. Dropping it (which dropping the last
/// [`PubSub`] handle does) stops its tasks and closes the connection.
pub struct NatsTransport<M> {
    client: Client,
    namespace: Arc<str>,
    max_message_size: usize,
    response_timeout: Duration,
    shown: Arc<str>,
    secrets: Arc<Secrets>,
    interest: Arc<InterestQueue>,
    _tasks: Vec<AbortOnDrop>,
    message: PhantomData<fn(&M)>,
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
        check_namespace(&config.namespace)?;
        if config.max_message_size == 0 {
            return Err(not_sent(
                "the maximum message size must be at least one byte",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
            TransportError::new("the NATS transport needs a tokio runtime", error)
                .with_outcome(Outcome::NotSent)
        })?;
        let secrets = Arc::new(config.secrets());
        let shown: Arc<str> = Arc::from(redact(&config.url));
        let namespace: Arc<str> = Arc::from(config.namespace.as_str());
        let events = Arc::new(Events {
            local: local.clone(),
            lost: AtomicBool::new(false),
            source: Arc::clone(&namespace),
            log: RateLimit::default(),
            queue: Mutex::new(None),
            refused: AtomicU64::new(0),
            last_refusal: Mutex::new(None),
        });
        // Credentials written in the URL go to the client as options, and
        // the URL without them: the client logs the server address it
        // connects to.
        let (url, in_url) = split_credentials(&config.url);
        let credentials = match (&config.credentials, in_url) {
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
            .connection_timeout(config.connect_timeout)
            .subscription_capacity(config.subscription_capacity)
            .max_reconnects(None)
            .event_callback(move |event| {
                let events = Arc::clone(&on_event);
                async move { events.on(event) }
            });
        let connecting =
            tokio::time::timeout(config.connect_timeout, options.connect(url.as_str()));
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
                    config.connect_timeout
                )))
            }
        };
        let inbound = Arc::new(Inbound {
            local: local.clone(),
            engine: "NATS",
            source: Arc::clone(&namespace),
            max_message_size: config.max_message_size,
            // One topic per envelope on a topic's subject; a direct
            // broadcast lists a broadcast's topics.
            max_topics: wire::DEFAULT_MAX_TOPICS,
            conflict_log: RateLimit::default(),
        });
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
        let queue = Arc::new(InterestQueue::default());
        *events.queue.lock() = Some(Arc::clone(&queue));
        let interests = InterestTask {
            client: client.clone(),
            namespace: Arc::clone(&namespace),
            inbound: Arc::clone(&inbound),
            subscribed: HashMap::new(),
            sync,
            sync_subject,
            next_sync: AtomicU64::new(0),
            response_timeout: config.response_timeout,
            secrets: Arc::clone(&secrets),
            queue: Arc::clone(&queue),
            events: Arc::clone(&events),
            reported_refusals: 0,
        };
        let initial = local.topics();
        let tasks = vec![
            AbortOnDrop(runtime.spawn(read(direct, Arc::clone(&inbound), None))),
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
            max_message_size: config.max_message_size,
            response_timeout: config.response_timeout,
            shown,
            secrets,
            interest: queue,
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
        let encoded = encode(&self.namespace, &envelope, self.max_message_size);
        Box::pin(async move { self.send(encoded?).await })
    }

    fn interest_changed(&self, topic: Topic) {
        self.interest.changed(topic);
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), TransportError>> {
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
) -> Result<Vec<(String, Vec<u8>)>, TransportError> {
    let encode_error = |error: wire::WireError| {
        TransportError::new("message not encoded for NATS", error).with_outcome(Outcome::NotSent)
    };
    if let Mode::Only(_) = envelope.mode {
        let bytes = wire::encode(envelope, max_size).map_err(encode_error)?;
        return Ok(vec![(format!("{namespace}.{DIRECT}"), bytes)]);
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
    /// [`NatsTransport::connect`] in one call.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyNodeName`], or [`Error::Connect`] as
    /// [`NatsTransport::connect`].
    pub async fn nats(self, config: NatsConfig) -> Result<PubSub<M>, Error> {
        self.build_with(|local| NatsTransport::connect(config, local))
            .await
    }
}

/// Reads one NATS subscription until it ends or the server is gone.
///
/// On a topic's subject (`topic` is `Some`), an envelope must list that
/// topic alone: one that lists others (another namespace whose subjects
/// overlap this one's, a hand-made envelope) is skipped and counted, so that
/// a subject delivers to its own topic only. On the direct subject, only
/// direct (`only`) envelopes are taken.
async fn read<M>(
    mut subscriber: async_nats::Subscriber,
    inbound: Arc<Inbound<M>>,
    topic: Option<Topic>,
) where
    M: DeserializeOwned + Send + Sync + 'static,
{
    let expected = topic.map(|topic| topic.to_string());
    while let Some(message) = subscriber.next().await {
        let alive = match &expected {
            Some(topic) => inbound.handle_checked(&message.payload, |incoming| {
                incoming.topics().eq(std::iter::once(topic.as_str()))
            }),
            None => inbound.handle_checked(&message.payload, |incoming| {
                matches!(incoming.mode(), Mode::Only(_))
            }),
        };
        if !alive {
            break;
        }
    }
}

/// Subscribes to and leaves topic subjects as the node's interest changes.
struct InterestTask<M> {
    client: Client,
    namespace: Arc<str>,
    inbound: Arc<Inbound<M>>,
    /// One reading task per subscribed subject: aborting it drops its
    /// subscriber, which unsubscribes.
    subscribed: HashMap<Topic, AbortOnDrop>,
    sync: async_nats::Subscriber,
    sync_subject: String,
    next_sync: AtomicU64,
    response_timeout: Duration,
    secrets: Arc<Secrets>,
    queue: Arc<InterestQueue>,
    events: Arc<Events<M>>,
    /// The server errors already reported to a `sync`.
    reported_refusals: u64,
}

impl<M> InterestTask<M>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    /// `stopped`, dropped without being disarmed: this task was stopped
    /// from outside, and so was the client's connection.
    async fn run(self, initial: Vec<Topic>, mut stopped: StopReport<M>) {
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
                let task = tokio::spawn(read(subscriber, Arc::clone(&self.inbound), Some(topic)));
                self.subscribed.insert(topic, AbortOnDrop(task));
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
        let token = self.next_sync.fetch_add(1, Ordering::Relaxed).to_string();
        let waiting = async {
            self.client
                .publish(self.sync_subject.clone(), Bytes::from(token.clone()))
                .await
                .map_err(|error| {
                    not_sent(format!("NATS sync failed: {}", self.secrets.cause(&error)))
                })?;
            while let Some(message) = self.sync.next().await {
                if message.payload.as_ref() == token.as_bytes() {
                    return Ok(());
                }
            }
            Err(not_sent("the NATS connection closed"))
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

/// The client's connection events: state changes, gaps.
struct Events<M> {
    local: LocalNode<M>,
    /// Set when the connection dropped: the next `Connected` is a
    /// reconnect, after which subscribers are told of the gap.
    lost: AtomicBool,
    source: Arc<str>,
    log: RateLimit,
    /// The interest task's queue: woken on a reconnect, to retry what
    /// failed while the server was away.
    queue: Mutex<Option<Arc<InterestQueue>>>,
    /// Errors the server sent (a refused subscription, a permission):
    /// how many, and the last one, for `sync` to report.
    refused: AtomicU64,
    last_refusal: Mutex<Option<String>>,
}

impl<M: Send + Sync + 'static> Events<M> {
    fn on(&self, event: Event) {
        match event {
            Event::Disconnected => {
                self.lost.store(true, Ordering::Relaxed);
                self.local.set_connection(Connection::Disconnected);
                tracing::warn!(namespace = %self.source, node = self.local.node_name(), "lost the NATS connection: reconnecting");
            }
            Event::Connected => {
                if self.lost.swap(false, Ordering::Relaxed) {
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
            Event::SlowConsumer(_) => {
                // The client dropped messages of a subscription whose
                // buffer was full; it does not say which topic's.
                self.local.signal_gap();
                if self.log.allow() {
                    tracing::warn!(namespace = %self.source, node = self.local.node_name(), "NATS slow consumer: messages dropped, subscribers told of a gap");
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
