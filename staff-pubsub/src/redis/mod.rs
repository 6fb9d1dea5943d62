//! The Redis transport: the same [`PubSub`] on several nodes, over Redis
//! pub/sub (feature `redis`).
//!
//! Every node of a namespace publishes to, and subscribes to, one Redis
//! channel named after the namespace. A broadcast is one `PUBLISH` of one
//! [`wire`](crate::wire) envelope (JSON) carrying the topic list, whatever the number of
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
//!   reached, with `cannot connect to Redis at <url>: <cause>`; it does not
//!   retry.
//! - A broadcast whose `PUBLISH` was not acknowledged by Redis returns
//!   [`Error::Transport`]: `Ok` always means Redis took the message (not
//!   that every node got it: a Redis that dies right after accepting a
//!   message may not have passed it on). The error's
//!   [`outcome`](crate::TransportError::outcome) is
//!   [`Outcome::NotSent`] when Redis certainly did not get it (no
//!   connection could be made, too large, refused by Redis) and
//!   [`Outcome::Unknown`] when the `PUBLISH` was written but its reply did
//!   not come (it may still be delivered). Every broadcast returns within
//!   `connect_timeout + response_timeout`, however many run at once.
//!   After a failure, or once the receive side has seen the connection
//!   drop, the next broadcast connects afresh; nothing is queued or
//!   retried behind the caller's back.
//! - When the subscription's connection drops, the receive task reconnects
//!   with exponential backoff between the configured bounds (logging the
//!   cause at WARN level: the first failure, then every 30 s or when the
//!   cause changes), subscribes again, and then every local subscriber
//!   receives [`RecvError::Gap`](crate::RecvError::Gap) after the messages
//!   it had queued: what was published meanwhile is lost, so state built
//!   from the stream should be reloaded. A connection that goes silent is
//!   detected by a periodic `PING`. [`PubSub::connection`] tells whether
//!   the node is connected; [`PubSub::wait_for_connection`] waits for it.
//! - A message on the channel that is not a valid envelope for this node
//!   (not JSON, another format version, truncated, larger than
//!   [`max_message_size`](RedisConfig::max_message_size), more topics than
//!   [`max_topics`](RedisConfig::max_topics), an event the spec does not
//!   have) is skipped, counted in
//!   [`Stats::rejected`](crate::Stats::rejected) and logged with
//!   `tracing::warn!`. So is a message whose own code panics on the
//!   receive task (its `Deserialize`, or the `Drop` of a message evicted
//!   from a full queue), logged with `tracing::error!`.
//! - If the receive task ends for any other reason while the server lives,
//!   it is restarted, and every subscriber receives a gap.
//! - The receive task ends when the server is dropped.
//!
//! # Durable delivery
//!
//! With [`RedisConfig::durable`], the namespace's broadcasts go through a
//! Redis Stream, [`log_key`](RedisConfig::log_key), instead of pub/sub, and
//! a node that loses its connection loses nothing that is still in the
//! stream:
//!
//! ```no_run
//! use std::time::Duration;
//! use staff_pubsub::redis::RedisConfig;
//! use staff_pubsub::{staff, PubSub, Retention};
//!
//! # async fn start() -> Result<(), staff_pubsub::Error> {
//! let retention = Retention::entries(1_000_000).max_age(Duration::from_secs(24 * 3600));
//! let config = RedisConfig::new("redis://127.0.0.1:6379")
//!     .namespace("my-app")
//!     .durable(retention);
//! let pubsub: PubSub<staff::Message> = PubSub::builder().node_name("web-1").redis(config).await?;
//! # Ok(()) }
//! ```
//!
//! - A broadcast is appended to the log by one script run (the next
//!   sequence number, `XADD`, trimming to the [`Retention`]); `Ok` means
//!   the entry is in the log. The broadcasts a node makes while its
//!   previous run is under way go together in its next: one script run
//!   and one stream entry for up to 128 of them, at consecutive positions
//!   in the order they were made. The entry's id is its first position
//!   (`<first>-0`), its fields `log` (the log's id), `n` (a nonce, which
//!   tells it from an entry given the same numbers by a Redis that lost
//!   its last writes), `t` (Redis's clock, ms), then one `m` (the
//!   [`wire`](crate::wire) envelope) per broadcast, in order. An entry of
//!   the earlier form (one broadcast per entry, written by an older
//!   version) reads as an entry of one; an older node does not read a
//!   batch entry (it would take one of its envelopes and report the rest
//!   as trimmed), so the nodes of a namespace are upgraded together, older
//!   ones stopped first. Failures and their
//!   [`Outcome`]s are as in live mode.
//! - Retention: [`Retention::entries`] counts messages (positions), not
//!   stream entries. Trimming drops whole entries and keeps the one
//!   holding the oldest position kept (`XTRIM MINID ~`): the log keeps at
//!   least `max` messages, and at most 127 more plus what Redis keeps of
//!   a stream node it can only drop whole (as with `MAXLEN ~`; a node
//!   holds up to `stream-node-max-entries` entries, 100 by default, or
//!   `stream-node-max-bytes`, 4 KiB).
//!   [`Retention::age`] trims an entry once its `t` (the time of its
//!   batch) is older than the age.
//! - Every node, the sending one included, delivers every entry from the
//!   log, in log order, with its [`Position`](crate::Position)
//!   ([`Subscription::recv_with_position`](crate::Subscription::recv_with_position)):
//!   the sender's own subscribers get a broadcast once Redis has it, not
//!   when `broadcast` is called. [`PubSub::local_broadcast`] and, on the
//!   sending node, [`PubSub::broadcast_from`] do not go through the log.
//! - Each node reads the log with `XREAD BLOCK` on a connection of its
//!   own, from the last entry it read. After its connection drops (or its
//!   receive task is restarted, or Redis restarts with its data), it reads
//!   on from there: every entry still in the log is delivered once, in
//!   order, and no gap is signalled. A node that starts reads from the
//!   log's end (it does not replay history: [`PubSub::subscribe_since`]
//!   does, for the topics it names).
//! - When entries the node had not read were trimmed meanwhile (the
//!   outage outlived the retention), its subscribers receive one
//!   [`Gap::Trimmed`](crate::Gap::Trimmed) naming the first lost position
//!   and the number of lost entries, then what the log still holds. When
//!   the log itself was lost (Redis restarted without persistence, the
//!   keys deleted, or Redis lost its last writes: the log no longer holds
//!   the last entry the node read), they receive [`Gap::LogLost`](crate::Gap::LogLost)
//!   and the log goes on under a new log id. With `appendonly yes` Redis
//!   writes each entry to its file before acknowledging it, so a killed
//!   `redis-server` keeps it; with the default `appendfsync everysec` a
//!   crash of the machine can lose the last second (`always` prevents it).
//! - The log's two keys live in a Redis other clients can write to, and
//!   nothing they write there wedges the log or turns a later `Ok` into a
//!   silent loss:
//!   - A stream entry that is not one of this log's (no `log` or `m`
//!     field, an id not of the form `<seq>-0`, a last position past
//!     [`Position::MAX_SEQ`](crate::Position::MAX_SEQ), a log id this node
//!     already left for a newer log, or only positions it read already) is
//!     skipped, counted once in
//!     [`Stats::rejected`](crate::Stats::rejected) by each node that reads
//!     it, and logged at WARN; it never causes a [`Gap::Trimmed`](crate::Gap::Trimmed).
//!   - A meta hash whose `log` is not a 16-bit id in decimal (`70000`) or
//!     whose `seq` is not a sequence number (`abc`), a key of another type
//!     than a hash or a stream, and a stream whose last id is past the
//!     largest sequence number (an entry at `281474976710656-0` or
//!     `18446744073709551615-0`, after which the log could append
//!     nothing) are not the log's own: the next broadcast (or a node's
//!     reader, whichever comes first) replaces them and starts a new log,
//!     under a new log id, after the stream's last entry (from 1 when the
//!     key had to be deleted: the stream's entries are then gone). That
//!     node counts it once in [`Stats::rejected`](crate::Stats::rejected)
//!     and logs a WARN; the broadcast succeeds, and every node's
//!     subscribers receive [`Gap::LogLost`](crate::Gap::LogLost) once, then
//!     the new log's entries.
//!   - A stream entry appended past the log's last sequence number (by
//!     hand, or because the meta hash was lost and not the stream) starts
//!     a new log at the next broadcast, as above.
//!   - Keys deleted while the nodes stay connected (`DEL` of both,
//!     `FLUSHDB`, eviction under an `allkeys-*` policy, a failover to a
//!     replica that lost them): each node's reader checks the log's head
//!     once per blocking interval ([`health_check_interval`](RedisConfig::health_check_interval)),
//!     and at once when an entry of another log comes where its next
//!     entry was due. Its subscribers receive [`Gap::LogLost`](crate::Gap::LogLost)
//!     within that interval (plus the response timeout), without a
//!     reconnect, and then every entry of the new log from its first,
//!     including those numbered below what the node had read. If only the
//!     stream was deleted and the meta hash kept, the log goes on under its
//!     id: a node that had read every entry gets no gap, one that had not
//!     gets [`Gap::Trimmed`](crate::Gap::Trimmed) for the deleted entries
//!     it had not read.
//!   - Age-based trimming ([`Retention::age`]) believes an entry's `t`
//!     only when it is a time the log could have written: an integer no
//!     later than Redis's clock plus the retention's age. Any other entry
//!     counts as old and is trimmed once it is the oldest, so a stray
//!     entry dated in the future keeps the entries after it for at most
//!     twice the age; the log's memory stays bounded.
//!   - Values in the log's own form cannot be told from the log's own: a
//!     `seq` raised to a larger valid number makes the next entries jump
//!     there, read after a [`Gap::Trimmed`](crate::Gap::Trimmed) whose
//!     `missing` counts numbers never written; a `log` set back to an id
//!     the log had before reads as a lost log
//!     ([`Gap::LogLost`](crate::Gap::LogLost) at the next head check, then
//!     the stream from its start, so entries already delivered come
//!     again, then a `Gap::Trimmed` for the numbers the other id used).
//!     Restore the meta hash only together with its stream.
//! - Every node of a namespace must use the same mode: live nodes do not
//!   read the stream, durable nodes do not read the channel.
//! - Cost: a script run and a stream entry per batch of a node's
//!   broadcasts instead of a `PUBLISH` each, and the sender's own delivery
//!   waits for Redis (see BENCHMARKS.md, "Durable delivery and catch-up"). The two keys share the hash tag
//!   `{<namespace>}`, so both live in one Redis Cluster slot.

