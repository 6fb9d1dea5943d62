//! A durable node's log reader brought down by a message's own code (a
//! panic whose payload panics again when dropped, which nothing but the
//! task's end contains) is restarted from the entry after it: nothing
//! later is lost and no gap is told, on Redis and on NATS.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use staff_pubsub::nats::NatsConfig;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::{PubSub, Retention, Topic};
use staff_pubsub_tests::nats_server::NatsServer;
use staff_pubsub_tests::redis_server::RedisServer;
use staff_pubsub_tests::within;

const ROOMS: Topic = Topic::new("chat:rooms");

/// A message whose `Deserialize` panics with a payload that panics again
/// when dropped, for the text "bomb".
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Touchy(String);

struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the panic payload's destructor panics");
    }
}

impl<'de> Deserialize<'de> for Touchy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "bomb" {
            std::panic::panic_any(Bomb);
        }
        Ok(Self(text))
    }
}

async fn the_reader_restarts_after_the_bomb(a: PubSub<Touchy>, b: PubSub<Touchy>) {
    let mut subscription = b.subscribe(ROOMS).expect("subscribed");
    for text in ["before", "bomb", "after 1", "after 2"] {
        a.broadcast([ROOMS], Touchy(text.into()))
            .await
            .expect("sent");
    }
    for text in ["before", "after 1", "after 2"] {
        let got = within("a message", subscription.recv())
            .await
            .expect("a message");
        assert_eq!(got.0, text);
    }
    assert_eq!(b.stats().rejected, 1, "the bomb is counted");
    assert_eq!(b.stats().gaps, 0, "nothing else was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    let server = RedisServer::start().await;
    let config = || {
        RedisConfig::new(server.url())
            .namespace("restart")
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .durable(Retention::entries(1_000))
    };
    let a = PubSub::builder()
        .node_name("a")
        .redis(config())
        .await
        .expect("a");
    let b = PubSub::builder()
        .node_name("b")
        .redis(config())
        .await
        .expect("b");
    the_reader_restarts_after_the_bomb(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats() {
    let server = NatsServer::start_jetstream().await;
    let config = || {
        NatsConfig::new(server.url())
            .namespace("restart")
            .durable(Retention::entries(1_000))
    };
    let a = PubSub::builder()
        .node_name("a")
        .nats(config())
        .await
        .expect("a");
    let b = PubSub::builder()
        .node_name("b")
        .nats(config())
        .await
        .expect("b");
    the_reader_restarts_after_the_bomb(a, b).await;
}
