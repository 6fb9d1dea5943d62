//! Durable delivery's core, against the in-memory log of
//! `staff_pubsub_tests::memory_log`: `subscribe_since` replays exactly
//! what was missed, in order, then continues live; gaps say what was lost;
//! a durable server delivers its own broadcasts from the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use staff_pubsub::{
    refute_receive, Error, Gap, Position, PubSub, RecvError, Retention, Subscription, Topic,
    TryRecvError,
};
use staff_pubsub_tests::memory_log::MemoryLog;
use staff_pubsub_tests::{room, within};

const ROOMS: Topic = Topic::new("chat:rooms");

async fn node(log: &MemoryLog<u64>, name: &str) -> PubSub<u64> {
    PubSub::builder()
        .node_name(name)
        .build_with(log.connect())
        .await
        .expect("attach to the memory log")
}

/// A broadcast's future says in `Debug` what it has left to do: nothing in
/// process (the subscribers have the message already), the append on a
/// durable server (nobody has it yet).
#[tokio::test]
async fn a_broadcast_says_what_it_has_left_to_do() {
    let in_process = PubSub::<u64>::new();
    let done = in_process.broadcast([ROOMS], 1);
    assert_eq!(format!("{done:?}"), "Broadcast(done)");
    done.await.unwrap();

    let log = MemoryLog::new(Retention::entries(10));
    let durable = node(&log, "a").await;
    let sending = durable.broadcast([ROOMS], 1);
    assert_eq!(format!("{sending:?}"), "Broadcast(sending to other nodes)");
    sending.await.unwrap();
}

/// The next item, which must come.
async fn next(subscription: &mut Subscription<u64>) -> Result<(u64, Option<Position>), RecvError> {
    within("a message", subscription.recv_with_position())
        .await
        .map(|(message, position)| (*message, position))
}

/// The next message, which must be `message` at log entry `seq`.
async fn expect(
    log: &MemoryLog<u64>,
    subscription: &mut Subscription<u64>,
    message: u64,
    seq: u64,
) {
    assert_eq!(
        next(subscription).await,
        Ok((message, log.position(seq))),
        "expected {message} at entry {seq}"
    );
}

/// Publishes `messages` on `pubsub` to `topics`.
async fn publish(pubsub: &PubSub<u64>, topics: &[Topic], messages: impl IntoIterator<Item = u64>) {
    for message in messages {
        pubsub.broadcast(topics, message).await.unwrap();
    }
}

