//! Wide topics: once a topic has `WIDE_TOPIC_FROM` (32) subscribers, a new
//! subscription on that topic alone reads the topic's shared ring (one slot
//! per message) instead of a queue of its own. What a subscriber sees, and
//! what the server counts, must not change: the delivery rule, lag reports
//! and `stats().lagged`, gaps in queue order, closing, topic changes, and
//! `broadcast_from` leaving the sender out.

use std::sync::Arc;
use std::time::Duration;

use staff_pubsub::{Gap, PubSub, RecvError, Subscription, Topic, TryRecvError, WIDE_TOPIC_FROM};
use staff_pubsub_tests::{drain, within};

const ROOMS: Topic = Topic::new("chat:rooms");
const USERS: Topic = Topic::new("chat:users");
/// Well past the point where new subscriptions read the ring.
const SUBSCRIBERS: usize = 200;

fn values(messages: &[Arc<u64>]) -> Vec<u64> {
    messages.iter().map(|message| **message).collect()
}

fn subscribers(pubsub: &PubSub<u64>, n: usize) -> Vec<Subscription<u64>> {
    (0..n).map(|_| pubsub.subscribe(ROOMS).unwrap()).collect()
}

#[tokio::test]
async fn every_subscriber_of_a_wide_topic_gets_every_message_once_in_order() {
    let pubsub = PubSub::<u64>::builder().capacity(1_000).build();
    let mut subscriptions = subscribers(&pubsub, SUBSCRIBERS);
    for n in 0..500 {
        assert_eq!(pubsub.local_broadcast(&[ROOMS], n), SUBSCRIBERS as u64);
    }
    for subscription in &mut subscriptions {
        assert_eq!(subscription.len(), 500);
        let (messages, missed) = drain(subscription);
        assert_eq!((values(&messages), missed), ((0..500).collect(), 0));
    }
    let stats = pubsub.stats();
    assert_eq!(
        (
            stats.delivered,
            stats.lagged,
            stats.subscriptions,
            stats.topics
        ),
        (500 * SUBSCRIBERS as u64, 0, SUBSCRIBERS, 1)
    );
    assert_eq!(pubsub.subscriber_count(&ROOMS), SUBSCRIBERS);
}

