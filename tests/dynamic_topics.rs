//! A live subscription's topics change: `add_topic` and `remove_topic` into
//! one queue, with the delivery rule, exact accounting and pruning intact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use staff_pubsub::{Error, PubSub, RecvError, Subscription, Topic, TryRecvError};
use staff_pubsub_tests::{drain, room, within};

const ROOMS: Topic = Topic::new("chat:rooms");
const USERS: Topic = Topic::new("chat:users");

fn values<M: Copy>(messages: &[Arc<M>]) -> Vec<M> {
    messages.iter().map(|message| **message).collect()
}

#[test]
fn a_subscription_does_not_grow() {
    // The inbox, the server, and the topics (one inline; a resumed
    // subscription's replay shares their field).
    assert_eq!(std::mem::size_of::<Subscription<u32>>(), 56);
}

#[tokio::test]
async fn an_added_topic_is_received_in_the_same_queue() {
    let pubsub = PubSub::<u32>::new();
    let mut subscription = pubsub.subscribe(ROOMS).unwrap();
    pubsub.broadcast([ROOMS], 1).await.unwrap();

    assert!(subscription.add_topic(USERS).unwrap());
    assert_eq!(subscription.topics(), [ROOMS, USERS]);
    pubsub.broadcast([USERS], 2).await.unwrap();
    pubsub.broadcast([ROOMS], 3).await.unwrap();

    assert_eq!(values(&drain(&mut subscription).0), [1, 2, 3]);
    assert_eq!(pubsub.subscriber_count(&USERS), 1);
    let stats = pubsub.stats();
    assert_eq!(
        (stats.subscriptions, stats.topics, stats.delivered),
        (1, 2, 3)
    );
}

#[tokio::test]
async fn a_removed_topic_is_no_longer_received_and_what_was_queued_stays() {
    let pubsub = PubSub::<u32>::new();
    let mut subscription = pubsub.subscribe_many([ROOMS, USERS]).unwrap();
    pubsub.broadcast([USERS], 1).await.unwrap();
    pubsub.broadcast([ROOMS], 2).await.unwrap();

    assert!(subscription.remove_topic(&USERS));
    assert_eq!(subscription.topics(), [ROOMS]);
    assert_eq!(pubsub.local_broadcast(&[USERS], 3), 0);
    pubsub.broadcast([ROOMS, USERS], 4).await.unwrap();

    assert_eq!(values(&drain(&mut subscription).0), [1, 2, 4]);
    assert_eq!(pubsub.subscriber_count(&USERS), 0);
    assert_eq!(pubsub.stats().topics, 1);
}

#[tokio::test]
async fn adding_a_topic_twice_changes_nothing_and_keeps_one_copy() {
    let pubsub = PubSub::<u32>::new();
    let mut subscription = pubsub.subscribe(ROOMS).unwrap();
    assert!(!subscription.add_topic(ROOMS).unwrap());
    assert!(subscription.add_topic(room(1)).unwrap());
    assert!(!subscription.add_topic(room(1)).unwrap());
    assert_eq!(subscription.topics(), [ROOMS, room(1)]);
    assert_eq!(pubsub.subscriber_count(&ROOMS), 1);
    assert_eq!(pubsub.subscriber_count(&room(1)), 1);

    // One copy per reached topic: two topics reached, two copies.
    assert_eq!(pubsub.local_broadcast(&[ROOMS, room(1)], 7), 2);
    assert_eq!(pubsub.local_broadcast(&[room(1)], 8), 1);
    assert_eq!(values(&drain(&mut subscription).0), [7, 7, 8]);
}

#[tokio::test]
async fn removing_a_topic_the_subscription_lacks_changes_nothing() {
    let pubsub = PubSub::<u32>::new();
    let mut subscription = pubsub.subscribe(ROOMS).unwrap();
    let _other = pubsub.subscribe(USERS).unwrap();
    assert!(!subscription.remove_topic(&USERS));
    assert!(!subscription.remove_topic(&room(1)));
    assert_eq!(subscription.topics(), [ROOMS]);
    assert_eq!(pubsub.subscriber_count(&USERS), 1);
    assert_eq!(pubsub.local_broadcast(&[ROOMS], 1), 1);
}

