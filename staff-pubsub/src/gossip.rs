//! The seam between a presence tracker's replica runtime and the other
//! nodes: what an engine provides so that the trackers of one namespace
//! share their presences ([`Gossip`]), and an in-memory one for tests.
//! Below both the server (whose upstream hands it out) and `presence`
//! (which drives it): it names neither.
//!
//! Gossip is lossy by contract: a send may be dropped (the engine is down,
//! a queue is full) and the replica protocol recovers (heartbeats carry
//! clocks, and a replica that lacks something asks for a transfer). So the
//! sends do not wait and do not fail.

use crate::loom::sync::Arc;

#[cfg(any(test, feature = "redis", feature = "nats"))]
pub(crate) mod frame;

/// How many received messages a channel holds before dropping new ones,
/// and how many sends wait for an engine's publishing task.
pub(crate) const GOSSIP_QUEUE: usize = 1024;

/// Counts a received message that was skipped (in the server's
/// [`Stats::rejected`](crate::Stats::rejected)), while the server lives.
pub(crate) type CountRejected = Arc<dyn Fn() + Send + Sync>;

/// A received message: the sending node's name and the bytes it sent.
pub(crate) type Received = (Arc<str>, Vec<u8>);

/// An engine's way to the other nodes of the namespace, for trackers.
pub(crate) trait Gossip: Send + Sync + 'static {
    /// Opens this node's channels of tracker `tracker` (one per tracker
    /// name and node), one per shard of the tracker in shard order:
    /// `None` (or none) if it cannot (the engine refuses, or it is open
    /// already), and the tracker then stays in process. One, unless the
    /// engine pools shards (Phoenix's `pool_size`): a topic's presences
    /// are then in shard `:erlang.phash2(topic, shards)`. A received
    /// frame that is not one is skipped and counted with `rejected`.
    fn open(&self, tracker: &str, rejected: CountRejected) -> Option<Vec<GossipChannel>>;

    /// The runtime the replica's task runs on (the engine's, captured when
    /// it was made, so that a tracker made outside a runtime still runs).
    fn runtime(&self) -> tokio::runtime::Handle;
}

/// Sends on one tracker's channel. Never blocks, never fails: a message
/// that cannot be sent is dropped (see the [module](self)).
pub(crate) trait GossipSend: Send + Sync {
    /// To every other node that has the tracker's channel open.
    fn broadcast(&self, bytes: Vec<u8>);
    /// To the node named `node`, if it has the channel open.
    fn send_to(&self, node: &str, bytes: Vec<u8>);
}

/// One tracker's channel on one node: its sending half, what the other
/// nodes sent (ends when the engine is gone), and how the replica's
/// messages are written on it.
pub(crate) struct GossipChannel {
    /// The sending half.
    pub(crate) send: Box<dyn GossipSend>,
    /// The receiving half.
    pub(crate) receive: tokio::sync::mpsc::Receiver<Received>,
    /// The messages' encoding, the engine's choice.
    pub(crate) encoding: Encoding,
}

/// How a tracker's messages are written on a gossip channel: the engine
/// chooses, the replica runtime encodes and decodes accordingly.
#[derive(Clone, Debug)]
pub(crate) enum Encoding {
    /// Between Rust nodes (Redis, NATS): MessagePack, in the frames of
    /// [`frame`] that name the sender and the addressee. The channel's
    /// sends take the encoded message; a received message is the
    /// payload of a frame for this node, with the name of its sender.
    MessagePack,
    /// As a replica of an Elixir `Phoenix.Tracker` shard: the tracker's
    /// own messages in `phoenix_pubsub_redis` frames, each a whole frame
    /// (addressed inside: `:except` this node or `:only` the target), sent
    /// and received as such.
    #[cfg(feature = "phoenix")]
    Phoenix(PhoenixShard),
}

/// The Elixir tracker shard a channel of [`Encoding::Phoenix`] is a
/// replica of, and how this node writes its frames.
#[cfg(feature = "phoenix")]
#[derive(Clone, Debug)]
pub(crate) struct PhoenixShard {
    /// The shard topic, `phx_presence:Elixir.<Tracker>_shard<n>`.
    pub(crate) topic: Arc<str>,
    /// This replica's name: this node's name, as text.
    pub(crate) name: Arc<str>,
    /// Whether the name is written as an atom (else a binary).
    pub(crate) name_is_atom: bool,
    /// The zlib level of the frames sent (0: not compressed).
    pub(crate) compression_level: u32,
    /// The largest frame sent or read.
    pub(crate) max_frame_size: usize,
}

