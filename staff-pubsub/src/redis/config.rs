//! Where and how a node reaches Redis: [`RedisConfig`].

use std::fmt;
use std::time::Duration;

use ::redis::AsyncConnectionConfig;

use crate::net::{redact, EngineConfig};
use crate::position::Retention;

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
    pub(super) url: String,
    pub(super) engine: EngineConfig,
    pub(super) reconnect_min: Duration,
    pub(super) reconnect_max: Duration,
    pub(super) health_check_interval: Duration,
    pub(super) durable: Option<Retention>,
}

impl RedisConfig {
    /// A configuration for the Redis at `url`, with the defaults for
    /// everything else.
    ///
    /// The URL is handed to redis-rs as is: `redis://[user][:password@]host[:port][/db]`,
    /// `rediss://...` for TLS (feature `redis-tls`), or
    /// `redis+unix:///path/to/socket?db=0&user=app&pass=...` (also
    /// `unix://`) for a Unix socket. A user and password authenticate with
    /// Redis ACLs (`AUTH user password`); a password alone with the
    /// `default` user. The password is never shown: `Debug`, errors and
    /// logs print `***` in its place.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            engine: EngineConfig::default(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            health_check_interval: Duration::from_secs(15),
            durable: None,
        }
    }

    /// Durable delivery over a Redis Stream, keeping `retention`: every
    /// broadcast is appended to the namespace's log ([`log_key`](Self::log_key))
    /// and every node, the sender included, delivers it from there, so that
    /// a node that reconnects reads what it missed instead of losing it.
    /// See the module's "Durable delivery", which also says what happens
    /// when another client writes to, deletes or flushes the log's keys
    /// (never a permanent outage, never a silent loss: a new log and a
    /// [`Gap::LogLost`](crate::Gap::LogLost)). Every node of a namespace must
    /// use the same mode. Default: live delivery over pub/sub.
    pub fn durable(mut self, retention: Retention) -> Self {
        self.durable = Some(retention);
        self
    }

    /// The namespace: nodes of one namespace reach each other, and never
    /// the nodes of another namespace on the same Redis. It is the Redis
    /// channel name. Not empty. Default [`DEFAULT_NAMESPACE`](super::DEFAULT_NAMESPACE).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.engine.namespace = namespace.into();
        self
    }

    /// The largest encoded envelope, in bytes: a broadcast of a larger one
    /// fails, a received larger one is skipped. Default
    /// [`wire::DEFAULT_MAX_MESSAGE_SIZE`](crate::wire::DEFAULT_MAX_MESSAGE_SIZE) (1 MiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.engine.max_message_size = bytes;
        self
    }

    /// The most topics one envelope may list: a broadcast to more fails
    /// (certainly not sent), a received envelope with more is skipped and
    /// counted in [`Stats::rejected`](crate::Stats::rejected). A topic
    /// listed several times in a received envelope is reached once.
    /// Default [`DEFAULT_MAX_TOPICS`](super::DEFAULT_MAX_TOPICS).
    pub fn max_topics(mut self, topics: usize) -> Self {
        self.engine.max_topics = topics;
        self
    }

    /// How long [`RedisTransport::connect`](super::RedisTransport::connect) and each later connection
    /// attempt may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.engine.connect_timeout = timeout;
        self
    }

    /// How long a `PUBLISH` (and a health-check `PING`) waits for Redis's
    /// reply before it fails. Default 5 s.
    ///
    /// A broadcast returns within `connect_timeout + response_timeout`
    /// (plus scheduling delays), however many run at once: concurrent
    /// broadcasts that find no connection share one connection attempt.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.engine.response_timeout = timeout;
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
        &self.engine.namespace
    }

    /// The key of the namespace's durable log, a Redis Stream:
    /// `{<namespace>}:log` (`redis-cli XRANGE '{my-app}:log' - +` shows it).
    /// Each entry holds a batch of one node's broadcasts at consecutive
    /// positions: its id is its first position's sequence number
    /// (`<seq>-0`), its fields `log` (the log's id), `n` (a nonce), `t`
    /// (Redis's time, ms) and one `m` (the [`wire`](crate::wire) envelope)
    /// per broadcast, in order.
    #[must_use]
    pub fn log_key(&self) -> String {
        format!("{{{}}}:log", self.engine.namespace)
    }

    /// The key of the hash beside the log holding its id and last sequence
    /// number: `{<namespace>}:log-meta`, fields `log` (the id, 0 to 65535)
    /// and `seq`, both in decimal. Values of another form are not the
    /// log's: the log starts afresh (see the module's "Durable delivery").
    #[must_use]
    pub fn log_meta_key(&self) -> String {
        format!("{{{}}}:log-meta", self.engine.namespace)
    }

    pub(super) fn redis_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.engine.connect_timeout))
            .set_response_timeout(Some(self.engine.response_timeout))
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("RedisConfig");
        f.field("url", &redact(&self.url));
        self.engine.debug_fields(&mut f);
        f.field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("health_check_interval", &self.health_check_interval)
            .field("durable", &self.durable)
            .finish()
    }
}
