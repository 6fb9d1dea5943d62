//! Presence gossip over Redis: each tracker has a channel of its own in
//! the namespace, `<namespace>:presence:<tracker>` (reserved: broadcasts
//! never use it), on which every node that runs the tracker publishes and
//! which it reads.
//!
//! Each message is a frame (`crate::gossip::frame`) naming the sending
//! node and the node it is for (none: every node but the sender). A node
//! skips its own frames and those for another node, and skips, counts in
//! [`Stats::rejected`](crate::Stats::rejected) and logs at DEBUG frames it
//! cannot parse. Sends go through a bounded queue to a task that
//! publishes them; a full queue drops (gossip is lossy by contract, see
//! `crate::gossip`). The receive task resubscribes after a lost
//! connection, waiting longer after each failure, and ends with its
//! tracker's replica.

use std::time::Duration;

use ::redis::Client;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::config::RedisConfig;
use super::publisher::Publisher;
use super::receiver::subscribe;
use crate::error::TransportError;
use crate::gossip::frame::{self, frame};
use crate::gossip::{CountRejected, Gossip, GossipChannel, GossipSend, Received, GOSSIP_QUEUE};
use crate::loom::sync::Arc;

/// The channel of `tracker` in `namespace`.
pub(crate) fn channel(namespace: &str, tracker: &str) -> String {
    format!("{namespace}:presence:{tracker}")
}

/// One node's presence gossip over Redis.
pub(crate) struct RedisGossip {
    client: Client,
    publisher: Arc<Publisher>,
    namespace: String,
    node: Arc<str>,
    reconnect: (Duration, Duration),
    runtime: tokio::runtime::Handle,
}

impl RedisGossip {
    /// The gossip of node `node`, publishing through `publisher` (the
    /// transport's) and reading on connections of its own.
    pub(crate) fn new(
        config: &RedisConfig,
        publisher: Arc<Publisher>,
        node: &str,
    ) -> Result<Self, TransportError> {
        let client = Client::open(config.url.as_str())
            .map_err(|error| TransportError::new("invalid Redis URL for presence", error))?;
        Ok(Self {
            client,
            publisher,
            namespace: config.engine.namespace.clone(),
            node: Arc::from(node),
            reconnect: (config.reconnect_min, config.reconnect_max),
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

struct RedisSend {
    node: Arc<str>,
    outbox: mpsc::Sender<Vec<u8>>,
}

impl RedisSend {
    fn queue(&self, to: &str, payload: &[u8]) {
        let Some(frame) = frame(&self.node, to, payload) else {
            tracing::debug!(to, "presence frame not made: a node name too long");
            return;
        };
        if self.outbox.try_send(frame).is_err() {
            tracing::debug!("presence gossip queue full: a message dropped");
        }
    }
}

impl GossipSend for RedisSend {
    fn broadcast(&self, bytes: Vec<u8>) {
        self.queue("", &bytes);
    }

    fn send_to(&self, node: &str, bytes: Vec<u8>) {
        // A node named "" could not be told from "every node".
        if !node.is_empty() {
            self.queue(node, &bytes);
        }
    }
}

impl Gossip for RedisGossip {
    fn open(&self, tracker: &str, rejected: CountRejected) -> Option<Vec<GossipChannel>> {
        let channel: Arc<str> = Arc::from(channel(&self.namespace, tracker));
        let (outbox, mut outgoing) = mpsc::channel::<Vec<u8>>(GOSSIP_QUEUE);
        let (to_replica, receive) = mpsc::channel::<Received>(GOSSIP_QUEUE);
        let publisher = Arc::clone(&self.publisher);
        let publish_to = Arc::clone(&channel);
        // Ends when the replica drops its sending half.
        self.runtime.spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                if let Err(error) = publisher.publish(&publish_to, &frame).await {
                    tracing::debug!(%error, "presence message not published");
                }
            }
        });
        self.runtime.spawn(read(
            self.client.clone(),
            channel,
            Arc::clone(&self.node),
            to_replica,
            rejected,
            self.reconnect,
        ));
        Some(vec![GossipChannel {
            send: Box::new(RedisSend {
                node: Arc::clone(&self.node),
                outbox,
            }),
            receive,
            encoding: crate::gossip::Encoding::MessagePack,
        }])
    }

    fn runtime(&self) -> tokio::runtime::Handle {
        self.runtime.clone()
    }
}

/// Reads `channel` and hands the frames for `node` to the replica, until
/// the replica is gone; resubscribes after a lost connection.
async fn read(
    client: Client,
    channel: Arc<str>,
    node: Arc<str>,
    to_replica: mpsc::Sender<Received>,
    rejected: CountRejected,
    (min, max): (Duration, Duration),
) {
    let mut wait = min;
    loop {
        let subscribed = tokio::select! {
            () = to_replica.closed() => return,
            subscribed = subscribe(&client, &channel) => subscribed,
        };
        match subscribed {
            Ok(subscribed) => {
                wait = min;
                let mut stream = subscribed.stream;
                // Kept while reading: dropping it unsubscribes.
                let _sink = subscribed.sink;
                loop {
                    let message = tokio::select! {
                        () = to_replica.closed() => return,
                        message = stream.next() => message,
                    };
                    let Some(message) = message else { break };
                    let bytes = message.get_payload_bytes();
                    match frame::receive(&node, bytes) {
                        frame::Received::Mine { from, payload } => {
                            // Lossy: a full queue drops the message.
                            let _ = to_replica.try_send((Arc::from(from), payload.to_vec()));
                        }
                        frame::Received::NotMine => {}
                        frame::Received::Malformed => {
                            rejected();
                            tracing::debug!(%channel, "presence frame skipped: malformed");
                        }
                    }
                }
                tracing::debug!(%channel, "presence subscription lost: resubscribing");
            }
            Err(error) => tracing::debug!(%error, %channel, "presence subscription failed"),
        }
        tokio::select! {
            () = to_replica.closed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(max);
    }
}
