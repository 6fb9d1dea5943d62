//! Presence gossip over NATS: each tracker has subjects of its own in the
//! namespace (reserved: no topic's subject can be one of them), on the
//! node's NATS connection, in live and durable mode alike (presence gossip
//! is live: core NATS, never the JetStream log):
//!
//! - `<namespace>._presence.<tracker>`: what a node sends to every node;
//!   every node that runs the tracker reads it;
//! - `<namespace>._presence.<tracker>.<node>`: what a node sends to node
//!   `<node>` alone (a transfer request or its answer), which only that
//!   node reads.
//!
//! `<tracker>` and `<node>` are the tracker's wire name (its metadata
//! type's path) and the node's name, each one subject token: every byte
//! other than an ASCII letter, digit or `-` written `_XX` (hex), so that
//! two names never share a token (`my_app::Viewer` is
//! `my_5Fapp_3A_3AViewer`). Topic subjects never have a segment starting
//! with `_`, so `_presence` stays apart from them, as `_direct`, `_sync`
//! and `_log` do.
//!
//! Each message is a frame (`crate::gossip::frame`) naming its sender and
//! its addressee (none: every node). A node skips its own frames and
//! those for another node, and skips, counts in
//! [`Stats::rejected`](crate::Stats::rejected) and logs at DEBUG frames
//! that are not frames; the replica runtime does the same for messages
//! that do not decode or whose sender is not the frame's. Sends go through
//! a bounded queue ([`GOSSIP_QUEUE`]) to a task that publishes them while
//! the client is connected: a full queue, or a client that is not
//! connected, drops the message (gossip is lossy by contract, see
//! `crate::gossip`; heartbeats and transfers make up for it). The client
//! resubscribes by itself after a reconnect; the receive task subscribes
//! again if its subscriptions end, and ends with its tracker's replica.

use std::fmt::Write as _;
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::gossip::frame::{self, frame};
use crate::gossip::{CountRejected, Gossip, GossipChannel, GossipSend, Received, GOSSIP_QUEUE};
use crate::loom::sync::Arc;
use crate::net::RateLimit;

/// The token after the namespace of every presence subject.
pub(super) const PRESENCE: &str = "_presence";

/// `name` as one subject token: see the [module](self).
fn token(name: &str) -> String {
    if name.is_empty() {
        // No escaped name is `_` alone.
        return "_".to_owned();
    }
    let mut token = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            token.push(char::from(byte));
        } else {
            let _ = write!(token, "_{byte:02X}");
        }
    }
    token
}

/// The subject on which `tracker`'s messages to every node go.
pub(super) fn subject_all(namespace: &str, tracker: &str) -> String {
    format!("{namespace}.{PRESENCE}.{}", token(tracker))
}

/// The subject on which `tracker`'s messages to node `node` go.
pub(super) fn subject_to(namespace: &str, tracker: &str, node: &str) -> String {
    format!("{}.{}", subject_all(namespace, tracker), token(node))
}

/// The longest presence subject sent or subscribed to, in bytes: far
/// under the server's `max_control_line` (4096 by default), past which
/// the server closes the whole connection (its broadcasts, interest and
/// log with it). A node or tracker name too long for it (escaping can
/// triple a name) keeps the tracker in process (`open`); a message to a
/// node named so, a name another node's message could carry, is dropped.
const MAX_SUBJECT: usize = 1024;

/// How long the receive task waits before subscribing again, at first
/// and at most.
const RESUBSCRIBE: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

/// One node's presence gossip over NATS.
pub(super) struct NatsGossip {
    client: Client,
    namespace: Arc<str>,
    node: Arc<str>,
    runtime: tokio::runtime::Handle,
}

impl NatsGossip {
    /// The gossip of node `node` in `namespace`, on the transport's
    /// client. Must run inside a tokio runtime (the transport's).
    pub(super) fn new(
        client: Client,
        namespace: Arc<str>,
        node: &str,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            client,
            namespace,
            node: Arc::from(node),
            runtime,
        }
    }
}

struct NatsSend {
    node: Arc<str>,
    outbox: mpsc::Sender<(Option<Arc<str>>, Vec<u8>)>,
}

impl NatsSend {
    fn queue(&self, to: Option<&str>, payload: &[u8]) {
        let Some(frame) = frame(&self.node, to.unwrap_or(""), payload) else {
            tracing::debug!(?to, "presence frame not made: a node name too long");
            return;
        };
        if self.outbox.try_send((to.map(Arc::from), frame)).is_err() {
            tracing::debug!("presence gossip queue full: a message dropped");
        }
    }
}

impl GossipSend for NatsSend {
    fn broadcast(&self, bytes: Vec<u8>) {
        self.queue(None, &bytes);
    }

    fn send_to(&self, node: &str, bytes: Vec<u8>) {
        // A node named "" could not be told from "every node".
        if !node.is_empty() {
            self.queue(Some(node), &bytes);
        }
    }
}

