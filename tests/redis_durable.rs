//! Durable delivery over Redis Streams (`RedisConfig::durable`), against
//! real `redis-server`s the tests start: nothing is lost across a killed
//! connection or a restarted Redis with persistence, and when something is
//! lost (retention exceeded, Redis restarted without persistence) exactly
//! one gap says what. Waits are bounded (`within`); nothing sleeps and hopes.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::{
    Connection, Error, Gap, Outcome, Position, PubSub, RecvError, Retention, Subscription, Topic,
    TryRecvError,
};
use staff_pubsub_tests::proxy::Proxy;
use staff_pubsub_tests::redis_server::RedisServer;
use staff_pubsub_tests::within;

const NAMESPACE: &str = "durable";
const ROOMS: Topic = Topic::new("chat:rooms");
const USERS: Topic = Topic::new("chat:users");

/// Redis with its append-only file (default `appendfsync everysec`): it
/// writes each command to the file before answering, so a killed and
/// restarted server keeps every acknowledged entry.
const PERSISTENT: &[&str] = &["--appendonly", "yes"];

fn config(url: impl Into<String>, retention: Retention) -> RedisConfig {
    RedisConfig::new(url)
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .health_check_interval(Duration::from_millis(500))
        .durable(retention)
}

async fn node(url: String, name: &str, retention: Retention) -> PubSub<u64> {
    PubSub::builder()
        .node_name(name)
        .redis(config(url, retention))
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"))
}

/// Kills every connection blocked in `XREAD`: the nodes' log readers.
async fn kill_readers(admin: &mut MultiplexedConnection) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .expect("CLIENT LIST");
    let mut killed = 0;
    for line in clients.lines().filter(|line| line.contains("cmd=xread")) {
        let id = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("id="))
            .expect("an id field");
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(admin)
            .await
            .expect("CLIENT KILL");
        killed += 1;
    }
    killed
}

/// Adds the ACL user `sub`, which a test can lock out; returns its URL.
async fn add_subscriber_user(server: &RedisServer, admin: &mut MultiplexedConnection) -> String {
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "sub", "on", ">pw", "~*", "&*", "+@all"])
        .query_async(admin)
        .await
        .expect("ACL SETUSER");
    format!("redis://sub:pw@127.0.0.1:{}", server.port())
}

/// The user `sub` can no longer log in, and its connections are cut.
async fn lock_out_subscriber(admin: &mut MultiplexedConnection) {
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "sub", "off"])
        .query_async(admin)
        .await
        .expect("ACL SETUSER off");
    let _: redis::Value = redis::cmd("CLIENT")
        .arg(&["KILL", "USER", "sub"])
        .query_async(admin)
        .await
        .expect("CLIENT KILL USER");
}

/// The user `sub` can log in again.
async fn let_subscriber_in(admin: &mut MultiplexedConnection) {
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "sub", "on"])
        .query_async(admin)
        .await
        .expect("ACL SETUSER on");
}

/// The next message and its position, failing on anything else.
async fn next(subscription: &mut Subscription<u64>) -> (u64, Position) {
    match within("a message", subscription.recv_with_position()).await {
        Ok((message, Some(position))) => (*message, position),
        other => panic!("expected a message with a position, got {other:?}"),
    }
}

