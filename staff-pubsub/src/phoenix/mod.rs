//! Joining a Phoenix application's PubSub: a transport that speaks
//! `phoenix_pubsub_redis` (feature `phoenix`).
//!
//! A Phoenix application configured with
//! `{Phoenix.PubSub, name: MyApp.PubSub, adapter: Phoenix.PubSub.Redis, ...}`
//! publishes every broadcast on the Redis channel
//! `phx:Elixir.MyApp.PubSub.Adapter`, one frame per topic: the Erlang term
//! `{3, mode, node_name, topic, message, dispatcher}` in the External Term
//! Format. A [`PubSub`] built with [`Builder::phoenix`] reads that channel
//! and writes to it:
//!
//! - A frame whose message is `{scope, event, payload}` of the server's
//!   spec (`{:staff, :team_created, %{uuid: "...", name: "...", department_uuid: nil}}`)
//!   is decoded into the spec's message and dispatched to this node's
//!   subscribers of the frame's topic: payload fields are the map's atom
//!   keys (a binary key such as `"uuid"` names no field), UUID strings are parsed (any form [`Uuid::parse_str`](crate::Uuid::parse_str)
//!   reads; a charlist, a list of integers, an integer, an atom or a raw
//!   16-byte binary is not a UUID), strings are UTF-8 binaries, `nil` is
//!   `None`, other keys are ignored. Everything else the channel carries (channel broadcasts,
//!   other scopes, other dispatchers, invalid ids) is skipped, counted in
//!   [`Stats::rejected`](crate::Stats::rejected) and logged at DEBUG (a
//!   Phoenix application's channel carries many messages that are not for
//!   this spec).
//! - A broadcast is published as Phoenix publishes it: one frame per
//!   distinct topic (a topic listed twice is one frame),
//!   `{3, :except, "<this node>", topic, {scope, event, payload}, Phoenix.PubSub}`
//!   (`:only` and the target node for
//!   [`direct_broadcast`](PubSub::direct_broadcast)), so that a LiveView's
//!   `handle_info({:staff, :team_created, %{uuid: uuid}}, socket)` receives
//!   it. The only atoms written are the spec's own names (scope, events,
//!   payload fields) and Phoenix's (`except`, `only`, `nil`, `true`,
//!   `false`, `Elixir.Phoenix.PubSub`). `local_broadcast` publishes nothing.
//! - A frame `:except` this node's name as a binary (its own broadcasts)
//!   is not dispatched again; an `:only` frame is taken only by the node it
//!   names, as a binary or as an atom (`direct_broadcast(:"rust-1", ..)`
//!   from Elixir reaches the node named `rust-1`).
//! - A direct broadcast names its target as the target names itself: in
//!   the form (atom or binary) of the `:except` frames last received from
//!   it, else in [`PhoenixConfig::default_name_form`] (an atom by default,
//!   as Phoenix's `node()`). Redis cannot tell whether anyone took a frame:
//!   `Ok` means Redis took it, not that its target exists or got it.
//!
//! - **Presence:** a tracker of metadata type `Meta` given an Elixir
//!   tracker with [`PhoenixConfig::presence`] ([`PhoenixTracker`]: the
//!   `Phoenix.Presence` or `Phoenix.Tracker` module and its `pool_size`)
//!   is a replica of that tracker: it heartbeats, answers and asks for
//!   transfers, and takes silent replicas down as the Elixir shards do,
//!   in their own messages on their shard topics
//!   (`phx_presence:Elixir.<module>_shard<n>`, [`tracker`]). Its
//!   presences are listed by Elixir's `Presence.list/1` and Elixir's by
//!   [`Tracker::list`](crate::presence::Tracker::list); joins and leaves
//!   are diffs on both sides. The mapping of names, pids and metas is in
//!   the README's "Joining a Phoenix application". Frames of a
//!   configured tracker's shard topics that are not for this node are
//!   dropped; those that do not decode, or that lie about their sender,
//!   are skipped, counted in [`Stats::rejected`](crate::Stats::rejected)
//!   and logged at DEBUG, as is a presence whose meta `Meta` cannot read
//!   (the rest of its frame is taken).
//!
//! Connection, timeouts, reconnection with [`RecvError::Gap`](crate::RecvError::Gap),
//! outcomes of a failed broadcast and password redaction are those of the
//! [Redis transport](crate::redis) (the same code).
//!
//! Delivery is at most once, as Phoenix's: Redis Pub/Sub keeps nothing, so
//! a frame published while a node is not subscribed (after a Redis restart,
//! before that node resubscribed) is lost for it, with `Ok` for the sender.
//! This node tells its own subscribers with a `Gap` after its reconnect;
//! nothing tells another node. The README's "Joining a Phoenix
//! application" says more.
//!
//! ```no_run
//! use staff_pubsub::phoenix::PhoenixConfig;
//! use staff_pubsub::staff;
//!
//! # async fn start() -> Result<(), staff_pubsub::Error> {
//! let config = PhoenixConfig::new("redis://127.0.0.1:6379", "MyApp.PubSub");
//! assert_eq!(config.channel(), "phx:Elixir.MyApp.PubSub.Adapter");
//! let pubsub = staff::builder().node_name("rust-1").phoenix(config).await?;
//! staff::install(pubsub).expect("installed at start-up, before first use");
//! # Ok(()) }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Outcome, TransportError};
use crate::loom::sync::Arc;
use crate::net::{guard_message, not_sent};
use crate::redis::{open, Handler, Publisher, RedisConfig};
use crate::server::{Builder, PubSub};
use crate::spec::SpecMessage;
use crate::transport::{BoxFuture, Envelope, LocalNode, Mode, Transport};

