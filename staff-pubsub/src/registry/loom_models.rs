//! Model 1, the presence counters (`registry.rs`): a broadcast reads its
//! topic's counter with one relaxed load before any lock, yet never skips
//! a subscriber whose `insert` happened before the broadcast began, even
//! while another shard counts a topic of the same slot in and out; and the
//! counters return to zero when the topics are gone.

use super::*;
use crate::loom::model;
use crate::loom::sync::atomic::AtomicBool;

/// Two topics of one presence slot in different shards (of two): their
/// counts meet on one atomic under two different locks.
fn slot_mates(registry: &Registry<u32>) -> (Topic, Topic) {
    let topics: Vec<_> = (0..64_u128)
        .map(|n| Topic::keyed("loom:presence", uuid::Uuid::from_u128(n)))
        .collect();
    let place = |topic: &Topic| {
        let hash = registry.hash(topic.as_key());
        (presence_slot(hash), (hash >> 32) & 1)
    };
    for (i, a) in topics.iter().enumerate() {
        for b in &topics[i + 1..] {
            let (pa, pb) = (place(a), place(b));
            if pa.0 == pb.0 && pa.1 != pb.1 {
                return (*a, *b);
            }
        }
    }
    unreachable!("64 topics over 4 slots and 2 shards: two share a slot across shards")
}

fn delivered(registry: &Registry<u32>, topic: Topic) -> u64 {
    let mut tally = Tally::default();
    registry.deliver(topic.as_key(), || Arc::new(0), None, None, &mut tally);
    tally.delivered
}

#[test]
fn loom_presence_no_broadcast_misses_a_subscriber_that_came_before_it() {
    model(|| {
        let registry = Arc::new(Registry::<u32>::new(2, 4));
        let (watched, churned) = slot_mates(&registry);
        let subscribed = Arc::new(AtomicBool::new(false));
        let subscriber = Arc::new(Inbox::new());

        // Subscribes, then says so.
        let subscribing = {
            let (registry, subscribed, inbox) = (
                Arc::clone(&registry),
                Arc::clone(&subscribed),
                Arc::clone(&subscriber),
            );
            loom::thread::spawn(move || {
                registry.insert(watched, inbox, false);
                subscribed.store(true, Ordering::Release);
            })
        };
        // Another topic of the same slot, in the other shard, comes and goes.
        let churning = {
            let registry = Arc::clone(&registry);
            loom::thread::spawn(move || {
                let inbox = Arc::new(Inbox::new());
                registry.insert(churned, Arc::clone(&inbox), false);
                registry.remove(&churned, &inbox);
            })
        };
        // A broadcast that begins after the subscription completed reaches it.
        if subscribed.load(Ordering::Acquire) {
            assert_eq!(
                delivered(&registry, watched),
                1,
                "a broadcast missed a subscriber"
            );
        }
        subscribing.join().unwrap();
        churning.join().unwrap();
        assert_eq!(
            delivered(&registry, watched),
            1,
            "a broadcast missed a subscriber"
        );

        registry.remove(&watched, &subscriber);
        assert_eq!(delivered(&registry, churned), 0);
        assert!(
            registry
                .presence
                .iter()
                .all(|count| count.load(Ordering::Relaxed) == 0),
            "a presence counter did not return to zero"
        );
    });
}
