//! The seven modes a `PubSub` runs in, as one fixture for the guarantee
//! suite (`tests/guarantees.rs`): [`Cluster::start`] starts the servers a
//! mode needs on loopback (a private `redis-server` or `nats-server`, see
//! `redis_server.rs` and `nats_server.rs`), builds the nodes of
//! `staff::Message`, each connected through its own loopback [`Proxy`] so
//! that one node's link can be cut ([`Cluster::cut`]) while the others keep
//! theirs, and can stop and restart the engine itself
//! ([`Cluster::stop_engine`], [`Cluster::restart_engine`]). The durable
//! engines keep their log across a restart (Redis with `appendonly yes`,
//! JetStream on its store).

use std::time::Duration;

use staff_pubsub::nats::NatsConfig;
use staff_pubsub::phoenix::{PhoenixConfig, PhoenixTracker};
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff::{self, Message};
use staff_pubsub::{Connection, PubSub, Retention, DEFAULT_CAPACITY};

use crate::nats_server::NatsServer;
use crate::proxy::Proxy;
use crate::redis_server::RedisServer;
use crate::within;

/// The application spec of [`Mode::Linked`]: the stock one plus locations,
/// as README "One bus per application" declares it.
#[staff_pubsub::staff_events(extends = staff_pubsub::staff)]
pub mod app {
    use staff_pubsub::Uuid;

    /// The payload of location events.
    #[entity(collection = "locations", events(location_created))]
    pub struct Location {
        /// The location's id.
        pub uuid: Uuid,
        /// Its department.
        #[route(department)]
        pub department_uuid: Option<Uuid>,
    }
}

/// A mode of the runtime: where a broadcast goes beyond this node, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `PubSub::builder().build()`: one node, no transport.
    InProcess,
    /// `Builder::redis(RedisConfig)`: Redis Pub/Sub.
    RedisLive,
    /// `RedisConfig::durable(Retention)`: a Redis Stream.
    RedisDurable,
    /// `Builder::nats(NatsConfig)`: core NATS, routed by interest.
    NatsLive,
    /// `NatsConfig::durable(Retention)`: a JetStream stream.
    NatsDurable,
    /// `Builder::phoenix(PhoenixConfig)`: the `phoenix_pubsub_redis` wire
    /// over Redis.
    Phoenix,
    /// An application spec extending the stock one, whose server has the
    /// transport (Redis live), with the stock spec's server linked to it:
    /// every node of the cluster is the stock side (`staff::server()` in
    /// `app::scope`), broadcasting and subscribing there.
    Linked,
}

impl Mode {
    /// Every mode, in the order of the README's table.
    pub const ALL: [Mode; 7] = [
        Mode::InProcess,
        Mode::RedisLive,
        Mode::RedisDurable,
        Mode::NatsLive,
        Mode::NatsDurable,
        Mode::Phoenix,
        Mode::Linked,
    ];

    /// Whether every node delivers broadcasts from the engine's log.
    #[must_use]
    pub fn is_durable(self) -> bool {
        matches!(self, Mode::RedisDurable | Mode::NatsDurable)
    }

    /// Whether there are other nodes (a transport).
    #[must_use]
    pub fn is_networked(self) -> bool {
        self != Mode::InProcess
    }
}

/// The queue capacity of every node's subscriptions ([`Cluster::capacity`]).
pub const CAPACITY: usize = 16;

const NAMESPACE: &str = "guarantees";
const PHOENIX_PUBSUB: &str = "MyApp.PubSub";

/// The engine of a cluster.
#[derive(Debug)]
enum Engine {
    None,
    Redis(RedisServer),
    Nats(NatsServer),
}

/// The servers of one mode and its nodes, all stopped on drop.
pub struct Cluster {
    mode: Mode,
    /// The nodes, `None` once [`remove`](Self::remove)d.
    nodes: Vec<Option<PubSub<Message>>>,
    /// [`Mode::Linked`]: each node's extension server, the one with the
    /// transport (the stock side holds its link weakly).
    extensions: Vec<Option<PubSub<app::Message>>>,
    proxies: Vec<Proxy>,
    engine: Engine,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("mode", &self.mode)
            .field("nodes", &self.nodes.len())
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts `mode`'s engine and `nodes` nodes named `n0`, `n1`, ...,
    /// connected and subscribed to nothing. In process there is one node,
    /// whatever `nodes` says: other nodes do not exist there.
    ///
    /// # Panics
    ///
    /// If a server or a node cannot be started.
    pub async fn start(mode: Mode, nodes: usize) -> Self {
        let engine = match mode {
            Mode::InProcess => Engine::None,
            // Persistent: the log outlives a restart of the engine.
            Mode::RedisDurable => {
                Engine::Redis(RedisServer::start_with(&["--appendonly", "yes"]).await)
            }
            Mode::RedisLive | Mode::Phoenix | Mode::Linked => {
                Engine::Redis(RedisServer::start().await)
            }
            Mode::NatsLive => Engine::Nats(NatsServer::start().await),
            Mode::NatsDurable => Engine::Nats(NatsServer::start_jetstream().await),
        };
        let mut cluster = Self {
            mode,
            nodes: Vec::new(),
            extensions: Vec::new(),
            proxies: Vec::new(),
            engine,
        };
        let count = if mode.is_networked() { nodes } else { 1 };
        for index in 0..count {
            cluster.add_node(index).await;
        }
        cluster
    }

