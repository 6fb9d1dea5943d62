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
//!   log order, with no [`Gap`], as long as the entries it missed are still
//!   in the stream; a broadcast that failed with [`Outcome::Unknown`] at most
//!   once.
//! - When entries it had not read were trimmed (the outage outlived the
//!   retention), every subscriber gets one [`Gap::Trimmed`] naming the
//!   first lost position and how many entries were lost, then delivery
//!   continues with the oldest entry kept. When the stream was lost (deleted,
//!   or the server restarted without its store) it is created afresh and
//!   every subscriber gets [`Gap::LogLost`], then the new log's entries
//!   from its first; so it does when the stream went back (the server lost
//!   entries it had acknowledged).
//! - [`PubSub::subscribe_since`] replays from the stream (a bounded
//!   ephemeral consumer): the entries of the range for this node that list
//!   one of the subscription's topics, [`Gap::Trimmed`] first if the
//!   start of the range is gone, [`Gap::ReplayLimit`] and nothing
//!   replayed when the range is longer than
//!   [`Retention::replay_limit`], [`Gap::LogLost`] when the position is of
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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
use crate::log::{Gap, Position, Retention};
use crate::net::{redact, AbortOnDrop, Inbound, RateLimit, Secrets, StopReport};
use crate::pubsub::{Builder, PubSub};
use crate::topic::Topic;
use crate::transport::{
    BoxFuture, Connection, Envelope, LocalNode, LogHead, Mode, Replay, Transport,
};
use crate::wire;

/// The namespace of a [`NatsConfig`] that sets none: the first token of
/// every subject.
pub const DEFAULT_NAMESPACE: &str = "staff-pubsub";

/// The suffix of the subject that carries direct broadcasts.
const DIRECT: &str = "_direct";

/// The client's own buffer per subscription in live mode: a hand-off to
/// the subject's drain task, which takes each message as it comes (see
/// `read_subject`), so it holds what arrives while that task waits to be
/// run (at most what the client reads in one turn of its own task). Far
/// above that, so that the client, whose drops are told out of band,
/// never drops; `subscription_capacity` bounds what waits for the node.
const CLIENT_HANDOFF: usize = 1 << 20;

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
    durable: Option<Retention>,
}

#[derive(Clone, PartialEq, Eq)]
enum Credentials {
    None,
    UserPassword { user: String, password: String },
    Token(String),
}

