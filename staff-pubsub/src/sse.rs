//! Live updates in the browser: a [`Subscription`] as a Server-Sent Events
//! response, for [axum](https://docs.rs/axum) 0.8.
//!
//! An [`SseBridge`] serves `GET <path>?topic=<topic>&topic=<topic>...`: it
//! parses each `topic` parameter with the spec's strict `parse_topic`, asks
//! the application's authorization hook, subscribes, and streams:
//!
//! | SSE `event:` | `data:` | when |
//! | --- | --- | --- |
//! | `ready` | `{"topics":["staff:teams",...]}`, with `"resumed":true` when the stream resumes (below) | first, once subscribed: every broadcast after it reaches the page |
//! | the event atom (`team_created`) | the message's JSON form, `{"scope":"staff","event":"team_created","payload":{...}}` | one per message received |
//! | `resync` | see below | messages were lost: reload the state the page shows |
//!
//! `resync` says why in its data:
//!
//! | `data:` | cause |
//! | --- | --- |
//! | `{"reason":"lagged","missed":n}` | the page read too slowly: its queue dropped `n` messages |
//! | `{"reason":"gap","gap":"disconnected"}` | the server's link to the other nodes was down (live, not durable, delivery), or a resume's replay could not read its next page from the log (durable: the rest of its range is not sent) |
//! | `{"reason":"gap","gap":"trimmed","entries":n}` | durable: `n` log entries (of any topic) were trimmed before they could be delivered |
//! | `{"reason":"gap","gap":"log_lost"}` | durable: the log was lost, or the browser's `Last-Event-ID` is of another log |
//! | `{"reason":"gap","gap":"replay_limit","entries":n}` | durable: the browser was `n` log entries behind, more than a resume replays |
//! | `{"reason":"reconnected"}` | a browser came back (`Last-Event-ID`) and the bridge cannot resume it (below) |
//!
//! Keep-alive comments flow while nothing happens (every 15 s by default).
//! The stream ends when [`SseBridge::close`] is called, or when the server
//! is gone (every handle of it dropped: the bridge holds one, so a router
//! serving [`SseBridge::route`] keeps it alive; call `close` before a
//! graceful shutdown). A spec event named `ready` or `resync` would be ambiguous: do
//! not declare one in a spec served by the bridge.
//!
//! # Event ids and resuming
//!
//! A browser's `EventSource` reconnects by itself when the connection
//! drops, and sends the `id:` of the last event it received as the
//! `Last-Event-ID` header. A page that opens a new `EventSource` itself
//! (after a reload, say) can pass the id it stored as the
//! `last_event_id` query parameter ([`LAST_EVENT_ID_PARAMETER`]); the
//! header wins when both are present.
//!
//! **On a durable server** (a transport that keeps a log:
//! [`RedisConfig::durable`](crate::redis::RedisConfig::durable),
//! [`NatsConfig::durable`](crate::nats::NatsConfig::durable)) an event's
//! `id:` is its message's log [`Position`]
//! (`002a-1042`), and a reconnecting browser misses nothing while the log
//! holds what it missed:
//!
//! - A message's event has its position as `id:`. A message that did not
//!   go through the log (a [`PubSub::local_broadcast`], or on this node a
//!   [`PubSub::broadcast_from`]) has no `id:`, so the browser keeps the
//!   last one; it is not replayed on a resume.
//! - `ready` of a new connection has the node's log position when it
//!   subscribed as `id:` (no `id:` while the log is empty): the stream
//!   then delivers every message to its topics after that position, so a
//!   browser that reconnects before any message came resumes from there.
//! - A connection with a `Last-Event-ID` that is a position of the log
//!   resumes through [`PubSub::subscribe_since`]: `ready` says
//!   `"resumed":true` (and has no `id:`: the browser keeps its own), then
//!   come the messages to its topics after that position, in log order
//!   and each once per reached topic, at most the transport's
//!   [replay limit](crate::Retention::replay_limit) of log entries, then
//!   live ones. Nothing else is sent: no `resync`, the page keeps its
//!   state. When the range cannot be replayed whole, a `resync` with
//!   `"reason":"gap"` follows `ready` (`trimmed`, `log_lost` or
//!   `replay_limit`; after a trimmed range, what is still in the log
//!   follows it); `resync` and `ready` of a resumed stream carry no `id:`,
//!   so a browser that drops again before it got further resumes from the
//!   same position and is told again.
//! - A resume costs what a stalled live connection costs, however far back
//!   its `Last-Event-ID` is, on a transport that pages its replays
//!   ([`DurableLog::replay_limit`](crate::transport::DurableLog::replay_limit)):
//!   the replay is read from the log a page at a time (at most the
//!   server's [`Builder::capacity`](crate::Builder::capacity) of log
//!   entries), the next page when the browser has been sent the last, so
//!   a browser that resumes and does not read holds at most one page and
//!   its queue. Entries trimmed from the log while a slow browser reads its
//!   replay are a `resync` `"trimmed"` where they were; a page the log
//!   does not give ends the replay with `resync` `"disconnected"`. The
//!   Redis and NATS transports page; on a transport that does not, a
//!   resume holds its whole range (at most the replay limit of entries)
//!   until it is sent.
//! - A `Last-Event-ID` that is not a position (malformed, or a sequence
//!   number of a server that was not durable) gets a new subscription
//!   (`ready` without `"resumed"`) and `resync` `"reconnected"`; so does
//!   any id when the log cannot be read (the engine does not answer).
//!
//! **On a server that is not durable** an event's `id:` is a sequence
//! number of the connection (1 for `ready`), and a browser that comes back
//! with a `Last-Event-ID` gets `resync` `"reconnected"` right after
//! `ready`: what was broadcast meanwhile is lost.
//!
//! A page therefore loads its state on its first `ready`, again on a
//! later `ready` without `"resumed":true` (a new subscription: it missed
//! what came meanwhile) and on every `resync`; it keeps its state on a
//! resumed `ready`.
//!
//! Refusals are JSON, `{"error": <code>, "message": <text>, ...}`:
//!
//! | status | `error` | cause |
//! | --- | --- | --- |
//! | 400 | `invalid_topic` (with `"topic"`, the input) | a topic the spec's `parse_topic` rejects |
//! | 400 | `no_topics` | no `topic` parameter |
//! | 400 | `too_many_topics` (with `"limit"`) | more `topic` parameters than [`SseBridge::max_topics`] |
//! | 403 | `forbidden` (with `"topic"`) | the [`SseBridge::authorize`] hook refused a topic |
//! | 503 | `unavailable` | the bridge is closed, or the server's subscription limit is reached |
//!
//! A slow or stalled browser never holds anything up: each connection reads
//! from its own subscription, whose bounded queue drops the oldest message
//! when full (the server never waits for the client); the client is told
//! with `resync` once it reads again.
//!
//! It works for any spec: give the bridge the spec's generated
//! `parse_topic` and `Message::event_name`.
//!
//! ```
//! use axum::Router;
//! use staff_pubsub::sse::SseBridge;
//! use staff_pubsub::{staff, PubSub, Topic};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bridge = SseBridge::new(staff::server(), staff::parse_topic, staff::Message::event_name)
//!     .max_topics(8)
//!     // Which topics may this request subscribe to? Here: no single person's.
//!     .authorize(|_request, topic: &Topic| !topic.to_string().starts_with("staff:person:"));
//! let app: Router = Router::new().route("/events", bridge.route());
//! # let _ = app;
//!
//! // The page: new EventSource("/events?topic=staff:teams&topic=staff:departments")
//! # Ok(()) }
//! ```
//!
//! An application that chooses the topics itself (from its session, say)
//! serves them with [`SseBridge::open`] (resuming as above), or turns its
//! own subscription into a response with [`SseBridge::stream`].
//!
//! # Presence: who is here
//!
//! A connection can be present on a topic and be sent who is there, as a
//! Phoenix channel with `Phoenix.Presence` is. The application decides,
//! per connection and topic: with [`SseBridge::presence`], a hook asked
//! for each topic of the request (after authorization) returns a
//! [`PresenceGrant`]: `None` (nothing), [`PresenceGrant::Watch`] (sent
//! who is there, not listed) or [`PresenceGrant::Track`] (listed as a key
//! with metadata, and sent who is there); with
//! [`SseBridge::open_with_presence`], the application gives the grants
//! itself. Presences are those of the server's
//! [`Tracker`](crate::presence::Tracker) of the metadata type (the one the
//! application's own `pubsub.track` and `tracker::<Meta>()` use): a
//! connection's presence is tracked once it is subscribed (before its
//! list is taken: it is in its own `presence_state`, never in a diff of
//! its own), and the bridge holds its [`Tracked`](crate::presence::Tracked)
//! guard for as long as the connection's stream lives. It leaves (a
//! `presence_diff` to the others) when the stream ends: the browser
//! closed the tab or navigated away (the connection closes), the bridge
//! was closed, the server is gone, or the connection stalled (below).
//!
//! | SSE `event:` | `data:` | when |
//! | --- | --- | --- |
//! | `presence_state` ([`PRESENCE_STATE_EVENT`]) | `{"topic":"staff:teams","event":"presence_state","payload":{"u1":{"metas":[{"name":"Ada","phx_ref":"presence-1a2b…-1.5c3d…"}]}}}` | after `ready`, one per topic with presence, before the connection's other events; again after a lag (below) |
//! | `presence_diff` ([`PRESENCE_DIFF_EVENT`]) | `{"topic":"staff:teams","event":"presence_diff","payload":{"joins":{"u2":{"metas":[...]}},"leaves":{}}}` | what changed on the topic since, in order |
//!
//! `payload` is Phoenix.Presence's: a `presence_state` payload is the
//! list, `{key: {"metas": [meta, ...]}}` (keys sorted, a key's metas in
//! the order they were tracked: a user on two tabs is one key with two
//! metas); a `presence_diff` payload is `{"joins": {...}, "leaves": {...}}`
//! of the same shape, both always present (`{}` when empty), so that
//! Phoenix's `presence.js` (`Presence.syncState`, `Presence.syncDiff`)
//! takes it as it is. A meta is the metadata's JSON object with
//! `"phx_ref"` added (a metadata that is not an object is
//! `{"meta": <its JSON>, "phx_ref": ...}`). `phx_ref` is the presence's
//! [`PresenceId`](crate::presence::PresenceId) and a hash of its
//! metadata's JSON: the same on every connection and on every node
//! built alike, new on
//! an update, whose diff has the new meta join with `"phx_ref_prev"` (the
//! old ref) and the old one leave, as Phoenix sends; an update to the
//! same metadata sends nothing. A leave names the ref its join had.
//!
//! Presence events have ids as messages without a log position do: the
//! connection's sequence number on a server that is not durable, no `id:`
//! on a durable one. Presence is never replayed: a browser that
//! reconnects, resumed or not, is a new connection (its old presence left
//! when the old connection ended), tracked again and sent a new
//! `presence_state`.
//!
//! What each mode shows: **in process**, the presences of this server
//! (its connections', and what the application tracks). **Redis live and
//! durable, NATS live and durable**: every node's, through the tracker's
//! replication (see [`presence`](crate::presence)): a connection on node A
//! is in the `presence_state` and `presence_diff` of node B's connections,
//! within a broadcast period of the
//! [`PresenceTiming`](crate::presence::PresenceTiming); a node that stops
//! or is cut off has its presences leave after the down period. Presence
//! is live in the durable modes too (gossip, never the durable log).
//! **Linked** (a spec's server and its extension's): the two share one
//! tracker, kept by the server with the transport, so as that server's
//! mode. **Phoenix**: for a metadata type given an Elixir tracker with
//! `PhoenixConfig::presence` (feature `phoenix`),
//! the Phoenix application's presences too (the node is a replica of its
//! `Phoenix.Tracker`, and Elixir lists the browsers tracked here); for
//! any other, this server's alone.
//!
//! Bounds, and a browser that stalls:
//!
//! - Tracking is bounded by the tracker's
//!   [`PresenceLimits`](crate::presence::PresenceLimits): a presence over
//!   them refuses the request with 503 `{"error":"presence","topic":...,
//!   "message":...}` ([`Rejection::Presence`]); nothing stays tracked or
//!   subscribed.
//! - Each watched topic of a connection queues at most
//!   [`DIFF_QUEUE_CAPACITY`](crate::presence::DIFF_QUEUE_CAPACITY) diffs
//!   (a diff is made once per change and shared by every connection). A
//!   connection that falls further behind (the browser reads too slowly)
//!   loses no diff silently: it is sent a new `presence_state` (the list
//!   as it is then; the page replaces its own), then the diffs after it.
//! - A connection that tracks a presence and does not take its events for
//!   [`SseBridge::stall_timeout`] (default [`DEFAULT_STALL_TIMEOUT`], at
//!   least twice the keep-alive interval; a reading connection takes a
//!   keep-alive comment every interval) is stalled: its presences leave
//!   at once, and its stream ends when it is next polled, so the browser,
//!   if it comes back, reconnects and is tracked again. The stream is not
//!   polled once the socket's buffers are full; a browser gone without
//!   closing its connection (its network lost) and sent little is noticed
//!   when the operating system gives up on the connection (TCP's
//!   retransmission timeout, or keepalive if the server sets it).
//!
//! ```
//! use axum::Router;
//! use staff_pubsub::sse::{PresenceGrant, SseBridge};
//! use staff_pubsub::{staff, PubSub, Topic};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Viewer { name: String }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bridge = SseBridge::new(staff::server(), staff::parse_topic, staff::Message::event_name)
//!     // Present on staff:departments as the request's `x-user` (an
//!     // authentication layer's work in a real application).
//!     .presence(|request, topic: &Topic| {
//!         let user = request.headers.get("x-user")?.to_str().ok()?;
//!         (*topic == staff::topic_departments())
//!             .then(|| PresenceGrant::track(user, Viewer { name: user.to_owned() }))
//!     });
//! let app: Router = Router::new().route("/events", bridge.route());
//! # let _ = app;
//! // The page:
//! // const source = new EventSource("/events?topic=staff:departments");
//! // source.addEventListener("presence_state", (e) => { state = JSON.parse(e.data).payload; });
//! // source.addEventListener("presence_diff", (e) => syncDiff(JSON.parse(e.data).payload));
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use futures_core::Stream;
use serde::Serialize;
use tokio::sync::watch;