use std::fmt;
use std::marker::PhantomData;

use ::redis::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Outcome, TransportError};
use crate::loom::sync::Arc;
use crate::net::{encode_bounded, not_sent, redact, Inbound, RateLimit, Secrets, StopReport};
use crate::position::Retention;
use crate::server::{Builder, PubSub};
use crate::transport::{BoxFuture, Connection, DurableLog, Envelope, LocalNode, Transport};

use receiver::{subscribe, supervise, Receiver};

mod config;
mod gossip;
mod publisher;
mod receiver;

mod durable;

/// The namespace (and so the channel) of a [`RedisConfig`] that sets none.
pub use crate::net::DEFAULT_NAMESPACE;

/// The most topics one received envelope may list, unless
/// [`RedisConfig::max_topics`] says otherwise.
pub use crate::wire::DEFAULT_MAX_TOPICS;

pub use config::RedisConfig;
pub(crate) use publisher::Publisher;

/// The Redis transport of one node: publishes its broadcasts to the
/// namespace's channel and dispatches what the channel carries to its
/// subscribers.
///
/// Made by [`RedisTransport::connect`], usually through
/// [`Builder::redis`]. Dropping it (which dropping the last [`PubSub`]
/// handle does) stops its receive task and closes its connections.
pub struct RedisTransport<M> {
    publisher: Arc<Publisher>,
    /// The namespace's log, in durable mode.
    log: Option<Arc<durable::Log<M>>>,
    channel: Arc<str>,
    pub(super) max_message_size: usize,
    pub(super) max_topics: usize,
    supervisor: tokio::task::JoinHandle<()>,
    message: PhantomData<fn(&M)>,
}