mod etf;
mod frame;
mod nodes;
mod presence;
pub mod tracker;
mod value;

pub use etf::{AtomEncoding, EtfError, Term, MAX_DEPTH};
use frame::{assemble, body, check_size, encode_message, header, message};
pub use frame::{
    decode_frame, decode_term, encode_frame, encode_frame_named, Frame, FrameError, FrameMode,
    NameForm, NodeName, DEFAULT_MAX_FRAME_SIZE, FRAME_VERSION,
};
use nodes::NodeForms;
pub use nodes::MAX_KNOWN_NODES;
pub use presence::PhoenixTracker;
use presence::{PhoenixGossip, Routes};

/// The Redis channel of a Phoenix PubSub server named `pubsub_name`
/// (`"MyApp.PubSub"`, with or without `Elixir.`): what
/// `phoenix_pubsub_redis` derives, `"phx:" <> to_string(Module.concat(name, "Adapter"))`.
///
/// ```
/// assert_eq!(staff_pubsub::phoenix::channel("MyApp.PubSub"), "phx:Elixir.MyApp.PubSub.Adapter");
/// ```
#[must_use]
pub fn channel(pubsub_name: &str) -> String {
    let name = pubsub_name.strip_prefix("Elixir.").unwrap_or(pubsub_name);
    format!("phx:Elixir.{name}.Adapter")
}

/// Where the Redis of a Phoenix application is, and how to take part in
/// its PubSub.
///
/// ```
/// use std::time::Duration;
/// use staff_pubsub::phoenix::PhoenixConfig;
///
/// let config = PhoenixConfig::new("redis://app:secret@127.0.0.1:6379/0", "MyApp.PubSub")
///     .compression_level(6)
///     .max_frame_size(64 * 1024)
///     .connect_timeout(Duration::from_secs(2));
/// assert_eq!(config.channel(), "phx:Elixir.MyApp.PubSub.Adapter");
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
#[must_use]
pub struct PhoenixConfig {
    redis: RedisConfig,
    pubsub_name: String,
    compression_level: u32,
    max_frame_size: usize,
    default_name_form: NameForm,
    /// The Elixir tracker of each metadata type, by its type name.
    trackers: Vec<(&'static str, PhoenixTracker)>,
}

impl PhoenixConfig {
    /// The Phoenix PubSub server `pubsub_name` (the `name:` of its child
    /// spec, such as `"MyApp.PubSub"`) on the Redis at `url` (any URL the
    /// [Redis transport](crate::redis::RedisConfig::new) takes; the
    /// password is never shown).
    pub fn new(url: impl Into<String>, pubsub_name: impl Into<String>) -> Self {
        let pubsub_name = pubsub_name.into();
        Self {
            redis: RedisConfig::new(url)
                .namespace(channel(&pubsub_name))
                .max_message_size(DEFAULT_MAX_FRAME_SIZE),
            pubsub_name,
            compression_level: 0,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            default_name_form: NameForm::Atom,
            trackers: Vec::new(),
        }
    }

