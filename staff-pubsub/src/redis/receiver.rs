//! The receiving side of the live transport: the channel's subscription,
//! read by a supervised task that reconnects, resubscribes and tells
//! subscribers of the gap.

use std::time::Duration;

use ::redis::aio::{PubSubSink, PubSubStream};
use ::redis::{Client, RedisError};
use futures_util::StreamExt;

use super::config::RedisConfig;
use super::publisher::Publisher;
use super::Handler;
use crate::loom::sync::Arc;
use crate::net::{Backoff, RateLimit, Retrying, Secrets, StopReport, Stopped};
use crate::transport::{Connection, LocalNode};

pub(super) async fn subscribe(client: &Client, channel: &str) -> Result<Subscribed, RedisError> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    sink.subscribe(channel).await?;
    Ok(Subscribed { sink, stream })
}

/// A connection subscribed to the channel.
pub(super) struct Subscribed {
    pub(super) sink: PubSubSink,
    pub(super) stream: PubSubStream,
}

/// Runs the receive task, and runs it again whenever it ends while the
/// server lives (a panic that escaped it): after each restart it
/// subscribes again and every subscriber gets a gap, as after a reconnect.
pub(super) async fn supervise<M, H>(
    receiver: Arc<Receiver<M, H>>,
    first: Subscribed,
    stopped: StopReport<M>,
) where
    M: Send + Sync + 'static,
    H: Handler,
{
    let mut first = Some(first);
    let backoff = Backoff::new(receiver.config.reconnect_min, receiver.config.reconnect_max);
    let task = format!("the Redis receive task of channel {}", receiver.channel);
    crate::net::supervise(
        stopped,
        backoff,
        &task,
        "; subscribers will be told of a gap",
        || Arc::clone(&receiver).run(first.take()),
    )
    .await;
}

/// The receive side: one task per transport (restarted by [`supervise`]).
pub(super) struct Receiver<M, H> {
    pub(super) client: Client,
    pub(super) publisher: Arc<Publisher>,
    pub(super) channel: Arc<str>,
    pub(super) local: LocalNode<M>,
    pub(super) config: RedisConfig,
    pub(super) secrets: Arc<Secrets>,
    pub(super) reconnect_log: RateLimit,
    /// Decodes and dispatches what the channel carries.
    pub(super) inbound: H,
}

impl<M, H> Receiver<M, H>
where
    M: Send + Sync + 'static,
    H: Handler,
{
    /// Reads `first`, or subscribes afresh without one (a restart), and
    /// reconnects whenever the connection drops, until the server is gone.
    async fn run(self: Arc<Self>, first: Option<Subscribed>) {
        let mut subscribed = match first {
            Some(subscribed) => subscribed,
            None => match self.resubscribe().await {
                Some(subscribed) => subscribed,
                None => return,
            },
        };
        loop {
            match self.read(subscribed).await {
                Stopped::ServerGone => return,
                Stopped::ConnectionLost => {
                    // The publisher first, so that a broadcast made once the
                    // state reads disconnected connects afresh.
                    self.publisher.forget_current();
                    self.local.set_connection(Connection::Disconnected);
                    tracing::warn!(
                        channel = %self.channel,
                        node = self.local.node_name(),
                        "lost the Redis subscription: reconnecting"
                    );
                }
            }
            subscribed = match self.resubscribe().await {
                Some(subscribed) => subscribed,
                None => return,
            };
        }
    }

    /// Dispatches what the subscription delivers until it breaks.
    async fn read(&self, subscribed: Subscribed) -> Stopped {
        let Subscribed {
            mut sink,
            mut stream,
        } = subscribed;
        let period = self
            .config
            .health_check_interval
            .max(Duration::from_millis(1));
        let mut health = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        if !self.inbound.handle(message.get_payload_bytes()) {
                            return Stopped::ServerGone;
                        }
                    }
                    None => return Stopped::ConnectionLost,
                },
                _ = health.tick() => {
                    if !self.local.is_alive() {
                        return Stopped::ServerGone;
                    }
                    let ping = sink.ping::<::redis::Value>();
                    match tokio::time::timeout(self.config.engine.response_timeout, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => {
                            let cause = self.secrets.cause(&error);
                            tracing::warn!(%cause, channel = %self.channel, "Redis health check failed");
                            return Stopped::ConnectionLost;
                        }
                        Err(_) => {
                            tracing::warn!(channel = %self.channel, "Redis health check got no answer");
                            return Stopped::ConnectionLost;
                        }
                    }
                }
            }
        }
    }

    /// Connects and subscribes again, waiting longer after each failure,
    /// then tells every subscriber of the gap. `None` once the server is
    /// gone. Failures are logged at WARN with their cause: the first one,
    /// then one every [`REPEAT_LOG_EVERY`] or when the cause changes.
    async fn resubscribe(&self) -> Option<Subscribed> {
        let mut retrying = Retrying::new(
            self.config.reconnect_min,
            self.config.reconnect_max,
            &self.reconnect_log,
        );
        loop {
            if !self.local.is_alive() {
                return None;
            }
            let attempts = retrying.attempt();
            let attempt = tokio::time::timeout(
                self.config.engine.connect_timeout,
                subscribe(&self.client, &self.channel),
            )
            .await;
            let cause = match attempt {
                Ok(Ok(subscribed)) => {
                    // Subscribed again: whatever was published while the
                    // connection was down is lost, and every subscriber
                    // must be told, after what it has queued already.
                    self.local.signal_gap();
                    self.local.set_connection(Connection::Connected);
                    tracing::info!(
                        channel = %self.channel,
                        node = self.local.node_name(),
                        attempts,
                        "resubscribed to Redis: subscribers told of the gap"
                    );
                    return Some(subscribed);
                }
                Ok(Err(error)) => self.secrets.cause(&error).to_string(),
                Err(_) => format!("no answer within {:?}", self.config.engine.connect_timeout),
            };
            if retrying.failed(&cause) {
                tracing::warn!(
                    url = %self.publisher.shown,
                    %cause,
                    attempts,
                    channel = %self.channel,
                    node = self.local.node_name(),
                    "cannot reconnect to Redis: retrying"
                );
            } else {
                tracing::debug!(%cause, attempts, channel = %self.channel, "Redis reconnection failed");
            }
            retrying.pause().await;
        }
    }
}
