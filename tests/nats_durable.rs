//! Durable delivery over NATS JetStream, against real
//! `nats-server`s with JetStream on that each test starts on free loopback
//! ports, with their store in a temporary directory (see
//! `support/nats_server.rs`). A node's connection is cut through a loopback
//! proxy (`support/proxy.rs`): nats-server 2.9 has no client kick API.
//! Every wait is bounded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use staff_pubsub::nats::NatsConfig;
use staff_pubsub::staff::{self, Team, TeamEvent};
use staff_pubsub::{
    Connection, Error, Gap, Outcome, Position, PubSub, RecvError, Retention, Subscription, Topic,
    TryRecvError, Uuid,
};
use staff_pubsub_tests::nats_server::NatsServer;
use staff_pubsub_tests::proxy::Proxy;
use staff_pubsub_tests::within;

type Message = staff::Message;

const NAMESPACE: &str = "durable";

/// The number of the message that ends a collection.
const FENCE: u64 = u64::MAX;

/// How long a test waits for a message that comes after an outage (a
/// reconnect with the client's backoff, a server restart).
const OUTAGE: Duration = Duration::from_secs(30);

fn config(url: &str, retention: Retention) -> NatsConfig {
    NatsConfig::new(url)
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .durable(retention)
}

async fn node(url: &str, name: &str, retention: Retention) -> PubSub<Message> {
    staff::builder()
        .node_name(name)
        .capacity(20_000)
        .nats(config(url, retention))
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"))
}

/// A message that carries its number (in the team's name).
fn numbered(n: u64) -> Message {
    Message::Team(
        TeamEvent::Created,
        Team {
            uuid: Uuid::from_u128(u128::from(n)),
            name: Some(n.to_string()),
            department_uuid: None,
        },
    )
}

fn number(message: &Message) -> u64 {
    match message {
        Message::Team(_, team) => team
            .name
            .as_deref()
            .and_then(|name| name.parse().ok())
            .expect("a numbered message"),
        other => panic!("not a numbered message: {other:?}"),
    }
}

fn person(n: u128) -> Topic {
    staff::topic_person(Uuid::from_u128(n))
}

/// What a broadcast came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Ok,
    /// Failed with `Outcome::Unknown`: it may or may not be delivered.
    Unknown,
}

