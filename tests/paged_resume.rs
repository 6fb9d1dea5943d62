//! A resume pages its replay against the real durable engines: a resume
//! from the first of 100 entries on a node of capacity 8 holds at most 8
//! replayed messages until it is read, then delivers the whole range in order, each once, then live messages. Needs the engines'
//! `DurableLog::replay_limit`.

use std::time::Duration;

use staff_pubsub::nats::NatsConfig;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::{Position, PubSub, Retention, Topic};
use staff_pubsub_tests::nats_server::NatsServer;
use staff_pubsub_tests::redis_server::RedisServer;
use staff_pubsub_tests::within;

const ROOMS: Topic = Topic::new("chat:rooms");
const CAPACITY: usize = 8;
const ENTRIES: u64 = 100;

async fn paged(node: PubSub<u64>) {
    for n in 1..=ENTRIES {
        node.broadcast([ROOMS], n).await.unwrap();
    }
    within("the node to read the log", async {
        while node.log_position().map(Position::seq) != Some(ENTRIES) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let head = node.log_position().unwrap();
    let first = Position::new(head.log(), 1).unwrap();
    let mut resumed = node.subscribe_since([ROOMS], first).await.unwrap();
    // `len` counts the replayed messages fetched so far, and the queued
    // copies the replay covers: at most one, of the entry the node was
    // dispatching when it subscribed (its position is recorded first).
    assert!(
        resumed.len() <= CAPACITY + 1,
        "a resume that is not read holds {} replayed messages (capacity {CAPACITY})",
        resumed.len()
    );
    for n in 2..=ENTRIES {
        let (message, position) = within("a replayed message", resumed.recv_with_position())
            .await
            .unwrap();
        assert_eq!((*message, position), (n, Position::new(head.log(), n)));
        assert!(resumed.len() <= CAPACITY + 1, "{} held", resumed.len());
    }
    node.broadcast([ROOMS], ENTRIES + 1).await.unwrap();
    let (message, _) = within("the live message", resumed.recv_with_position())
        .await
        .unwrap();
    assert_eq!(*message, ENTRIES + 1);
    assert!(resumed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_durable_pages_a_resume() {
    let server = RedisServer::start().await;
    let config = RedisConfig::new(server.url())
        .namespace("paged")
        .connect_timeout(Duration::from_secs(2))
        .durable(Retention::entries(10_000));
    let node = PubSub::builder()
        .capacity(CAPACITY)
        .redis(config)
        .await
        .unwrap();
    paged(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_durable_pages_a_resume() {
    let server = NatsServer::start_jetstream().await;
    let config = NatsConfig::new(server.url())
        .namespace("paged")
        .connect_timeout(Duration::from_secs(2))
        .durable(Retention::entries(10_000));
    let node = PubSub::builder()
        .capacity(CAPACITY)
        .nats(config)
        .await
        .unwrap();
    paged(node).await;
}