impl NatsConfig {
    /// A configuration for the NATS server at `url`, with the defaults for
    /// everything else.
    ///
    /// `url` is one server address or several separated by `,` (blanks
    /// around each ignored; the client picks one and fails over to the
    /// others), each `[scheme://][credentials@]host[:port]` as async-nats
    /// reads it: the scheme `nats` (the default when none is written),
    /// `tls`, `ws` or `wss`; the port 4222 by default; the credentials
    /// `user:password` or a token, percent-encoded (`%40` for `@`, `%2C`
    /// for `,`). Credentials in the URL are taken out of every address
    /// before the client sees it and given to it as options, with query
    /// pairs named `pass`, `password`, `token` or `auth_token`; servers that
    /// carry different credentials are refused (the client has one set for
    /// all). Those given by [`user_and_password`](Self::user_and_password)
    /// or [`token`](Self::token) take precedence. `nats://127.0.0.1:4222`,
    /// `app:secret@10.0.0.1`, `nats://a:4222,nats://b:4222` all work. A URL
    /// that does not parse fails [`NatsTransport::connect`], credentials
    /// hidden.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            credentials: Credentials::None,
            max_message_size: wire::DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            subscription_capacity: 65_536,
            durable: None,
        }
    }

    /// Durable delivery: every broadcast is appended to a JetStream stream
    /// that keeps what `retention` says, and every node, the sender
    /// included, delivers it from there, in log order; a node that was
    /// away reads what it missed. See the [module docs](self#durable-delivery)
    /// for what is guaranteed and what it costs. Every node of a namespace
    /// must use the same mode. Default: live delivery, routed by interest.
    pub fn durable(mut self, retention: Retention) -> Self {
        self.durable = Some(retention);
        self
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

    /// How many received messages of one topic (and of the direct subject)
    /// may wait for this node to handle them, in live mode: one that comes
    /// while that many wait is dropped, and subscribers receive a gap
    /// exactly where the loss is (see the [module docs](self#faults)). In
    /// durable mode, the client's buffer for the log (what it drops, the
    /// reader reads again). Default 65,536.
    pub fn subscription_capacity(mut self, messages: usize) -> Self {
        self.subscription_capacity = messages.max(1);
        self
    }

    /// The servers as shown in `Debug`, errors and logs: without
    /// credentials, and hiding more when the URL does not parse.
    fn shown(&self) -> String {
        match parse_servers(&self.url) {
            Ok(servers) => servers.shown,
            Err(_) => self.secrets().scrub(&redact(&self.url)),
        }
    }

    /// The subject that carries `topic` in this namespace.
    ///
    /// # Errors
    ///
    /// When the topic cannot be a subject: see the [module docs](self).
    pub fn subject(&self, topic: &Topic) -> Result<String, TransportError> {
        subject(&self.namespace, topic)
    }

    /// Every spelling of every secret of the configuration: in the URL as
    /// a whole and in each of its servers, raw and decoded, and given apart.
    fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::of(&self.url);
        for piece in self.url.split(',') {
            secrets = secrets.and(Secrets::of(piece.trim()));
            let rest = piece.split_once("://").map_or(piece, |(_, rest)| rest);
            if let Some(at) = rest.rfind('@') {
                let userinfo = &rest[..at];
                let secret = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
                secrets = secrets.with(secret).with(&decode_userinfo(secret));
            }
            if let Some((_, query)) = piece.split_once('?') {
                for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
                    if is_secret_query_key(key) {
                        secrets = secrets.with(value).with(&crate::net::percent_decode(value));
                    }
                }
            }
        }
        if let Ok(servers) = parse_servers(&self.url) {
            match &servers.credentials {
                Some(Credentials::UserPassword { password, .. }) => {
                    secrets = secrets.with(password)
                }
                Some(Credentials::Token(token)) => secrets = secrets.with(token),
                _ => {}
            }
        }
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
            .field("url", &self.shown())
            .field("namespace", &self.namespace)
            .field("credentials", &credentials)
            .field("max_message_size", &self.max_message_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("durable", &self.durable)
            .finish()
    }
}

/// The servers of a configured URL, as handed to the client: each without
/// user information (the client logs the addresses it connects to) nor
/// query pairs that may hold a secret, and the credentials they carried.
struct Servers {
    addresses: Vec<async_nats::ServerAddr>,
    credentials: Option<Credentials>,
    /// The servers for `Debug`, errors and logs: `user:***@` or `***@`
    /// where credentials were.
    shown: String,
}

/// Query keys whose values are hidden and never handed to the client.
fn is_secret_query_key(key: &str) -> bool {
    let key = crate::net::percent_decode(key).to_ascii_lowercase();
    crate::net::is_secret_key(&key) || key == "token" || key == "auth_token"
}

/// `%XX` decoded; `+` kept (it is itself in user information).
fn decode_userinfo(text: &str) -> String {
    crate::net::percent_decode(&text.replace('+', "%2B"))
}

