//! Durable delivery over Redis Streams, many appends at once: a node sends
//! the appends made while one of its batches is under way together, in
//! one script run. Checked against real `redis-server`s the tests start:
//! appends from several nodes and tasks at once still make one order of
//! consecutive positions that every node reads alike, a task's own
//! appends keep their order, and an append queued behind a batch that
//! Redis holds still fails within its bound, with an honest outcome. A
//! batch is one stream entry: a resume from inside one replays exactly
//! the positions after it, count retention keeps at least its bound over
//! such entries, and lost writes of one whose numbers are reused in
//! entries laid out otherwise are a lost log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::{Error, Outcome, Position, PubSub, Retention, Subscription, Topic};
use staff_pubsub_tests::redis_server::RedisServer;
use staff_pubsub_tests::within;

const NAMESPACE: &str = "batches";
const ROOMS: Topic = Topic::new("chat:rooms");
const USERS: Topic = Topic::new("chat:users");

fn config(url: impl Into<String>, timeouts: Duration) -> RedisConfig {
    RedisConfig::new(url)
        .namespace(NAMESPACE)
        .connect_timeout(timeouts)
        .response_timeout(timeouts)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .health_check_interval(Duration::from_millis(500))
        .durable(Retention::entries(100_000))
}

async fn node(url: String, name: &str, timeouts: Duration) -> PubSub<u64> {
    PubSub::builder()
        .node_name(name)
        .redis(config(url, timeouts))
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"))
}

/// The next message and its position, failing on anything else.
async fn next(subscription: &mut Subscription<u64>) -> (u64, Position) {
    match within("a message", subscription.recv_with_position()).await {
        Ok((message, Some(position))) => (*message, position),
        other => panic!("expected a message with a position, got {other:?}"),
    }
}

/// `calls` of `command` in `INFO commandstats`.
async fn calls(admin: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"))
}

const NODES: u64 = 2;
const TASKS: u64 = 8;
const EACH: u64 = 40;

/// Two nodes, eight tasks each, forty appends per task, every task waiting
/// for each append before the next: 640 entries at positions 1 to 640 of
/// one log, each once, read in the same order by a third node and by a
/// publishing node; each task's values in the order it sent them; fewer
/// script runs than entries (appends made together went together), each
/// batch one stream entry (one `XADD`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_from_many_tasks_and_nodes_are_one_order_of_consecutive_positions() {
    let server = RedisServer::start().await;
    let timeouts = Duration::from_secs(2);
    let reader = node(server.url(), "reader", timeouts).await;
    let mut on_reader = reader.subscribe(ROOMS).expect("subscribed");
    let mut publishers = Vec::new();
    for n in 0..NODES {
        publishers.push(node(server.url(), &format!("publisher-{n}"), timeouts).await);
    }
    let mut on_publisher = publishers[0].subscribe(ROOMS).expect("subscribed");
    let mut tasks = Vec::new();
    for (n, publisher) in publishers.iter().enumerate() {
        for task in 0..TASKS {
            let publisher = publisher.clone();
            let base = (n as u64 * TASKS + task) * 1_000;
            tasks.push(tokio::spawn(async move {
                for k in 0..EACH {
                    publisher
                        .broadcast([ROOMS], base + k)
                        .await
                        .unwrap_or_else(|e| panic!("broadcast {}: {e}", base + k));
                }
            }));
        }
    }
    for task in tasks {
        within("the publishing tasks", task)
            .await
            .expect("a publishing task");
    }
    let total = NODES * TASKS * EACH;
    let mut read = Vec::new();
    let mut read_by_publisher = Vec::new();
    for _ in 0..total {
        read.push(next(&mut on_reader).await);
        read_by_publisher.push(next(&mut on_publisher).await);
    }
    assert_eq!(read, read_by_publisher, "both nodes read one order");
    let log = read[0].1.log();
    let seqs: Vec<u64> = read
        .iter()
        .map(|(_, position)| {
            assert_eq!(position.log(), log, "one log");
            position.seq()
        })
        .collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "consecutive from 1");
    let values: BTreeSet<u64> = read.iter().map(|(value, _)| *value).collect();
    assert_eq!(values.len() as u64, total, "each value once");
    let mut last_of_task = BTreeMap::new();
    for (value, _) in &read {
        let (task, k) = (value / 1_000, value % 1_000);
        if let Some(previous) = last_of_task.insert(task, k) {
            assert!(previous < k, "task {task}: {k} after {previous}");
        }
    }
    assert_eq!(last_of_task.len() as u64, NODES * TASKS);
    let mut admin = server.connection().await;
    let xadds = calls(&mut admin, "xadd").await;
    let scripts = calls(&mut admin, "evalsha").await + calls(&mut admin, "eval").await;
    // One stream entry per batch: an XADD per script run, not per entry.
    assert!(
        xadds < total && xadds <= scripts,
        "{xadds} XADDs for {total} entries in {scripts} script runs: one per batch"
    );
    assert!(
        scripts < total,
        "{scripts} script runs for {total} entries: appends made together go together"
    );
}