/// Broadcasts message `n` to `topics`, again after a `NotSent` failure
/// once the node is connected (a server restarting loads its streams
/// first: a publish meanwhile fails at once), for at most [`OUTAGE`].
async fn publish(node: &PubSub<Message>, topics: &[Topic], n: u64) -> Sent {
    let deadline = Instant::now() + OUTAGE;
    loop {
        match node.broadcast(topics.to_vec(), numbered(n)).await {
            Ok(()) => return Sent::Ok,
            Err(Error::Transport(error)) if error.outcome() == Outcome::Unknown => {
                return Sent::Unknown
            }
            Err(Error::Transport(error)) if error.outcome() == Outcome::NotSent => {
                assert!(
                    Instant::now() < deadline,
                    "broadcast {n} not sent for {OUTAGE:?}: {error}"
                );
                within(
                    "the publisher to reconnect",
                    node.wait_for_connection(Connection::Connected),
                )
                .await;
                // Paced, bounded by the deadline above.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("broadcast {n}: {other}"),
        }
    }
}

/// Broadcasts message `n` until it is sent (`Ok`).
async fn publish_ok(node: &PubSub<Message>, topics: &[Topic], n: u64) {
    let deadline = Instant::now() + OUTAGE;
    while publish(node, topics, n).await != Sent::Ok {
        assert!(
            Instant::now() < deadline,
            "broadcast {n} never acknowledged"
        );
    }
}

/// The next item of `subscription`, within `wait`.
async fn next(
    subscription: &mut Subscription<Message>,
    wait: Duration,
) -> Result<(u64, Position), RecvError> {
    let item = tokio::time::timeout(wait, subscription.recv_with_position())
        .await
        .unwrap_or_else(|_| panic!("nothing received within {wait:?}"));
    item.map(|(message, position)| {
        (
            number(&message),
            position.expect("a durable delivery carries its position"),
        )
    })
}

/// Receives until the fence: the numbers and positions, and every error.
async fn collect(
    mut subscription: Subscription<Message>,
) -> (Vec<(u64, Position)>, Vec<RecvError>) {
    let mut received = Vec::new();
    let mut errors = Vec::new();
    loop {
        match next(&mut subscription, OUTAGE).await {
            Ok((FENCE, _)) => return (received, errors),
            Ok(item) => received.push(item),
            Err(RecvError::Closed) => panic!("the server closed"),
            Err(error) => errors.push(error),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_broadcast_arrives_once_in_order_through_cuts_and_a_server_restart() {
    let mut server = NatsServer::start_jetstream().await;
    let proxy = Proxy::start(server.port()).await;
    let retention = Retention::entries(100_000);
    let a = node(&server.url(), "a", retention.clone()).await;
    let b = node(&proxy.url("nats"), "b", retention).await;
    let topics = [staff::topic_teams()];
    let subscription = b.subscribe(topics[0]).unwrap();
    let collector = tokio::spawn(collect(subscription));

    let mut ok = Vec::new();
    let mut unknown = Vec::new();
    let mut cut = 0;
    for n in 0..10_000 {
        match n {
            2_000 | 7_000 => cut += proxy.cut(),
            5_000 => server.restart().await,
            _ => {}
        }
        match publish(&a, &topics, n).await {
            Sent::Ok => ok.push(n),
            Sent::Unknown => unknown.push(n),
        }
    }
    assert!(
        cut >= 2,
        "the subscriber's connection was cut twice ({cut})"
    );
    publish_ok(&a, &topics, FENCE).await;
    let (received, errors) = within("the fence", collector).await.unwrap();

    assert!(errors.is_empty(), "no gap, no lag: {errors:?}");
    let numbers: Vec<u64> = received.iter().map(|(n, _)| *n).collect();
    assert!(
        numbers.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, each once"
    );
    let got: HashSet<u64> = numbers.iter().copied().collect();
    let missing: Vec<u64> = ok.iter().copied().filter(|n| !got.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not received: {missing:?}"
    );
    let unknown_received = unknown.iter().filter(|n| got.contains(n)).count();
    assert_eq!(
        numbers.len(),
        ok.len() + unknown_received,
        "nothing but what was sent"
    );
    assert!(
        received
            .windows(2)
            .all(|pair| pair[0].1.entries_until(pair[1].1) == Some(1)),
        "one log, consecutive positions"
    );
    assert_eq!(b.stats().gaps, 0);
    assert_eq!(ok.len() + unknown.len(), 10_000);
    eprintln!(
        "10,000 broadcasts: {} acknowledged, {} unknown ({} of them received), {cut} connections cut, one server restart",
        ok.len(),
        unknown.len(),
        unknown_received
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retention_is_one_trimmed_gap_then_delivery() {
    let server = NatsServer::start_jetstream().await;
    let proxy = Proxy::start(server.port()).await;
    let retention = Retention::entries(100);
    let a = node(&server.url(), "a", retention.clone()).await;
    let b = node(&proxy.url("nats"), "b", retention).await;
    let topics = [staff::topic_teams()];
    let mut subscription = b.subscribe(topics[0]).unwrap();
    for n in 0..5 {
        publish_ok(&a, &topics, n).await;
    }
    let mut last = None;
    for n in 0..5 {
        let (got, position) = next(&mut subscription, OUTAGE).await.unwrap();
        assert_eq!(got, n);
        last = Some(position);
    }
    let last = last.unwrap();
    assert_eq!(last.seq(), 5, "a fresh stream, five entries");

    proxy.block();
    assert!(proxy.cut() >= 1);
    within(
        "b to notice",
        b.wait_for_connection(Connection::Disconnected),
    )
    .await;
    for n in 5..1_005 {
        assert_eq!(publish(&a, &topics, n).await, Sent::Ok, "a is connected");
    }
    proxy.unblock();

    // 1,005 entries, the last 100 kept: 6..=905 are gone.
    match next(&mut subscription, OUTAGE).await {
        Err(RecvError::Gap(gap)) => assert_eq!(
            gap,
            Gap::Trimmed {
                first: last.next().unwrap(),
                missing: 900
            }
        ),
        other => panic!("expected the trimmed gap, got {other:?}"),
    }
    for n in 905..1_005 {
        let (got, position) = next(&mut subscription, OUTAGE).await.unwrap();
        assert_eq!((got, position.seq()), (n, n + 1));
    }
    for n in 1_005..1_010 {
        publish_ok(&a, &topics, n).await;
        let (got, position) = next(&mut subscription, OUTAGE).await.unwrap();
        assert_eq!((got, position.seq()), (n, n + 1));
    }
    assert_eq!(b.stats().gaps, 1, "exactly one gap");
    assert!(matches!(subscription.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stream_is_a_log_lost_gap_then_the_new_log_flows() {
    let mut server = NatsServer::start_jetstream().await;
    let retention = Retention::entries(1_000);
    let a = node(&server.url(), "a", retention.clone()).await;
    let b = node(&server.url(), "b", retention).await;
    let topics = [staff::topic_teams()];
    let mut subscription = b.subscribe(topics[0]).unwrap();
    publish_ok(&a, &topics, 1).await;
    let (_, first) = next(&mut subscription, OUTAGE).await.unwrap();

    // The server comes back without its store.
    server.restart_with_fresh_store().await;
    match next(&mut subscription, OUTAGE).await {
        Err(RecvError::Gap(Gap::LogLost)) => {}
        other => panic!("expected the log lost, got {other:?}"),
    }
    publish_ok(&a, &topics, 2).await;
    let (got, second) = next(&mut subscription, OUTAGE).await.unwrap();
    assert_eq!(got, 2);
    assert_ne!(second.log(), first.log(), "another log");
    assert_eq!(b.log_position().map(|p| p.log()), Some(second.log()));

    // The stream is deleted while the nodes are connected.
    server
        .publish_raw(
            &format!("$JS.API.STREAM.DELETE.staff-pubsub-{NAMESPACE}"),
            b"",
        )
        .await;
    match next(&mut subscription, OUTAGE).await {
        Err(RecvError::Gap(Gap::LogLost)) => {}
        other => panic!("expected the log lost, got {other:?}"),
    }
    publish_ok(&a, &topics, 3).await;
    let (got, third) = next(&mut subscription, OUTAGE).await.unwrap();
    assert_eq!(got, 3);
    assert_ne!(third.log(), second.log());
    assert_eq!(b.stats().gaps, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_replays_exactly_what_was_missed_for_its_topics_then_continues_live() {
    let server = NatsServer::start_jetstream().await;
    let retention = Retention::entries(10_000);
    let a = node(&server.url(), "a", retention.clone()).await;
    let b = node(&server.url(), "b", retention).await;
    let (x, y, fence_topic) = (person(1), person(2), person(3));
    let mut fence = b.subscribe(fence_topic).unwrap();
    let mut first = b.subscribe(x).unwrap();
    for n in 0..3 {
        publish_ok(&a, &[x], n).await;
    }
    let mut after = None;
    for n in 0..3 {
        let (got, position) = next(&mut first, OUTAGE).await.unwrap();
        assert_eq!(got, n);
        after = Some(position);
    }
    let after = after.unwrap();
    drop(first);

    // Missed: to x, to y, to both.
    let mut expected = Vec::new();
    for n in 10..20 {
        let topic = if n % 2 == 0 { x } else { y };
        publish_ok(&a, &[topic], n).await;
        if topic == x {
            expected.push(n);
        }
    }
    publish_ok(&a, &[x, y], 20).await;
    expected.push(20);
    publish_ok(&a, &[fence_topic], 21).await;
    assert_eq!(
        next(&mut fence, OUTAGE).await.unwrap().0,
        21,
        "b read it all"
    );

    // Resumed while another node keeps broadcasting to x.
    let publisher = tokio::spawn({
        let a = a.clone();
        async move {
            for n in 30..80 {
                publish_ok(&a, &[x], n).await;
            }
        }
    });
    let mut resumed = b.subscribe_since([x], after).await.unwrap();
    within("the publisher", publisher).await.unwrap();
    expected.extend(30..80);
    let mut got = Vec::new();
    let mut positions = Vec::new();
    while got.len() < expected.len() {
        let (n, position) = next(&mut resumed, OUTAGE).await.unwrap();
        got.push(n);
        positions.push(position);
    }
    assert_eq!(
        got, expected,
        "exactly what was missed, then live, once each"
    );
    assert!(positions
        .windows(2)
        .all(|pair| pair[0].seq() < pair[1].seq()));
    assert!(positions[0].seq() > after.seq());
    publish_ok(&a, &[x], 100).await;
    assert_eq!(
        next(&mut resumed, OUTAGE).await.unwrap().0,
        100,
        "nothing else"
    );

    // A resume on both topics: the entry to both comes twice (a copy per
    // reached topic, as live), at one position.
    let mut both = b.subscribe_since([x, y], after).await.unwrap();
    let mut replayed = Vec::new();
    for _ in 10..22 {
        replayed.push(next(&mut both, OUTAGE).await.unwrap());
    }
    let numbers: Vec<u64> = replayed.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 20]);
    assert_eq!(replayed[10].1, replayed[11].1);

    // A node that replays at most 20 entries: too far behind.
    let c = node(
        &server.url(),
        "c",
        Retention::entries(10_000).max_replay(20),
    )
    .await;
    let head = c.log_position().expect("c starts at the log's end");
    let mut limited = c.subscribe_since([x], after).await.unwrap();
    match next(&mut limited, OUTAGE).await {
        Err(RecvError::Gap(gap)) => assert_eq!(
            gap,
            Gap::ReplayLimit {
                missing: after.entries_until(head).unwrap()
            }
        ),
        other => panic!("expected the replay limit, got {other:?}"),
    }
    publish_ok(&a, &[x], 101).await;
    assert_eq!(
        next(&mut limited, OUTAGE).await.unwrap().0,
        101,
        "then live"
    );
    // Within the limit, the same node replays.
    let near = positions[positions.len() - 2]; // of 78
    let mut replayed = c.subscribe_since([x], near).await.unwrap();
    for n in [79, 100, 101] {
        assert_eq!(next(&mut replayed, OUTAGE).await.unwrap().0, n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_past_the_retention_says_what_was_trimmed_and_replays_the_rest() {
    let server = NatsServer::start_jetstream().await;
    let retention = Retention::entries(50);
    let a = node(&server.url(), "a", retention.clone()).await;
    let b = node(&server.url(), "b", retention).await;
    let x = person(1);
    let mut watch = b.subscribe(x).unwrap();
    publish_ok(&a, &[x], 0).await;
    let (_, after) = next(&mut watch, OUTAGE).await.unwrap();
    for n in 1..=80 {
        publish_ok(&a, &[x], n).await;
    }
    for n in 1..=80 {
        assert_eq!(next(&mut watch, OUTAGE).await.unwrap().0, n);
    }
    // 81 entries, the last 50 kept: 2..=31 are gone.
    let mut resumed = b.subscribe_since([x], after).await.unwrap();
    match next(&mut resumed, OUTAGE).await {
        Err(RecvError::Gap(gap)) => assert_eq!(
            gap,
            Gap::Trimmed {
                first: after.next().unwrap(),
                missing: 30
            }
        ),
        other => panic!("expected the trimmed gap, got {other:?}"),
    }
    for n in 31..=80 {
        assert_eq!(next(&mut resumed, OUTAGE).await.unwrap().0, n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_are_consecutive_and_the_sender_receives_its_own_broadcasts_from_the_log() {
    let server = NatsServer::start_jetstream().await;
    let retention = Retention::entries(1_000);
    let a = node(&server.url(), "a", retention.clone()).await;
    let b = node(&server.url(), "b", retention).await;
    let topics = [person(1), person(2), person(3), person(4)];
    let mut on_a = a.subscribe_many(topics).unwrap();
    let mut on_b = b.subscribe_many(topics).unwrap();

    // Not dispatched when made: from the log, once acknowledged.
    let sending = a.broadcast([topics[0]], numbered(0));
    assert!(matches!(on_a.try_recv(), Err(TryRecvError::Empty)));
    sending.await.unwrap();
    let (n, first) = next(&mut on_a, OUTAGE).await.unwrap();
    assert_eq!(n, 0);
    assert_eq!(next(&mut on_b, OUTAGE).await.unwrap(), (0, first));

    for n in 1..40 {
        let topic = topics[usize::try_from(n % 4).unwrap()];
        a.broadcast([topic], numbered(n)).await.unwrap();
    }
    for subscription in [&mut on_a, &mut on_b] {
        for n in 1..40 {
            let (got, position) = next(subscription, OUTAGE).await.unwrap();
            assert_eq!(got, n);
            assert_eq!(first.entries_until(position), Some(n), "consecutive");
        }
    }
    let last = Position::new(first.log(), first.seq() + 39).unwrap();
    assert_eq!(a.log_position(), Some(last));
    assert_eq!(b.log_position(), Some(last));

    // One entry to two of the topics: a copy per reached topic, one position.
    a.broadcast([topics[0], topics[1]], numbered(40))
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            next(&mut on_a, OUTAGE).await.unwrap(),
            (40, last.next().unwrap())
        );
    }
    assert!(matches!(on_a.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_a_position_the_stream_never_reached_is_a_lost_log_not_a_skip() {
    let server = NatsServer::start_jetstream().await;
    let a = node(&server.url(), "a", Retention::entries(1_000)).await;
    let x = person(1);
    let mut watch = a.subscribe(x).unwrap();
    publish_ok(&a, &[x], 0).await;
    let (_, at) = next(&mut watch, OUTAGE).await.unwrap();
    // A position past the stream's end (as a consumer of a stream that
    // lost its last entries holds): the engine says its log ends before it.
    let beyond = Position::new(at.log(), at.seq() + 100).unwrap();
    let mut resumed = a.subscribe_since([x], beyond).await.unwrap();
    publish_ok(&a, &[x], 1).await;
    match next(&mut resumed, OUTAGE).await {
        Err(RecvError::Gap(Gap::LogLost)) => {}
        other => panic!("expected a lost log, got {other:?}"),
    }
    // Nothing after it is skipped.
    assert_eq!(next(&mut resumed, OUTAGE).await.unwrap().0, 1);
}