use crate::loom::sync::Arc;
use crate::{Error, Gap, ParseTopicError, Position, PubSub, RecvError, Subscription, Topic};

mod presence;

use presence::{Feed, FeedItem, GrantError, PresenceFeed};
pub use presence::{
    PresenceGrant, DEFAULT_STALL_TIMEOUT, PRESENCE_DIFF_EVENT, PRESENCE_STATE_EVENT,
};

/// The default bound on topics per browser connection, that is per event
/// stream ([`SseBridge::max_topics`]).
pub const DEFAULT_MAX_STREAM_TOPICS: usize = 16;

/// The former name of [`DEFAULT_MAX_STREAM_TOPICS`], kept so that code
/// naming it compiles; not to be confused with
/// [`wire::DEFAULT_MAX_TOPICS`](crate::wire::DEFAULT_MAX_TOPICS), the bound
/// on topics per envelope.
#[deprecated(note = "renamed `DEFAULT_MAX_STREAM_TOPICS`: the bound on topics per event stream")]
pub const DEFAULT_MAX_TOPICS: usize = DEFAULT_MAX_STREAM_TOPICS;

/// The default interval of keep-alive comments ([`SseBridge::keep_alive`]).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query parameter that names a topic: `?topic=staff:teams`.
pub const TOPIC_PARAMETER: &str = "topic";

