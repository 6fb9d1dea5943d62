//! Presence over the Phoenix transport: a Rust tracker as a replica of an
//! Elixir `Phoenix.Tracker` (a `Phoenix.Presence` module is one), named by
//! [`PhoenixTracker`] in [`PhoenixConfig::presence`](super::PhoenixConfig::presence).
//!
//! The engine's gossip ([`PhoenixGossip`]) gives each configured tracker
//! a channel on its shard topic, `phx_presence:Elixir.<Tracker>_shard0`:
//! the transport's receive task hands it the frames of that topic that
//! are for this node ([`Routes`]), and its sends are whole frames
//! published on the PubSub's channel, as the Elixir shards publish them.

use std::collections::HashMap;
use std::fmt;

use tokio::sync::mpsc;

use super::frame::{FrameMode, NameForm, NodeRef};
use super::tracker::shard_topic;
use crate::gossip::{
    CountRejected, Encoding, Gossip, GossipChannel, GossipSend, PhoenixShard, Received,
    GOSSIP_QUEUE,
};
use crate::loom::sync::{Arc, Mutex};
use crate::redis::Publisher;

/// Which Elixir tracker a Rust tracker is a replica of: set per metadata
/// type with [`PhoenixConfig::presence`](super::PhoenixConfig::presence).
///
/// The Elixir side is a `Phoenix.Tracker` module, or a `Phoenix.Presence`
/// module (`use Phoenix.Presence, otp_app: :my_app, pubsub_server:
/// MyApp.PubSub`), which is a tracker named after the module, running on
/// the PubSub server with the Redis adapter that the
/// [`PhoenixConfig`](super::PhoenixConfig) names.
///
/// ```
/// use staff_pubsub::phoenix::{NameForm, PhoenixTracker};
///
/// let tracker = PhoenixTracker::new("Elixir.MyAppWeb.Presence").pool_size(1);
/// assert_eq!(tracker.module(), "MyAppWeb.Presence");
/// assert_eq!(tracker.topic(), "phx_presence:Elixir.MyAppWeb.Presence_shard0");
/// let atom_named = PhoenixTracker::new("MyApp.Tracker").name_form(NameForm::Atom);
/// # drop(atom_named);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct PhoenixTracker {
    module: String,
    pool_size: u32,
    name_form: NameForm,
}

impl PhoenixTracker {
    /// The Elixir tracker module `module` (`"MyAppWeb.Presence"`, with or
    /// without `Elixir.`), with `pool_size: 1` and this node's replica
    /// named by a binary.
    pub fn new(module: impl Into<String>) -> Self {
        let module = module.into();
        let module = module
            .strip_prefix("Elixir.")
            .map_or_else(|| module.clone(), str::to_owned);
        Self {
            module,
            pool_size: 1,
            name_form: NameForm::Binary,
        }
    }

    /// The tracker's `pool_size`, which every node of the tracker must
    /// share (Phoenix's default, and `Phoenix.Presence`'s, is 1). With
    /// `n` shards the Rust tracker runs `n` replicas, one per shard topic
    /// `phx_presence:Elixir.<module>_shard<i>`, each with a version of its
    /// own, and keeps a topic's presences in shard
    /// `:erlang.phash2(topic, n)`, where Elixir's `list` reads them. 1 to
    /// 256; with any other, the tracker stays in process (logged at WARN
    /// when it starts).
    pub fn pool_size(mut self, pool_size: u32) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// The form of this node's replica name (its
    /// [`node_name`](crate::Builder::node_name)) in the tracker's
    /// messages: [`NameForm::Binary`] (the default, the form of this
    /// node's own broadcasts, which every Elixir node takes, atom-named
    /// ones included) or [`NameForm::Atom`] (as an Elixir node started
    /// without a string `node_name` names itself). Elixir addresses its
    /// transfer requests to the name in this form; the Rust node takes
    /// both.
    pub fn name_form(mut self, form: NameForm) -> Self {
        self.name_form = form;
        self
    }