    /// Makes this node's tracker of presences with metadata `Meta`
    /// ([`PubSub::tracker`]) a replica of the Elixir tracker `tracker`
    /// (a `Phoenix.Presence` or `Phoenix.Tracker` module): its presences
    /// are listed by Elixir's `Presence.list/1`, and Elixir's by its
    /// [`list`](crate::presence::Tracker::list), with joins and leaves as
    /// diffs, down and permdown, heartbeats and transfers as
    /// `Phoenix.Tracker` has them. Setting a type again replaces its
    /// tracker. A metadata type not set here keeps a tracker in process,
    /// as does a second type naming the same Elixir tracker (the first
    /// to start has it). The README's "Joining a Phoenix application"
    /// says what crosses and how.
    ///
    /// ```
    /// use staff_pubsub::phoenix::{PhoenixConfig, PhoenixTracker};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Viewer { name: String }
    ///
    /// let config = PhoenixConfig::new("redis://127.0.0.1:6379", "MyApp.PubSub")
    ///     .presence::<Viewer>(PhoenixTracker::new("MyAppWeb.Presence"));
    /// # drop(config);
    /// ```
    pub fn presence<Meta: 'static>(mut self, tracker: PhoenixTracker) -> Self {
        // The name the presence runtime opens a tracker's channel with.
        let name = std::any::type_name::<Meta>();
        self.trackers.retain(|(known, _)| *known != name);
        self.trackers.push((name, tracker));
        self
    }

    /// How a [`direct_broadcast`](PubSub::direct_broadcast) names a node
    /// this node has not heard from yet. Default [`NameForm::Atom`], what
    /// Phoenix itself uses unless told otherwise.
    ///
    /// A Phoenix node takes an `:only` frame only when the frame names it
    /// in the form of its own `node_name`: an atom (the default `node()`,
    /// or `node_name: :"phx-a"`) or a binary (`node_name: "phx-a"`).
    /// So the target's form is learned from the frames it sends: once a
    /// frame `:except` a node (one of its broadcasts) arrived, direct
    /// broadcasts to that node's name use the form that frame used (the
    /// latest such frame's, when a name came in both forms). Until then,
    /// this form is used. Up to [`MAX_KNOWN_NODES`] names are kept; past
    /// that, the oldest is forgotten. A name longer than 255 characters,
    /// which no atom can hold, is always written as a binary (and not
    /// kept). Rust nodes take both forms, so this
    /// matters only for Elixir targets: set `NameForm::Binary` when the
    /// Elixir nodes are started with a string `node_name`.
    pub fn default_name_form(mut self, form: NameForm) -> Self {
        self.default_name_form = form;
        self
    }

    /// The zlib level of the frames this node sends, 0 (none, Phoenix's
    /// default) to 9, as the adapter's `compression_level`. A frame is
    /// sent compressed only when that makes it smaller, as
    /// `:erlang.term_to_binary/2` does. Compressed frames are read
    /// whatever this is. Levels above 9 are 9.
    pub fn compression_level(mut self, level: u32) -> Self {
        self.compression_level = level.min(9);
        self
    }

    /// The largest frame, in bytes, read or sent (for a compressed frame,
    /// the size of its inflated term): a broadcast whose frame is larger
    /// fails with outcome `NotSent`; a larger received frame is skipped
    /// and counted, before it is inflated. Default
    /// [`DEFAULT_MAX_FRAME_SIZE`].
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self.redis = self.redis.max_message_size(bytes);
        self
    }

    /// As [`RedisConfig::connect_timeout`]. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.redis = self.redis.connect_timeout(timeout);
        self
    }

    /// As [`RedisConfig::response_timeout`]. Default 5 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.redis = self.redis.response_timeout(timeout);
        self
    }

    /// As [`RedisConfig::reconnect_backoff`]. Defaults 100 ms and 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.redis = self.redis.reconnect_backoff(min, max);
        self
    }

    /// As [`RedisConfig::health_check_interval`]. Default 15 s.
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.redis = self.redis.health_check_interval(interval);
        self
    }

    /// The Phoenix PubSub server's name, as given.
    #[must_use]
    pub fn pubsub_name(&self) -> &str {
        &self.pubsub_name
    }

    /// The Redis channel: `phx:Elixir.<name>.Adapter`.
    #[must_use]
    pub fn channel(&self) -> &str {
        self.redis.channel()
    }
}

impl fmt::Debug for PhoenixConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoenixConfig")
            .field("pubsub_name", &self.pubsub_name)
            .field("compression_level", &self.compression_level)
            .field("max_frame_size", &self.max_frame_size)
            .field("default_name_form", &self.default_name_form)
            .field("trackers", &self.trackers)
            .field("redis", &self.redis)
            .finish()
    }
}