/// Redis holds writes back for longer than a broadcast's bound: the
/// broadcast whose batch was sent and those queued behind it each fail
/// within the bound (queueing included), with an honest outcome: one
/// certainly not sent is never appended, one of unknown outcome is
/// appended at most once, once Redis lets writes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_queued_behind_a_held_batch_fail_within_their_bound() {
    let server = RedisServer::start().await;
    // Bound: connect + response timeout.
    let timeouts = Duration::from_millis(500);
    let bound = 2 * timeouts;
    let publisher = node(server.url(), "publisher", timeouts).await;
    let reader = node(server.url(), "reader", Duration::from_secs(2)).await;
    let mut on_reader = reader.subscribe(ROOMS).expect("subscribed");
    publisher.broadcast([ROOMS], 0).await.expect("broadcast 0");
    assert_eq!(next(&mut on_reader).await.0, 0);
    let mut admin = server.connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "3000", "WRITE"])
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    let timed = |n: u64| {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = publisher.broadcast([ROOMS], n).await;
            (n, result, started.elapsed())
        })
    };
    let first = timed(1);
    // The first append's batch is under way (sent, held by the pause)
    // once Redis lists a client blocked in a script run.
    within("the first batch to reach Redis", async {
        loop {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut admin)
                .await
                .expect("CLIENT LIST");
            let held = clients.lines().any(|line| {
                line.contains("cmd=evalsha") && line.split_whitespace().any(|f| f == "flags=b")
            });
            if held {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut tasks = vec![first];
    tasks.extend((2..6).map(timed));
    let mut unknown = BTreeSet::new();
    for task in tasks {
        let (n, result, took) = within("a broadcast", task).await.expect("task");
        // Slack for a loaded machine; a queued append that waited for the
        // held batch and then for its own would take twice the bound.
        assert!(
            took < bound + bound / 2,
            "broadcast {n} took {took:?}, bound {bound:?}"
        );
        match result {
            Err(Error::Transport(error)) if error.outcome() == Outcome::Unknown => {
                unknown.insert(n);
            }
            Err(Error::Transport(error)) if error.outcome() == Outcome::NotSent => {}
            other => panic!("broadcast {n} while Redis held writes: {other:?}"),
        }
    }
    assert!(unknown.contains(&1), "the held batch's outcome is unknown");
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .expect("CLIENT UNPAUSE");
    within("a broadcast after the pause", async {
        while publisher.broadcast([ROOMS], 6).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut after = Vec::new();
    loop {
        let (value, _) = next(&mut on_reader).await;
        after.push(value);
        if value == 6 {
            break;
        }
    }
    let once: BTreeSet<u64> = after.iter().copied().collect();
    assert_eq!(once.len(), after.len(), "each at most once: {after:?}");
    assert!(
        once.iter().all(|n| *n == 6 || unknown.contains(n)),
        "only broadcasts of unknown outcome, and the one after: {after:?}"
    );
}

/// `count` broadcasts from `publisher`, all at once (so that they go in
/// batches of many), each waited for; values `base..base + count`.
async fn broadcast_at_once(publisher: &PubSub<u64>, base: u64, count: u64) {
    let tasks: Vec<_> = (base..base + count)
        .map(|n| {
            let publisher = publisher.clone();
            tokio::spawn(async move { publisher.broadcast([ROOMS], n).await })
        })
        .collect();
    for task in tasks {
        within("a broadcast", task)
            .await
            .expect("a broadcasting task")
            .expect("sent");
    }
}

/// A stream entry as `XRANGE` returns it: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// The log's stream entries: (first sequence number, messages held).
async fn stream_entries(admin: &mut MultiplexedConnection) -> Vec<(u64, usize)> {
    let stream = RedisConfig::new("").namespace(NAMESPACE).log_key();
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(&[&stream, "-", "+"])
        .query_async(admin)
        .await
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(id, fields)| {
            let first = id
                .strip_suffix("-0")
                .and_then(|seq| seq.parse().ok())
                .expect("an id <seq>-0");
            (first, fields.iter().filter(|(name, _)| name == "m").count())
        })
        .collect()
}

/// Broadcasts made at once go in stream entries of many messages; a
/// resume from a position inside such an entry (its first, and one in its
/// middle) replays exactly the positions after it, in the order the log
/// holds them, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_inside_a_batch_entry_replays_exactly_the_positions_after_it() {
    let server = RedisServer::start().await;
    let publisher = node(server.url(), "publisher", Duration::from_secs(2)).await;
    let consumer = node(server.url(), "consumer", Duration::from_secs(2)).await;
    let mut live = consumer.subscribe(ROOMS).expect("subscribed");
    const TOTAL: u64 = 300;
    broadcast_at_once(&publisher, 0, TOTAL).await;
    let mut read = Vec::new();
    for _ in 0..TOTAL {
        read.push(next(&mut live).await);
    }
    let seqs: Vec<u64> = read.iter().map(|(_, position)| position.seq()).collect();
    assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>(), "consecutive from 1");
    let mut admin = server.connection().await;
    let entries = stream_entries(&mut admin).await;
    assert_eq!(
        entries.iter().map(|(_, count)| *count as u64).sum::<u64>(),
        TOTAL,
        "the entries hold every message once"
    );
    let &(first, count) = entries
        .iter()
        .find(|(_, count)| *count >= 3)
        .expect("an entry of three messages or more (the broadcasts were made at once)");
    let log = read[0].1.log();
    for after in [first, first + count as u64 / 2] {
        let from = Position::new(log, after).expect("a position");
        let mut resumed = consumer
            .subscribe_since([ROOMS], from)
            .await
            .expect("resumed");
        let expected: Vec<(u64, Position)> = read[after as usize..].to_vec();
        let mut replayed = Vec::new();
        for _ in 0..expected.len() {
            replayed.push(next(&mut resumed).await);
        }
        assert_eq!(replayed, expected, "after {after}: the positions after it");
        assert!(resumed.try_recv().is_err(), "nothing more");
    }
}

/// With a bound on positions, trimming drops whole entries and keeps the
/// one holding the oldest position to keep: at least the bound, at most
/// a batch's more. A resume from a trimmed position is one gap naming
/// the trimmed range exactly, then every position kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_retention_keeps_at_least_the_bound_and_a_resume_names_the_trimmed_range() {
    let server = RedisServer::start().await;
    const MAX: u64 = 50;
    let retention = Retention::entries(MAX).max_replay(10_000);
    let config = |url: String| config(url, Duration::from_secs(2)).durable(retention.clone());
    let publisher = PubSub::builder()
        .node_name("publisher")
        .redis(config(server.url()))
        .await
        .expect("publisher");
    const TOTAL: u64 = 400;
    broadcast_at_once(&publisher, 0, TOTAL).await;
    // A mark on another topic, at position TOTAL + 1: once the node has
    // read it, its reader is past every entry, and the resume below is all
    // replay (entries the reader read before they were trimmed would
    // otherwise come live, after the replay's gap).
    let mut mark = publisher.subscribe(USERS).expect("subscribed");
    publisher.broadcast([USERS], u64::MAX).await.expect("sent");
    loop {
        match within("the mark", mark.recv()).await {
            Ok(value) if *value == u64::MAX => break,
            // The reader's own gap, if it fell behind the trimming.
            Err(staff_pubsub::RecvError::Gap(_)) => {}
            other => panic!("expected the mark, got {other:?}"),
        }
    }
    let mut admin = server.connection().await;
    let log: u16 = redis::cmd("HGET")
        .arg(RedisConfig::new("").namespace(NAMESPACE).log_meta_key())
        .arg("log")
        .query_async(&mut admin)
        .await
        .expect("HGET log");
    let entries = stream_entries(&mut admin).await;
    let (oldest, _) = entries[0];
    let kept: u64 = entries.iter().map(|(_, count)| *count as u64).sum();
    assert_eq!(
        oldest + kept - 1,
        TOTAL + 1,
        "the kept entries run to the end"
    );
    assert!(
        (MAX..MAX + 128).contains(&kept),
        "{kept} positions kept with a bound of {MAX}"
    );
    assert!(
        entries.len() < kept as usize,
        "entries of many messages: {entries:?}"
    );
    let mut resumed = publisher
        .subscribe_since([ROOMS], Position::new(log, 1).expect("a position"))
        .await
        .expect("resumed");
    match within("the gap", resumed.recv()).await {
        Err(staff_pubsub::RecvError::Gap(staff_pubsub::Gap::Trimmed { first, missing })) => {
            assert_eq!(first.seq(), 2);
            assert_eq!(missing, oldest - 2, "exactly the trimmed positions");
        }
        other => panic!("expected a trimmed gap, got {other:?}"),
    }
    let mut values = BTreeSet::new();
    for seq in oldest..=TOTAL {
        let (value, position) = next(&mut resumed).await;
        assert_eq!(position, Position::new(log, seq).expect("a position"));
        assert!(values.insert(value), "{value} once");
    }
    assert!(
        resumed.try_recv().is_err(),
        "nothing more (the mark is not on ROOMS)"
    );
}