    /// The module, without `Elixir.`.
    #[must_use]
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The topic of the first shard (the only one with `pool_size: 1`):
    /// `phx_presence:Elixir.<module>_shard0`.
    #[must_use]
    pub fn topic(&self) -> String {
        shard_topic(&self.module, 0)
    }
}

impl fmt::Debug for PhoenixTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoenixTracker")
            .field("module", &self.module)
            .field("pool_size", &self.pool_size)
            .field("name_form", &self.name_form)
            .finish()
    }
}

/// A replica's way in: the queue of its shard topic's frames.
struct Route {
    to_replica: mpsc::Sender<Received>,
    /// This node's replica name, as the wire names it.
    me: String,
    me_atom: bool,
}

/// The largest pool of shards of one tracker (see
/// [`PhoenixTracker::pool_size`]).
const MAX_KNOWN_SHARDS: u32 = 256;

/// The shard topics that have a replica on this node, shared by the
/// transport's receive task (which routes) and the gossip (which opens).
pub(super) struct Routes {
    /// The shard topics of the configured trackers: their frames are this
    /// node's business even when no replica takes them (not started yet,
    /// or kept in process), so they are dropped rather than counted.
    known: std::collections::HashSet<String>,
    by_topic: Mutex<HashMap<Arc<str>, Route>>,
}

