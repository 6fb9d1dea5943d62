//! The replica runtime: one task per server and tracker that drives the
//! tracker's [`Shard`](super::shard::Shard) over the engine's
//! [`Gossip`](crate::gossip::Gossip).
//!
//! It ticks the shard every broadcast period (jittered by up to a tenth
//! either way, so that nodes started together do not heartbeat in step),
//! hands it what other nodes sent, sends what it returns, and reports its
//! diffs to the tracker's receivers. Time is tokio's (`tokio::time`), so
//! tests run it on paused time. Local changes (track, update, untrack) go
//! out with the next heartbeat, as in Phoenix.
//!
//! It stops when the server is gone (checked on every tick and message),
//! or when every handle on the tracker is gone, without a word to the
//! others: they take this replica down after their down period, as they
//! would a node that crashed.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::shard::{Destination, Outgoing, ReplicaEvent};
use super::tracker::{Inner, PresenceId};
use super::wire::Codec;
use crate::gossip::{GossipChannel, GossipSend};
use crate::loom::sync::{Arc, Weak};

type Out<Meta> = Outgoing<Arc<str>, PresenceId, Arc<Meta>>;

/// What the runtime holds of the server: alive while it is.
pub(crate) type ServerToken = Weak<()>;

pub(crate) use crate::gossip::CountRejected;

/// The next tick's delay: `period` jittered by up to a tenth either way.
fn jittered(period_ms: u64) -> Duration {
    let spread = period_ms / 5;
    let offset = if spread == 0 {
        0
    } else {
        crate::server::random_u64() % (spread + 1)
    };
    Duration::from_millis(period_ms - period_ms / 10 + offset)
}

fn send<Meta: Serialize>(codec: &mut Codec, channel: &dyn GossipSend, outgoing: Vec<Out<Meta>>) {
    for out in outgoing {
        let bytes = match codec.encode(&out) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "presence message not encoded; not sent");
                continue;
            }
        };
        match out.to {
            Destination::All => channel.broadcast(bytes),
            Destination::Name(node) => channel.send_to(&node, bytes),
        }
    }
}

fn log_events(tracker: &str, events: &[ReplicaEvent<Arc<str>>]) {
    for event in events {
        tracing::debug!(tracker, ?event, "presence replica");
    }
}

/// Runs the replica of shard `shard` of `tracker` (the tracker's name on
/// the wire) until the server (`server`) or the tracker (`inner`) is gone. A received
/// message that does not decode, or that names a sender other than the
/// node it came from, is skipped and counted with `rejected`.
pub(crate) async fn run<Meta>(
    tracker: String,
    shard: usize,
    inner: Weak<Inner<Meta>>,
    server: ServerToken,
    channel: GossipChannel,
    rejected: CountRejected,
) where
    Meta: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let GossipChannel {
        send: out,
        mut receive,
        encoding,
    } = channel;
    let start = Instant::now();
    let now_ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let Some((period, origin)) = inner
        .upgrade()
        .map(|inner| (inner.config().broadcast_period_ms, inner.origin()))
    else {
        return;
    };
    let mut codec = Codec::new(encoding, origin);
    // The first tick at once: it heartbeats, so the others learn of this
    // replica without waiting a period.
    let mut next_tick = start;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_tick) => {
                next_tick = Instant::now() + jittered(period);
                if server.strong_count() == 0 {
                    break;
                }
                let Some(inner) = inner.upgrade() else { break };
                let (outgoing, events) = inner.step(shard, |replica| replica.tick(now_ms()));
                drop(inner);
                log_events(&tracker, &events);
                send(&mut codec, &*out, outgoing);
            }
            received = receive.recv() => {
                let Some((from, bytes)) = received else { break };
                if server.strong_count() == 0 {
                    break;
                }
                let message = match codec.decode::<Meta>(&from, &bytes) {
                    Ok((message, skipped)) => {
                        for _ in 0..skipped {
                            rejected();
                        }
                        message
                    }
                    Err(error) => {
                        rejected();
                        tracing::debug!(%from, %error, "presence message skipped");
                        continue;
                    }
                };
                let Some(inner) = inner.upgrade() else { break };
                let (outgoing, events) = inner.step(shard, |replica| replica.handle(&message, now_ms()));
                drop(inner);
                log_events(&tracker, &events);
                send(&mut codec, &*out, outgoing);
            }
        }
    }
    tracing::debug!(tracker, "presence replica stopped");
}