/// The SSE event that tells the page to reload what it shows.
pub const RESYNC_EVENT: &str = "resync";

/// The SSE event sent first, once the connection is subscribed.
pub const READY_EVENT: &str = "ready";

/// The query parameter a page may pass its last event id in, when it
/// cannot send the `Last-Event-ID` header (a new `EventSource`):
/// `?topic=staff:teams&last_event_id=002a-1042`.
pub const LAST_EVENT_ID_PARAMETER: &str = "last_event_id";

/// A spec's strict topic parser: the generated `parse_topic`.
pub type ParseTopic = fn(&str) -> Result<Topic, ParseTopicError>;

/// A message's SSE event name: the generated `Message::event_name`.
pub type EventName<M> = fn(&M) -> &'static str;

type Authorize = dyn Fn(&Parts, &Topic) -> bool + Send + Sync;

/// Sets up a connection's presence once it is subscribed: tracks and
/// watches what the application granted.
type StartPresence<M> = Box<
    dyn FnOnce(&PubSub<M>, Duration) -> Result<Option<Box<dyn PresenceFeed>>, GrantError> + Send,
>;

/// The presence hook, type-erased: a request's grants for its topics.
type PresenceHook<M> = dyn Fn(&Parts, &[Topic]) -> StartPresence<M> + Send + Sync;

