//! The generic runtime: delivery rule, exclusion, lag, leaks, concurrency.

use std::collections::HashMap;

use futures_util::StreamExt;
use staff_pubsub::{Error, PubSub, RecvError, Subscription, Topic, TryRecvError};
use staff_pubsub_tests::{drain, room, within};

const ROOMS: Topic = Topic::new("chat:rooms");
const USERS: Topic = Topic::new("chat:users");

#[tokio::test]
async fn one_copy_per_reached_topic_per_subscription() {
    let pubsub = PubSub::<u32>::new();
    let mut rooms = pubsub.subscribe(ROOMS).unwrap();
    let mut both = pubsub.subscribe_many([ROOMS, room(1)]).unwrap();
    let mut other_room = pubsub.subscribe(room(2)).unwrap();

    pubsub.broadcast([ROOMS, room(1)], 7).await.unwrap();

    assert_eq!(drain(&mut rooms).0.len(), 1);
    assert_eq!(drain(&mut both).0.len(), 2);
    assert_eq!(drain(&mut other_room).0.len(), 0);
    assert_eq!(pubsub.stats().delivered, 3);
}

#[tokio::test]
async fn broadcast_to_a_topic_nobody_has_is_ok_and_costs_no_topic() {
    let pubsub = PubSub::<u32>::new();
    pubsub.broadcast([room(9)], 1).await.unwrap();
    let stats = pubsub.stats();
    assert_eq!((stats.published, stats.delivered, stats.topics), (1, 0, 0));
}