/// Redis loses its last writes, an entry of several messages among them
/// (it comes back from an older snapshot), and another node appends again
/// one message at a time, reusing the lost numbers in entries laid out
/// otherwise, before the subscriber's reader reconnects: the subscriber
/// is told the log was lost (the entry now holding its last position is
/// not the one it read), and what follows comes under a new log id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_last_writes_of_a_batch_entry_reused_one_by_one_are_a_lost_log() {
    let mut server = RedisServer::start().await;
    let proxy = staff_pubsub_tests::proxy::Proxy::start(server.port()).await;
    let timeouts = Duration::from_secs(2);
    let publisher = node(server.url(), "publisher", timeouts).await;
    let subscriber = node(proxy.url("redis"), "subscriber", timeouts).await;
    let mut subscription = subscriber.subscribe(ROOMS).expect("subscribed");
    let mut admin = server.connection().await;
    publisher.broadcast([ROOMS], 0).await.expect("sent");
    // What Redis will come back with: position 1.
    let _: redis::Value = redis::cmd("SAVE")
        .query_async(&mut admin)
        .await
        .expect("SAVE");
    // Rounds of 40 broadcasts at once until the log's last entry holds
    // several (how appends group is up to timing: a round's last may go
    // alone).
    let mut lost = 0;
    let mut before = None;
    let mut last_first = 0;
    for round in 0..10 {
        broadcast_at_once(&publisher, 1 + lost, 40).await;
        lost += 40;
        for _ in 0..40 + u64::from(round == 0) {
            before = Some(next(&mut subscription).await.1);
        }
        let entries = stream_entries(&mut admin).await;
        let &(first, count) = entries.last().expect("entries");
        if count > 1 {
            last_first = first;
            break;
        }
    }
    assert!(last_first > 0, "a last entry of several messages");
    let before = before.expect("read");
    assert_eq!(before.seq(), lost + 1);
    proxy.block();
    proxy.cut();
    within(
        "the subscriber to notice",
        subscriber.wait_for_connection(staff_pubsub::Connection::Disconnected),
    )
    .await;
    drop(publisher);
    server.kill();
    server.restart().await;
    let late = node(server.url(), "late", timeouts).await;
    for n in 0..lost {
        late.broadcast([ROOMS], 1_000 + n).await.expect("sent");
    }
    // The lost numbers reused, one entry each: the log ends where it did,
    // and its last position is in an entry that starts elsewhere.
    let mut admin = server.connection().await;
    let entries = stream_entries(&mut admin).await;
    assert_eq!(entries.last(), Some(&(lost + 1, 1)));
    assert_ne!(last_first, lost + 1, "the lost entry started elsewhere");
    proxy.unblock();
    within(
        "the subscriber to reconnect",
        subscriber.wait_for_connection(staff_pubsub::Connection::Connected),
    )
    .await;
    assert_eq!(
        within("the gap", subscription.recv()).await,
        Err(staff_pubsub::RecvError::Gap(staff_pubsub::Gap::LogLost))
    );
    late.broadcast([ROOMS], 60).await.expect("sent");
    let (n, after) = next(&mut subscription).await;
    assert_eq!(n, 60);
    assert_ne!(after.log(), before.log(), "a renewed log id");
}
