//! Wide topics against an adversary (written by a review of the ring): a
//! ring reader must behave exactly like a subscription with a queue of its
//! own, through random operations, churn across threads, durable positions
//! and destructors that take locks, and must not keep wakers.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use staff_pubsub::{PubSub, RecvError, Retention, Subscription, Topic, TryRecvError};
use staff_pubsub_tests::memory_log::MemoryLog;
use staff_pubsub_tests::within;

const ROOMS: Topic = Topic::new("chat:rooms");
const USERS: Topic = Topic::new("chat:users");
/// Subscribers a topic needs before new ones read its ring.
const RING_FROM: usize = 32;

/// A waker that does nothing; its `Arc`'s count tells who holds it.
struct Counted;

impl Wake for Counted {
    fn wake(self: Arc<Self>) {}
}

/// Polls `subscription.recv()` once with `waker`: it must be pending.
fn park(subscription: &mut Subscription<u64>, waker: &Waker) {
    let mut cx = Context::from_waker(waker);
    let recv = pin!(subscription.recv());
    assert!(recv.poll(&mut cx).is_pending());
}

/// Subscriptions that come and go on a quiet topic leave nothing behind:
/// a ring reader that leaves takes its task's waker out of the ring, as a
/// queue of its own releases it when the subscription is dropped (no
/// broadcast comes to clear the ring's list).
#[test]
fn a_ring_reader_that_leaves_releases_its_waker() {
    let pubsub = PubSub::<u64>::builder().capacity(8).build();
    let _crowd: Vec<_> = (0..RING_FROM)
        .map(|_| pubsub.subscribe(ROOMS).unwrap())
        .collect();
    // Keeps the ring alive.
    let _reader = pubsub.subscribe(ROOMS).unwrap();
    let counted = Arc::new(Counted);
    let waker = Waker::from(Arc::clone(&counted));

    // Control: an own queue (on two topics) releases its waker on drop.
    for _ in 0..1_000 {
        let mut own = pubsub.subscribe_many([ROOMS, USERS]).unwrap();
        park(&mut own, &waker);
    }
    assert_eq!(Arc::strong_count(&counted), 2, "own queues");

    for _ in 0..1_000 {
        let mut reader = pubsub.subscribe(ROOMS).unwrap();
        park(&mut reader, &waker);
    }
    // `counted` and `waker`: nothing else should hold it.
    assert_eq!(
        Arc::strong_count(&counted),
        2,
        "wakers of 1,000 dropped ring readers are still held by the ring"
    );
}

/// A ring reader polled with a new waker each time (moved between tasks,
/// polled from a `FuturesUnordered` that is rebuilt...) keeps the last one
/// only, as a queue of its own does.
#[test]
fn a_ring_reader_keeps_only_its_last_waker() {
    let pubsub = PubSub::<u64>::builder().capacity(8).build();
    let _crowd: Vec<_> = (0..RING_FROM)
        .map(|_| pubsub.subscribe(ROOMS).unwrap())
        .collect();
    let mut reader = pubsub.subscribe(ROOMS).unwrap();
    let wakers: Vec<_> = (0..1_000).map(|_| Arc::new(Counted)).collect();
    for counted in &wakers {
        park(&mut reader, &Waker::from(Arc::clone(counted)));
    }
    let held = wakers[..999]
        .iter()
        .filter(|counted| Arc::strong_count(counted) > 1)
        .count();
    assert_eq!(held, 0, "earlier wakers still held by the ring");
}