impl<M> fmt::Debug for RedisTransport<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("url", &self.publisher.shown)
            .field("channel", &self.channel)
            .field("max_message_size", &self.max_message_size)
            .field("max_topics", &self.max_topics)
            .finish_non_exhaustive()
    }
}

impl<M> Drop for RedisTransport<M> {
    fn drop(&mut self) {
        // The supervisor owns the receive task through an abort-on-drop
        // guard: aborting it stops both.
        self.supervisor.abort();
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
    /// An invalid configuration (empty namespace, zero maximum size or
    /// topics), an invalid URL, no tokio runtime, or Redis not reachable
    /// within the connect timeout (refused, timed out, authentication
    /// failed): `cannot connect to Redis at <url>: <cause>`, the password
    /// hidden.
    pub async fn connect(config: RedisConfig, local: LocalNode<M>) -> Result<Self, TransportError> {
        if let Some(retention) = config.durable.clone() {
            return Self::connect_durable(config, retention, local).await;
        }
        let opened = open(config, local, |local, channel, config| {
            Inbound::new(
                local,
                "Redis",
                channel,
                config.engine.max_message_size,
                config.engine.max_topics,
            )
        })
        .await?;
        Ok(Self {
            publisher: opened.publisher,
            log: None,
            channel: opened.channel,
            max_message_size: opened.config.engine.max_message_size,
            max_topics: opened.config.engine.max_topics,
            supervisor: opened.supervisor,
            message: PhantomData,
        })
    }

    async fn connect_durable(
        config: RedisConfig,
        retention: Retention,
        local: LocalNode<M>,
    ) -> Result<Self, TransportError> {
        let (client, secrets, shown, runtime) = prepare(&config)?;
        let publisher = Arc::new(Publisher::new(
            client.clone(),
            &config,
            Arc::clone(&secrets),
            shown,
        ));
        let channel: Arc<str> = Arc::from(config.engine.namespace.as_str());
        let inbound = Inbound::new(
            local,
            "Redis",
            Arc::from(config.log_key()),
            config.engine.max_message_size,
            config.engine.max_topics,
        );
        let (log, supervisor) = durable::open(
            &config,
            retention,
            client,
            Arc::clone(&publisher),
            secrets,
            inbound,
            &runtime,
        )
        .await?;
        Ok(Self {
            publisher,
            log: Some(log),
            channel,
            max_message_size: config.engine.max_message_size,
            max_topics: config.engine.max_topics,
            supervisor,
            message: PhantomData,
        })
    }

    /// The Redis channel this transport publishes to and reads (live
    /// mode; in durable mode, the namespace).
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

/// What [`open`] started: the publishing side and the supervised receive
/// task of one channel.
pub(crate) struct Opened {
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) channel: Arc<str>,
    pub(crate) config: RedisConfig,
    pub(crate) supervisor: tokio::task::JoinHandle<()>,
}

/// What the receive task does with each message of the channel: decode
/// and dispatch it, or skip, count and log it. Returns false once the
/// server is gone.
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(&self, bytes: &[u8]) -> bool;
}