#[tokio::test]
async fn broadcast_from_skips_only_the_sender() {
    let pubsub = PubSub::<&str>::new();
    let mut sender = pubsub.subscribe(ROOMS).unwrap();
    let mut peer = pubsub.subscribe(ROOMS).unwrap();

    pubsub.broadcast_from(&sender, [ROOMS], "hi").await.unwrap();
    assert_eq!(pubsub.local_broadcast_from(&sender, &[ROOMS], "again"), 1);

    assert_eq!(sender.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(*within("peer's message", peer.recv()).await.unwrap(), "hi");
    assert_eq!(*peer.try_recv().unwrap(), "again");
}

#[tokio::test]
async fn local_and_direct_broadcasts_on_the_in_process_default() {
    let pubsub = PubSub::<u32>::builder().node_name("a").build();
    let mut subscription = pubsub.subscribe(USERS).unwrap();
    assert_eq!(pubsub.node_name(), "a");

    assert_eq!(pubsub.local_broadcast(&[USERS, ROOMS], 1), 1);
    pubsub.direct_broadcast("a", &[USERS], 2).await.unwrap();
    let error = pubsub.direct_broadcast("b", &[USERS], 3).await.unwrap_err();

    assert!(
        matches!(error, Error::UnknownNode { ref node } if node == "b"),
        "{error}"
    );
    let (messages, _) = drain(&mut subscription);
    assert_eq!(messages.iter().map(|m| **m).collect::<Vec<_>>(), [1, 2]);
}

#[tokio::test]
async fn dropping_or_unsubscribing_leaves_the_topic() {
    let pubsub = PubSub::<u32>::new();
    let first = pubsub.subscribe(room(1)).unwrap();
    let second = pubsub.subscribe_many([room(1), ROOMS]).unwrap();
    assert_eq!(
        (pubsub.subscriber_count(&room(1)), pubsub.stats().topics),
        (2, 2)
    );

    let mut first = first;
    pubsub.local_broadcast(&[room(1)], 1);
    first.unsubscribe();
    assert_eq!(pubsub.subscriber_count(&room(1)), 1);
    pubsub.local_broadcast(&[room(1)], 2);
    assert_eq!(first.try_recv().map(|m| *m), Ok(1), "queued before leaving");
    assert_eq!(first.try_recv(), Err(TryRecvError::Closed));
    drop(second);

    let stats = pubsub.stats();
    assert_eq!((stats.subscriptions, stats.topics), (0, 0));
    assert_eq!(pubsub.local_broadcast(&[room(1), ROOMS], 1), 0);
}

#[tokio::test]
async fn a_subscription_is_a_stream_that_ends_with_the_server() {
    let pubsub = PubSub::<u32>::new();
    let subscription = pubsub.subscribe(ROOMS).unwrap();
    for n in 0..3 {
        pubsub.broadcast([ROOMS], n).await.unwrap();
    }
    drop(pubsub);

    let received: Vec<u32> = within(
        "the stream to end",
        subscription.map(|item| *item.unwrap()).collect(),
    )
    .await;
    assert_eq!(received, [0, 1, 2]);
}

#[tokio::test]
async fn recv_wakes_when_a_message_arrives_later() {
    let pubsub = PubSub::<u32>::new();
    let mut subscription = pubsub.subscribe(ROOMS).unwrap();
    let publisher = pubsub.clone();
    let waiter = tokio::spawn(async move { subscription.recv().await });
    tokio::task::yield_now().await;
    publisher.broadcast([ROOMS], 5).await.unwrap();
    let received = within("the waiting task", waiter).await.unwrap();
    assert_eq!(received.map(|m| *m), Ok(5));
}

#[tokio::test]
async fn a_slow_subscriber_is_told_exactly_how_many_it_missed() {
    const CAPACITY: usize = 8;
    const SENT: u32 = 100;
    let pubsub = PubSub::<u32>::builder().capacity(CAPACITY).build();
    let mut slow = pubsub.subscribe(ROOMS).unwrap();
    let mut fast = pubsub.subscribe(ROOMS).unwrap();
    let mut fast_received = 0;

    for n in 0..SENT {
        pubsub.broadcast([ROOMS], n).await.unwrap();
        fast_received += drain(&mut fast).0.len();
    }

    let first = within("the lag report", slow.recv()).await;
    let missed = SENT - CAPACITY as u32;
    assert_eq!(first, Err(RecvError::Lagged(u64::from(missed))));
    let (messages, more_missed) = drain(&mut slow);
    let newest: Vec<u32> = messages.iter().map(|m| **m).collect();
    assert_eq!(newest, (missed..SENT).collect::<Vec<_>>());
    assert_eq!(more_missed, 0);
    assert_eq!(newest.len() as u64 + u64::from(missed), u64::from(SENT));
    assert_eq!(
        fast_received, SENT as usize,
        "the slow subscriber slowed the fast one"
    );
    assert_eq!(pubsub.stats().lagged, u64::from(missed));
}

#[tokio::test]
async fn per_entity_topics_do_not_leak() {
    const CYCLES: u128 = 100_000;
    let pubsub = PubSub::<u32>::new();
    for n in 0..CYCLES {
        let subscription = pubsub.subscribe(room(n)).unwrap();
        assert_eq!(pubsub.subscriber_count(&room(n)), 1);
        drop(subscription);
    }
    let stats = pubsub.stats();
    assert_eq!((stats.subscriptions, stats.topics), (0, 0));
}

#[tokio::test]
async fn the_subscription_limit_is_a_typed_error_and_frees_up() {
    let pubsub = PubSub::<u32>::builder().max_subscriptions(1).build();
    let first = pubsub.subscribe(ROOMS).unwrap();
    let error = pubsub.subscribe(ROOMS).unwrap_err();
    assert!(
        matches!(error, Error::SubscriptionLimit { limit: 1 }),
        "{error}"
    );
    drop(first);
    assert!(pubsub.subscribe(ROOMS).is_ok());
}

#[tokio::test]
async fn a_gap_reaches_every_subscriber_as_a_distinct_item() {
    let pubsub = PubSub::<u32>::new();
    let mut first = pubsub.subscribe(ROOMS).unwrap();
    let mut second = pubsub.subscribe(room(1)).unwrap();
    pubsub.local_node().signal_gap();
    pubsub.broadcast([ROOMS, room(1)], 1).await.unwrap();
    for subscription in [&mut first, &mut second] {
        assert_eq!(
            within("the gap", subscription.recv()).await,
            Err(RecvError::Gap(staff_pubsub::Gap::Disconnected))
        );
        assert_eq!(subscription.try_recv().map(|m| *m), Ok(1));
    }
    assert_eq!(pubsub.stats().gaps, 1);
}

#[tokio::test]
async fn wire_dispatch_finds_topics_by_their_string_form() {
    let pubsub = PubSub::<u32>::new();
    let mut subscription = pubsub.subscribe_many([ROOMS, room(3)]).unwrap();
    let local = pubsub.local_node();
    let room_3 = room(3).to_string();
    let delivered = local.dispatch_wire(["chat:rooms", room_3.as_str(), "chat:nobody"], 4);
    assert_eq!(delivered, Some(2));
    assert_eq!(drain(&mut subscription).0.len(), 2);
    drop(pubsub);
    assert_eq!(local.dispatch_wire(["chat:rooms"], 5), None);
}

/// Several publishers on a multi-thread runtime, subscribers that keep up:
/// every subscriber gets every message once per topic, in each publisher's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_deliver_everything_in_per_publisher_order() {
    const PUBLISHERS: u32 = 4;
    const MESSAGES: u32 = 2_000;
    const SUBSCRIBERS: usize = 8;
    let pubsub = PubSub::<(u32, u32)>::builder().capacity(1 << 16).build();
    let receivers: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            let subscription = pubsub.subscribe_many([ROOMS, room(1)]).unwrap();
            tokio::spawn(receive_all(subscription, PUBLISHERS * MESSAGES * 2))
        })
        .collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let pubsub = pubsub.clone();
            tokio::spawn(async move {
                for seq in 0..MESSAGES {
                    pubsub
                        .broadcast([ROOMS, room(1)], (publisher, seq))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for publisher in publishers {
        within("a publisher", publisher).await.unwrap();
    }
    for receiver in receivers {
        let seen = within("a subscriber", receiver).await.unwrap();
        for publisher in 0..PUBLISHERS {
            let expected: Vec<u32> = (0..MESSAGES).flat_map(|seq| [seq, seq]).collect();
            assert_eq!(seen[&publisher], expected, "publisher {publisher}");
        }
    }
    assert_eq!(pubsub.stats().lagged, 0);
}

async fn receive_all(
    mut subscription: Subscription<(u32, u32)>,
    count: u32,
) -> HashMap<u32, Vec<u32>> {
    let mut seen: HashMap<u32, Vec<u32>> = HashMap::new();
    for _ in 0..count {
        let message = subscription.recv().await.unwrap();
        seen.entry(message.0).or_default().push(message.1);
    }
    seen
}

/// Subscriptions come and go while publishers run: no panic, and every
/// queued copy is accounted for as received or reported missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_racing_with_broadcasts_loses_no_accounting() {
    const MESSAGES: u32 = 5_000;
    const CHURNERS: u32 = 4;
    let pubsub = PubSub::<u32>::builder().capacity(16).build();
    let publishers: Vec<_> = (0..2u128)
        .map(|n| {
            let pubsub = pubsub.clone();
            tokio::spawn(async move {
                for seq in 0..MESSAGES {
                    pubsub.broadcast([ROOMS, room(n)], seq).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let churners: Vec<_> = (0..CHURNERS)
        .map(|c| {
            let pubsub = pubsub.clone();
            tokio::spawn(async move {
                let mut accounted = 0u64;
                for i in 0..500u128 {
                    let mut subscription = pubsub
                        .subscribe_many([ROOMS, room(i % 2), room(100 + i)])
                        .unwrap();
                    if (i + u128::from(c)) % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                    subscription.unsubscribe();
                    let (messages, missed) = drain(&mut subscription);
                    accounted += messages.len() as u64 + missed;
                }
                accounted
            })
        })
        .collect();
    for publisher in publishers {
        within("a publisher", publisher).await.unwrap();
    }
    let mut accounted = 0;
    for churner in churners {
        accounted += within("a churner", churner).await.unwrap();
    }
    let stats = pubsub.stats();
    assert_eq!(accounted, stats.delivered);
    assert_eq!((stats.subscriptions, stats.topics), (0, 0));
}

#[tokio::test]
async fn a_subscription_needs_a_topic_and_counts_each_topic_once() {
    let pubsub = PubSub::<u32>::new();
    let error = pubsub.subscribe_many([]).unwrap_err();
    assert!(matches!(error, Error::NoTopics), "{error}");
    assert_eq!(pubsub.stats().subscriptions, 0);

    let mut twice = pubsub.subscribe_many([ROOMS, ROOMS]).unwrap();
    assert_eq!(twice.topics(), [ROOMS]);
    pubsub.broadcast([ROOMS], 1).await.unwrap();
    assert_eq!(drain(&mut twice).0.len(), 1);
}

#[tokio::test]
async fn an_absurd_shard_count_is_clamped_not_a_panic() {
    let pubsub = PubSub::<u32>::builder().shards(usize::MAX).build();
    let mut subscription = pubsub.subscribe(ROOMS).unwrap();
    assert_eq!(pubsub.local_broadcast(&[ROOMS], 1), 1);
    assert_eq!(subscription.try_recv().map(|m| *m), Ok(1));
}
