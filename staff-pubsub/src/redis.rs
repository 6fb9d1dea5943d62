//! The Redis transport: the same [`PubSub`] on several nodes, over Redis
//! pub/sub (feature `redis`).
//!
//! Every node of a namespace publishes to, and subscribes to, one Redis
//! channel named after the namespace. A broadcast is one `PUBLISH` of one
//! [`wire`] envelope (JSON) carrying the topic list, whatever the number of
//! topics; each receiving node dispatches it to its own subscribers.
//!
//! ```no_run
//! use staff_pubsub::redis::RedisConfig;
//! use staff_pubsub::{staff, PubSub};
//!
//! # async fn start() -> Result<(), staff_pubsub::Error> {
//! let config = RedisConfig::new("redis://127.0.0.1:6379").namespace("my-app");
//! let pubsub = PubSub::builder().node_name("web-1").redis(config).await?;
//! // The stock spec's functions (`staff::broadcast_team` ...) now reach every node.
//! staff::install(pubsub).expect("installed at start-up, before first use");
//! # Ok(()) }
//! ```
//!
//! # Faults
//!
//! - [`RedisTransport::connect`] fails within
//!   [`connect_timeout`](RedisConfig::connect_timeout) when Redis cannot be
//!   reached; it does not retry.
//! - A broadcast whose `PUBLISH` was not acknowledged by Redis returns
//!   [`Error::Transport`]: `Ok` always means Redis
//!   took the message (not that every node got it: a Redis that dies right
//!   after accepting a message may not have passed it on). After a failure,
//!   or once the receive side has seen the connection drop, the next
//!   broadcast connects afresh (bounded by the connect timeout); nothing is
//!   queued or retried behind the caller's back.
//! - When the subscription's connection drops, the receive task reconnects
//!   with exponential backoff between the configured bounds, subscribes
//!   again, and then every local subscriber receives
//!   [`RecvError::Gap`](crate::RecvError::Gap): what was published meanwhile
//!   is lost, so state built from the stream should be reloaded. A
//!   connection that goes silent is detected by a periodic `PING`.
//! - A message on the channel that is not a valid envelope for this node
//!   (not JSON, another format version, truncated, larger than
//!   [`max_message_size`](RedisConfig::max_message_size), an event the spec
//!   does not have) is skipped, counted in
//!   [`Stats::rejected`](crate::Stats::rejected) and logged with
//!   `tracing::warn!`.
//! - The receive task ends when the server is dropped.

use std::fmt;
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, TransportError};
use crate::pubsub::{Builder, PubSub};
use crate::transport::{BoxFuture, Envelope, LocalNode, Transport};
use crate::wire;

/// The namespace (and so the channel) of a [`RedisConfig`] that sets none.
pub const DEFAULT_NAMESPACE: &str = "staff-pubsub";

/// Where and how a node reaches Redis.
///
/// ```
/// use std::time::Duration;
/// use staff_pubsub::redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://app:secret@127.0.0.1:6379/0")
///     .namespace("tenant-42")
///     .max_message_size(64 * 1024)
///     .connect_timeout(Duration::from_secs(2))
///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(10));
/// assert_eq!(config.channel(), "tenant-42");
/// // The password never shows in logs.
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisConfig {
    url: String,
    namespace: String,
    max_message_size: usize,
    connect_timeout: Duration,
    response_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    health_check_interval: Duration,
}

impl RedisConfig {
    /// A configuration for the Redis at `url`, with the defaults for
    /// everything else.
    ///
    /// The URL is handed to redis-rs as is: `redis://[user][:password@]host[:port][/db]`,
    /// or `rediss://...` for TLS (feature `redis-tls`). A user and password
    /// authenticate with Redis ACLs (`AUTH user password`); a password alone
    /// with the `default` user.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            max_message_size: wire::DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            health_check_interval: Duration::from_secs(15),
        }
    }

    /// The namespace: nodes of one namespace reach each other, and never
    /// the nodes of another namespace on the same Redis. It is the Redis
    /// channel name. Not empty. Default [`DEFAULT_NAMESPACE`].
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The largest encoded envelope, in bytes: a broadcast of a larger one
    /// fails, a received larger one is skipped. Default
    /// [`wire::DEFAULT_MAX_MESSAGE_SIZE`] (1 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long [`RedisTransport::connect`] and each later connection
    /// attempt may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a `PUBLISH` (and a health-check `PING`) waits for Redis's
    /// reply before it fails. Default 5 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The bounds of the receive side's reconnection delay: the first
    /// retry waits about `min`, each failure doubles it, up to `max`.
    /// Defaults 100 ms and 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// How often the receive side pings Redis to notice a connection that
    /// went silent (a half-open TCP connection). Default 15 s.
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_check_interval = interval;
        self
    }

    /// The Redis channel of the namespace: the namespace itself. Subscribe
    /// to it (`redis-cli SUBSCRIBE <channel>`) to see the envelopes.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.namespace
    }

    fn redis_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("max_message_size", &self.max_message_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("health_check_interval", &self.health_check_interval)
            .finish()
    }
}