/// Broadcasts `n` until Redis takes it: retries what was certainly not
/// sent once the node is connected again. Returns whether it was taken
/// (`false`: the outcome is unknown, it may or may not be in the log).
async fn broadcast_until_taken(node: &PubSub<u64>, n: u64) -> bool {
    loop {
        match node.broadcast([ROOMS], n).await {
            Ok(()) => return true,
            Err(Error::Transport(error)) if error.outcome() == Outcome::NotSent => {
                within(
                    "the publisher to reconnect",
                    node.wait_for_connection(Connection::Connected),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(Error::Transport(_)) => return false,
            Err(other) => panic!("broadcast {n}: {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broadcast_arrives_once_in_order_across_killed_connections_and_a_restart() {
    const COUNT: u64 = 10_000;
    let mut server = RedisServer::start_with(PERSISTENT).await;
    let retention = Retention::entries(100_000);
    let publisher = node(server.url(), "publisher", retention.clone()).await;
    let subscriber = node(server.url(), "subscriber", retention).await;
    let mut subscription = subscriber.subscribe(ROOMS).expect("subscribed");
    let mut admin = server.connection().await;

    let sending = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut unknown = BTreeSet::new();
            for n in 0..COUNT {
                if !broadcast_until_taken(&publisher, n).await {
                    unknown.insert(n);
                }
            }
            unknown
        })
    };

    let mut received = Vec::new();
    let mut last: Option<Position> = None;
    let mut killed_connections = false;
    let mut restarted = false;
    while received.last() != Some(&(COUNT - 1)) {
        let (n, position) = next(&mut subscription).await;
        if let Some(last) = last {
            assert_eq!(
                last.next(),
                Some(position),
                "positions are consecutive: every entry is on this topic"
            );
        }
        last = Some(position);
        received.push(n);
        if !killed_connections && received.len() == 2_000 {
            assert!(kill_readers(&mut admin).await >= 1, "no reader to kill");
            killed_connections = true;
        }
        if !restarted && received.len() == 5_000 {
            server.kill();
            server.restart().await;
            admin = server.connection().await;
            restarted = true;
        }
    }
    let unknown = within("the publisher to finish", sending)
        .await
        .expect("the publisher ran");
    assert!(killed_connections && restarted);

    // In order and once each...
    assert!(
        received.windows(2).all(|pair| pair[0] < pair[1]),
        "out of order or twice"
    );
    // ...every broadcast that returned Ok, and no other than those whose
    // outcome was unknown.
    let got: BTreeSet<u64> = received.iter().copied().collect();
    for n in 0..COUNT {
        assert!(
            got.contains(&n) || unknown.contains(&n),
            "broadcast {n} returned Ok but never arrived"
        );
    }
    assert!(unknown.len() <= 2, "few outcomes are unknown: {unknown:?}");
    // No gap was signalled: nothing was lost.
    assert_eq!(subscriber.stats().gaps, 0);
    assert_eq!(
        subscription.try_recv(),
        Err(TryRecvError::Empty),
        "nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retention_is_one_gap_naming_the_trimmed_range() {
    let server = RedisServer::start().await;
    let mut admin = server.connection().await;
    // The subscriber logs in as its own user, which the test can lock out.
    let sub_url = add_subscriber_user(&server, &mut admin).await;
    let retention = Retention::entries(100);
    let publisher = node(server.url(), "publisher", retention.clone()).await;
    let subscriber = node(sub_url, "subscriber", retention).await;
    let mut subscription = subscriber.subscribe(ROOMS).expect("subscribed");

    for n in 0..10 {
        publisher.broadcast([ROOMS], n).await.expect("sent");
    }
    let mut read_up_to = None;
    for n in 0..10 {
        let (got, position) = next(&mut subscription).await;
        assert_eq!(got, n);
        read_up_to = Some(position);
    }
    let read_up_to = read_up_to.expect("ten read");

    // Lock the subscriber out and cut its connections: it cannot reconnect.
    lock_out_subscriber(&mut admin).await;
    within(
        "the subscriber to notice",
        subscriber.wait_for_connection(Connection::Disconnected),
    )
    .await;
    for n in 10..1_010 {
        publisher.broadcast([ROOMS], n).await.expect("sent");
    }
    // The oldest entry left: everything between was trimmed.
    let oldest: Vec<(String, Vec<(String, redis::Value)>)> = redis::cmd("XRANGE")
        .arg(&[
            &RedisConfig::new("").namespace(NAMESPACE).log_key(),
            "-",
            "+",
            "COUNT",
            "1",
        ])
        .query_async(&mut admin)
        .await
        .expect("XRANGE");
    let oldest_seq: u64 = oldest[0]
        .0
        .strip_suffix("-0")
        .and_then(|seq| seq.parse().ok())
        .expect("an id <seq>-0");
    assert!(
        oldest_seq > read_up_to.seq() + 1,
        "the outage outlived the retention"
    );

    let_subscriber_in(&mut admin).await;
    let gap = within("the gap", subscription.recv()).await;
    assert_eq!(
        gap,
        Err(RecvError::Gap(Gap::Trimmed {
            first: read_up_to.next().expect("a next position"),
            missing: oldest_seq - read_up_to.seq() - 1,
        }))
    );
    // Then what the log still had, in order, and what comes later.
    let first_kept = 10 + (oldest_seq - read_up_to.seq() - 1);
    for n in first_kept..1_010 {
        assert_eq!(next(&mut subscription).await.0, n);
    }
    publisher.broadcast([ROOMS], 5_000).await.expect("sent");
    assert_eq!(next(&mut subscription).await.0, 5_000);
    assert_eq!(subscriber.stats().gaps, 1, "exactly one gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_persistence_is_a_gap_saying_the_log_was_lost() {
    let mut server = RedisServer::start().await;
    let retention = Retention::entries(1_000);
    let publisher = node(server.url(), "publisher", retention.clone()).await;
    let subscriber = node(server.url(), "subscriber", retention).await;
    let mut subscription = subscriber.subscribe(ROOMS).expect("subscribed");
    publisher.broadcast([ROOMS], 1).await.expect("sent");
    let (_, before) = next(&mut subscription).await;

    server.kill();
    server.restart().await;
    let gap = within("the gap", subscription.recv()).await;
    assert_eq!(gap, Err(RecvError::Gap(Gap::LogLost)));
    assert_eq!(
        gap.unwrap_err().to_string(),
        "the log was lost: messages may have been missed"
    );

    within(
        "the publisher to reconnect",
        publisher.wait_for_connection(Connection::Connected),
    )
    .await;
    assert!(broadcast_until_taken(&publisher, 2).await);
    let (n, after) = next(&mut subscription).await;
    assert_eq!(n, 2);
    assert_ne!(after.log(), before.log(), "a new log");
    assert_eq!(after.seq(), 1, "the new log starts at 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_since_replays_what_was_missed_on_its_topics_then_goes_on_live() {
    let server = RedisServer::start().await;
    let retention = Retention::entries(10_000).max_replay(100);
    let publisher = node(server.url(), "publisher", retention.clone()).await;
    let consumer = node(server.url(), "consumer", retention).await;
    let mut subscription = consumer.subscribe(ROOMS).expect("subscribed");
    publisher.broadcast([ROOMS], 0).await.expect("sent");
    let (_, checkpoint) = next(&mut subscription).await;
    drop(subscription);

    // While the consumer is away: rooms, users, both.
    for n in 1..=30 {
        let topics: &[Topic] = match n % 3 {
            0 => &[ROOMS],
            1 => &[USERS],
            _ => &[ROOMS, USERS],
        };
        publisher.broadcast(topics, n).await.expect("sent");
    }
    let mut mark = consumer.subscribe(USERS).expect("subscribed");
    publisher.broadcast([USERS], 999).await.expect("sent");
    // The consumer's node has read on (earlier users entries may come
    // first, if its reader was behind when `mark` subscribed).
    while next(&mut mark).await.0 != 999 {}

    let mut resumed = consumer
        .subscribe_since([ROOMS], checkpoint)
        .await
        .expect("resumed");
    let expected: Vec<u64> = (1..=30).filter(|n| n % 3 != 1).collect();
    assert_eq!(
        resumed.len(),
        expected.len(),
        "replayed messages count as queued"
    );
    let mut positions = Vec::new();
    for n in &expected {
        let (got, position) = next(&mut resumed).await;
        assert_eq!(got, *n);
        positions.push(position);
    }
    assert!(positions
        .windows(2)
        .all(|pair| pair[0].seq() < pair[1].seq()));
    publisher.broadcast([ROOMS], 1_000).await.expect("sent");
    assert_eq!(
        next(&mut resumed).await.0,
        1_000,
        "then live, nothing twice"
    );
    assert_eq!(resumed.try_recv(), Err(TryRecvError::Empty));

    // Subscribed to both: one copy per reached topic, as live.
    let mut both = consumer
        .subscribe_since([ROOMS, USERS], checkpoint)
        .await
        .expect("resumed");
    let mut copies = Vec::new();
    while copies.len() < 40 + 1 + 1 {
        copies.push(next(&mut both).await.0);
    }
    let twice: Vec<u64> = (1..=30).filter(|n| n % 3 == 2).collect();
    for n in &twice {
        assert_eq!(copies.iter().filter(|c| *c == n).count(), 2, "{n}");
    }

    // Too far behind for the replay limit: a gap and no replay.
    for n in 0..150 {
        publisher.broadcast([USERS], 2_000 + n).await.expect("sent");
    }
    while next(&mut mark).await.0 != 2_149 {}
    let mut far = consumer
        .subscribe_since([ROOMS], checkpoint)
        .await
        .expect("resumed");
    match within("the gap", far.recv()).await {
        Err(RecvError::Gap(Gap::ReplayLimit { missing })) => assert!(missing > 100, "{missing}"),
        other => panic!("expected a replay-limit gap, got {other:?}"),
    }
    assert_eq!(far.try_recv(), Err(TryRecvError::Empty));

    // A live-only server cannot resume.
    let live: PubSub<u64> = PubSub::builder()
        .redis(RedisConfig::new(server.url()).namespace("live"))
        .await
        .expect("connected");
    assert!(matches!(
        live.subscribe_since([ROOMS], checkpoint).await,
        Err(Error::NotDurable)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_written_by_hand_or_a_lost_meta_hash_are_never_delivered_as_ours() {
    let server = RedisServer::start().await;
    let retention = Retention::entries(1_000);
    let publisher = node(server.url(), "publisher", retention.clone()).await;
    let subscriber = node(server.url(), "subscriber", retention).await;
    let mut subscription = subscriber.subscribe(ROOMS).expect("subscribed");
    let mut admin = server.connection().await;
    let keys = RedisConfig::new("").namespace(NAMESPACE);
    publisher.broadcast([ROOMS], 1).await.expect("sent");
    let (_, first) = next(&mut subscription).await;

    // An entry that is not one of the log's (no `log` or `m`, an id made by
    // Redis): skipped and counted...
    let _: String = redis::cmd("XADD")
        .arg(&[keys.log_key().as_str(), "*", "junk", "1"])
        .query_async(&mut admin)
        .await
        .expect("XADD");
    // ...and the stream now ends past the log's sequence numbers: the next
    // broadcast starts a new log after it, which subscribers are told of.
    publisher.broadcast([ROOMS], 2).await.expect("sent");
    assert_eq!(
        within("the gap", subscription.recv()).await,
        Err(RecvError::Gap(Gap::LogLost))
    );
    let (n, second) = next(&mut subscription).await;
    assert_eq!(n, 2);
    assert_ne!(second.log(), first.log());
    assert_eq!(subscriber.stats().rejected, 1);

    // The meta hash lost, the stream kept: again a new log, told once,
    // and the stream's older entries are never delivered again.
    let _: i64 = redis::cmd("DEL")
        .arg(keys.log_meta_key())
        .query_async(&mut admin)
        .await
        .expect("DEL");
    publisher.broadcast([ROOMS], 3).await.expect("sent");
    assert_eq!(
        within("the gap", subscription.recv()).await,
        Err(RecvError::Gap(Gap::LogLost))
    );
    let (n, third) = next(&mut subscription).await;
    assert_eq!(n, 3);
    assert_ne!(third.log(), second.log());
    // A node that starts now reads from the end, not the old entries.
    let late = node(server.url(), "late", Retention::entries(1_000)).await;
    let mut late_subscription = late.subscribe(ROOMS).expect("subscribed");
    publisher.broadcast([ROOMS], 4).await.expect("sent");
    assert_eq!(next(&mut late_subscription).await.0, 4);
    assert_eq!(next(&mut subscription).await.0, 4);
    assert_eq!(late_subscription.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(subscription.try_recv(), Err(TryRecvError::Empty));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_away_while_the_log_restarted_reads_the_new_log_from_its_start() {
    let server = RedisServer::start().await;
    let mut admin = server.connection().await;
    let sub_url = add_subscriber_user(&server, &mut admin).await;
    let retention = Retention::entries(1_000);
    let publisher = node(server.url(), "publisher", retention.clone()).await;
    let subscriber = node(sub_url, "subscriber", retention).await;
    let mut subscription = subscriber.subscribe(ROOMS).expect("subscribed");
    for n in 0..5 {
        publisher.broadcast([ROOMS], n).await.expect("sent");
    }
    for n in 0..5 {
        assert_eq!(next(&mut subscription).await.0, n);
    }

    lock_out_subscriber(&mut admin).await;
    within(
        "the subscriber to notice",
        subscriber.wait_for_connection(Connection::Disconnected),
    )
    .await;
    // Meanwhile the log's meta hash is lost (the stream is not) and the
    // publisher goes on: a new log, after the stream's old entries.
    let _: i64 = redis::cmd("DEL")
        .arg(RedisConfig::new("").namespace(NAMESPACE).log_meta_key())
        .query_async(&mut admin)
        .await
        .expect("DEL");
    for n in 5..8 {
        publisher.broadcast([ROOMS], n).await.expect("sent");
    }
    let_subscriber_in(&mut admin).await;
    assert_eq!(
        within("the gap", subscription.recv()).await,
        Err(RecvError::Gap(Gap::LogLost))
    );
    // Everything of the new log, nothing of the old one again.
    for n in 5..8 {
        assert_eq!(next(&mut subscription).await.0, n);
    }
    assert_eq!(subscription.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(subscriber.stats().gaps, 1);
}

async fn save(admin: &mut MultiplexedConnection) {
    let _: redis::Value = redis::cmd("SAVE").query_async(admin).await.expect("SAVE");
}

/// Redis loses its last writes (it comes back from an older snapshot, as
/// with `appendfsync everysec` after a crash) and another node appends
/// again, reusing the lost sequence numbers, before the subscriber's reader
/// reconnects: the subscriber is told the log was lost (its last entry is
/// not the one the log now has at that number), and what follows comes
/// under a new log id, so no position names two messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_last_writes_overwritten_by_new_appends_are_a_lost_log() {
    let mut server = RedisServer::start().await;
    let proxy = Proxy::start(server.port()).await;
    let retention = Retention::entries(1_000);
    let publisher = node(server.url(), "publisher", retention.clone()).await;
    let subscriber = node(proxy.url("redis"), "subscriber", retention.clone()).await;
    let mut subscription = subscriber.subscribe(ROOMS).expect("subscribed");
    let mut admin = server.connection().await;
    for n in 1..=2 {
        publisher.broadcast([ROOMS], n).await.expect("sent");
    }
    save(&mut admin).await; // what Redis will come back with
    for n in 3..=5 {
        publisher.broadcast([ROOMS], n).await.expect("sent");
    }
    let mut before = None;
    for n in 1..=5 {
        let (got, position) = next(&mut subscription).await;
        assert_eq!(got, n);
        before = Some(position);
    }
    let before = before.expect("five read");

    proxy.block();
    proxy.cut();
    within(
        "the subscriber to notice",
        subscriber.wait_for_connection(Connection::Disconnected),
    )
    .await;
    drop(publisher);
    server.kill();
    server.restart().await;
    let late = node(server.url(), "late", retention).await;
    for n in [30, 40, 50] {
        late.broadcast([ROOMS], n).await.expect("sent");
    }
    // They reused the lost numbers: the log ends where it did.
    let seq: u64 = redis::cmd("HGET")
        .arg(RedisConfig::new("").namespace(NAMESPACE).log_meta_key())
        .arg("seq")
        .query_async(&mut server.connection().await)
        .await
        .expect("HGET");
    assert_eq!(seq, before.seq());
    proxy.unblock();
    within(
        "the subscriber to reconnect",
        subscriber.wait_for_connection(Connection::Connected),
    )
    .await;
    assert_eq!(
        within("the gap", subscription.recv()).await,
        Err(RecvError::Gap(Gap::LogLost))
    );
    late.broadcast([ROOMS], 60).await.expect("sent");
    let (n, after) = next(&mut subscription).await;
    assert_eq!(n, 60);
    assert_ne!(after.log(), before.log(), "a renewed log id");
    assert_eq!(subscription.try_recv(), Err(TryRecvError::Empty));
}

/// A consumer resumes, on a node started after Redis lost its last
/// writes, from a position the log lost: it is told, and misses none of
/// the entries that now reuse those numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_a_position_redis_lost_is_a_lost_log_not_a_skip() {
    let mut server = RedisServer::start().await;
    let retention = Retention::entries(1_000);
    let mut admin = server.connection().await;
    let last = {
        let first = node(server.url(), "first", retention.clone()).await;
        let mut subscription = first.subscribe(ROOMS).expect("subscribed");
        for n in 1..=2 {
            first.broadcast([ROOMS], n).await.expect("sent");
        }
        save(&mut admin).await;
        for n in 3..=5 {
            first.broadcast([ROOMS], n).await.expect("sent");
        }
        let mut last = None;
        for _ in 1..=5 {
            last = Some(next(&mut subscription).await.1);
        }
        last.expect("five")
    };
    server.kill();
    server.restart().await;
    let fresh = node(server.url(), "fresh", retention).await;
    let mut resumed = fresh.subscribe_since([ROOMS], last).await.expect("resumed");
    for n in [30, 40, 50, 60] {
        fresh.broadcast([ROOMS], n).await.expect("sent");
    }
    assert_eq!(
        within("the gap", resumed.recv()).await,
        Err(RecvError::Gap(Gap::LogLost))
    );
    for n in [30, 40, 50, 60] {
        assert_eq!(next(&mut resumed).await.0, n);
    }
}

/// An entries bound past Redis's integers is no bound: broadcasts succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retention_is_no_bound_not_a_failed_broadcast() {
    let server = RedisServer::start().await;
    let pubsub = node(server.url(), "alone", Retention::entries(u64::MAX)).await;
    let mut subscription = pubsub.subscribe(ROOMS).expect("subscribed");
    pubsub.broadcast([ROOMS], 1).await.expect("sent");
    assert_eq!(next(&mut subscription).await.0, 1);
}

/// Redis restarted without persistence while the node's reader waits out
/// its backoff: a resume on that node is told the log was lost, not that
/// entries were trimmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_before_the_reader_saw_the_lost_log_says_it_was_lost() {
    let mut server = RedisServer::start().await;
    let slow = config(server.url(), Retention::entries(1_000))
        .reconnect_backoff(Duration::from_secs(4), Duration::from_secs(4));
    let pubsub: PubSub<u64> = PubSub::builder()
        .node_name("slow")
        .redis(slow)
        .await
        .expect("connected");
    let mut subscription = pubsub.subscribe(ROOMS).expect("subscribed");
    for n in 1..=5 {
        pubsub.broadcast([ROOMS], n).await.expect("sent");
    }
    let mut positions = Vec::new();
    for _ in 1..=5 {
        positions.push(next(&mut subscription).await.1);
    }
    server.kill();
    within(
        "the node to notice",
        pubsub.wait_for_connection(Connection::Disconnected),
    )
    .await;
    server.restart().await;
    let mut resumed = pubsub
        .subscribe_since([ROOMS], positions[1])
        .await
        .expect("resumed");
    assert_eq!(
        within("the gap", resumed.recv()).await,
        Err(RecvError::Gap(Gap::LogLost))
    );
}

// ---------------------------------------------------------------------------
// The log's keys are shared with the world. Writes by
// anything else (an operator, a migration script, a stray `HSET`) never
// wedge the log, never turn `Ok`'ed broadcasts into silent losses, and
// never stop its trimming.

/// The log's two keys, named as every node of [`NAMESPACE`] names them.
fn keys() -> RedisConfig {
    RedisConfig::new("").namespace(NAMESPACE)
}

/// Node A (the publisher) and node B (the subscriber, with a subscription
/// to [`ROOMS`]) on one durable log; B has read A's first broadcast, whose
/// position is returned.
async fn publisher_and_subscriber(
    server: &RedisServer,
) -> (PubSub<u64>, PubSub<u64>, Subscription<u64>, Position) {
    let retention = Retention::entries(1_000);
    let publisher = node(server.url(), "publisher", retention.clone()).await;
    let subscriber = node(server.url(), "subscriber", retention).await;
    let mut subscription = subscriber.subscribe(ROOMS).expect("subscribed");
    publisher.broadcast([ROOMS], 0).await.expect("sent");
    let (n, first) = next(&mut subscription).await;
    assert_eq!(n, 0);
    (publisher, subscriber, subscription, first)
}

/// Ten broadcasts from A after a stray write: each returns `Ok`, and B is
/// told once that the log was lost, then receives all ten, in order, from
/// a log other than `before`'s, and nothing else.
async fn ten_broadcasts_reach_the_subscriber_after_one_gap(
    publisher: &PubSub<u64>,
    subscription: &mut Subscription<u64>,
    before: Position,
) {
    for n in 1..=10 {
        publisher
            .broadcast([ROOMS], n)
            .await
            .unwrap_or_else(|e| panic!("broadcast {n} after the stray write: {e}"));
    }
    assert_eq!(
        within("the gap", subscription.recv()).await,
        Err(RecvError::Gap(Gap::LogLost))
    );
    let mut log = None;
    for n in 1..=10 {
        let (got, position) = next(subscription).await;
        assert_eq!(got, n);
        assert_ne!(position.log(), before.log(), "a new log");
        assert_eq!(
            *log.get_or_insert(position.log()),
            position.log(),
            "one log"
        );
    }
    assert_eq!(subscription.try_recv(), Err(TryRecvError::Empty));
}

async fn hset(admin: &mut MultiplexedConnection, field: &str, value: &str) {
    let _: i64 = redis::cmd("HSET")
        .arg(keys().log_meta_key())
        .arg(field)
        .arg(value)
        .query_async(admin)
        .await
        .expect("HSET");
}

/// Appends an entry that carries the log's id and an envelope-like `m` at
/// stream id `id`, as a stray writer could.
async fn xadd_stray(admin: &mut MultiplexedConnection, id: &str, log: u16) {
    let _: String = redis::cmd("XADD")
        .arg(keys().log_key())
        .arg(id)
        .arg(&["log", &log.to_string(), "n", "1", "t", "1", "m", "{}"])
        .query_async(admin)
        .await
        .expect("XADD");
}

/// A foreign value: the meta hash's `log` set to a value no log id has (`70000`):
/// the broadcasts after it are not refused by every node, they reach B
/// (after one `Gap::LogLost`), and the foreign value is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_log_id_in_the_meta_hash_is_a_lost_log_not_ten_silent_losses() {
    let server = RedisServer::start().await;
    let (publisher, subscriber, mut subscription, first) = publisher_and_subscriber(&server).await;
    hset(&mut server.connection().await, "log", "70000").await;
    ten_broadcasts_reach_the_subscriber_after_one_gap(&publisher, &mut subscription, first).await;
    assert_eq!(
        publisher.stats().rejected + subscriber.stats().rejected,
        1,
        "the foreign value, counted by the node that found it"
    );
}

/// A foreign value: the meta hash's `seq` set to `abc`: no permanent outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_sequence_number_in_the_meta_hash_is_a_lost_log_not_an_outage() {
    let server = RedisServer::start().await;
    let (publisher, subscriber, mut subscription, first) = publisher_and_subscriber(&server).await;
    hset(&mut server.connection().await, "seq", "abc").await;
    ten_broadcasts_reach_the_subscriber_after_one_gap(&publisher, &mut subscription, first).await;
    assert_eq!(publisher.stats().rejected + subscriber.stats().rejected, 1);
}

/// A foreign entry: one past the largest sequence number, carrying the
/// log's id: skipped and counted by B, and the broadcasts after it are
/// neither refused as out of range nor lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_past_the_largest_sequence_number_is_skipped_and_the_log_goes_on() {
    let server = RedisServer::start().await;
    let (publisher, subscriber, mut subscription, first) = publisher_and_subscriber(&server).await;
    let past = format!("{}-0", Position::MAX_SEQ + 1);
    xadd_stray(&mut server.connection().await, &past, first.log()).await;
    ten_broadcasts_reach_the_subscriber_after_one_gap(&publisher, &mut subscription, first).await;
    assert!(subscriber.stats().rejected >= 1, "the stray entry counted");
}

/// A foreign entry at the largest id a stream has, after which no entry
/// can be added to that stream: broadcasts go on (in a new log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_at_the_largest_stream_id_is_skipped_and_the_log_goes_on() {
    let server = RedisServer::start().await;
    let (publisher, subscriber, mut subscription, first) = publisher_and_subscriber(&server).await;
    xadd_stray(
        &mut server.connection().await,
        &format!("{}-0", u64::MAX),
        first.log(),
    )
    .await;
    ten_broadcasts_reach_the_subscriber_after_one_gap(&publisher, &mut subscription, first).await;
    assert!(subscriber.stats().rejected >= 1, "the stray entry counted");
}

/// Foreign values: both keys replaced by values of another type (strings): the
/// log starts afresh instead of every broadcast failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_keys_of_another_type_are_a_lost_log_not_an_outage() {
    let server = RedisServer::start().await;
    let (publisher, subscriber, mut subscription, first) = publisher_and_subscriber(&server).await;
    let mut admin = server.connection().await;
    for key in [keys().log_meta_key(), keys().log_key()] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("not a log")
            .query_async(&mut admin)
            .await
            .expect("SET");
    }
    ten_broadcasts_reach_the_subscriber_after_one_gap(&publisher, &mut subscription, first).await;
    assert!(publisher.stats().rejected + subscriber.stats().rejected >= 1);
}

/// How the log's keys vanish while the nodes stay connected.
#[derive(Clone, Copy)]
enum Vanish {
    /// `DEL` of the stream and the meta hash.
    Del,
    /// `FLUSHDB`.
    FlushDb,
}

/// Keys that vanish: B has read up to entry 20 of the log when its keys vanish; A
/// then broadcasts `after` more, which start a new log at 1. B is told the
/// log was lost (within its blocking interval, without a reconnect) and
/// then receives every one of them: none sits below its cursor.
async fn a_log_that_vanishes_under_connected_nodes_is_told_then_flows(how: Vanish, after: u64) {
    let server = RedisServer::start().await;
    let (publisher, subscriber, mut subscription, _) = publisher_and_subscriber(&server).await;
    let mut last = None;
    for n in 1..20 {
        publisher.broadcast([ROOMS], n).await.expect("sent");
    }
    for n in 1..20 {
        let (got, position) = next(&mut subscription).await;
        assert_eq!(got, n);
        last = Some(position);
    }
    let last = last.expect("read");
    assert_eq!(last.seq(), 20, "B has read up to entry 20");
    let mut admin = server.connection().await;
    match how {
        Vanish::Del => {
            let _: i64 = redis::cmd("DEL")
                .arg(keys().log_key())
                .arg(keys().log_meta_key())
                .query_async(&mut admin)
                .await
                .expect("DEL");
        }
        Vanish::FlushDb => {
            let _: () = redis::cmd("FLUSHDB")
                .query_async(&mut admin)
                .await
                .expect("FLUSHDB");
        }
    }
    for n in 100..100 + after {
        publisher.broadcast([ROOMS], n).await.expect("sent");
    }
    assert_eq!(
        within("the gap", subscription.recv()).await,
        Err(RecvError::Gap(Gap::LogLost))
    );
    for (seq, n) in (1..).zip(100..100 + after) {
        let (got, position) = next(&mut subscription).await;
        assert_eq!(got, n);
        assert_ne!(position.log(), last.log(), "a new log");
        assert_eq!(position.seq(), seq, "the new log from its first entry");
    }
    assert_eq!(subscription.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(subscriber.connection(), Connection::Connected);
    assert_eq!(subscriber.stats().gaps, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_log_under_connected_nodes_is_a_lost_log_then_its_20_new_entries_flow() {
    a_log_that_vanishes_under_connected_nodes_is_told_then_flows(Vanish::Del, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_log_under_connected_nodes_is_a_lost_log_then_its_25_new_entries_flow() {
    // More new entries than B had read: the new log's entries 21.. reach
    // B's cursor, and 1..20, below it, must not be passed over.
    a_log_that_vanishes_under_connected_nodes_is_told_then_flows(Vanish::Del, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_database_under_connected_nodes_is_a_lost_log_then_the_new_entries_flow() {
    a_log_that_vanishes_under_connected_nodes_is_told_then_flows(Vanish::FlushDb, 20).await;
}

/// A foreign timestamp: with an age-bounded retention, one entry whose `t` is far in
/// the future does not stop the trimming: it is trimmed once it is the
/// oldest, and the entries after it are trimmed by age again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_dated_far_in_the_future_does_not_stop_age_trimming() {
    let server = RedisServer::start().await;
    let age = Duration::from_millis(300);
    let pubsub = node(server.url(), "alone", Retention::age(age)).await;
    let mut admin = server.connection().await;
    pubsub.broadcast([ROOMS], 1).await.expect("sent");
    // A stray entry dated in the year 5138, after the log's last entry,
    // carrying its fields (a forged entry of the log's own form).
    let last: u64 = redis::cmd("HGET")
        .arg(keys().log_meta_key())
        .arg("seq")
        .query_async(&mut admin)
        .await
        .expect("HGET");
    let log: u16 = redis::cmd("HGET")
        .arg(keys().log_meta_key())
        .arg("log")
        .query_async(&mut admin)
        .await
        .expect("HGET");
    let stray = format!("{}-0", last + 1);
    let _: String = redis::cmd("XADD")
        .arg(keys().log_key())
        .arg(&stray)
        .arg(&[
            "log",
            &log.to_string(),
            "n",
            "1",
            "t",
            "99999999999999",
            "m",
            "{}",
        ])
        .query_async(&mut admin)
        .await
        .expect("XADD");
    // Broadcasts go on; poll, with a deadline, until trimming has passed
    // the stray entry and the log holds only the last `age` of entries
    // (ten broadcasts a pause of 20 ms apart: at most 15 + a few).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut n = 2;
    loop {
        pubsub.broadcast([ROOMS], n).await.expect("sent");
        n += 1;
        let found: Vec<redis::Value> = redis::cmd("XRANGE")
            .arg(keys().log_key())
            .arg(&stray)
            .arg(&stray)
            .query_async(&mut admin)
            .await
            .expect("XRANGE");
        let still_there = !found.is_empty();
        let len: u64 = redis::cmd("XLEN")
            .arg(keys().log_key())
            .query_async(&mut admin)
            .await
            .expect("XLEN");
        if !still_there && n > 60 {
            assert!(len < 40, "{len} entries kept: trimming by age goes on");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {n} broadcasts the stray entry still stops trimming ({len} entries)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keys that vanish, the stream deleted and the meta hash kept: the log goes on
/// under its id, and a node that had read every entry gets no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_with_its_meta_hash_kept_goes_on_without_a_gap() {
    let server = RedisServer::start().await;
    let (publisher, subscriber, mut subscription, first) = publisher_and_subscriber(&server).await;
    let _: i64 = redis::cmd("DEL")
        .arg(keys().log_key())
        .query_async(&mut server.connection().await)
        .await
        .expect("DEL");
    for n in 1..=5 {
        publisher.broadcast([ROOMS], n).await.expect("sent");
    }
    for n in 1..=5 {
        let (got, position) = next(&mut subscription).await;
        assert_eq!(got, n);
        assert_eq!(position.log(), first.log(), "the same log");
        assert_eq!(position.seq(), first.seq() + n, "numbered on");
    }
    assert_eq!(subscription.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(subscriber.stats().gaps, 0);
}