/// Positive check: in durable mode a ring reader gets the same messages
/// with the same positions as a queue of its own, live and through
/// `subscribe_since`, and its skip of replayed copies works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_positions_and_resume_on_a_wide_topic() {
    let log = MemoryLog::new(Retention::entries(1_000_000));
    let pubsub = PubSub::<u64>::builder()
        .capacity(4096)
        .node_name("a")
        .build_with(log.connect())
        .await
        .unwrap();
    let _crowd: Vec<_> = (0..RING_FROM)
        .map(|_| pubsub.subscribe(ROOMS).unwrap())
        .collect();
    let mut own = pubsub.subscribe_many([ROOMS, ROOMS]).unwrap(); // one topic: a reader too
    let mut own2 = pubsub.subscribe_many([ROOMS, USERS]).unwrap();
    let publisher = {
        let pubsub = pubsub.clone();
        tokio::spawn(async move {
            for n in 1..=200_u64 {
                pubsub.broadcast([ROOMS], n).await.unwrap();
                if n % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut positions = Vec::new();
    for n in 1..=200_u64 {
        let (m, p) = within("own", own.recv_with_position()).await.unwrap();
        let (m2, p2) = within("own2", own2.recv_with_position()).await.unwrap();
        assert_eq!((*m, p), (*m2, p2));
        assert_eq!((*m, p), (n, log.position(n)));
        positions.push(p.unwrap());
        if n % 40 == 0 {
            // Resume after a position, racing the publisher.
            let mut resumed = pubsub
                .subscribe_since([ROOMS], positions[(n / 2) as usize])
                .await
                .unwrap();
            let mut expect = n / 2 + 2;
            while expect <= n + 5 && expect <= 200 {
                let (m, p) = within("resumed", resumed.recv_with_position())
                    .await
                    .unwrap();
                assert_eq!((*m, p), (expect, log.position(expect)));
                expect += 1;
            }
        }
    }
    publisher.await.unwrap();
}

/// Positive check under churn: publishers, parked receivers on other
/// threads, and subscriptions that join the ring, call broadcast_from, add
/// and remove topics and unsubscribe. Nothing hangs, nothing panics, no
/// sender sees its own broadcast_from, each publisher's messages arrive in
/// order, and every copy counted in `delivered` is received or reported
/// lagged, as `stats().lagged` counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_keeps_the_books() {
    const PUBLISHERS: u64 = 2;
    const PER_PUBLISHER: u64 = 3_000;
    let pubsub = PubSub::<u64>::builder().capacity(16).build();
    let received = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let own_seen = Arc::new(Mutex::new(Vec::<u64>::new()));

    // Account for what a subscription still holds and has reported.
    fn settle(
        subscription: &mut Subscription<u64>,
        last: &mut [u64; 2],
        received: &AtomicU64,
        lagged: &AtomicU64,
    ) {
        loop {
            match subscription.try_recv() {
                Ok(m) => {
                    check(*m, last);
                    received.fetch_add(1, Ordering::Relaxed);
                }
                Err(TryRecvError::Lagged(n)) => {
                    lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
                Err(other) => panic!("{other:?}"),
            }
        }
    }
    /// Messages are publisher << 32 | n; from broadcast_from: 1 << 40 | id.
    fn check(m: u64, last: &mut [u64; 2]) {
        if m >> 40 == 1 {
            return;
        }
        let (p, n) = ((m >> 32) as usize, m & 0xffff_ffff);
        assert!(
            n > last[p] || (n == 0 && last[p] == 0),
            "out of order: {n} after {}",
            last[p]
        );
        last[p] = n;
    }

    // Long-lived parked receivers (own queues first, then ring readers).
    let mut receivers = Vec::new();
    for _ in 0..(RING_FROM + 16) {
        let mut subscription = pubsub.subscribe(ROOMS).unwrap();
        let (received, lagged, done) = (received.clone(), lagged.clone(), done.clone());
        receivers.push(tokio::spawn(async move {
            let mut last = [0_u64; 2];
            loop {
                match tokio::time::timeout(Duration::from_millis(50), subscription.recv()).await {
                    Ok(Ok(m)) => {
                        check(*m, &mut last);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(RecvError::Lagged(n))) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(Err(other)) => panic!("{other:?}"),
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            settle(&mut subscription, &mut last, &received, &lagged);
            subscription.unsubscribe();
            settle(&mut subscription, &mut last, &received, &lagged);
        }));
    }

    // Churners.
    let mut churners = Vec::new();
    for c in 0..2_u64 {
        let pubsub = pubsub.clone();
        let (received, lagged, done, own_seen) = (
            received.clone(),
            lagged.clone(),
            done.clone(),
            own_seen.clone(),
        );
        churners.push(tokio::spawn(async move {
            let mut round = 0_u64;
            while !done.load(Ordering::Relaxed) {
                round += 1;
                let mut subscription = pubsub.subscribe(ROOMS).unwrap();
                let mut last = [0_u64; 2];
                let id = 1 << 40 | c << 32 | round;
                for step in 0..(round % 5) {
                    match step {
                        0 => {
                            pubsub.local_broadcast_from(&subscription, &[ROOMS], id);
                        }
                        1 => {
                            subscription.add_topic(USERS).unwrap();
                        }
                        2 => {
                            subscription.remove_topic(&ROOMS);
                        }
                        _ => tokio::task::yield_now().await,
                    }
                    loop {
                        match subscription.try_recv() {
                            Ok(m) => {
                                if *m == id {
                                    own_seen.lock().unwrap().push(id);
                                }
                                check(*m, &mut last);
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(TryRecvError::Lagged(n)) => {
                                lagged.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                }
                tokio::task::yield_now().await;
                subscription.unsubscribe();
                settle(&mut subscription, &mut last, &received, &lagged);
            }
        }));
    }

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let pubsub = pubsub.clone();
        publishers.push(tokio::spawn(async move {
            for n in 1..=PER_PUBLISHER {
                pubsub.local_broadcast(&[ROOMS], p << 32 | n);
                if n % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for publisher in publishers {
        within("publisher", publisher).await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for churner in churners {
        within("churner", churner).await.unwrap();
    }
    for receiver in receivers {
        within("receiver", receiver).await.unwrap();
    }
    assert_eq!(
        own_seen.lock().unwrap().len(),
        0,
        "a sender got its own message"
    );
    let stats = pubsub.stats();
    assert_eq!(stats.subscriptions, 0);
    assert_eq!(
        stats.lagged,
        lagged.load(Ordering::Relaxed),
        "lag reported vs counted"
    );
    assert_eq!(
        stats.delivered,
        received.load(Ordering::Relaxed) + lagged.load(Ordering::Relaxed),
        "every delivered copy is received or reported lost"
    );
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Everything `subscription` has now, lag reports summed into `lag`.
fn take_all(subscription: &mut Subscription<u64>, lag: &mut u64) {
    loop {
        match subscription.try_recv() {
            Err(TryRecvError::Lagged(n)) => *lag += n,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            _ => {}
        }
    }
}

/// A ring reader on a wide server against a twin with a queue of its own on
/// a server of its own, through the public API: broadcasts, gaps, the
/// crowd shrinking and growing (the ring's last reader folding back into
/// one inline queue), broadcast_from settling it, add_topic; same results
/// and lengths. The wide server's lag count is what its subscribers hear.
#[test]
fn a_ring_reader_and_its_twin_through_the_public_api() {
    for seed0 in 1..40_u64 {
        let mut seed = seed0.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let capacity = 1 + (xorshift(&mut seed) % 5) as usize;
        let wide = PubSub::<u64>::builder().capacity(capacity).build();
        let alone = PubSub::<u64>::builder().capacity(capacity).build();
        let mut crowd: Vec<_> = (0..RING_FROM)
            .map(|_| wide.subscribe(ROOMS).unwrap())
            .collect();
        let mut reader = wide.subscribe(ROOMS).unwrap();
        let mut twin = alone.subscribe(ROOMS).unwrap();
        let mut gone = Vec::new();
        let mut heard_lag = 0_u64;
        for step in 0..3_000_u64 {
            match xorshift(&mut seed) % 100 {
                0..=39 => {
                    wide.local_broadcast(&[ROOMS], step);
                    alone.local_broadcast(&[ROOMS], step);
                }
                40..=44 => {
                    wide.local_node().signal_gap();
                    alone.local_node().signal_gap();
                }
                45..=49 if !crowd.is_empty() => {
                    let mut leaving =
                        crowd.swap_remove((xorshift(&mut seed) % crowd.len() as u64) as usize);
                    leaving.unsubscribe();
                    gone.push(leaving);
                }
                50..=52 => crowd.push(wide.subscribe(ROOMS).unwrap()),
                53 => {
                    // Settles the reader; reaches nobody on USERS.
                    wide.local_broadcast_from(&reader, &[USERS], u64::MAX);
                }
                54 if reader.topics().len() == 1 => {
                    reader.add_topic(USERS).unwrap();
                    twin.add_topic(USERS).unwrap();
                }
                55..=59 => {
                    // The crowd reads too, now and then.
                    for subscription in crowd.iter_mut().step_by(3) {
                        if let Err(TryRecvError::Lagged(n)) = subscription.try_recv() {
                            heard_lag += n;
                        }
                    }
                }
                _ => {
                    assert_eq!(reader.len(), twin.len(), "seed {seed0} step {step}");
                    let (got, want) = (reader.try_recv(), twin.try_recv());
                    assert_eq!(got, want, "seed {seed0} step {step} capacity {capacity}");
                    if let Err(TryRecvError::Lagged(n)) = got {
                        heard_lag += n;
                    }
                }
            }
        }
        loop {
            let (got, want) = (reader.try_recv(), twin.try_recv());
            assert_eq!(got, want, "seed {seed0} final");
            match got {
                Err(TryRecvError::Lagged(n)) => heard_lag += n,
                Err(TryRecvError::Empty) => break,
                _ => {}
            }
        }
        for subscription in crowd.iter_mut().chain(gone.iter_mut()) {
            take_all(subscription, &mut heard_lag);
        }
        assert_eq!(wide.stats().lagged, heard_lag, "seed {seed0} lag");
    }
}

/// A message whose destructor takes the registry's locks (subscribes and
/// unsubscribes on the one shard): it deadlocks if it runs under them.
struct Bomb;

static SERVER: std::sync::OnceLock<PubSub<Bomb>> = std::sync::OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

impl Drop for Bomb {
    fn drop(&mut self) {
        if let Some(pubsub) = SERVER.get() {
            drop(pubsub.subscribe(USERS).unwrap());
            let _ = pubsub.subscriber_count(&ROOMS);
        }
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Positive check: no message of a ring is released under a lock: eviction
/// from a full ring, the last reader leaving by unsubscribe, by
/// broadcast_from (settle), by add_topic, and the crowd folding back.
#[test]
fn ring_messages_are_released_outside_the_locks() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let pubsub = SERVER.get_or_init(|| PubSub::builder().capacity(2).shards(1).build());
        let mut crowd: Vec<_> = (0..RING_FROM)
            .map(|_| pubsub.subscribe(ROOMS).unwrap())
            .collect();
        let send = |n: usize| {
            for _ in 0..n {
                pubsub.local_broadcast(&[ROOMS], Bomb);
            }
        };
        // Eviction from a full ring and from full own queues.
        let reader = pubsub.subscribe(ROOMS).unwrap();
        send(5);
        // The last reader unsubscribes: the ring goes.
        drop(reader);
        drop(crowd.pop());
        // broadcast_from settles the last reader: the ring goes.
        crowd.push(pubsub.subscribe(ROOMS).unwrap());
        let reader = pubsub.subscribe(ROOMS).unwrap();
        send(3);
        pubsub.local_broadcast_from(&reader, &[USERS], Bomb);
        drop(reader);
        // add_topic settles the last reader.
        let mut reader = pubsub.subscribe(ROOMS).unwrap();
        send(3);
        reader.add_topic(USERS).unwrap();
        drop(reader);
        // The crowd folds back to one inline queue with a reader left.
        let reader = pubsub.subscribe(ROOMS).unwrap();
        send(3);
        drop(crowd);
        send(1);
        drop(reader);
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(20))
        .expect("deadlock: a message's destructor ran under a registry lock");
    assert!(DROPPED.load(Ordering::Relaxed) > 0);
}