/// Receivers parked on other threads are woken for every message: none
/// waits forever, none misses one, with the publisher far ahead or in
/// step (it yields now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_receivers_are_woken_for_every_message() {
    const MESSAGES: u64 = 2_000;
    let pubsub = PubSub::<u64>::builder().capacity(4_096).build();
    let mut tasks = Vec::new();
    for subscription in subscribers(&pubsub, SUBSCRIBERS) {
        tasks.push(tokio::spawn(async move {
            let mut subscription = subscription;
            let mut next = 0;
            while next < MESSAGES {
                let message = subscription.recv().await.expect("no lag, no gap");
                assert_eq!(*message, next);
                next += 1;
            }
        }));
    }
    for n in 0..MESSAGES {
        pubsub.broadcast([ROOMS], n).await.unwrap();
        if n % 7 == 0 {
            tokio::task::yield_now().await;
        }
        if n % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for task in tasks {
        within("every receiver to get every message", task)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_counts_as_before() {
    let pubsub = PubSub::<u64>::builder().capacity(8).build();
    let mut subscriptions = subscribers(&pubsub, SUBSCRIBERS);
    for n in 0..20 {
        pubsub.local_broadcast(&[ROOMS], n);
    }
    // Counted when dropped, before anyone receives.
    assert_eq!(pubsub.stats().lagged, 12 * SUBSCRIBERS as u64);
    for subscription in &mut subscriptions {
        assert_eq!(subscription.len(), 8);
        assert_eq!(subscription.try_recv(), Err(TryRecvError::Lagged(12)));
        let (messages, missed) = drain(subscription);
        assert_eq!((values(&messages), missed), ((12..20).collect(), 0));
    }
    // One that read half, then fell behind again.
    let reader = &mut subscriptions[SUBSCRIBERS - 1];
    pubsub.local_broadcast(&[ROOMS], 20);
    assert_eq!(*reader.try_recv().unwrap(), 20);
    for n in 21..40 {
        pubsub.local_broadcast(&[ROOMS], n);
    }
    assert_eq!(reader.try_recv(), Err(TryRecvError::Lagged(11)));
    assert_eq!(values(&drain(reader).0), (32..40).collect::<Vec<_>>());
    assert_eq!(
        pubsub.stats().lagged,
        12 * SUBSCRIBERS as u64 + 11 + 12 * (SUBSCRIBERS as u64 - 1)
    );
}

#[tokio::test]
async fn a_gap_comes_where_it_happened_and_two_gaps_are_reported_once() {
    let pubsub = PubSub::<u64>::builder().capacity(16).build();
    let mut subscriptions = subscribers(&pubsub, SUBSCRIBERS);
    pubsub.local_broadcast(&[ROOMS], 1);
    pubsub.local_node().signal_gap();
    pubsub.local_broadcast(&[ROOMS], 2);
    pubsub.local_node().signal_gap();
    pubsub.local_broadcast(&[ROOMS], 3);
    for subscription in &mut subscriptions {
        let taken: Vec<_> = std::iter::from_fn(|| match subscription.try_recv() {
            Err(TryRecvError::Empty) => None,
            other => Some(other.map(|message| *message)),
        })
        .collect();
        assert_eq!(
            taken,
            [
                Ok(1),
                Ok(2),
                Err(TryRecvError::Gap(Gap::Disconnected)),
                Ok(3)
            ]
        );
    }
    // Counted once per signal that subscribers had not read yet.
    assert_eq!(pubsub.stats().gaps, 1);
}

#[tokio::test]
async fn topic_changes_keep_what_is_queued() {
    let pubsub = PubSub::<u64>::builder().capacity(16).build();
    let mut crowd = subscribers(&pubsub, SUBSCRIBERS);
    let mut late = pubsub.subscribe(ROOMS).unwrap();
    let mut leaving = pubsub.subscribe(ROOMS).unwrap();
    pubsub.local_broadcast(&[ROOMS], 1);
    pubsub.local_broadcast(&[ROOMS], 2);

    // A second topic: queued messages stay, then one copy per topic.
    assert!(late.add_topic(USERS).unwrap());
    assert_eq!(late.len(), 2);
    // The crowd, `late` twice (one copy per topic) and `leaving`.
    assert_eq!(
        pubsub.local_broadcast(&[ROOMS, USERS], 3),
        SUBSCRIBERS as u64 + 3
    );
    assert_eq!(values(&drain(&mut late).0), [1, 2, 3, 3]);

    // Its only topic removed: what was queued is still received.
    assert!(leaving.remove_topic(&ROOMS));
    pubsub.local_broadcast(&[ROOMS], 4);
    assert_eq!(values(&drain(&mut leaving).0), [1, 2, 3]);
    assert!(leaving.add_topic(ROOMS).unwrap());
    pubsub.local_broadcast(&[ROOMS], 5);
    assert_eq!(values(&drain(&mut leaving).0), [5]);

    // Unsubscribed: what was queued, then closed.
    let mut gone = crowd.pop().unwrap();
    gone.unsubscribe();
    pubsub.local_broadcast(&[ROOMS], 6);
    assert_eq!(values(&drain(&mut gone).0), [1, 2, 3, 4, 5]);
    assert_eq!(gone.try_recv(), Err(TryRecvError::Closed));

    assert_eq!(pubsub.subscriber_count(&ROOMS), SUBSCRIBERS + 1);
    for subscription in &mut crowd {
        assert_eq!(values(&drain(subscription).0), [1, 2, 3, 4, 5, 6]);
    }
}

#[tokio::test]
async fn broadcast_from_leaves_out_the_sender_of_a_wide_topic() {
    let pubsub = PubSub::<u64>::builder().capacity(16).build();
    let mut crowd = subscribers(&pubsub, SUBSCRIBERS);
    let mut sender = pubsub.subscribe(ROOMS).unwrap();
    pubsub.local_broadcast(&[ROOMS], 1);
    pubsub.broadcast_from(&sender, [ROOMS], 2).await.unwrap();
    assert_eq!(
        pubsub.local_broadcast_from(&sender, &[ROOMS], 3),
        SUBSCRIBERS as u64
    );
    pubsub.local_broadcast(&[ROOMS], 4);
    assert_eq!(values(&drain(&mut sender).0), [1, 4]);
    for subscription in &mut crowd {
        assert_eq!(values(&drain(subscription).0), [1, 2, 3, 4]);
    }
}

#[tokio::test]
async fn the_servers_end_closes_every_subscriber_after_its_queue() {
    let pubsub = PubSub::<u64>::builder().capacity(16).build();
    let mut subscriptions = subscribers(&pubsub, SUBSCRIBERS);
    pubsub.local_broadcast(&[ROOMS], 1);
    drop(pubsub);
    for subscription in &mut subscriptions {
        assert_eq!(*subscription.recv().await.unwrap(), 1);
        assert_eq!(subscription.recv().await, Err(RecvError::Closed));
    }
}

/// A message lives on in the ring after it was read (until newer ones
/// replace it, or the ring goes with its last reader): dropped once the
/// topic's subscriptions are gone.
#[tokio::test]
async fn messages_are_released_when_the_subscribers_go() {
    let pubsub = PubSub::<Arc<()>>::builder().capacity(4).build();
    let mut subscriptions: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| pubsub.subscribe(ROOMS).unwrap())
        .collect();
    let tracked = Arc::new(());
    pubsub.local_broadcast(&[ROOMS], Arc::clone(&tracked));
    for subscription in &mut subscriptions {
        drop(subscription.try_recv().unwrap());
    }
    // Replaced by newer messages in a full ring.
    for _ in 0..4 {
        pubsub.local_broadcast(&[ROOMS], Arc::new(()));
    }
    assert_eq!(Arc::strong_count(&tracked), 1);
    let tracked = Arc::new(());
    pubsub.local_broadcast(&[ROOMS], Arc::clone(&tracked));
    drop(subscriptions);
    assert_eq!(Arc::strong_count(&tracked), 1);
    assert_eq!(pubsub.stats().topics, 0);
}

/// Received by everyone, a wide topic's message is still held by the ring
/// (`Arc::try_unwrap` of it fails) until the next broadcast to the topic,
/// or until no subscription reads the ring: here the readers add another
/// topic.
#[tokio::test]
async fn the_ring_holds_a_received_message_until_the_next_broadcast() {
    let pubsub = PubSub::<Arc<()>>::builder().capacity(64).build();
    let mut subscriptions: Vec<_> = (0..40).map(|_| pubsub.subscribe(ROOMS).unwrap()).collect();
    let tracked = Arc::new(());
    pubsub.local_broadcast(&[ROOMS], Arc::clone(&tracked));
    let (first, late) = subscriptions.split_at_mut(39);
    for subscription in first.iter_mut() {
        drop(subscription.try_recv().unwrap());
    }
    // One reader has not received it: a broadcast keeps it.
    pubsub.local_broadcast(&[ROOMS], Arc::new(()));
    assert_eq!(Arc::strong_count(&tracked), 2, "the ring's reference");
    let received = late[0].try_recv().unwrap();
    assert!(Arc::try_unwrap(received).is_err(), "the ring holds it");
    assert_eq!(Arc::strong_count(&tracked), 2);
    // Everyone has it now: the next broadcast lets it go.
    pubsub.local_broadcast(&[ROOMS], Arc::new(()));
    assert_eq!(Arc::strong_count(&tracked), 1);
}

/// Received by everyone, and no broadcast after: the ring holds the
/// message until no subscription reads it.
#[tokio::test]
async fn the_ring_holds_a_received_message_until_nobody_reads_it() {
    let pubsub = PubSub::<Arc<()>>::builder().capacity(4).build();
    let mut subscriptions: Vec<_> = (0..WIDE_TOPIC_FROM + 8)
        .map(|_| pubsub.subscribe(ROOMS).unwrap())
        .collect();
    let tracked = Arc::new(());
    pubsub.local_broadcast(&[ROOMS], Arc::clone(&tracked));
    for subscription in &mut subscriptions {
        drop(subscription.try_recv().unwrap());
    }
    assert_eq!(Arc::strong_count(&tracked), 2, "the ring's reference");
    // The first WIDE_TOPIC_FROM have queues of their own; the other 8 read
    // the ring.
    for subscription in &mut subscriptions[WIDE_TOPIC_FROM..] {
        assert_eq!(Arc::strong_count(&tracked), 2);
        subscription.add_topic(USERS).unwrap();
    }
    assert_eq!(Arc::strong_count(&tracked), 1);
    assert_eq!(
        pubsub.local_broadcast(&[ROOMS], Arc::new(())),
        WIDE_TOPIC_FROM as u64 + 8
    );
}

/// `WIDE_TOPIC_FROM` is where the ring begins: with that many
/// subscriptions on a topic, a message received by all of them is let go
/// at once (every one has a queue of its own); one more subscription on
/// the topic alone reads the ring, which keeps its reference until the
/// next broadcast.
#[tokio::test]
async fn wide_topic_from_is_the_number_of_subscriptions_before_the_ring() {
    let pubsub = PubSub::<Arc<()>>::builder().capacity(4).build();
    let mut subscriptions: Vec<_> = (0..WIDE_TOPIC_FROM)
        .map(|_| pubsub.subscribe(ROOMS).unwrap())
        .collect();
    let tracked = Arc::new(());
    pubsub.local_broadcast(&[ROOMS], Arc::clone(&tracked));
    for subscription in &mut subscriptions {
        drop(subscription.try_recv().unwrap());
    }
    assert_eq!(
        Arc::strong_count(&tracked),
        1,
        "no ring below WIDE_TOPIC_FROM"
    );

    subscriptions.push(pubsub.subscribe(ROOMS).unwrap());
    pubsub.local_broadcast(&[ROOMS], Arc::clone(&tracked));
    for subscription in &mut subscriptions {
        drop(subscription.try_recv().unwrap());
    }
    assert_eq!(Arc::strong_count(&tracked), 2, "the ring's reference");
}