/// Parses `url`: one server address or several separated by `,` (blanks
/// around each ignored), each `[scheme://][user:password@ | token@]host[:port]`
/// and more as async-nats reads it (`nats://` when no scheme is written).
/// The error is a cause that shows no part of the URL.
fn parse_servers(url: &str) -> Result<Servers, String> {
    let pieces: Vec<&str> = url.split(',').map(str::trim).collect();
    let count = pieces.len();
    let mut addresses = Vec::with_capacity(count);
    let mut shown = Vec::with_capacity(count);
    let mut credentials: Option<Credentials> = None;
    for (n, piece) in pieces.into_iter().enumerate() {
        let which = || {
            if count == 1 {
                "the server address".to_owned()
            } else {
                format!("server {} of {count}", n + 1)
            }
        };
        if piece.is_empty() {
            return Err(format!("{} is empty", which()));
        }
        let address: async_nats::ServerAddr = piece.parse().map_err(|error: std::io::Error| {
            format!(
                "{} is not a NATS server address ({error}; a `,` separates servers: \
                 write one in a password or token as %2C)",
                which()
            )
        })?;
        let mut parsed = address.into_inner();
        let user = decode_userinfo(parsed.username());
        let found = match parsed.password() {
            Some(password) => Some(Credentials::UserPassword {
                user: user.clone(),
                password: decode_userinfo(password),
            }),
            None if !user.is_empty() => Some(Credentials::Token(user.clone())),
            None => None,
        };
        if found.is_some()
            && (parsed.set_password(None).is_err() || parsed.set_username("").is_err())
        {
            return Err(format!("{} cannot hold user information", which()));
        }
        if let Some(query) = parsed.query() {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !is_secret_query_key(pair.split('=').next().unwrap_or_default()))
                .collect();
            let kept = kept.join("&");
            parsed.set_query((!kept.is_empty()).then_some(kept.as_str()));
        }
        let text = parsed.as_str().to_owned();
        shown.push(match (&found, text.split_once("://")) {
            (Some(Credentials::UserPassword { .. }), Some((scheme, rest))) => {
                format!("{scheme}://{user}:***@{rest}")
            }
            (Some(_), Some((scheme, rest))) => format!("{scheme}://***@{rest}"),
            _ => text.clone(),
        });
        let address = async_nats::ServerAddr::from_url(parsed)
            .map_err(|error| format!("{} is not a NATS server address ({error})", which()))?;
        addresses.push(address);
        match (&credentials, found) {
            (_, None) => {}
            (None, Some(found)) => credentials = Some(found),
            (Some(known), Some(found)) => {
                if *known != found {
                    return Err(
                        "the servers carry different credentials: the client has one set for \
                         all (give it with user_and_password or token)"
                            .to_owned(),
                    );
                }
            }
        }
    }
    Ok(Servers {
        addresses,
        credentials,
        shown: shown.join(","),
    })
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
    /// Durable mode: the namespace's log.
    log: Option<LogHandle<M>>,
    _tasks: Vec<AbortOnDrop>,
    message: PhantomData<fn(&M)>,
}