impl Routes {
    /// The routes of the configured `trackers`, none open yet.
    pub(super) fn new<'a>(trackers: impl IntoIterator<Item = &'a PhoenixTracker>) -> Self {
        let known = trackers
            .into_iter()
            .flat_map(|tracker| {
                (0..tracker.pool_size.clamp(1, MAX_KNOWN_SHARDS))
                    .map(|shard| shard_topic(&tracker.module, shard))
            })
            .collect();
        Self {
            known,
            by_topic: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a frame of `topic` if a replica on this node has that topic:
    /// hands it over when it is for this node (`:except` another node,
    /// `:only` this one in either form), and drops it otherwise (this
    /// node's own broadcast, another node's transfer). A frame of a
    /// configured tracker's topic without a replica is dropped. Returns
    /// whether it took the frame; a frame it does not take (another
    /// tracker's) goes on as any other.
    pub(super) fn route(
        &self,
        topic: &str,
        mode: FrameMode,
        node: &NodeRef<'_>,
        frame: &[u8],
    ) -> bool {
        let mut routes = self.by_topic.lock();
        let Some(route) = routes.get(topic) else {
            return self.known.contains(topic);
        };
        if route.to_replica.is_closed() {
            // The replica is gone: its topic has none.
            routes.remove(topic);
            return self.known.contains(topic);
        }
        let for_me = match mode {
            FrameMode::Except => {
                let own = if route.me_atom {
                    matches!(node.named(), Some((name, NameForm::Atom)) if name == route.me)
                } else {
                    node.is_binary(&route.me)
                };
                !own
            }
            FrameMode::Only => node.is_named(&route.me),
        };
        if for_me {
            let from = node
                .named()
                .map_or_else(String::new, |(name, _)| name.into_owned());
            // Lossy, as all gossip: a full queue drops the frame.
            if route
                .to_replica
                .try_send((Arc::from(from), frame.to_vec()))
                .is_err()
            {
                tracing::debug!(
                    topic,
                    "presence queue full: a Phoenix tracker frame dropped"
                );
            }
        }
        true
    }
}

/// The Phoenix engine's gossip: see the [module](self).
pub(super) struct PhoenixGossip {
    pub(super) routes: Arc<Routes>,
    pub(super) trackers: Arc<[(&'static str, PhoenixTracker)]>,
    pub(super) publisher: Arc<Publisher>,
    pub(super) channel: Arc<str>,
    pub(super) node: Arc<str>,
    pub(super) compression_level: u32,
    pub(super) max_frame_size: usize,
    pub(super) runtime: tokio::runtime::Handle,
}

/// Publishes a replica's frames, in order, through a bounded queue.
struct PhoenixSend {
    outbox: mpsc::Sender<Vec<u8>>,
}

impl PhoenixSend {
    fn queue(&self, frame: Vec<u8>) {
        if self.outbox.try_send(frame).is_err() {
            tracing::debug!("presence gossip queue full: a Phoenix tracker frame dropped");
        }
    }
}

impl GossipSend for PhoenixSend {
    fn broadcast(&self, frame: Vec<u8>) {
        self.queue(frame);
    }

    /// The frame names its target already (`:only`).
    fn send_to(&self, _node: &str, frame: Vec<u8>) {
        self.queue(frame);
    }
}

impl Gossip for PhoenixGossip {
    fn open(&self, tracker: &str, _rejected: CountRejected) -> Option<Vec<GossipChannel>> {
        let Some((_, config)) = self.trackers.iter().find(|(name, _)| *name == tracker) else {
            tracing::debug!(
                tracker,
                "no Phoenix tracker configured for this metadata: the tracker stays in process"
            );
            return None;
        };
        if !(1..=MAX_KNOWN_SHARDS).contains(&config.pool_size) {
            tracing::warn!(
                module = %config.module,
                pool_size = config.pool_size,
                "pool_size must be 1 to {MAX_KNOWN_SHARDS}: the tracker stays in process"
            );
            return None;
        }
        let me_atom = config.name_form == NameForm::Atom;
        if !me_atom && self.node.starts_with(':') {
            tracing::warn!(
                node = %self.node,
                "a binary replica name may not start with ':': the tracker stays in process"
            );
            return None;
        }
        let topics: Vec<Arc<str>> = (0..config.pool_size)
            .map(|shard| Arc::from(shard_topic(&config.module, shard)))
            .collect();
        let mut receivers = Vec::with_capacity(topics.len());
        {
            let mut routes = self.routes.by_topic.lock();
            if let Some(topic) = topics.iter().find(|topic| {
                routes
                    .get(*topic)
                    .is_some_and(|route| !route.to_replica.is_closed())
            }) {
                tracing::warn!(
                    %topic,
                    "this node has a replica of this Phoenix tracker already (another metadata type): the tracker stays in process"
                );
                return None;
            }
            for topic in &topics {
                let (to_replica, receive) = mpsc::channel::<Received>(GOSSIP_QUEUE);
                routes.insert(
                    Arc::clone(topic),
                    Route {
                        to_replica,
                        me: self.node.to_string(),
                        me_atom,
                    },
                );
                receivers.push(receive);
            }
        }
        // One queue and one publishing task for the tracker's shards: their
        // frames go out in the order they were made.
        let (outbox, mut outgoing) = mpsc::channel::<Vec<u8>>(GOSSIP_QUEUE);
        let publisher = Arc::clone(&self.publisher);
        let channel = Arc::clone(&self.channel);
        // Ends when every replica dropped its sending half.
        self.runtime.spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                if let Err(error) = publisher.publish(&channel, &frame).await {
                    tracing::debug!(%error, "presence frame not published");
                }
            }
        });
        Some(
            topics
                .into_iter()
                .zip(receivers)
                .map(|(topic, receive)| GossipChannel {
                    send: Box::new(PhoenixSend {
                        outbox: outbox.clone(),
                    }),
                    receive,
                    encoding: Encoding::Phoenix(PhoenixShard {
                        topic,
                        name: Arc::clone(&self.node),
                        name_is_atom: me_atom,
                        compression_level: self.compression_level,
                        max_frame_size: self.max_frame_size,
                    }),
                })
                .collect(),
        )
    }

    fn runtime(&self) -> tokio::runtime::Handle {
        self.runtime.clone()
    }
}
