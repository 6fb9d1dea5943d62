//! `--only interest`: what routing by interest costs NATS as a node holds
//! more topics of one kind, to weigh one subscription per topic (what the
//! transport does) against one wildcard per kind (`<ns>.staff.person.*`).
//!
//! For K person topics on one node: the time to subscribe them all and
//! confirm them with `sync`, and the growth of `nats-server`'s resident
//! memory and CPU time; then 10,000 person broadcasts from a second node
//! to random persons among 2K (half of them the node's), counting what the
//! node receives. A wildcard would cost one subscription, but deliver all
//! 10,000 to the node (as Redis does), half of them for nobody.

use std::time::{Duration, Instant};

use staff_pubsub::nats::NatsConfig;
use staff_pubsub::staff::{self, Message, Person, PersonEvent};
use staff_pubsub::{PubSub, Uuid};

use crate::servers::Server;

/// One measurement of K topics.
pub struct InterestRun {
    pub topics: usize,
    pub subscribe_ms: f64,
    pub server_rss_kib: i64,
    pub server_cpu_ms: f64,
    pub received: u64,
    pub broadcasts: u64,
}

const BROADCASTS: u64 = 10_000;

pub async fn run(nats: &Server, topics: usize, namespace: &str) -> InterestRun {
    let config = || NatsConfig::new(nats.url()).namespace(namespace);
    let node: PubSub<Message> = staff::builder()
        .node_name("holder")
        .nats(config())
        .await
        .expect("the holder connects");
    let sender: PubSub<Message> = staff::builder()
        .node_name("sender")
        .nats(config())
        .await
        .expect("the sender connects");
    let id = |n: u64| Uuid::from_u64_pair(0x5eed, n);
    let rss_before = nats.rss_kib();
    let cpu_before = nats.cpu();
    let started = Instant::now();
    let subscriptions: Vec<_> = (0..topics as u64)
        .map(|n| {
            node.subscribe(staff::topic_person(id(n * 2)))
                .expect("subscribe")
        })
        .collect();
    node.sync().await.expect("the subscriptions are confirmed");
    let subscribe_ms = started.elapsed().as_secs_f64() * 1e3;
    let server_rss_kib = nats.rss_kib() - rss_before;
    let server_cpu_ms = (nats.cpu() - cpu_before).as_secs_f64() * 1e3;
    let received_before = node.stats().received;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..BROADCASTS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let person = Person {
            uuid: id(seed % (topics as u64 * 2)),
        };
        staff::broadcast_person_on(&sender, PersonEvent::Updated, person)
            .await
            .expect("broadcast");
    }
    // Whatever is still in flight: a fence through a topic the node holds.
    let fence = id(0);
    let mut fence_sub = node
        .subscribe(staff::topic_person(fence))
        .expect("subscribe");
    staff::broadcast_person_on(&sender, PersonEvent::Deleted, Person { uuid: fence })
        .await
        .expect("fence");
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), fence_sub.recv())
            .await
            .expect("the fence arrives")
            .expect("a message");
        if message.event_name() == "person_deleted" {
            break;
        }
    }
    let received = node.stats().received - received_before - 1;
    drop(subscriptions);
    InterestRun {
        topics,
        subscribe_ms,
        server_rss_kib,
        server_cpu_ms,
        received,
        broadcasts: BROADCASTS,
    }
}