/// `grants` as a [`StartPresence`], on the tracker of `Meta`.
fn start_presence<M, Meta>(grants: Vec<(Topic, PresenceGrant<Meta>)>) -> StartPresence<M>
where
    M: Send + Sync + 'static,
    Meta: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    Box::new(move |pubsub: &PubSub<M>, stall_timeout: Duration| {
        let feed = Feed::<Meta>::new(pubsub, grants, stall_timeout)?;
        Ok(feed.map(|feed| Box::new(feed) as Box<dyn PresenceFeed>))
    })
}

/// Serves subscriptions of a [`PubSub`] as Server-Sent Events: see the
/// [module docs](self). Cheap to clone.
pub struct SseBridge<M> {
    inner: Arc<Inner<M>>,
}

struct Inner<M> {
    pubsub: PubSub<M>,
    parse_topic: ParseTopic,
    event_name: EventName<M>,
    max_topics: usize,
    keep_alive: Duration,
    authorize: Option<Box<Authorize>>,
    presence: Option<Box<PresenceHook<M>>>,
    stall_timeout: Duration,
    closed: watch::Sender<bool>,
}

impl<M> Clone for SseBridge<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M> fmt::Debug for SseBridge<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBridge")
            .field("pubsub", &self.inner.pubsub)
            .field("max_topics", &self.inner.max_topics)
            .field("keep_alive", &self.inner.keep_alive)
            .field("authorize", &self.inner.authorize.is_some())
            .field("presence", &self.inner.presence.is_some())
            .field("stall_timeout", &self.inner.stall_timeout)
            .field("closed", &*self.inner.closed.borrow())
            .finish()
    }
}

/// Why a request was refused: its response is the status and a JSON body
/// (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// A `topic` parameter the spec's `parse_topic` rejects (400).
    InvalidTopic {
        /// The parameter, as sent (at most 256 bytes of it).
        topic: String,
        /// Why the spec rejects it.
        message: String,
    },
    /// No `topic` parameter (400).
    NoTopics,
    /// More `topic` parameters than allowed (400).
    TooManyTopics {
        /// The bound.
        limit: usize,
    },
    /// The authorization hook refused a topic (403).
    Forbidden {
        /// The refused topic.
        topic: String,
    },
    /// The bridge is closed, or the server allows no more subscriptions (503).
    Unavailable {
        /// Why.
        message: String,
    },
    /// A presence granted to the connection could not be tracked (503):
    /// the node tracks its limit of presences, or the metadata is over
    /// its limit or does not encode
    /// ([`PresenceError`](crate::presence::PresenceError)).
    Presence {
        /// The topic of the presence.
        topic: String,
        /// The tracker's error.
        message: String,
    },
}

impl Rejection {
    /// The response status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidTopic { .. } | Self::NoTopics | Self::TooManyTopics { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Unavailable { .. } | Self::Presence { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Self::InvalidTopic { topic, message } => {
                json!({"error": "invalid_topic", "topic": topic, "message": message})
            }
            Self::NoTopics => json!({
                "error": "no_topics",
                "message": format!("subscribe to at least one topic: ?{TOPIC_PARAMETER}=<topic>"),
            }),
            Self::TooManyTopics { limit } => json!({
                "error": "too_many_topics",
                "limit": limit,
                "message": format!("at most {limit} topics per connection"),
            }),
            Self::Forbidden { topic } => json!({
                "error": "forbidden",
                "topic": topic,
                "message": format!("not allowed to subscribe to {topic}"),
            }),
            Self::Unavailable { message } => json!({"error": "unavailable", "message": message}),
            Self::Presence { topic, message } => {
                json!({"error": "presence", "topic": topic, "message": message})
            }
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .body()
            .get("message")
            .and_then(serde_json::Value::as_str)
        {
            Some(message) => f.write_str(message),
            None => f.write_str("refused"),
        }
    }
}

impl std::error::Error for Rejection {}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
    }
}