impl<M> Handler for Inbound<M>
where
    M: DeserializeOwned + Send + Sync + 'static,
{
    fn handle(&self, bytes: &[u8]) -> bool {
        Inbound::handle(self, bytes)
    }
}

/// Connects to Redis, subscribes to `config`'s channel (its namespace), and
/// starts the supervised task that hands what arrives to the handler that
/// `handler` makes: what [`RedisTransport::connect`] does, for any format
/// of message on the channel.
pub(crate) async fn open<M, H>(
    config: RedisConfig,
    local: LocalNode<M>,
    handler: impl FnOnce(LocalNode<M>, Arc<str>, &RedisConfig) -> H,
) -> Result<Opened, TransportError>
where
    M: Send + Sync + 'static,
    H: Handler,
{
    let (client, secrets, shown, runtime) = prepare(&config)?;
    let channel: Arc<str> = Arc::from(config.engine.namespace.as_str());
    let publisher = Arc::new(Publisher::new(
        client.clone(),
        &config,
        Arc::clone(&secrets),
        Arc::clone(&shown),
    ));
    let connected = tokio::time::timeout(config.engine.connect_timeout, async {
        publisher.connection().await?;
        subscribe(&client, &channel)
            .await
            .map_err(|error| secrets.cause(&error))
    })
    .await;
    let subscription = match connected {
        Ok(Ok(subscription)) => subscription,
        Ok(Err(cause)) => {
            return Err(not_sent(format!(
                "cannot connect to Redis at {shown}: {cause}"
            )))
        }
        Err(_) => {
            return Err(not_sent(format!(
                "cannot connect to Redis at {shown}: no answer within {:?}",
                config.engine.connect_timeout
            )))
        }
    };
    tracing::info!(
        url = %shown,
        channel = %channel,
        node = local.node_name(),
        "connected to Redis"
    );
    local.set_connection(Connection::Connected);
    let inbound = handler(local.clone(), Arc::clone(&channel), &config);
    let receiver = Arc::new(Receiver {
        client,
        publisher: Arc::clone(&publisher),
        channel: Arc::clone(&channel),
        local,
        config: config.clone(),
        secrets,
        reconnect_log: RateLimit::default(),
        inbound,
    });
    // Made here, not in the task: a task the runtime drops before ever
    // polling it still reports.
    let stopped = StopReport::new(receiver.local.clone(), "Redis");
    let supervisor = runtime.spawn(supervise(receiver, subscription, stopped));
    Ok(Opened {
        publisher,
        channel,
        config,
        supervisor,
    })
}