/// The URL with its password, if any, replaced by `***`: what logs and
/// errors show.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{user}@{host}{path}")
}

/// The Redis transport of one node: publishes its broadcasts to the
/// namespace's channel and dispatches what the channel carries to its
/// subscribers.
///
/// Made by [`RedisTransport::connect`], usually through
/// [`Builder::redis`]. Dropping it (which dropping the last [`PubSub`]
/// handle does) stops its receive task and closes its connections.
pub struct RedisTransport<M> {
    publisher: Arc<Publisher>,
    channel: Arc<str>,
    max_message_size: usize,
    receiver: tokio::task::JoinHandle<()>,
    message: PhantomData<fn(&M)>,
}

impl<M> fmt::Debug for RedisTransport<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("channel", &self.channel)
            .field("max_message_size", &self.max_message_size)
            .finish_non_exhaustive()
    }
}

impl<M> Drop for RedisTransport<M> {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

impl<M> RedisTransport<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Connects to Redis, subscribes to the namespace's channel, and starts
    /// the task that dispatches what arrives to `local`'s subscribers.
    ///
    /// Must run inside a tokio runtime, which runs the receive task.
    ///
    /// # Errors
    ///
    /// An invalid configuration (empty namespace, zero maximum size), an
    /// invalid URL, no tokio runtime, or Redis not reachable within the
    /// connect timeout (refused, timed out, authentication failed).
    pub async fn connect(config: RedisConfig, local: LocalNode<M>) -> Result<Self, TransportError> {
        if config.namespace.is_empty() {
            return Err(TransportError::msg("the Redis namespace must not be empty"));
        }
        if config.max_message_size == 0 {
            return Err(TransportError::msg(
                "the maximum message size must be at least one byte",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
            TransportError::new("the Redis transport needs a tokio runtime", error)
        })?;
        let shown = redact(&config.url);
        let client = Client::open(config.url.as_str())
            .map_err(|error| TransportError::new(format!("invalid Redis URL {shown}"), error))?;
        let channel: Arc<str> = Arc::from(config.namespace.as_str());
        let publisher = Arc::new(Publisher::new(client.clone(), &config));
        let connected = tokio::time::timeout(config.connect_timeout, async {
            publisher.connection().await?;
            subscribe(&client, &channel).await
        })
        .await;
        let subscription = match connected {
            Ok(Ok(subscription)) => subscription,
            Ok(Err(error)) => {
                return Err(TransportError::new(
                    format!("cannot connect to Redis at {shown}"),
                    error,
                ))
            }
            Err(elapsed) => {
                return Err(TransportError::new(
                    format!(
                        "cannot connect to Redis at {shown}: no answer within {:?}",
                        config.connect_timeout
                    ),
                    elapsed,
                ))
            }
        };
        tracing::info!(
            url = %shown,
            channel = %channel,
            node = local.node_name(),
            "connected to Redis"
        );
        let receive = Receiver {
            client,
            publisher: Arc::clone(&publisher),
            channel: Arc::clone(&channel),
            local,
            config: config.clone(),
        };
        let receiver = runtime.spawn(receive.run(subscription));
        Ok(Self {
            publisher,
            channel,
            max_message_size: config.max_message_size,
            receiver,
            message: PhantomData,
        })
    }

    /// The Redis channel this transport publishes to and reads.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl<M> Transport<M> for RedisTransport<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn publish<'a>(
        &'a self,
        envelope: Envelope<'a, M>,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        let encoded = wire::encode(&envelope, self.max_message_size);
        Box::pin(async move {
            let bytes = encoded
                .map_err(|error| TransportError::new("message not encoded for Redis", error))?;
            self.publisher.publish(&self.channel, &bytes).await
        })
    }
}