/// The longest prefix of `text` of at most `max` bytes, on a char boundary.
fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl<M> SseBridge<M>
where
    M: Serialize + Send + Sync + 'static,
{
    /// A bridge from `pubsub` that parses topics with `parse_topic` (the
    /// spec's generated `parse_topic`) and names SSE events with
    /// `event_name` (the generated `Message::event_name`). No authorization
    /// hook: every topic the spec accepts may be subscribed to.
    #[must_use]
    pub fn new(pubsub: PubSub<M>, parse_topic: ParseTopic, event_name: EventName<M>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pubsub,
                parse_topic,
                event_name,
                max_topics: DEFAULT_MAX_STREAM_TOPICS,
                keep_alive: DEFAULT_KEEP_ALIVE,
                authorize: None,
                presence: None,
                stall_timeout: DEFAULT_STALL_TIMEOUT,
                closed: watch::Sender::new(false),
            }),
        }
    }

    fn inner_mut(&mut self) -> Option<&mut Inner<M>> {
        Arc::get_mut(&mut self.inner)
    }

    /// At most `limit` topics per connection (at least 1); default
    /// [`DEFAULT_MAX_STREAM_TOPICS`]. Configure before cloning the bridge: on a
    /// bridge already cloned this has no effect (and logs an error).
    #[must_use]
    pub fn max_topics(mut self, limit: usize) -> Self {
        match self.inner_mut() {
            Some(inner) => inner.max_topics = limit.max(1),
            None => tracing::error!("SseBridge::max_topics on a cloned bridge: ignored"),
        }
        self
    }

    /// Keep-alive comments every `interval` while no event is sent; default
    /// [`DEFAULT_KEEP_ALIVE`]. Configure before cloning the bridge.
    #[must_use]
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        match self.inner_mut() {
            Some(inner) => inner.keep_alive = interval,
            None => tracing::error!("SseBridge::keep_alive on a cloned bridge: ignored"),
        }
        self
    }

    /// The authorization hook: `allow(request, topic)` says whether the
    /// request (its headers, URI and extensions, where an authentication
    /// layer put the user) may subscribe to `topic`. It is asked for each
    /// topic after all of them parsed; the first refusal is a 403 naming
    /// the topic. Configure before cloning the bridge.
    #[must_use]
    pub fn authorize<F>(mut self, allow: F) -> Self
    where
        F: Fn(&Parts, &Topic) -> bool + Send + Sync + 'static,
    {
        match self.inner_mut() {
            Some(inner) => inner.authorize = Some(Box::new(allow)),
            None => tracing::error!("SseBridge::authorize on a cloned bridge: ignored"),
        }
        self
    }

    /// The presence hook: `grant(request, topic)` says what the request's
    /// connection does with `topic`'s presence, for each of its topics
    /// (parsed and authorized): `None`, nothing; [`PresenceGrant::Watch`],
    /// it is sent who is there; [`PresenceGrant::Track`], it is also
    /// listed, as `key` with `meta`, for as long as it lasts. Presences
    /// are tracked on the server's [`Tracker`](crate::presence::Tracker)
    /// of `Meta` (the one [`PubSub::tracker::<Meta>()`](PubSub::tracker)
    /// gives the application), once the connection is subscribed. See
    /// [Presence](self#presence-who-is-here) for the events. Configure
    /// before cloning the bridge.
    ///
    /// ```
    /// use staff_pubsub::sse::{PresenceGrant, SseBridge};
    /// use staff_pubsub::{staff, Topic};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Viewer { name: String }
    ///
    /// /// What an authentication layer put in the request's extensions.
    /// #[derive(Clone)]
    /// struct User { id: String, name: String }
    ///
    /// let bridge = SseBridge::new(staff::server(), staff::parse_topic, staff::Message::event_name)
    ///     .presence(|request, topic: &Topic| {
    ///         if *topic != staff::topic_departments() {
    ///             return None; // no presence on the other topics
    ///         }
    ///         Some(match request.extensions.get::<User>() {
    ///             Some(user) => PresenceGrant::track(&user.id, Viewer { name: user.name.clone() }),
    ///             None => PresenceGrant::Watch, // anonymous: sees who is there, unlisted
    ///         })
    ///     });
    /// # let _ = bridge;
    /// ```
    #[must_use]
    pub fn presence<Meta, F>(mut self, grant: F) -> Self
    where
        Meta: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
        F: Fn(&Parts, &Topic) -> Option<PresenceGrant<Meta>> + Send + Sync + 'static,
    {
        let hook = move |request: &Parts, topics: &[Topic]| {
            let grants: Vec<(Topic, PresenceGrant<Meta>)> = topics
                .iter()
                .filter_map(|topic| Some((*topic, grant(request, topic)?)))
                .collect();
            start_presence::<M, Meta>(grants)
        };
        match self.inner_mut() {
            Some(inner) => inner.presence = Some(Box::new(hook)),
            None => tracing::error!("SseBridge::presence on a cloned bridge: ignored"),
        }
        self
    }

    /// How long a connection that tracks a presence may go without
    /// taking events (its stream not polled: the browser does not read,
    /// or is gone without closing its connection) before its presences
    /// leave and its stream ends; default [`DEFAULT_STALL_TIMEOUT`], at
    /// least twice the [`keep_alive`](Self::keep_alive) interval (a
    /// reading connection takes a keep-alive comment every interval).
    /// Configure before cloning the bridge.
    #[must_use]
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        match self.inner_mut() {
            Some(inner) => inner.stall_timeout = timeout,
            None => tracing::error!("SseBridge::stall_timeout on a cloned bridge: ignored"),
        }
        self
    }

    /// The stall timeout in force: the one set, at least twice the
    /// keep-alive interval.
    fn effective_stall_timeout(&self) -> Duration {
        self.inner
            .stall_timeout
            .max(self.inner.keep_alive.saturating_mul(2))
    }

    /// The server the bridge subscribes to.
    #[must_use]
    pub fn pubsub(&self) -> &PubSub<M> {
        &self.inner.pubsub
    }

    /// Ends every stream of this bridge (after the event each is sending)
    /// and refuses new requests with 503: call it before a graceful
    /// shutdown of the HTTP server, which otherwise waits for the streams.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// The topics a request asks for, parsed and authorized.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] when the request may not be served.
    pub fn topics(&self, request: &Parts) -> Result<Vec<Topic>, Rejection> {
        let query = request.uri.query().unwrap_or("");
        let limit = self.inner.max_topics;
        let mut topics: Vec<Topic> = Vec::new();
        let mut count = 0_usize;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if name != TOPIC_PARAMETER {
                continue;
            }
            count += 1;
            if count > limit {
                return Err(Rejection::TooManyTopics { limit });
            }
            let topic =
                (self.inner.parse_topic)(&value).map_err(|error| Rejection::InvalidTopic {
                    topic: clip(&value, 256),
                    message: error.to_string(),
                })?;
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        if topics.is_empty() {
            return Err(Rejection::NoTopics);
        }
        if let Some(allow) = &self.inner.authorize {
            if let Some(refused) = topics.iter().find(|topic| !allow(request, topic)) {
                return Err(Rejection::Forbidden {
                    topic: refused.to_string(),
                });
            }
        }
        Ok(topics)
    }

    /// Serves one request: the topics of its query, checked, subscribed
    /// (resumed after its `Last-Event-ID` on a durable server, see the
    /// [module docs](self)) and streamed; or the refusal.
    pub async fn serve(&self, request: &Parts) -> Response {
        let topics = match self.topics(request) {
            Ok(topics) => topics,
            Err(rejection) => return rejection.into_response(),
        };
        let last_event_id = last_event_id(request);
        let presence = self
            .inner
            .presence
            .as_ref()
            .map(|hook| hook(request, &topics));
        match self
            .open_inner(topics, last_event_id.as_deref(), presence)
            .await
        {
            Ok(stream) => stream.into_response(),
            Err(rejection) => rejection.into_response(),
        }
    }

    /// The subscription a request asks for: a new one, which does not
    /// resume (see [`open`](Self::open)).
    ///
    /// # Errors
    ///
    /// A [`Rejection`] when the request may not be served.
    pub fn subscribe(&self, request: &Parts) -> Result<Subscription<M>, Rejection> {
        let topics = self.topics(request)?;
        self.check_open()?;
        self.inner
            .pubsub
            .subscribe_many(topics)
            .map_err(unavailable)
    }

    fn check_open(&self) -> Result<(), Rejection> {
        if *self.inner.closed.borrow() {
            return Err(Rejection::Unavailable {
                message: "the event stream is shut down".to_owned(),
            });
        }
        Ok(())
    }

    /// Subscribes to `topics` (checked by the application) for a client
    /// that last received the event `last_event_id` (its `Last-Event-ID`,
    /// [`last_event_id`] reads it from a request), and streams: on a
    /// durable server, resumed after that event when it can be (see the
    /// [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`Rejection::NoTopics`] for no topic, [`Rejection::Unavailable`]
    /// when the bridge is closed or the server full.
    pub async fn open(
        &self,
        topics: Vec<Topic>,
        last_event_id: Option<&str>,
    ) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static>, Rejection>
    {
        self.open_inner(topics, last_event_id, None).await
    }

    /// As [`open`](Self::open), with the connection's presence: for each
    /// of `presence`'s topics (the application's choice, subscribed or
    /// not), what the connection does with its presence (see
    /// [`presence`](Self::presence); the hook is not asked). The presences
    /// are tracked once the connection is subscribed, on the server's
    /// tracker of `Meta`, and last as long as the stream.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open); [`Rejection::Presence`] when a presence
    /// cannot be tracked (nothing is then tracked or subscribed).
    pub async fn open_with_presence<Meta>(
        &self,
        topics: Vec<Topic>,
        last_event_id: Option<&str>,
        presence: Vec<(Topic, PresenceGrant<Meta>)>,
    ) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static>, Rejection>
    where
        Meta: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let start = start_presence::<M, Meta>(presence);
        self.open_inner(topics, last_event_id, Some(start)).await
    }

    async fn open_inner(
        &self,
        topics: Vec<Topic>,
        last_event_id: Option<&str>,
        presence: Option<StartPresence<M>>,
    ) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static>, Rejection>
    {
        let (subscription, start) = self.subscribe_for(topics, last_event_id).await?;
        // Tracked once subscribed: a refused connection never shows.
        let feed = match presence {
            None => None,
            Some(start) => start(&self.inner.pubsub, self.effective_stall_timeout()).map_err(
                |GrantError { topic, error }| Rejection::Presence {
                    topic: topic.to_string(),
                    message: error.to_string(),
                },
            )?,
        };
        Ok(self.sse(subscription, start, feed))
    }

    /// The subscription of a connection to `topics`, resumed after
    /// `last_event_id` when it can be, and how its stream starts.
    async fn subscribe_for(
        &self,
        topics: Vec<Topic>,
        last_event_id: Option<&str>,
    ) -> Result<(Subscription<M>, Start), Rejection> {
        if topics.is_empty() {
            return Err(Rejection::NoTopics);
        }
        self.check_open()?;
        let pubsub = &self.inner.pubsub;
        let last_event_id = last_event_id.map(str::trim).filter(|id| !id.is_empty());
        if !pubsub.core().is_durable() {
            let subscription = pubsub.subscribe_many(topics).map_err(unavailable)?;
            return Ok((subscription, start(false, None, last_event_id.is_some())));
        }
        if let Some(id) = last_event_id {
            match id.parse::<Position>() {
                Ok(after) => match pubsub.subscribe_since(topics.iter().copied(), after).await {
                    Ok(subscription) => {
                        return Ok((subscription, start(true, None, false)));
                    }
                    Err(Error::Replay(error)) => {
                        tracing::warn!(%error, %after, "SSE resume: cannot read the log: resync");
                    }
                    Err(Error::NotDurable) => {}
                    Err(error) => return Err(unavailable(error)),
                },
                Err(error) => tracing::debug!(%error, "SSE resume: not a log position: resync"),
            }
        }
        // A new subscription, from the node's position: `ready` names it,
        // so that a browser that drops before any message resumes there.
        // Subscribed since it (read first), every message after it comes.
        let reconnected = last_event_id.is_some();
        if let Some(head) = pubsub.log_position() {
            match pubsub.subscribe_since(topics.iter().copied(), head).await {
                Ok(subscription) => {
                    return Ok((subscription, start(false, Some(head), reconnected)));
                }
                Err(Error::Replay(error)) => {
                    tracing::warn!(%error, "SSE: cannot read the log: ready without an id");
                }
                Err(Error::NotDurable) => {}
                Err(error) => return Err(unavailable(error)),
            }
        }
        let subscription = pubsub.subscribe_many(topics).map_err(unavailable)?;
        Ok((subscription, start(false, None, reconnected)))
    }

    /// A `GET` route serving [`serve`](Self::serve), for
    /// `Router::route(path, bridge.route())`.
    pub fn route<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let bridge = self.clone();
        axum::routing::get(move |request: axum::extract::Request| {
            let bridge = bridge.clone();
            async move {
                let (parts, _body) = request.into_parts();
                let mut response = bridge.serve(&parts).await;
                // Proxies such as nginx buffer responses unless told not to.
                response
                    .headers_mut()
                    .insert("x-accel-buffering", header::HeaderValue::from_static("no"));
                response
            }
        })
    }

    /// `subscription` as an SSE response (see the [module docs](self) for
    /// the events): for an application that subscribes by itself. With
    /// `resumed` (the client sent `Last-Event-ID`), a `resync` follows
    /// `ready`. On a durable server, events have their log positions as
    /// ids; a subscription made with [`PubSub::subscribe_since`] streams
    /// what it replays first.
    pub fn stream(
        &self,
        subscription: Subscription<M>,
        resumed: bool,
    ) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
        self.sse(subscription, start(false, None, resumed), None)
    }

    fn sse(
        &self,
        subscription: Subscription<M>,
        start: Start,
        presence: Option<Box<dyn PresenceFeed>>,
    ) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
        let keep_alive = KeepAlive::new().interval(self.inner.keep_alive);
        let durable = self.inner.pubsub.core().is_durable();
        Sse::new(events(
            subscription,
            self.inner.event_name,
            self.inner.closed.subscribe(),
            start,
            durable,
            presence,
        ))
        .keep_alive(keep_alive)
    }
}