/// Checks `config` and makes what both modes start from: the client, the
/// password to hide, the URL as shown, and the runtime.
fn prepare(
    config: &RedisConfig,
) -> Result<(Client, Arc<Secrets>, Arc<str>, tokio::runtime::Handle), TransportError> {
    config.engine.check("Redis")?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
        TransportError::new("the Redis transport needs a tokio runtime", error)
            .with_outcome(Outcome::NotSent)
    })?;
    let secrets = Arc::new(Secrets::of(&config.url));
    let shown: Arc<str> = Arc::from(redact(&config.url));
    let client = Client::open(config.url.as_str()).map_err(|error| {
        let cause = secrets.cause(&error);
        not_sent(format!("invalid Redis URL {shown}: {cause}"))
    })?;
    Ok((client, secrets, shown, runtime))
}

impl<M> Transport<M> for RedisTransport<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn publish<'a>(
        &'a self,
        envelope: Envelope<'a, M>,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        let encoded = encode_bounded("Redis", &envelope, self.max_message_size, self.max_topics);
        Box::pin(async move {
            let bytes = encoded?;
            match &self.log {
                Some(log) => log.append(&bytes).await,
                None => self.publisher.publish(&self.channel, &bytes).await,
            }
        })
    }

    fn durable_log(&self) -> Option<&dyn DurableLog<M>> {
        self.log.as_deref().map(|log| log as &dyn DurableLog<M>)
    }
}

impl<M> Builder<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Builds a server whose broadcasts reach every node of `config`'s
    /// namespace through Redis: [`build_with`](Self::build_with) and
    /// [`RedisTransport::connect`] in one call. Without a
    /// [`node_name`](Self::node_name), the node gets a unique one. Its
    /// presence trackers replicate with the namespace's other nodes over
    /// a channel per tracker, `<namespace>:presence:<tracker>`.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyNodeName`], or [`Error::Connect`] as
    /// [`RedisTransport::connect`].
    pub async fn redis(self, config: RedisConfig) -> Result<PubSub<M>, Error> {
        self.build_with_gossip(|local| async move {
            let node = local.node_name().to_owned();
            let transport = RedisTransport::connect(config.clone(), local).await?;
            let gossip =
                gossip::RedisGossip::new(&config, Arc::clone(&transport.publisher), &node)?;
            let gossip: crate::gossip::GossipHandle = Arc::new(gossip);
            Ok((transport, Some(gossip)))
        })
        .await
    }
}