/// Waits until `pubsub` has read the log up to entry `seq`.
async fn read_up_to(pubsub: &PubSub<u64>, log: &MemoryLog<u64>, seq: u64) {
    let wanted = log.position(seq);
    within("the node to read the log", async {
        while pubsub.log_position() != wanted {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_since_is_exactly_once_and_in_order_under_a_concurrent_publisher() {
    // Message n is log entry n: the only publisher writes 1, 2, 3, ... So
    // a resume after entry p must receive p+1, p+2, ... with nothing
    // skipped or repeated, whichever of the replay and the live queue each
    // comes from. The publisher runs flat out on the other worker while
    // each round subscribes, which is the race: the reader dispatching
    // entries between the subscription and its reading of the head.
    const ROUNDS: u64 = 300;
    const READ: u64 = 40;
    let log = MemoryLog::new(Retention::entries(1_000_000));
    let publisher = node(&log, "publisher").await;
    // Room for all the publisher gets ahead: a lag would be another test.
    let reader = PubSub::builder()
        .node_name("reader")
        .capacity(1 << 22)
        .build_with(log.connect())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn({
        let stop = Arc::clone(&stop);
        let publisher = publisher.clone();
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                publisher.broadcast([ROOMS], n).await.unwrap();
                if n % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            n
        }
    });
    within("the first entry", async {
        while reader.log_position().is_none() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let mut replayed_any = false;
    for round in 0..ROUNDS {
        let head = reader.log_position().expect("a non-empty log");
        // At the head (the race), or up to 30 entries behind it (a replay
        // overlapping the live queue).
        let behind = (round * 7) % 31;
        let after = Position::new(head.log(), head.seq().saturating_sub(behind).max(1)).unwrap();
        let mut resumed = reader.subscribe_since([ROOMS], after).await.unwrap();
        replayed_any |= !resumed.is_empty() || behind > 0;
        for expected in after.seq() + 1..=after.seq() + READ {
            let (message, position) = next(&mut resumed)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            assert_eq!(
                (message, position),
                (expected, Position::new(head.log(), expected)),
                "round {round}: resumed after {after}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let published = within("the publisher", publishing).await.unwrap();
    assert!(published >= ROUNDS, "{published}");
    assert!(replayed_any);
    assert!(log.replays() > 0, "no resume replayed anything");
}

#[tokio::test]
async fn a_resume_replays_the_missed_entries_of_its_topics_then_continues_live() {
    let log = MemoryLog::new(Retention::entries(1000));
    let a = node(&log, "a").await;
    let mut consumer = a.subscribe(ROOMS).unwrap();
    publish(&a, &[ROOMS], 1..=3).await;
    let mut last = None;
    for seq in 1..=3 {
        let (message, position) = next(&mut consumer).await.unwrap();
        assert_eq!(message, seq);
        last = position;
    }
    // The position survives as text (a browser's Last-Event-ID, a file).
    let stored = last.unwrap().to_string();
    assert_eq!(stored, format!("{:04x}-3", log.id()));
    drop(consumer);
    // Missed: entries 4..=6 to ROOMS, and one to another topic.
    publish(&a, &[ROOMS], 4..=5).await;
    publish(&a, &[room(1)], [100]).await;
    publish(&a, &[ROOMS], [6]).await;
    read_up_to(&a, &log, 7).await;
    let mut resumed = a
        .subscribe_since([ROOMS], stored.parse().unwrap())
        .await
        .unwrap();
    expect(&log, &mut resumed, 4, 4).await;
    expect(&log, &mut resumed, 5, 5).await;
    expect(&log, &mut resumed, 6, 7).await;
    publish(&a, &[ROOMS], [8]).await;
    expect(&log, &mut resumed, 8, 8).await;
    refute_receive!(resumed, _);
}

/// A resumed subscription's topics change, and it leaves, while its replay
/// is still unread: the replay still comes, whole and first, then what was
/// queued, then `Closed`.
#[tokio::test]
async fn a_resumed_subscription_changes_topics_and_leaves_before_its_replay_is_read() {
    let log = MemoryLog::new(Retention::entries(1000));
    let a = node(&log, "a").await;
    publish(&a, &[ROOMS], 1..=3).await;
    read_up_to(&a, &log, 3).await;
    let mut resumed = a
        .subscribe_since([ROOMS], log.position(1).unwrap())
        .await
        .unwrap();
    assert!(resumed.add_topic(room(1)).unwrap());
    assert!(!resumed.add_topic(room(1)).unwrap());
    assert!(resumed.remove_topic(&ROOMS));
    assert_eq!(resumed.topics(), [room(1)]);
    assert_eq!(resumed.len(), 2, "the replay: entries 2 and 3");
    publish(&a, &[ROOMS], [4]).await;
    publish(&a, &[room(1)], [5]).await;
    read_up_to(&a, &log, 5).await;
    resumed.unsubscribe();
    assert!(resumed.topics().is_empty());
    assert_eq!(a.subscriber_count(&room(1)), 0);
    expect(&log, &mut resumed, 2, 2).await;
    expect(&log, &mut resumed, 3, 3).await;
    expect(&log, &mut resumed, 5, 5).await;
    assert_eq!(next(&mut resumed).await, Err(RecvError::Closed));
}

#[tokio::test]
async fn a_replayed_entry_comes_once_per_reached_topic_as_live_ones_do() {
    let log = MemoryLog::new(Retention::entries(1000));
    let a = node(&log, "a").await;
    publish(&a, &[ROOMS], [1]).await;
    read_up_to(&a, &log, 1).await;
    let after = a.log_position().unwrap();
    // Entry 2 reaches both topics, entry 3 one of them.
    publish(&a, &[ROOMS, room(1)], [2]).await;
    publish(&a, &[room(1)], [3]).await;
    read_up_to(&a, &log, 3).await;
    let mut live = a.subscribe_many([ROOMS, room(1)]).unwrap();
    let mut resumed = a.subscribe_since([ROOMS, room(1)], after).await.unwrap();
    publish(&a, &[ROOMS, room(1)], [4]).await;
    for (message, seq) in [(2, 2), (2, 2), (3, 3), (4, 4), (4, 4)] {
        expect(&log, &mut resumed, message, seq).await;
    }
    for (message, seq) in [(4, 4), (4, 4)] {
        expect(&log, &mut live, message, seq).await;
    }
    refute_receive!(resumed, _);
}

#[tokio::test]
async fn a_position_behind_the_retained_log_gets_the_trimmed_gap_first_then_the_rest() {
    let log = MemoryLog::new(Retention::entries(10));
    let a = node(&log, "a").await;
    publish(&a, &[ROOMS], 1..=30).await;
    read_up_to(&a, &log, 30).await;
    assert_eq!(log.first_kept(), 21);
    let mut resumed = a
        .subscribe_since([ROOMS], log.position(5).unwrap())
        .await
        .unwrap();
    assert_eq!(
        next(&mut resumed).await,
        Err(RecvError::Gap(Gap::Trimmed {
            first: log.position(6).unwrap(),
            missing: 15
        }))
    );
    for seq in 21..=30 {
        expect(&log, &mut resumed, seq, seq).await;
    }
    publish(&a, &[ROOMS], [31]).await;
    expect(&log, &mut resumed, 31, 31).await;
}

#[tokio::test]
async fn more_entries_than_the_replay_limit_is_a_replay_limit_gap_and_nothing_replayed() {
    let log = MemoryLog::new(Retention::entries(1000).max_replay(5));
    let a = node(&log, "a").await;
    publish(&a, &[ROOMS], 1..=20).await;
    read_up_to(&a, &log, 20).await;
    // 5 entries behind: at the limit, replayed whole.
    let mut within_limit = a
        .subscribe_since([ROOMS], log.position(15).unwrap())
        .await
        .unwrap();
    for seq in 16..=20 {
        expect(&log, &mut within_limit, seq, seq).await;
    }
    // 6 behind: past it.
    let mut past_limit = a
        .subscribe_since([ROOMS], log.position(14).unwrap())
        .await
        .unwrap();
    assert_eq!(
        next(&mut past_limit).await,
        Err(RecvError::Gap(Gap::ReplayLimit { missing: 6 }))
    );
    publish(&a, &[ROOMS], [21]).await;
    expect(&log, &mut past_limit, 21, 21).await;
    expect(&log, &mut within_limit, 21, 21).await;
    refute_receive!(past_limit, _);
}

#[tokio::test]
async fn a_position_of_another_log_is_log_lost_and_nothing_is_replayed() {
    let log = MemoryLog::new(Retention::entries(1000));
    let a = node(&log, "a").await;
    let mut live = a.subscribe(ROOMS).unwrap();
    publish(&a, &[ROOMS], 1..=3).await;
    read_up_to(&a, &log, 3).await;
    let old = log.position(2).unwrap();
    log.lose();
    publish(&a, &[ROOMS], [10]).await;
    read_up_to(&a, &log, 1).await;
    assert_ne!(a.log_position().unwrap().log(), old.log());
    // The live subscriber was told, after what it had queued.
    for seq in 1..=3 {
        let at = Position::new(old.log(), seq);
        assert_eq!(next(&mut live).await, Ok((seq, at)));
    }
    assert_eq!(next(&mut live).await, Err(RecvError::Gap(Gap::LogLost)));
    expect(&log, &mut live, 10, 1).await;

    for after in [old, Position::new(old.log() ^ 0x8000, 1).unwrap()] {
        let mut resumed = a.subscribe_since([ROOMS], after).await.unwrap();
        assert_eq!(next(&mut resumed).await, Err(RecvError::Gap(Gap::LogLost)));
        publish(&a, &[ROOMS], [11]).await;
        let (message, position) = next(&mut resumed).await.unwrap();
        assert_eq!(message, 11);
        assert_eq!(position.unwrap().log(), log.id());
        refute_receive!(resumed, _);
    }
}

#[tokio::test]
async fn a_position_ahead_of_the_node_skips_the_live_copies_up_to_it() {
    // Node b's link is down while a publishes: a consumer that read a's
    // log to entry 5 resumes on b, which has read only up to 2.
    let log = MemoryLog::new(Retention::entries(1000));
    let a = node(&log, "a").await;
    let b = node(&log, "b").await;
    publish(&a, &[ROOMS], 1..=2).await;
    read_up_to(&b, &log, 2).await;
    log.cut("b");
    publish(&a, &[ROOMS], 3..=5).await;
    read_up_to(&a, &log, 5).await;
    assert_eq!(b.log_position(), log.position(2));
    let mut resumed = b
        .subscribe_since([ROOMS], log.position(5).unwrap())
        .await
        .unwrap();
    let replays = log.replays();
    publish(&a, &[ROOMS], [6]).await;
    log.restore("b");
    expect(&log, &mut resumed, 6, 6).await;
    refute_receive!(resumed, _);
    assert_eq!(log.replays(), replays, "nothing to replay");
}

#[tokio::test]
async fn a_resume_at_the_head_replays_nothing() {
    let log = MemoryLog::new(Retention::entries(1000));
    let a = node(&log, "a").await;
    publish(&a, &[ROOMS], 1..=3).await;
    read_up_to(&a, &log, 3).await;
    let mut resumed = a
        .subscribe_since([ROOMS], a.log_position().unwrap())
        .await
        .unwrap();
    assert_eq!(log.replays(), 0);
    publish(&a, &[ROOMS], [4]).await;
    expect(&log, &mut resumed, 4, 4).await;
}

#[tokio::test]
async fn broadcast_on_a_durable_server_reaches_local_subscribers_only_from_the_log() {
    let log = MemoryLog::new(Retention::entries(1000));
    let a = node(&log, "a").await;
    let mut subscription = a.subscribe(ROOMS).unwrap();
    log.cut("a");
    // The engine took it: Ok, but this node delivers it only once it
    // reads it from the log.
    a.broadcast([ROOMS], 1).await.unwrap();
    assert_eq!(log.last(), 1);
    assert_eq!(subscription.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(a.log_position(), None, "the node has read nothing");
    log.restore("a");
    expect(&log, &mut subscription, 1, 1).await;
    assert_eq!(a.log_position(), log.position(1));
    assert_eq!(a.stats().published, 1);
}

#[tokio::test]
async fn broadcast_from_and_local_broadcast_as_documented() {
    let log = MemoryLog::new(Retention::entries(1000));
    let a = node(&log, "a").await;
    let b = node(&log, "b").await;
    let sender = a.subscribe(ROOMS).unwrap();
    let mut neighbour = a.subscribe(ROOMS).unwrap();
    let mut remote = b.subscribe(ROOMS).unwrap();
    log.cut("a");

    // broadcast_from: this node's other subscribers at the call, without
    // a position; other nodes from the log, with one; never the sender.
    a.broadcast_from(&sender, [ROOMS], 1).await.unwrap();
    assert_eq!(next(&mut neighbour).await, Ok((1, None)));
    expect(&log, &mut remote, 1, 1).await;

    // local_broadcast: this node only, at the call, not in the log.
    assert_eq!(a.local_broadcast(&[ROOMS], 2), 2);
    assert_eq!(next(&mut neighbour).await, Ok((2, None)));
    assert_eq!(log.last(), 1);
    refute_receive!(remote, _);

    // Node a reads entry 1 but does not dispatch it again here.
    log.restore("a");
    read_up_to(&a, &log, 1).await;
    refute_receive!(neighbour, _);
    let mut sender = sender;
    assert_eq!(next(&mut sender).await, Ok((2, None)));
    refute_receive!(sender, _);
}

#[tokio::test]
async fn subscribe_since_needs_a_durable_server() {
    let at = Position::new(1, 1).unwrap();
    let local = PubSub::<u64>::new();
    assert!(matches!(
        local.subscribe_since([ROOMS], at).await,
        Err(Error::NotDurable)
    ));
    assert_eq!(local.log_position(), None);
    let live = MemoryLog::live_only();
    let networked = node(&live, "a").await;
    publish(&networked, &[ROOMS], [1]).await;
    assert!(matches!(
        networked.subscribe_since([ROOMS], at).await,
        Err(Error::NotDurable)
    ));
    assert_eq!(networked.log_position(), None);
    // Nothing stays subscribed.
    assert_eq!(networked.stats().subscriptions, 0);
    assert_eq!(local.stats().subscriptions, 0);
}

#[tokio::test]
async fn a_node_that_catches_up_past_trimmed_entries_signals_one_gap_and_two_merge() {
    let log = MemoryLog::new(Retention::entries(3));
    let a = node(&log, "a").await;
    let b = node(&log, "b").await;
    let mut subscription = b.subscribe(ROOMS).unwrap();
    publish(&a, &[ROOMS], [1]).await;
    expect(&log, &mut subscription, 1, 1).await;

    // Away for 5 entries, 3 kept: entries 2 and 3 are lost.
    log.cut("b");
    publish(&a, &[ROOMS], 2..=6).await;
    log.restore("b");
    read_up_to(&b, &log, 6).await;
    // Away again before the subscriber read the first gap: 7..=11, 3 kept.
    log.cut("b");
    publish(&a, &[ROOMS], 7..=11).await;
    log.restore("b");
    read_up_to(&b, &log, 11).await;

    // The messages queued before the second gap, then one gap for both
    // losses (the marker moved to the end), then the rest.
    for seq in 4..=6 {
        expect(&log, &mut subscription, seq, seq).await;
    }
    assert_eq!(
        next(&mut subscription).await,
        Err(RecvError::Gap(Gap::Trimmed {
            first: log.position(2).unwrap(),
            missing: 4
        }))
    );
    for seq in 9..=11 {
        expect(&log, &mut subscription, seq, seq).await;
    }
    refute_receive!(subscription, _);
    assert_eq!(b.stats().gaps, 1);
}

/// A node whose subscriptions have `capacity`.
async fn node_with_capacity(log: &MemoryLog<u64>, name: &str, capacity: usize) -> PubSub<u64> {
    PubSub::builder()
        .node_name(name)
        .capacity(capacity)
        .build_with(log.connect())
        .await
        .expect("attach to the memory log")
}

#[tokio::test]
async fn a_resume_holds_at_most_its_capacity_of_the_replay_and_pages_as_it_is_read() {
    // A resume from the first of 300 entries by a
    // consumer that does not read holds one page (the capacity, 8), not
    // the 299 entries of its range; reading fetches the rest page by
    // page, in order, each once across the pages and the live queue.
    const CAPACITY: u64 = 8;
    let log = MemoryLog::new(Retention::entries(10_000));
    let a = node_with_capacity(&log, "a", CAPACITY as usize).await;
    publish(&a, &[ROOMS], 1..=300).await;
    read_up_to(&a, &log, 300).await;

    let mut resumed = a
        .subscribe_since([ROOMS], log.position(1).unwrap())
        .await
        .unwrap();
    assert!(
        log.replayed_entries() <= CAPACITY,
        "a resume that is not read holds {} replayed entries (capacity {CAPACITY})",
        log.replayed_entries()
    );
    // `len` counts the page, and the queued copies the replay covers: at
    // most one, of the entry the node was dispatching when it subscribed.
    let held = resumed.len() as u64;
    assert!((CAPACITY..=CAPACITY + 1).contains(&held), "{held}");

    for seq in 2..=300 {
        if seq == 150 {
            // Live broadcasts meanwhile (fewer than the capacity: no lag)
            // come after the replay, each once.
            publish(&a, &[ROOMS], 301..=305).await;
            read_up_to(&a, &log, 305).await;
        }
        expect(&log, &mut resumed, seq, seq).await;
        let held = log.replayed_entries() - (seq - 1);
        assert!(
            held <= CAPACITY,
            "{held} replayed entries held after reading entry {seq}"
        );
    }
    assert_eq!(log.replayed_entries(), 299);
    assert!(log.replays() >= 299 / CAPACITY, "{} pages", log.replays());
    for seq in 301..=305 {
        expect(&log, &mut resumed, seq, seq).await;
    }
    publish(&a, &[ROOMS], [306]).await;
    expect(&log, &mut resumed, 306, 306).await;
    refute_receive!(resumed, _);
}

#[tokio::test]
async fn try_recv_on_a_paged_resume_fetches_the_next_page() {
    let log = MemoryLog::new(Retention::entries(10_000));
    let a = node_with_capacity(&log, "a", 4).await;
    publish(&a, &[ROOMS], 1..=20).await;
    read_up_to(&a, &log, 20).await;
    let mut resumed = a
        .subscribe_since([ROOMS], log.position(2).unwrap())
        .await
        .unwrap();
    let mut got = Vec::new();
    within("every replayed entry through try_recv", async {
        while got.len() < 18 {
            match resumed.try_recv_with_position() {
                Ok((message, position)) => got.push((*message, position)),
                Err(TryRecvError::Empty) => tokio::task::yield_now().await,
                Err(other) => panic!("{other:?} after {got:?}"),
            }
        }
    })
    .await;
    let expected: Vec<_> = (3..=20).map(|seq| (seq, log.position(seq))).collect();
    assert_eq!(got, expected);
    assert_eq!(resumed.try_recv(), Err(TryRecvError::Empty));
}

#[tokio::test]
async fn entries_trimmed_while_a_paged_resume_is_read_are_one_gap_where_they_were() {
    // Retention 100, capacity 8: the consumer reads the first page (2..9),
    // then 50 more broadcasts trim entries 1..50. The pages after tell one
    // Trimmed gap for 10..50, then the rest of the range; the live queue,
    // overflowed meanwhile, reports its own lag.
    let log = MemoryLog::new(Retention::entries(100));
    let a = node_with_capacity(&log, "a", 8).await;
    publish(&a, &[ROOMS], 1..=100).await;
    read_up_to(&a, &log, 100).await;
    let mut resumed = a
        .subscribe_since([ROOMS], log.position(1).unwrap())
        .await
        .unwrap();
    for seq in 2..=9 {
        expect(&log, &mut resumed, seq, seq).await;
    }
    publish(&a, &[ROOMS], 101..=150).await;
    read_up_to(&a, &log, 150).await;
    assert_eq!(log.first_kept(), 51);
    assert_eq!(
        next(&mut resumed).await,
        Err(RecvError::Gap(Gap::Trimmed {
            first: log.position(10).unwrap(),
            missing: 41
        }))
    );
    for seq in 51..=100 {
        expect(&log, &mut resumed, seq, seq).await;
    }
    assert_eq!(next(&mut resumed).await, Err(RecvError::Lagged(42)));
    for seq in 143..=150 {
        expect(&log, &mut resumed, seq, seq).await;
    }
    refute_receive!(resumed, _);
}

#[tokio::test]
async fn a_paged_resume_whose_log_stops_answering_ends_with_a_gap_then_goes_live() {
    let log = MemoryLog::new(Retention::entries(10_000));
    let a = node_with_capacity(&log, "a", 8).await;
    publish(&a, &[ROOMS], 1..=40).await;
    read_up_to(&a, &log, 40).await;
    let mut resumed = a
        .subscribe_since([ROOMS], log.position(1).unwrap())
        .await
        .unwrap();
    for seq in 2..=9 {
        expect(&log, &mut resumed, seq, seq).await;
    }
    let replays = log.replays();
    log.fail_replays(true);
    // Three attempts at the next page, then the rest of the range (10..40)
    // is told lost; live delivery goes on.
    assert_eq!(
        next(&mut resumed).await,
        Err(RecvError::Gap(Gap::Disconnected))
    );
    assert_eq!(log.replays() - replays, 3);
    log.fail_replays(false);
    publish(&a, &[ROOMS], [41]).await;
    expect(&log, &mut resumed, 41, 41).await;
    refute_receive!(resumed, _);
}

#[test]
fn a_subscription_stays_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Subscription<u64>>();
}