#[tokio::test]
async fn a_topic_is_pruned_when_its_last_subscription_removes_it() {
    let pubsub = PubSub::<u32>::new();
    let mut first = pubsub.subscribe_many([ROOMS, room(1)]).unwrap();
    let mut second = pubsub.subscribe(room(1)).unwrap();
    assert_eq!(pubsub.stats().topics, 2);

    assert!(first.remove_topic(&room(1)));
    assert_eq!(pubsub.subscriber_count(&room(1)), 1);
    assert!(second.remove_topic(&room(1)));
    assert_eq!(pubsub.subscriber_count(&room(1)), 0);
    assert_eq!(pubsub.stats().topics, 1);

    // On no topic: still open, still counted, and it can add topics again.
    assert!(second.topics().is_empty());
    assert!(first.remove_topic(&ROOMS));
    let stats = pubsub.stats();
    assert_eq!((stats.subscriptions, stats.topics), (2, 0));
    assert_eq!(pubsub.local_broadcast(&[ROOMS, room(1)], 1), 0);
    assert!(second.add_topic(room(2)).unwrap());
    assert_eq!(pubsub.local_broadcast(&[room(2)], 2), 1);
    assert_eq!(values(&drain(&mut second).0), [2]);
    assert!(drain(&mut first).0.is_empty());
    drop((first, second));
    let stats = pubsub.stats();
    assert_eq!((stats.subscriptions, stats.topics), (0, 0));
}

#[tokio::test]
async fn a_closed_subscription_takes_no_topic() {
    let pubsub = PubSub::<u32>::new();
    let mut unsubscribed = pubsub.subscribe(ROOMS).unwrap();
    unsubscribed.unsubscribe();
    let error = unsubscribed.add_topic(USERS).unwrap_err();
    assert!(matches!(error, Error::SubscriptionClosed), "{error}");
    assert_eq!(
        error.to_string(),
        "the subscription is closed: it was unsubscribed or its server is gone"
    );
    assert!(unsubscribed.topics().is_empty());
    assert!(!unsubscribed.remove_topic(&ROOMS));
    assert_eq!(pubsub.stats().topics, 0);

    let mut orphan = pubsub.subscribe_many([ROOMS, USERS]).unwrap();
    drop(pubsub);
    assert!(matches!(
        orphan.add_topic(room(1)),
        Err(Error::SubscriptionClosed)
    ));
    // With the server gone, removing only forgets the topic.
    assert!(orphan.remove_topic(&USERS));
    assert_eq!(orphan.topics(), [ROOMS]);
    assert_eq!(orphan.try_recv(), Err(TryRecvError::Closed));
}

#[tokio::test]
async fn a_subscription_on_no_topic_still_learns_that_the_server_is_gone() {
    let pubsub = PubSub::<u32>::new();
    let mut subscription = pubsub.subscribe(ROOMS).unwrap();
    assert!(subscription.remove_topic(&ROOMS));
    let waiter = tokio::spawn(async move { subscription.recv().await });
    tokio::task::yield_now().await;
    drop(pubsub);
    let received = within("the end of the server", waiter).await.unwrap();
    assert_eq!(received, Err(RecvError::Closed));
}

#[tokio::test]
async fn a_topic_less_subscription_that_unsubscribes_is_not_counted() {
    let pubsub = PubSub::<u32>::new();
    let mut subscription = pubsub.subscribe(ROOMS).unwrap();
    assert!(subscription.remove_topic(&ROOMS));
    subscription.unsubscribe();
    assert!(subscription.add_topic(ROOMS).is_err());
    assert_eq!(pubsub.stats().subscriptions, 0);
}

#[tokio::test]
async fn broadcast_from_skips_the_sender_on_an_added_topic() {
    let pubsub = PubSub::<u32>::new();
    let mut sender = pubsub.subscribe(ROOMS).unwrap();
    let mut peer = pubsub.subscribe(USERS).unwrap();
    sender.add_topic(USERS).unwrap();
    pubsub.broadcast_from(&sender, [USERS], 1).await.unwrap();
    assert!(drain(&mut sender).0.is_empty());
    assert_eq!(values(&drain(&mut peer).0), [1]);
}

/// A message of the concurrency test: a publisher's numbered broadcast, or
/// a probe the subscriber sends itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Note {
    Data { publisher: u32, seq: u32 },
    Probe,
}

/// What the subscriber saw: per publisher, the sequence numbers received
/// in order; the probes; the misses reported.
#[derive(Default)]
struct Seen {
    sequences: HashMap<u32, Vec<u32>>,
    probes: u64,
    missed: u64,
    /// Topic changes after which publishers' messages had arrived: the
    /// changes did race with the publishers.
    interleaved: u32,
}

impl Seen {
    fn take_queued(&mut self, subscription: &mut Subscription<Note>) {
        let (messages, missed) = drain(subscription);
        self.missed += missed;
        for message in messages {
            match *message {
                Note::Data { publisher, seq } => {
                    self.sequences.entry(publisher).or_default().push(seq);
                }
                Note::Probe => self.probes += 1,
            }
        }
    }

    fn data(&self) -> u64 {
        self.sequences.values().map(|seq| seq.len() as u64).sum()
    }

    fn received(&self) -> u64 {
        self.probes + self.data()
    }
}