/// The client's last event id: the `Last-Event-ID` header or, without
/// one, the [`LAST_EVENT_ID_PARAMETER`] query parameter. `None` when
/// neither is there (a new connection).
#[must_use]
pub fn last_event_id(request: &Parts) -> Option<String> {
    if let Some(header) = request.headers.get("last-event-id") {
        return Some(String::from_utf8_lossy(header.as_bytes()).into_owned());
    }
    let query = request.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == LAST_EVENT_ID_PARAMETER)
        .map(|(_, value)| value.into_owned())
}

fn unavailable(error: Error) -> Rejection {
    Rejection::Unavailable {
        message: error.to_string(),
    }
}

/// How a stream starts.
struct Start {
    /// `ready` says `"resumed":true`.
    resumed: bool,
    /// `ready`'s id on a durable server.
    ready_id: Option<Position>,
    /// `resync` `"reconnected"` follows `ready`.
    reconnected: bool,
}

fn start(resumed: bool, ready_id: Option<Position>, reconnected: bool) -> Start {
    Start {
        resumed,
        ready_id,
        reconnected,
    }
}

/// What the stream sends next.
enum Step {
    Ready,
    Reconnected,
    Messages,
}

struct State<M> {
    subscription: Subscription<M>,
    event_name: EventName<M>,
    closed: watch::Receiver<bool>,
    step: Step,
    start: Start,
    /// Ids are log positions (or none), not the connection's sequence.
    durable: bool,
    sequence: u64,
    /// The connection's presence, if it has one.
    presence: Option<Box<dyn PresenceFeed>>,
    /// Which of presence and messages is asked first for the next event:
    /// alternated after a message or a `presence_diff`, so that neither
    /// starves the other.
    presence_first: bool,
}