/// A durable transport's log and how it decodes entries for a replay.
struct LogHandle<M> {
    log: Arc<DurableLog>,
    inbound: Arc<Inbound<M>>,
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
        let namespace: Arc<str> = Arc::from(config.namespace.as_str());
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
            .connection_timeout(config.connect_timeout)
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
        let connecting =
            tokio::time::timeout(config.connect_timeout, options.connect(servers.addresses));
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
        let inbound = Arc::new(Inbound::new(
            local.clone(),
            "NATS",
            Arc::clone(&namespace),
            config.max_message_size,
            // One topic per envelope on a topic's subject; a direct
            // broadcast lists a broadcast's topics.
            wire::DEFAULT_MAX_TOPICS,
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
            response_timeout: config.response_timeout,
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
            max_message_size: config.max_message_size,
            response_timeout: config.response_timeout,
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
            .timeout(config.response_timeout)
            .build(client.clone());
        let log = Arc::new(DurableLog {
            js,
            stream: stream_name(&namespace),
            subject: format!("{namespace}.{LOG}"),
            retention,
            secrets: Arc::clone(&secrets),
            response_timeout: config.response_timeout,
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
            max_message_size: config.max_message_size,
            response_timeout: config.response_timeout,
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
            let encoded = wire::encode(&envelope, self.max_message_size).map_err(|error| {
                TransportError::new("message not encoded for NATS", error)
                    .with_outcome(Outcome::NotSent)
            });
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
        let encoded = encode(&self.namespace, &envelope, self.max_message_size);
        Box::pin(async move { self.send(encoded?).await })
    }

    fn interest_changed(&self, topic: Topic) {
        // A durable node reads the whole log: no interest to register.
        if self.log.is_none() {
            self.interest.changed(topic);
        }
    }

    fn durable(&self) -> bool {
        self.log.is_some()
    }

    fn log_head(&self) -> BoxFuture<'_, Result<LogHead, TransportError>> {
        Box::pin(async move {
            let Some(durable) = &self.log else {
                return Ok(LogHead::Unknown);
            };
            Ok(match durable.log.info().await? {
                Some(info) => LogHead::At {
                    log: info.log(),
                    seq: info.state.last_seq,
                },
                None => LogHead::Missing,
            })
        })
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
        Box::pin(async move {
            match &self.log {
                Some(durable) => {
                    durable
                        .log
                        .replay(&durable.inbound, after, through, topics)
                        .await
                }
                None => Err(not_sent(
                    "this NATS transport is not durable: it keeps no log",
                )),
            }
        })
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

/// What a subject's drain task hands its deliver task: a received
/// message, or the mark of a loss after the messages handed before it.
enum Handed {
    Message(Bytes),
    Lost,
}

/// The two tasks that read one NATS subscription (see [`read_subject`]):
/// dropping this stops both, and dropping the client's subscriber
/// unsubscribes.
struct SubjectReader {
    _drain: AbortOnDrop,
    _deliver: AbortOnDrop,
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
fn read_subject<M>(
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
struct InterestTask<M> {
    client: Client,
    namespace: Arc<str>,
    inbound: Arc<Inbound<M>>,
    /// The reader of each subscribed subject: dropping it drops its
    /// subscriber, which unsubscribes.
    subscribed: HashMap<Topic, SubjectReader>,
    /// How many messages of one subject may wait: `subscription_capacity`.
    capacity: usize,
    /// One rate limit for every subject's slow-consumer WARN.
    slow_log: Arc<RateLimit>,
    /// What comes back on the sync subject.
    echo: Arc<SyncEcho>,
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
struct SyncEcho {
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

    async fn run(self: Arc<Self>, mut sync: async_nats::Subscriber) {
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
    /// Durable mode: the log reader's restart signal. A reconnect or a
    /// slow consumer restarts the reader from where the node is, instead
    /// of a gap.
    restart: Option<Arc<tokio::sync::Notify>>,
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

/// The suffix of the subject every broadcast of a durable namespace is
/// appended to.
const LOG: &str = "_log";

/// How many log entries one pull request of a node's reader asks for.
const PULL_BATCH: usize = 512;

/// How many log entries one step of a replay reads.
const REPLAY_BATCH: usize = 1_000;

/// How long JetStream keeps a consumer of this transport (reader or replay)
/// that nobody pulls from any more: the consumer of a node that went away.
const CONSUMER_INACTIVE: Duration = Duration::from_secs(30);

/// A pull request's expiry and idle heartbeat: a reader whose consumer
/// stays silent twice the heartbeat (a frozen server, a lost consumer)
/// starts a new one from where it was.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
const PULL_HEARTBEAT: Duration = Duration::from_secs(3);

/// The JetStream stream of a namespace: `staff-pubsub-` and the namespace,
/// every byte other than an ASCII letter, digit or `-` written `_XX` (hex),
/// so that two namespaces never share a stream (`app.x` is
/// `staff-pubsub-app_2Ex`).
fn stream_name(namespace: &str) -> String {
    use std::fmt::Write as _;
    let mut name = String::from("staff-pubsub-");
    for byte in namespace.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            name.push(char::from(byte));
        } else {
            let _ = write!(name, "_{byte:02X}");
        }
    }
    name
}

/// The 16-bit log id of a stream created at `created` (the creation time
/// as the server reports it, RFC 3339): its FNV-1a hash folded to 16 bits.
/// Every node computes the same id for one stream; a stream created
/// afresh gets another (but for a 1 in 65,536 chance).
fn log_id(created: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in created.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let folded = hash ^ (hash >> 16) ^ (hash >> 32) ^ (hash >> 48);
    // The low 16 bits of the fold.
    (folded & 0xffff) as u16
}

/// What this transport reads of a stream's info: its JSON fields, not
/// async-nats's typed info (whose date type depends on a feature of
/// async-nats that another crate may turn on).
#[derive(serde::Deserialize)]
struct StreamInfo {
    created: String,
    config: StreamLimits,
    state: StreamState,
}

#[derive(serde::Deserialize, PartialEq, Eq)]
struct StreamLimits {
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    max_msgs: i64,
    /// Nanoseconds; 0 for no limit.
    #[serde(default)]
    max_age: u64,
}

#[derive(serde::Deserialize)]
struct StreamState {
    #[serde(default)]
    first_seq: u64,
    #[serde(default)]
    last_seq: u64,
}

impl StreamInfo {
    fn log(&self) -> u16 {
        log_id(&self.created)
    }

    /// The first sequence number still held: `last + 1` when empty.
    fn first(&self) -> u64 {
        self.state.first_seq.max(1)
    }
}

/// A durable namespace's stream: where broadcasts are appended and read.
struct DurableLog {
    js: async_nats::jetstream::Context,
    stream: String,
    subject: String,
    retention: Retention,
    secrets: Arc<Secrets>,
    response_timeout: Duration,
}

impl DurableLog {
    fn limits(&self) -> StreamLimits {
        StreamLimits {
            subjects: vec![self.subject.clone()],
            max_msgs: self
                .retention
                .entries_limit()
                .map_or(-1, |entries| i64::try_from(entries).unwrap_or(i64::MAX)),
            max_age: self
                .retention
                .age_limit()
                .map_or(0, |age| u64::try_from(age.as_nanos()).unwrap_or(u64::MAX)),
        }
    }

    /// One JetStream API request, its error shown without secrets.
    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        subject: String,
        body: &serde_json::Value,
    ) -> Result<Result<T, async_nats::jetstream::Error>, TransportError> {
        use async_nats::jetstream::response::Response;
        let answer = tokio::time::timeout(self.response_timeout, self.js.request(subject, body))
            .await
            .map_err(|_| {
                not_sent(format!(
                    "JetStream did not answer {what} within {:?}",
                    self.response_timeout
                ))
            })?
            .map_err(|error| {
                not_sent(format!(
                    "JetStream {what} failed: {}",
                    self.secrets.cause(&error)
                ))
            })?;
        Ok(match answer {
            Response::Ok(value) => Ok(value),
            Response::Err { error } => Err(error),
        })
    }

    /// The stream's info, `None` if it does not exist.
    async fn info(&self) -> Result<Option<StreamInfo>, TransportError> {
        let answer = self
            .request::<StreamInfo>(
                "stream info",
                format!("STREAM.INFO.{}", self.stream),
                &serde_json::Value::Null,
            )
            .await?;
        match answer {
            Ok(info) => Ok(Some(info)),
            Err(error)
                if error.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            Err(error) => Err(not_sent(format!(
                "JetStream refused the stream info of {}: {error}",
                self.stream
            ))),
        }
    }

    /// Binds the stream, creating it with this node's retention if it does
    /// not exist. A stream that does not carry this namespace's log subject
    /// is refused; one with other limits is used as it is (WARN).
    async fn bind(&self) -> Result<StreamInfo, TransportError> {
        let info = match self.info().await? {
            Some(info) => info,
            None => {
                let limits = self.limits();
                let body = serde_json::json!({
                    "name": self.stream,
                    "subjects": limits.subjects,
                    "retention": "limits",
                    "max_consumers": -1,
                    "max_msgs": limits.max_msgs,
                    "max_bytes": -1,
                    "max_age": limits.max_age,
                    "max_msgs_per_subject": -1,
                    "max_msg_size": -1,
                    "storage": "file",
                    "discard": "old",
                    "num_replicas": 1,
                });
                let created = self
                    .request::<StreamInfo>(
                        "stream create",
                        format!("STREAM.CREATE.{}", self.stream),
                        &body,
                    )
                    .await?;
                match created {
                    Ok(info) => {
                        tracing::info!(stream = %self.stream, subject = %self.subject, "created the JetStream stream of the namespace");
                        info
                    }
                    // Another node created it meanwhile.
                    Err(error)
                        if error.error_code()
                            == async_nats::jetstream::ErrorCode::STREAM_NAME_EXIST =>
                    {
                        self.info().await?.ok_or_else(|| {
                            not_sent(format!("the JetStream stream {} vanished", self.stream))
                        })?
                    }
                    Err(error) => {
                        return Err(not_sent(format!(
                            "JetStream refused to create the stream {}: {error}",
                            self.stream
                        )))
                    }
                }
            }
        };
        if !info.config.subjects.contains(&self.subject) {
            return Err(not_sent(format!(
                "the JetStream stream {} does not take {} (its subjects: {:?}): \
                 delete it or pick another namespace",
                self.stream, self.subject, info.config.subjects
            )));
        }
        let wanted = self.limits();
        if info.config.max_msgs != wanted.max_msgs || info.config.max_age != wanted.max_age {
            tracing::warn!(
                stream = %self.stream,
                max_msgs = info.config.max_msgs,
                max_age_ns = info.config.max_age,
                wanted_max_msgs = wanted.max_msgs,
                wanted_max_age_ns = wanted.max_age,
                "the namespace's JetStream stream exists with another retention than this node's: \
                 it keeps its own (update or delete the stream to change it)"
            );
        }
        Ok(info)
    }

    /// An ephemeral pull consumer of every entry from `start` on.
    async fn consumer(
        &self,
        start: u64,
        memory: bool,
    ) -> Result<async_nats::jetstream::consumer::PullConsumer, TransportError> {
        use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|error| {
                not_sent(format!("JetStream stream: {}", self.secrets.cause(&error)))
            })?;
        let config = pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: CONSUMER_INACTIVE,
            memory_storage: memory,
            ..pull::Config::default()
        };
        tokio::time::timeout(self.response_timeout, stream.create_consumer(config))
            .await
            .map_err(|_| {
                not_sent(format!(
                    "JetStream made no consumer within {:?}",
                    self.response_timeout
                ))
            })?
            .map_err(|error| {
                not_sent(format!(
                    "cannot read the JetStream stream {}: {}",
                    self.stream,
                    self.secrets.cause(&error)
                ))
            })
    }

    /// Appends one envelope; `Ok` once JetStream acknowledged it.
    async fn append(&self, bytes: Vec<u8>) -> Result<(), TransportError> {
        use async_nats::jetstream::context::PublishErrorKind;
        let handed = AtomicBool::new(false);
        let appending = async {
            let ack = self
                .js
                .publish(self.subject.clone(), Bytes::from(bytes))
                .await
                .map_err(|error| {
                    let outcome = match error.kind() {
                        // Nothing was written to the connection.
                        PublishErrorKind::MaxPayloadExceeded
                        | PublishErrorKind::MaxAckPending
                        | PublishErrorKind::TimedOut
                        | PublishErrorKind::Other => Outcome::NotSent,
                        _ => Outcome::Unknown,
                    };
                    TransportError::msg(format!(
                        "JetStream publish failed: {}",
                        self.secrets.cause(&error)
                    ))
                    .with_outcome(outcome)
                })?;
            handed.store(true, Ordering::Relaxed);
            ack.await.map(drop).map_err(|error| {
                let refused = std::error::Error::source(&error)
                    .is_some_and(|source| source.is::<async_nats::jetstream::Error>());
                let outcome = match error.kind() {
                    // No stream took it (no responders), or JetStream
                    // answered with an error: not stored.
                    PublishErrorKind::StreamNotFound | PublishErrorKind::MaxPayloadExceeded => {
                        Outcome::NotSent
                    }
                    PublishErrorKind::Other if refused => Outcome::NotSent,
                    _ => Outcome::Unknown,
                };
                TransportError::msg(format!(
                    "JetStream did not store the broadcast: {}",
                    self.secrets.cause(&error)
                ))
                .with_outcome(outcome)
            })
        };
        match tokio::time::timeout(self.response_timeout, appending).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::msg(format!(
                "JetStream did not acknowledge the broadcast within {:?}",
                self.response_timeout
            ))
            .with_outcome(if handed.load(Ordering::Relaxed) {
                Outcome::Unknown
            } else {
                Outcome::NotSent
            })),
        }
    }
}

/// How a reader's session with its consumer ended.
enum Ended {
    /// The server is gone: stop.
    Gone,
    /// Start a new consumer from where the node is (a reconnect, entries
    /// lost in transit).
    Restart,
}

/// Reads a durable namespace's log from where this node is, for as long
/// as the server lives: a new consumer after every reconnect or failure,
/// from the entry after the last one delivered.
struct LogReader<M> {
    log: Arc<DurableLog>,
    inbound: Arc<Inbound<M>>,
    /// The log id being read.
    id: u16,
    /// The sequence number of the next entry to deliver.
    next: u64,
    restart: Arc<tokio::sync::Notify>,
    failure_log: RateLimit,
}

impl<M> LogReader<M>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    /// Reads until the server is gone; restarted from where it was if its
    /// task ends otherwise (a panic that escaped it). The state sits behind an async mutex, released
    /// when the task unwinds, so a restart goes on from the last entry read.
    async fn run(self, stopped: StopReport<M>) {
        let task = format!("the NATS log reader of stream {}", self.log.stream);
        let reader = Arc::new(tokio::sync::Mutex::new(self));
        crate::net::supervise(
            stopped,
            crate::net::Backoff::new(Duration::from_millis(50), Duration::from_secs(2)),
            &task,
            " from its last entry",
            move || {
                let reader = Arc::clone(&reader);
                async move { reader.lock().await.read().await }
            },
        )
        .await;
    }

    async fn read(&mut self) {
        let mut backoff =
            crate::net::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            if !self.inbound.local.is_alive() {
                break;
            }
            match self.session().await {
                Ok(Ended::Gone) => break,
                Ok(Ended::Restart) => {
                    backoff =
                        crate::net::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
                }
                Err(error) => {
                    if self.failure_log.allow() {
                        tracing::warn!(%error, node = self.inbound.local.node_name(), "cannot read the NATS log now: retrying from where this node is");
                    }
                    // The next reconnect, or the backoff, whichever first.
                    let _ =
                        tokio::time::timeout(backoff.next_delay(), self.restart.notified()).await;
                }
            }
        }
    }