impl<M> Builder<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Builds a server whose broadcasts reach every node of `config`'s
    /// namespace through Redis: [`build_with`](Self::build_with) and
    /// [`RedisTransport::connect`] in one call. Give each node a unique
    /// [`node_name`](Self::node_name).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyNodeName`], or [`Error::Transport`] as
    /// [`RedisTransport::connect`].
    pub async fn redis(self, config: RedisConfig) -> Result<PubSub<M>, Error> {
        self.build_with(|local| RedisTransport::connect(config, local))
            .await
    }
}

/// The publishing side: one multiplexed connection, replaced after a
/// failure by the next publish. Never the `ConnectionManager`, which may
/// retry a command on its own: a publish reports exactly what Redis said.
struct Publisher {
    client: Client,
    redis_config: AsyncConnectionConfig,
    connect_timeout: Duration,
    /// The current connection and its generation, so that a failed publish
    /// drops only the connection it failed on.
    current: tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: std::sync::atomic::AtomicU64,
}

impl Publisher {
    fn new(client: Client, config: &RedisConfig) -> Self {
        Self {
            client,
            redis_config: config.redis_config(),
            connect_timeout: config.connect_timeout,
            current: tokio::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The current connection, connecting if there is none. Concurrent
    /// callers wait for one attempt.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let mut current = self.current.lock().await;
        if let Some((generation, connection)) = &*current {
            return Ok((*generation, connection.clone()));
        }
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&self.redis_config);
        let connection = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(connection) => connection?,
            Err(_) => {
                return Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection attempt timed out",
                )))
            }
        };
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *current = Some((generation, connection.clone()));
        Ok((generation, connection))
    }

    /// Drops the connection `failed`, unless it was replaced already.
    async fn forget(&self, failed: u64) {
        let mut current = self.current.lock().await;
        if matches!(&*current, Some((generation, _)) if *generation == failed) {
            *current = None;
        }
    }

    /// Drops the current connection, whichever it is: the receive side lost
    /// its own, so this one most likely went with it. The next publish then
    /// connects afresh instead of failing once on a dead connection.
    async fn forget_current(&self) {
        *self.current.lock().await = None;
    }

    async fn publish(&self, channel: &str, bytes: &[u8]) -> Result<(), TransportError> {
        let (generation, mut connection) = self
            .connection()
            .await
            .map_err(|error| TransportError::new("Redis is not reachable", error))?;
        let reply: Result<i64, RedisError> = ::redis::cmd("PUBLISH")
            .arg(channel)
            .arg(bytes)
            .query_async(&mut connection)
            .await;
        match reply {
            Ok(_receivers) => Ok(()),
            Err(error) => {
                // A reply from the server (no permission, ...) leaves the
                // connection usable; anything else may have broken it.
                if !matches!(error.kind(), ErrorKind::Server(_)) {
                    self.forget(generation).await;
                }
                Err(TransportError::new("Redis PUBLISH failed", error))
            }
        }
    }
}

async fn subscribe(client: &Client, channel: &str) -> Result<Subscribed, RedisError> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    sink.subscribe(channel).await?;
    Ok(Subscribed { sink, stream })
}

/// A connection subscribed to the channel.
struct Subscribed {
    sink: PubSubSink,
    stream: PubSubStream,
}

/// Why reading the subscription stopped.
enum Stopped {
    /// The connection dropped or stopped answering.
    ConnectionLost,
    /// The server is gone: the task ends.
    ServerGone,
}

/// The receive side: one task per transport.
struct Receiver<M> {
    client: Client,
    publisher: Arc<Publisher>,
    channel: Arc<str>,
    local: LocalNode<M>,
    config: RedisConfig,
}