    async fn add_node(&mut self, index: usize) {
        let name = format!("n{index}");
        let target = match &self.engine {
            Engine::None => {
                let node = PubSub::builder()
                    .node_name(name)
                    .capacity(CAPACITY)
                    .presence_timing(crate::presence::timing())
                    .expect("the tests' presence timing")
                    .build();
                self.nodes.push(Some(node));
                return;
            }
            Engine::Redis(server) => server.port(),
            Engine::Nats(server) => server.port(),
        };
        let proxy = Proxy::start(target).await;
        let redis_url = proxy.url("redis");
        let nats_url = proxy.url("nats");
        self.proxies.push(proxy);
        let builder = staff::builder()
            .node_name(&name)
            .capacity(CAPACITY)
            .presence_timing(crate::presence::timing())
            .expect("the tests' presence timing");
        let built = match self.mode {
            Mode::InProcess => unreachable!("handled above"),
            Mode::RedisLive => builder.redis(redis_config(redis_url)).await,
            Mode::RedisDurable => {
                builder
                    .redis(redis_config(redis_url).durable(Retention::entries(10_000)))
                    .await
            }
            Mode::NatsLive => builder.nats(nats_config(nats_url)).await,
            Mode::NatsDurable => {
                builder
                    .nats(nats_config(nats_url).durable(Retention::entries(10_000)))
                    .await
            }
            Mode::Phoenix => {
                let config = PhoenixConfig::new(redis_url, PHOENIX_PUBSUB)
                    .connect_timeout(Duration::from_secs(2))
                    .response_timeout(Duration::from_secs(2))
                    .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
                    // The presence row: the nodes are replicas of one
                    // Phoenix.Tracker, in its own protocol.
                    .presence::<crate::presence::Viewer>(PhoenixTracker::new("Staff.Presence"));
                builder.phoenix(config).await
            }
            Mode::Linked => {
                // The documented way: the transport on the application's
                // server; the stock side is the server `app::scope` links
                // to it (as `app::install` does for the process-wide one).
                let extension = app::builder()
                    .node_name(&name)
                    .capacity(CAPACITY)
                    .presence_timing(crate::presence::timing())
                    .expect("the tests' presence timing")
                    .redis(redis_config(redis_url))
                    .await
                    .unwrap_or_else(|e| panic!("node {name}: {e}"));
                let stock = app::scope(extension.clone(), async { staff::server() }).await;
                self.extensions.push(Some(extension));
                Ok(stock)
            }
        };
        let node = built.unwrap_or_else(|e| panic!("node {name} in {:?}: {e}", self.mode));
        self.nodes.push(Some(node));
    }

    /// The mode.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Node `index` (the stock side in [`Mode::Linked`]).
    ///
    /// # Panics
    ///
    /// If there is no such node, or it was removed.
    #[must_use]
    pub fn node(&self, index: usize) -> &PubSub<Message> {
        self.nodes[index].as_ref().expect("a node not removed")
    }

    /// The number of nodes (1 in process).
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there is no node (never).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The queue capacity of node `index`'s subscriptions: [`CAPACITY`],
    /// but on the stock side of [`Mode::Linked`], a server `app::scope`
    /// made with the default capacity.
    #[must_use]
    pub fn capacity(&self) -> usize {
        if self.mode == Mode::Linked {
            DEFAULT_CAPACITY
        } else {
            CAPACITY
        }
    }

    /// Drops node `index` (and its extension's server): its server is gone.
    pub fn remove(&mut self, index: usize) {
        self.nodes[index] = None;
        if let Some(extension) = self.extensions.get_mut(index) {
            *extension = None;
        }
    }

    /// Waits until every node's subscriptions so far reach the engine
    /// (`PubSub::sync`).
    ///
    /// # Panics
    ///
    /// If a node cannot confirm it.
    pub async fn sync(&self) {
        for node in self.nodes.iter().flatten() {
            within("sync", node.sync())
                .await
                .unwrap_or_else(|e| panic!("sync of {}: {e}", node.node_name()));
        }
    }

    /// Waits until every node is in `state`.
    ///
    /// # Panics
    ///
    /// If one does not get there within the test wait.
    pub async fn wait_for(&self, state: Connection) {
        for node in self.nodes.iter().flatten() {
            within(
                &format!("{} to be {state:?}", node.node_name()),
                node.wait_for_connection(state),
            )
            .await;
        }
    }

    /// Cuts node `index`'s connections to the engine and keeps it out
    /// until [`uncut`](Self::uncut): the other nodes keep theirs.
    ///
    /// # Panics
    ///
    /// In process (no link to cut).
    pub fn cut(&self, index: usize) {
        let proxy = &self.proxies[index];
        proxy.block();
        proxy.cut();
    }

    /// Lets node `index` connect again.
    pub fn uncut(&self, index: usize) {
        self.proxies[index].unblock();
    }

    /// Kills the engine (SIGKILL): every node loses its link.
    ///
    /// # Panics
    ///
    /// In process (no engine).
    pub fn stop_engine(&mut self) {
        match &mut self.engine {
            Engine::None => panic!("no engine in process"),
            Engine::Redis(server) => server.kill(),
            Engine::Nats(server) => server.kill(),
        }
    }

    /// Starts the engine again on the same port, with its data (the
    /// durable log) when it has persistence.
    ///
    /// # Panics
    ///
    /// In process, or if it does not restart.
    pub async fn restart_engine(&mut self) {
        match &mut self.engine {
            Engine::None => panic!("no engine in process"),
            Engine::Redis(server) => server.restart().await,
            Engine::Nats(server) => server.restart().await,
        }
    }
}

fn redis_config(url: String) -> RedisConfig {
    RedisConfig::new(url)
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

fn nats_config(url: String) -> NatsConfig {
    NatsConfig::new(url)
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
}