    /// Binds the stream, checks what was lost, and delivers from a new
    /// consumer until it fails or a restart is asked.
    async fn session(&mut self) -> Result<Ended, TransportError> {
        let info = self.log.bind().await?;
        let local = &self.inbound.local;
        let id = info.log();
        if id != self.id {
            // The stream was created afresh: what it held is gone.
            self.id = id;
            self.next = info.first();
            local.set_log_head(id, self.next - 1);
            local.signal_gap_with(Gap::LogLost);
            tracing::warn!(stream = %self.log.stream, node = local.node_name(), "the NATS log was lost (its stream was created afresh): subscribers told, reading the new one from its start");
        } else if info.state.last_seq.saturating_add(1) < self.next {
            // The stream went back: the server lost entries it had
            // acknowledged (and read to this node).
            self.next = info.state.last_seq + 1;
            local.set_log_head(id, info.state.last_seq);
            local.signal_gap_with(Gap::LogLost);
            tracing::warn!(stream = %self.log.stream, node = local.node_name(), "the NATS log went back (the server lost entries): subscribers told");
        } else if info.first() > self.next {
            self.trimmed(info.first());
        }
        let consumer = self.log.consumer(self.next, true).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|error| {
                not_sent(format!(
                    "cannot pull from the JetStream stream: {}",
                    self.log.secrets.cause(&error)
                ))
            })?;
        self.failure_log.reset();
        // The first entry from a new consumer that is past `next` tells
        // what was trimmed; a later jump is a loss in transit (the client
        // dropped messages): read again from `next`.
        let mut fresh = true;
        loop {
            let item = tokio::select! {
                item = messages.next() => item,
                () = self.restart.notified() => return Ok(Ended::Restart),
            };
            let message = match item {
                None => return Ok(Ended::Restart),
                Some(Err(error)) => {
                    return Err(not_sent(format!(
                        "pulling from the JetStream stream failed: {}",
                        self.log.secrets.cause(&error)
                    )))
                }
                Some(Ok(message)) => message,
            };
            let seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(_) => {
                    return Err(not_sent(
                        "a JetStream message without its stream sequence number",
                    ))
                }
            };
            if seq < self.next {
                continue;
            }
            if seq > self.next {
                if !fresh {
                    return Ok(Ended::Restart);
                }
                self.trimmed(seq);
            }
            fresh = false;
            let Some(position) = Position::new(self.id, seq) else {
                return Err(not_sent(format!(
                    "JetStream sequence number {seq} is past a position's 48 bits"
                )));
            };
            // Past it before handling it: a message whose own code brings
            // the task down is not read again by the restarted reader.
            self.next = seq + 1;
            if !self.inbound.handle_logged(&message.payload, position) {
                return Ok(Ended::Gone);
            }
        }
    }

    /// Entries from `next` up to `first` (excluded) are gone: one gap
    /// saying so, and the node's position moves past them.
    fn trimmed(&mut self, first: u64) {
        let local = &self.inbound.local;
        let missing = first - self.next;
        if let Some(from) = Position::new(self.id, self.next) {
            local.signal_gap_with(Gap::Trimmed {
                first: from,
                missing,
            });
        }
        tracing::warn!(stream = %self.log.stream, node = local.node_name(), missing, "NATS log entries were trimmed before this node read them: subscribers told");
        local.set_log_head(self.id, first - 1);
        self.next = first;
    }
}