impl<M> State<M> {
    /// An event with its id: on a durable server `position`, if any; else
    /// the connection's next sequence number.
    fn event(&mut self, name: &str, data: &str, position: Option<Position>) -> Event {
        let event = Event::default().event(name).data(data);
        if self.durable {
            return match position {
                Some(position) => event.id(position.to_string()),
                None => event,
            };
        }
        self.sequence += 1;
        event.id(self.sequence.to_string())
    }
}

fn resync(reason: &str, missed: Option<u64>) -> String {
    let mut body = serde_json::Map::new();
    body.insert("reason".into(), reason.into());
    if let Some(missed) = missed {
        body.insert("missed".into(), missed.into());
    }
    serde_json::Value::Object(body).to_string()
}

fn gap_resync(gap: &Gap) -> String {
    let (kind, entries) = match gap {
        Gap::Disconnected => ("disconnected", None),
        Gap::Trimmed { missing, .. } => ("trimmed", Some(*missing)),
        Gap::LogLost => ("log_lost", None),
        Gap::ReplayLimit { missing } => ("replay_limit", Some(*missing)),
    };
    let mut body = serde_json::Map::new();
    body.insert("reason".into(), "gap".into());
    body.insert("gap".into(), kind.into());
    if let Some(entries) = entries {
        body.insert("entries".into(), entries.into());
    }
    serde_json::Value::Object(body).to_string()
}