impl<M> Receiver<M>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    async fn run(self, first: Subscribed) {
        let mut subscribed = first;
        loop {
            match self.read(subscribed).await {
                Stopped::ServerGone => break,
                Stopped::ConnectionLost => {
                    tracing::warn!(
                        channel = %self.channel,
                        node = self.local.node_name(),
                        "lost the Redis subscription: reconnecting"
                    );
                    self.publisher.forget_current().await;
                }
            }
            subscribed = match self.resubscribe().await {
                Some(subscribed) => subscribed,
                None => break,
            };
            // Subscribed again: whatever was published while the connection
            // was down is lost, and every subscriber must be told.
            self.local.signal_gap();
            tracing::info!(
                channel = %self.channel,
                node = self.local.node_name(),
                "resubscribed to Redis: subscribers told of the gap"
            );
        }
        tracing::debug!(channel = %self.channel, "Redis receive task stopped");
    }

    /// Dispatches what the subscription delivers until it breaks.
    async fn read(&self, subscribed: Subscribed) -> Stopped {
        let Subscribed {
            mut sink,
            mut stream,
        } = subscribed;
        let period = self
            .config
            .health_check_interval
            .max(Duration::from_millis(1));
        let mut health = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        if !self.handle(message.get_payload_bytes()) {
                            return Stopped::ServerGone;
                        }
                    }
                    None => return Stopped::ConnectionLost,
                },
                _ = health.tick() => {
                    if !self.local.is_alive() {
                        return Stopped::ServerGone;
                    }
                    let ping = sink.ping::<::redis::Value>();
                    match tokio::time::timeout(self.config.response_timeout, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => {
                            tracing::warn!(%error, channel = %self.channel, "Redis health check failed");
                            return Stopped::ConnectionLost;
                        }
                        Err(_) => {
                            tracing::warn!(channel = %self.channel, "Redis health check got no answer");
                            return Stopped::ConnectionLost;
                        }
                    }
                }
            }
        }
    }

    /// Decodes and dispatches one message from the channel; skips, counts
    /// and logs anything malformed. Returns false once the server is gone.
    fn handle(&self, bytes: &[u8]) -> bool {
        let me = self.local.node_name();
        let incoming = match wire::decode(bytes, self.config.max_message_size) {
            Ok(incoming) => incoming,
            Err(error) => return self.reject(&error, bytes.len()),
        };
        if !incoming.is_for(me) {
            return self.local.is_alive();
        }
        match incoming.message::<M>() {
            Ok(message) => self
                .local
                .dispatch_wire(incoming.topics(), message)
                .is_some(),
            Err(error) => self.reject(&error, bytes.len()),
        }
    }

    fn reject(&self, error: &wire::WireError, size: usize) -> bool {
        self.local.record_rejected();
        tracing::warn!(
            %error,
            size,
            channel = %self.channel,
            node = self.local.node_name(),
            "skipped a message from Redis"
        );
        self.local.is_alive()
    }

    /// Connects and subscribes again, waiting longer after each failure.
    /// `None` once the server is gone.
    async fn resubscribe(&self) -> Option<Subscribed> {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        loop {
            if !self.local.is_alive() {
                return None;
            }
            let attempt = tokio::time::timeout(
                self.config.connect_timeout,
                subscribe(&self.client, &self.channel),
            )
            .await;
            match attempt {
                Ok(Ok(subscribed)) => return Some(subscribed),
                Ok(Err(error)) => {
                    tracing::debug!(%error, channel = %self.channel, "Redis reconnection failed");
                }
                Err(_) => {
                    tracing::debug!(channel = %self.channel, "Redis reconnection timed out");
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// Exponential backoff between two bounds, with jitter so that the nodes
/// of a cluster do not all reconnect at the same instant.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self { next: min, max }
    }

    /// The delay before the next attempt: between half of and the whole
    /// current step; the step doubles up to the maximum.
    fn next_delay(&mut self) -> Duration {
        let step = self.next.min(self.max);
        self.next = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let random =
            std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
        let jitter = if spread == 0 { 0 } else { random % spread };
        half + Duration::from_nanos(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://app:s3cret@127.0.0.1:6379/0"),
            "redis://app:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("rediss://:s3cret@example.invalid"),
            "rediss://:***@example.invalid"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://tok@host/1"), "redis://***@host/1");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let mut backoff = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} for step {step:?}"
            );
            step = (step * 2).min(max);
        }
        assert!(backoff.next_delay() <= max);
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.next_delay(), Duration::ZERO);
    }
}