/// The transport of one node in a Phoenix application's PubSub: made by
/// [`PhoenixTransport::connect`], usually through [`Builder::phoenix`].
/// Dropping it (which dropping the last [`PubSub`] handle does) stops its
/// receive task and closes its connections.
pub struct PhoenixTransport<M> {
    publisher: Arc<Publisher>,
    channel: Arc<str>,
    compression_level: u32,
    max_frame_size: usize,
    nodes: Arc<NodeForms>,
    /// The presence gossip, when trackers are configured.
    gossip: Option<crate::gossip::GossipHandle>,
    supervisor: tokio::task::JoinHandle<()>,
    message: PhantomData<fn(&M)>,
}

impl<M> fmt::Debug for PhoenixTransport<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoenixTransport")
            .field("channel", &self.channel)
            .field("compression_level", &self.compression_level)
            .field("max_frame_size", &self.max_frame_size)
            .finish_non_exhaustive()
    }
}

impl<M> Drop for PhoenixTransport<M> {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl<M> PhoenixTransport<M>
where
    M: SpecMessage + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Connects to Redis, subscribes to the Phoenix PubSub's channel, and
    /// starts the task that dispatches the frames of `M`'s spec to
    /// `local`'s subscribers. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// An empty PubSub name, a zero maximum frame size, an invalid URL, no
    /// tokio runtime, or Redis not reachable within the connect timeout:
    /// `cannot connect to Redis at <url>: <cause>`, the password hidden.
    pub async fn connect(
        config: PhoenixConfig,
        local: LocalNode<M>,
    ) -> Result<Self, TransportError> {
        if config.pubsub_name.is_empty() {
            return Err(not_sent("the Phoenix PubSub name must not be empty"));
        }
        let max_frame_size = config.max_frame_size;
        let nodes = Arc::new(NodeForms::new(config.default_name_form));
        let learning = Arc::clone(&nodes);
        let routes = Arc::new(Routes::new(
            config.trackers.iter().map(|(_, tracker)| tracker),
        ));
        let routing = Arc::clone(&routes);
        let node: Arc<str> = Arc::from(local.node_name());
        let opened = open(config.redis, local, |local, channel, _| PhoenixInbound {
            local,
            channel,
            max_frame_size,
            nodes: learning,
            routes: routing,
        })
        .await?;
        let gossip = (!config.trackers.is_empty()).then(|| {
            let gossip: crate::gossip::GossipHandle = Arc::new(PhoenixGossip {
                routes,
                trackers: config.trackers.into(),
                publisher: Arc::clone(&opened.publisher),
                channel: Arc::clone(&opened.channel),
                node,
                compression_level: config.compression_level,
                max_frame_size,
                runtime: tokio::runtime::Handle::current(),
            });
            gossip
        });
        Ok(Self {
            publisher: opened.publisher,
            channel: opened.channel,
            compression_level: config.compression_level,
            max_frame_size,
            nodes,
            gossip,
            supervisor: opened.supervisor,
            message: PhantomData,
        })
    }

    /// The Redis channel this transport publishes to and reads.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl<M> Transport<M> for PhoenixTransport<M>
where
    M: SpecMessage + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn publish<'a>(
        &'a self,
        envelope: Envelope<'a, M>,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        let (mode, node, node_form) = match envelope.mode {
            // Phoenix has no "every node": the sender has delivered locally.
            // This node's own name is a binary: other Rust nodes take it,
            // and an Elixir node only compares it with its own.
            Mode::All | Mode::ExceptOrigin => {
                (FrameMode::Except, envelope.origin, NameForm::Binary)
            }
            // In the form the target names itself in, or it drops the frame.
            Mode::Only(node) => (FrameMode::Only, node, self.nodes.of(node)),
        };
        let frames = encode_message(envelope.message).and_then(|message| {
            envelope
                .topics
                .iter()
                .map(|topic| {
                    let frame = assemble(
                        mode,
                        node,
                        node_form,
                        &topic.to_string(),
                        &message,
                        self.compression_level,
                    )?;
                    check_size(&frame, self.max_frame_size)?;
                    Ok(frame)
                })
                .collect::<Result<Vec<_>, FrameError>>()
        });
        Box::pin(async move {
            let frames = frames.map_err(|error| {
                TransportError::new("message not encoded for Phoenix", error)
                    .with_outcome(Outcome::NotSent)
            })?;
            // One PUBLISH per topic, as Phoenix: concurrently, on the one
            // multiplexed connection, so that the broadcast stays within
            // `connect_timeout + response_timeout`.
            let results = futures_util::future::join_all(
                frames
                    .iter()
                    .map(|frame| self.publisher.publish(&self.channel, frame)),
            )
            .await;
            let total = results.len();
            let mut errors = results.into_iter().filter_map(Result::err);
            let Some(first) = errors.next() else {
                return Ok(());
            };
            let rest: Vec<TransportError> = errors.collect();
            let failed = rest.len() + 1;
            if failed == total
                && first.outcome() == Outcome::NotSent
                && rest.iter().all(|error| error.outcome() == Outcome::NotSent)
            {
                return Err(first);
            }
            // Some frames may have gone: the broadcast reached some topics.
            Err(TransportError::new(
                format!("{failed} of {total} Phoenix frames not acknowledged"),
                first,
            )
            .with_outcome(Outcome::Unknown))
        })
    }
}