impl Gossip for NatsGossip {
    fn open(&self, tracker: &str, rejected: CountRejected) -> Option<Vec<GossipChannel>> {
        let mine = subject_to(&self.namespace, tracker, &self.node);
        if mine.len() > MAX_SUBJECT {
            tracing::warn!(
                node = %self.node,
                tracker,
                "presence stays on this node: its NATS subject would be longer than \
                 {MAX_SUBJECT} bytes (a shorter node name, namespace or metadata type \
                 name fixes it)"
            );
            return None;
        }
        let (outbox, outgoing) = mpsc::channel(GOSSIP_QUEUE);
        let (to_replica, receive) = mpsc::channel::<Received>(GOSSIP_QUEUE);
        // Ends when the replica drops its sending half.
        self.runtime.spawn(publish(
            self.client.clone(),
            Arc::clone(&self.namespace),
            tracker.to_owned(),
            outgoing,
        ));
        self.runtime.spawn(read(
            self.client.clone(),
            subject_all(&self.namespace, tracker),
            mine,
            Arc::clone(&self.node),
            to_replica,
            rejected,
        ));
        Some(vec![GossipChannel {
            send: Box::new(NatsSend {
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

/// Publishes what the replica queued, while the client is connected (the
/// client's own buffering during a reconnect is not relied on: what it
/// would send late, the next heartbeat says anew).
async fn publish(
    client: Client,
    namespace: Arc<str>,
    tracker: String,
    mut outgoing: mpsc::Receiver<(Option<Arc<str>>, Vec<u8>)>,
) {
    let all = subject_all(&namespace, &tracker);
    let failures = RateLimit::default();
    while let Some((to, frame)) = outgoing.recv().await {
        if !matches!(
            client.connection_state(),
            async_nats::connection::State::Connected
        ) {
            tracing::debug!("presence message dropped: not connected to NATS");
            continue;
        }
        let subject = match &to {
            None => all.clone(),
            Some(node) => subject_to(&namespace, &tracker, node),
        };
        if subject.len() > MAX_SUBJECT {
            // A node name no node of ours has (`open` refuses them), but a
            // message from the network may name one: never sent, as it
            // would cost the whole connection.
            tracing::debug!(
                tracker,
                "presence message dropped: its addressee's name is too long"
            );
            continue;
        }
        if let Err(error) = client.publish(subject, Bytes::from(frame)).await {
            // A state too large for the server's max_payload, most likely:
            // worth seeing, but not at every heartbeat.
            if failures.allow() {
                tracing::warn!(%error, tracker, "presence message not published to NATS");
            } else {
                tracing::debug!(%error, tracker, "presence message not published to NATS");
            }
        }
    }
}

/// Reads the tracker's subjects for this node and hands the frames for
/// it to the replica, until the replica is gone.
async fn read(
    client: Client,
    all: String,
    mine: String,
    node: Arc<str>,
    to_replica: mpsc::Sender<Received>,
    rejected: CountRejected,
) {
    let (min, max) = RESUBSCRIBE;
    let mut wait = min;
    loop {
        let subscribed = tokio::select! {
            () = to_replica.closed() => return,
            subscribed = async {
                let all = client.subscribe(all.clone()).await?;
                let mine = client.subscribe(mine.clone()).await?;
                Ok::<_, async_nats::SubscribeError>(futures_util::stream::select(all, mine))
            } => subscribed,
        };
        match subscribed {
            Ok(mut messages) => {
                wait = min;
                loop {
                    let message = tokio::select! {
                        () = to_replica.closed() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else { break };
                    match frame::receive(&node, &message.payload) {
                        frame::Received::Mine { from, payload } => {
                            // Lossy: a full queue drops the message.
                            let _ = to_replica.try_send((Arc::from(from), payload.to_vec()));
                        }
                        frame::Received::NotMine => {}
                        frame::Received::Malformed => {
                            rejected();
                            tracing::debug!(subject = %message.subject, "presence frame skipped: malformed");
                        }
                    }
                }
                tracing::debug!(subject = %all, "presence subscription ended: subscribing again");
            }
            Err(error) => tracing::debug!(%error, subject = %all, "presence subscription failed"),
        }
        tokio::select! {
            () = to_replica.closed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_token_each_and_never_share_one() {
        assert_eq!(token("my_app::Viewer"), "my_5Fapp_3A_3AViewer");
        assert_eq!(token("web-1"), "web-1");
        assert_eq!(token("a.b c*>"), "a_2Eb_20c_2A_3E");
        assert_eq!(token(""), "_");
        assert_ne!(token("a_2E"), token("a."), "`_` is escaped too");
        assert_eq!(
            subject_to("ns.x", "t::M", "node.1"),
            "ns.x._presence.t_3A_3AM.node_2E1"
        );
        assert_eq!(subject_all("ns", "t"), "ns._presence.t");
    }
}