/// What the stream sends next, once it is not `ready`.
enum Next<M> {
    Presence(FeedItem),
    Message(Result<(Arc<M>, Option<Position>), RecvError>),
}

/// The connection's next presence event; never, without presence.
async fn next_presence(presence: &mut Option<Box<dyn PresenceFeed>>) -> FeedItem {
    match presence {
        Some(feed) => std::future::poll_fn(|cx| feed.poll_event(cx)).await,
        None => std::future::pending().await,
    }
}

fn events<M>(
    subscription: Subscription<M>,
    event_name: EventName<M>,
    closed: watch::Receiver<bool>,
    start: Start,
    durable: bool,
    presence: Option<Box<dyn PresenceFeed>>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    M: Serialize + Send + Sync + 'static,
{
    let state = State {
        subscription,
        event_name,
        closed,
        step: Step::Ready,
        start,
        durable,
        sequence: 0,
        presence,
        // The `presence_state` events come first, right after `ready`.
        presence_first: true,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let event = match state.step {
            Step::Ready => {
                state.step = if state.start.reconnected {
                    Step::Reconnected
                } else {
                    Step::Messages
                };
                let topics: Vec<String> = state
                    .subscription
                    .topics()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let data = if state.start.resumed {
                    serde_json::json!({ "topics": topics, "resumed": true })
                } else {
                    serde_json::json!({ "topics": topics })
                };
                let id = state.start.ready_id;
                state.event(READY_EVENT, &data.to_string(), id)
            }
            Step::Reconnected => {
                state.step = Step::Messages;
                state.event(RESYNC_EVENT, &resync("reconnected", None), None)
            }
            Step::Messages => {
                if *state.closed.borrow_and_update() {
                    return None;
                }
                if let Some(presence) = &state.presence {
                    presence.touch();
                }
                // Alternating after a message or a diff; a
                // `presence_state` keeps presence first, so that a
                // connection's states all come before its messages.
                let presence_first = state.presence_first;
                // Err of `changed`: the bridge is gone, so nothing can
                // close the stream any more; the branch is disabled.
                let next = if presence_first {
                    tokio::select! {
                        biased;
                        Ok(()) = state.closed.changed() => return None,
                        item = next_presence(&mut state.presence) => Next::Presence(item),
                        item = state.subscription.recv_with_position() => Next::Message(item),
                    }
                } else {
                    tokio::select! {
                        biased;
                        Ok(()) = state.closed.changed() => return None,
                        item = state.subscription.recv_with_position() => Next::Message(item),
                        item = next_presence(&mut state.presence) => Next::Presence(item),
                    }
                };
                let item = match next {
                    Next::Message(item) => {
                        state.presence_first = true;
                        item
                    }
                    Next::Presence(FeedItem::Event(name, data)) => {
                        state.presence_first = name == PRESENCE_STATE_EVENT;
                        let event = state.event(name, &data, None);
                        return Some((Ok(event), state));
                    }
                    // Stalled: its presences left; the browser reconnects
                    // and is tracked again.
                    Next::Presence(FeedItem::Ended) => return None,
                };
                match item {
                    Ok((message, position)) => match serde_json::to_string(&*message) {
                        Ok(data) => {
                            let name = (state.event_name)(&message);
                            state.event(name, &data, position)
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot encode a message for SSE: resync");
                            state.event(RESYNC_EVENT, &resync("encode", Some(1)), None)
                        }
                    },
                    Err(RecvError::Lagged(missed)) => {
                        state.event(RESYNC_EVENT, &resync("lagged", Some(missed)), None)
                    }
                    Err(RecvError::Gap(gap)) => state.event(RESYNC_EVENT, &gap_resync(&gap), None),
                    Err(_) => return None,
                }
            }
        };
        Some((Ok(event), state))
    })
}