impl<M> Builder<M>
where
    M: SpecMessage + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Builds a server that takes part in the Phoenix PubSub of `config`
    /// through its Redis: [`build_with`](Self::build_with) and
    /// [`PhoenixTransport::connect`] in one call. Its trackers of the
    /// metadata types given an Elixir tracker
    /// ([`PhoenixConfig::presence`]) are replicas of those trackers. Without a
    /// [`node_name`](Self::node_name), the node gets a unique one; name it
    /// to be the target of an Elixir `direct_broadcast`.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyNodeName`], or [`Error::Connect`] as
    /// [`PhoenixTransport::connect`].
    pub async fn phoenix(self, config: PhoenixConfig) -> Result<PubSub<M>, Error> {
        self.build_with_gossip(|local| async move {
            let transport = PhoenixTransport::connect(config, local).await?;
            let gossip = transport.gossip.clone();
            Ok((transport, gossip))
        })
        .await
    }
}

/// The receive side: decodes the frames of the channel for this node.
struct PhoenixInbound<M> {
    local: LocalNode<M>,
    channel: Arc<str>,
    max_frame_size: usize,
    nodes: Arc<NodeForms>,
    /// The shard topics of this node's trackers.
    routes: Arc<Routes>,
}

impl<M> PhoenixInbound<M>
where
    M: SpecMessage + Send + Sync + 'static,
{
    fn handle_unguarded(&self, bytes: &[u8]) -> bool {
        match self.decode_and_dispatch(bytes) {
            Ok(alive) => alive,
            Err(error) => {
                self.local.record_rejected();
                tracing::debug!(
                    %error,
                    size = bytes.len(),
                    channel = %self.channel,
                    node = self.local.node_name(),
                    "skipped a Phoenix frame"
                );
                self.local.is_alive()
            }
        }
    }

    /// Dispatches the frame's message to this node's subscribers of its
    /// topic when this node takes it; a frame not for this node (its own,
    /// or another's direct broadcast) is not read further. Returns whether
    /// the server lives.
    fn decode_and_dispatch(&self, bytes: &[u8]) -> Result<bool, FrameError> {
        let body = body(bytes, self.max_frame_size)?;
        let header = header(&body)?;
        if header.mode == FrameMode::Except {
            if let Some((name, form)) = header.node.named() {
                if !header.node.is_binary(self.local.node_name()) {
                    self.nodes.learn(&name, form);
                }
            }
        }
        // A tracker's frame goes to its replica on this node, if any.
        if header.topic.starts_with(tracker::SHARD_TOPIC_PREFIX)
            && self
                .routes
                .route(header.topic, header.mode, &header.node, bytes)
        {
            return Ok(self.local.is_alive());
        }
        let me = self.local.node_name();
        let take = match header.mode {
            // This node writes its own name as a binary: an atom of the
            // same text is another (Elixir) node's.
            // (Its form was learned above.)
            FrameMode::Except => !header.node.is_binary(me),
            // Addressed to this node in either form.
            FrameMode::Only => header.node.is_named(me),
        };
        if !take {
            return Ok(self.local.is_alive());
        }
        header.check_dispatcher()?;
        let message = message(header.message)?;
        Ok(self.local.dispatch_wire([header.topic], message).is_some())
    }
}

impl<M> Handler for PhoenixInbound<M>
where
    M: SpecMessage + Send + Sync + 'static,
{
    fn handle(&self, bytes: &[u8]) -> bool {
        guard_message(&self.local, "Phoenix", &self.channel, bytes.len(), || {
            self.handle_unguarded(bytes)
        })
    }
}