impl DurableLog {
    /// The entries after `after` through `through` that are for this node
    /// and list one of `topics`: see [`Transport::replay`].
    async fn replay<M>(
        &self,
        inbound: &Inbound<M>,
        after: Position,
        through: Position,
        topics: &[Topic],
    ) -> Result<Replay<M>, TransportError>
    where
        M: DeserializeOwned + Send + Sync + 'static,
    {
        let Some(total) = after.entries_until(through) else {
            return Err(not_sent(format!(
                "no log range from {after} through {through}"
            )));
        };
        if total > self.retention.replay_limit() {
            return Ok(Replay::new(
                Some(Gap::ReplayLimit { missing: total }),
                Vec::new(),
            ));
        }
        let Some(info) = self.info().await? else {
            return Ok(Replay::new(Some(Gap::LogLost), Vec::new()));
        };
        if info.log() != after.log() {
            return Ok(Replay::new(Some(Gap::LogLost), Vec::new()));
        }
        let log = after.log();
        let start = after.seq() + 1;
        let mut gap = None;
        let mut replayed = Vec::new();
        let mut expected = start;
        if total > 0 {
            let consumer = self.consumer(start, true).await?;
            let failed = |error: &(dyn std::error::Error + 'static)| {
                TransportError::msg(format!(
                    "reading the JetStream stream failed: {}",
                    self.secrets.cause(error)
                ))
                .with_outcome(Outcome::NotSent)
            };
            while expected <= through.seq() {
                let want = usize::try_from(through.seq() - expected + 1)
                    .unwrap_or(usize::MAX)
                    .min(REPLAY_BATCH);
                let reading = async {
                    let mut batch = consumer
                        .fetch()
                        .max_messages(want)
                        .messages()
                        .await
                        .map_err(|error| failed(&error))?;
                    let mut read = Vec::new();
                    while let Some(message) = batch.next().await {
                        let message = message.map_err(|error| failed(&*error))?;
                        let seq = message
                            .info()
                            .map_err(|error| failed(&*error))?
                            .stream_sequence;
                        read.push((seq, message.message.payload));
                    }
                    Ok::<_, TransportError>(read)
                };
                let read = tokio::time::timeout(self.response_timeout, reading)
                    .await
                    .map_err(|_| {
                        not_sent(format!(
                            "JetStream did not answer a replay within {:?}",
                            self.response_timeout
                        ))
                    })??;
                if read.is_empty() {
                    break;
                }
                for (seq, bytes) in read {
                    if seq < expected {
                        continue;
                    }
                    // Entries of the range before this one are gone.
                    let upto = seq.min(through.seq() + 1);
                    if upto > expected {
                        if expected != start {
                            return Err(not_sent(
                                "log entries vanished during the replay (trimmed meanwhile): \
                                 try again",
                            ));
                        }
                        gap = Position::new(log, expected).map(|first| Gap::Trimmed {
                            first,
                            missing: upto - expected,
                        });
                    }
                    expected = upto;
                    if seq > through.seq() {
                        break;
                    }
                    expected = seq + 1;
                    // With the number of asked topics it lists: a copy per
                    // reached topic, as live (the delivery rule).
                    if let (Some((message, copies)), Some(position)) =
                        (inbound.replayed(&bytes, topics), Position::new(log, seq))
                    {
                        replayed.push((position, message, copies));
                    }
                }
            }
            let name = consumer.cached_info().name.clone();
            let js = self.js.clone();
            let stream = self.stream.clone();
            tokio::spawn(async move {
                if let Ok(stream) = js.get_stream_no_info(stream).await {
                    let _ = stream.delete_consumer(&name).await;
                }
            });
        }
        if expected <= through.seq() {
            // Nothing left in the range: all of it from `expected` on is gone.
            if expected != start {
                return Err(not_sent(
                    "log entries vanished during the replay (trimmed meanwhile): try again",
                ));
            }
            gap = Position::new(log, expected).map(|first| Gap::Trimmed {
                first,
                missing: through.seq() - expected + 1,
            });
        }
        Ok(Replay::with_copies(gap, replayed))
    }
}
