//! `idle_subscription_bytes`: net heap bytes per idle subscription, each on
//! its own person topic, counted by the counting global allocator.

use staff_pubsub::staff::{self, Message};
use staff_pubsub::PubSub;
use staff_pubsub_bench::support::{id, PEOPLE};

/// Net heap bytes per idle subscription of `count`, ours.
pub fn bytes_ours(count: usize) -> f64 {
    let pubsub = PubSub::<Message>::new();
    let (bytes, subscriptions) = staff_pubsub_count_alloc::net_bytes(|| {
        let mut subscriptions = Vec::with_capacity(count);
        for i in 0..count as u64 {
            subscriptions.push(
                pubsub
                    .subscribe(staff::topic_person(id(PEOPLE, i)))
                    .unwrap(),
            );
        }
        subscriptions
    });
    assert_eq!(pubsub.stats().topics, count);
    drop(subscriptions);
    bytes as f64 / count as f64
}