/// Publishers broadcast numbered messages, each to two of the topics, while
/// the one subscriber keeps adding and removing topics: every add is
/// effective at once (its probe arrives), every removal too (its probe
/// reaches nobody: the topic is pruned), every queued copy is received or
/// reported missed, each publisher's order holds, and no topic is left
/// behind.
async fn add_and_remove_while_publishers_run(capacity: usize) {
    const PUBLISHERS: u32 = 3;
    const MESSAGES: u32 = 3_000;
    const TOPICS: u128 = 6;
    const MIN_CHANGES: u32 = 2_000;
    const MIN_INTERLEAVED: u32 = 20;
    let pubsub = PubSub::<Note>::builder().capacity(capacity).build();
    let topics: Vec<Topic> = (0..TOPICS).map(room).collect();
    let mut subscription = pubsub.subscribe(topics[0]).unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(PUBLISHERS as usize + 1));
    // Set by the subscriber once it has made its changes, with publishers'
    // messages arriving between them: publishers run until then, so the
    // two overlap by construction.
    let churned = Arc::new(AtomicBool::new(false));

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let (pubsub, topics) = (pubsub.clone(), topics.clone());
            let (start, churned) = (Arc::clone(&start), Arc::clone(&churned));
            tokio::spawn(async move {
                start.wait().await;
                for seq in 0.. {
                    if seq >= MESSAGES && churned.load(Ordering::Acquire) {
                        break;
                    }
                    let at = (seq + publisher) as usize;
                    let reached = [topics[at % topics.len()], topics[(at + 1) % topics.len()]];
                    pubsub
                        .broadcast(reached, Note::Data { publisher, seq })
                        .await
                        .unwrap();
                    if seq.is_multiple_of(16) {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();

    let subscriber = {
        let (pubsub, topics) = (pubsub.clone(), topics.clone());
        tokio::spawn(async move {
            start.wait().await;
            let mut seen = Seen::default();
            let mut changes = 0u32;
            let mut state = 0x2545_f491_u32;
            while changes < MIN_CHANGES || seen.interleaved < MIN_INTERLEAVED {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let topic = topics[state as usize % topics.len()];
                if subscription.topics().contains(&topic) {
                    assert!(subscription.remove_topic(&topic));
                    assert!(!subscription.topics().contains(&topic));
                    // Only this subscription is on this server's topics.
                    assert_eq!(pubsub.local_broadcast(&[topic], Note::Probe), 0);
                } else {
                    assert!(subscription.add_topic(topic).unwrap());
                    assert!(!subscription.add_topic(topic).unwrap());
                    assert_eq!(pubsub.local_broadcast(&[topic], Note::Probe), 1);
                }
                changes += 1;
                let before = seen.data() + seen.missed;
                seen.take_queued(&mut subscription);
                if seen.data() + seen.missed > before {
                    seen.interleaved += 1;
                }
                if changes.is_multiple_of(8) {
                    tokio::task::yield_now().await;
                }
            }
            // Publishers still run: after the removals nothing more arrives.
            for topic in &topics {
                subscription.remove_topic(topic);
            }
            assert!(subscription.topics().is_empty());
            seen.take_queued(&mut subscription);
            churned.store(true, Ordering::Release);
            (subscription, seen)
        })
    };

    let (mut subscription, seen) = within("the subscriber", subscriber).await.unwrap();
    for publisher in publishers {
        within("a publisher", publisher).await.unwrap();
    }

    let stats = pubsub.stats();
    assert_eq!((stats.topics, stats.subscriptions), (0, 1), "{stats:?}");
    for topic in &topics {
        assert_eq!(pubsub.subscriber_count(topic), 0, "{topic}");
    }
    // Nothing more can arrive: the queue was drained after the last removal.
    assert_eq!(pubsub.local_broadcast(&topics, Note::Probe), 0);
    assert_eq!(subscription.try_recv(), Err(TryRecvError::Empty));
    // Every copy queued was received or reported missed, exactly.
    assert_eq!(seen.received() + seen.missed, stats.delivered, "{stats:?}");
    assert_eq!(seen.missed, stats.lagged);
    // One queue in each publisher's order: a message's copies come together,
    // before the next message's.
    for (publisher, sequence) in &seen.sequences {
        assert!(
            sequence.windows(2).all(|pair| pair[0] <= pair[1]),
            "publisher {publisher} out of order"
        );
        let mut copies: HashMap<u32, u32> = HashMap::new();
        for seq in sequence {
            *copies.entry(*seq).or_default() += 1;
        }
        assert!(copies.values().all(|&n| n <= 2), "more copies than topics");
    }
    // Still open, on no topic: it can take topics again.
    assert!(subscription.add_topic(topics[0]).unwrap());
    assert_eq!(pubsub.local_broadcast(&topics, Note::Probe), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_and_remove_racing_with_publishers_keeps_exact_accounting() {
    add_and_remove_while_publishers_run(1 << 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_and_remove_racing_with_publishers_and_lag_keeps_exact_accounting() {
    add_and_remove_while_publishers_run(8).await;
}