/// What a server's upstream gives a tracker to reach other nodes.
pub(crate) type GossipHandle = Arc<dyn Gossip>;

#[cfg(test)]
pub(crate) use memory::MemoryHub;

#[cfg(test)]
mod memory {
    use std::collections::HashMap;

    use super::{CountRejected, Gossip, GossipChannel, GossipSend, Received, GOSSIP_QUEUE};
    use crate::loom::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    #[derive(Default)]
    struct Nodes {
        /// (tracker, node) => the node's receiving queue.
        channels: HashMap<(String, Arc<str>), mpsc::Sender<Received>>,
        /// node => its partition; nodes absent are in partition 0.
        partition: HashMap<Arc<str>, u32>,
    }

    impl Nodes {
        fn side(&self, node: &str) -> u32 {
            self.partition.get(node).copied().unwrap_or(0)
        }
    }

    /// An in-memory network of nodes, which tests partition and heal.
    #[derive(Clone, Default)]
    pub(crate) struct MemoryHub {
        nodes: Arc<Mutex<Nodes>>,
    }

    impl MemoryHub {
        /// The gossip of node `node` on this network.
        pub(crate) fn node(&self, node: &str) -> MemoryGossip {
            MemoryGossip {
                hub: self.clone(),
                node: Arc::from(node),
                runtime: tokio::runtime::Handle::current(),
            }
        }

        /// Splits the network: each group of nodes reaches only itself;
        /// nodes not named are in a group of their own.
        pub(crate) fn partition(&self, groups: &[&[&str]]) {
            let mut nodes = self.nodes.lock();
            nodes.partition.clear();
            for (side, group) in (1..).zip(groups) {
                for node in *group {
                    nodes.partition.insert(Arc::from(*node), side);
                }
            }
        }

        /// Every node reaches every other again.
        pub(crate) fn heal(&self) {
            self.nodes.lock().partition.clear();
        }

        /// Sends `bytes` on `tracker`'s channel as node `from`, which
        /// need not be a node of the network (a hostile one).
        pub(crate) fn inject(&self, tracker: &str, from: &str, bytes: Vec<u8>) {
            self.deliver(tracker, &Arc::from(from), None, bytes);
        }

        fn deliver(&self, tracker: &str, from: &Arc<str>, to: Option<&str>, bytes: Vec<u8>) {
            let nodes = self.nodes.lock();
            let side = nodes.side(from);
            for ((name, node), sender) in &nodes.channels {
                let wanted = to.map_or(node != from, |to| **node == *to);
                if name == tracker && wanted && nodes.side(node) == side {
                    // Lossy: a full or closed queue drops the message.
                    let _ = sender.try_send((Arc::clone(from), bytes.clone()));
                }
            }
        }
    }

    /// One node's gossip on a [`MemoryHub`].
    pub(crate) struct MemoryGossip {
        hub: MemoryHub,
        node: Arc<str>,
        runtime: tokio::runtime::Handle,
    }

    struct MemorySend {
        hub: MemoryHub,
        tracker: String,
        node: Arc<str>,
    }

    impl GossipSend for MemorySend {
        fn broadcast(&self, bytes: Vec<u8>) {
            self.hub.deliver(&self.tracker, &self.node, None, bytes);
        }

        fn send_to(&self, node: &str, bytes: Vec<u8>) {
            self.hub
                .deliver(&self.tracker, &self.node, Some(node), bytes);
        }
    }

    impl Gossip for MemoryGossip {
        fn open(&self, tracker: &str, _: CountRejected) -> Option<Vec<GossipChannel>> {
            let (sender, receive) = mpsc::channel(GOSSIP_QUEUE);
            // A node that opens again (restarted) replaces its channel.
            self.hub
                .nodes
                .lock()
                .channels
                .insert((tracker.to_owned(), Arc::clone(&self.node)), sender);
            Some(vec![GossipChannel {
                send: Box::new(MemorySend {
                    hub: self.hub.clone(),
                    tracker: tracker.to_owned(),
                    node: Arc::clone(&self.node),
                }),
                receive,
                encoding: super::Encoding::MessagePack,
            }])
        }

        fn runtime(&self) -> tokio::runtime::Handle {
            self.runtime.clone()
        }
    }
}
