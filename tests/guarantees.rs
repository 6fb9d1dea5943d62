//! One contract, every mode: each guarantee of the README's
//! "Guarantees in every mode" table is one async function below, written
//! once against the mode fixture (`support/modes.rs`), and run in each of
//! the seven modes as its own `#[tokio::test]`, named
//! `<guarantee>::<mode>` (`cargo test --test guarantees local_delivery::`
//! runs one row, `-- nats_durable` one column). A cell that does not apply
//! says why, in the guarantee's `not_applicable` (printed when the cell
//! runs) and in the README.
//!
//! Every wait is bounded (`within`); "nothing else arrived" is checked
//! after a fence: a later broadcast from the same sender to the same
//! topics, which every mode delivers after the ones before it (order per
//! topic from one sender is itself a guarantee, `order_per_topic`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use staff_pubsub::staff::{self, Team, TeamEvent};
use staff_pubsub::{
    Connection, Error, Gap, Outcome, Position, PubSub, RecvError, Subscription, Topic,
    TryRecvError, Uuid,
};
use staff_pubsub_tests::modes::{Cluster, Mode};
use staff_pubsub_tests::{within, WAIT};

type Message = staff::Message;

/// The number of the message that ends a collection.
const FENCE: u64 = 1_000_000;

/// The topic most guarantees broadcast to.
fn topic() -> Topic {
    staff::topic_team(Uuid::from_u128(7))
}

/// Another topic, of the same subscriptions.
fn other_topic() -> Topic {
    staff::topic_person(Uuid::from_u128(8))
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

fn number(message: &Arc<Message>) -> u64 {
    match &**message {
        Message::Team(_, team) => team
            .name
            .as_deref()
            .and_then(|name| name.parse().ok())
            .expect("a numbered message"),
        other => panic!("not a numbered message: {other:?}"),
    }
}

/// What a subscription received, in a form to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Msg(u64),
    Gap(Gap),
    Lagged(u64),
    Closed,
}
use Item::Msg;

fn item(received: Result<Arc<Message>, RecvError>) -> Item {
    match received {
        Ok(message) => Msg(number(&message)),
        Err(RecvError::Gap(gap)) => Item::Gap(gap),
        Err(RecvError::Lagged(n)) => Item::Lagged(n),
        Err(RecvError::Closed) => Item::Closed,
        Err(other) => panic!("unexpected {other:?}"),
    }
}

/// The next item, within the test wait.
async fn next(subscription: &mut Subscription<Message>) -> Item {
    item(within("the next message", subscription.recv()).await)
}

/// What is queued now: a message's number, or `None` if nothing is.
fn queued(subscription: &mut Subscription<Message>) -> Option<u64> {
    match subscription.try_recv() {
        Ok(message) => Some(number(&message)),
        Err(TryRecvError::Empty) => None,
        Err(other) => panic!("unexpected {other:?}"),
    }
}

/// Everything `subscription` receives before `fences` copies of the fence.
async fn until_fence(subscription: &mut Subscription<Message>, fences: usize) -> Vec<Item> {
    let mut items = Vec::new();
    let mut seen = 0;
    while seen < fences {
        match next(subscription).await {
            Msg(FENCE) => seen += 1,
            other => items.push(other),
        }
    }
    items
}

/// The messages and their positions `subscription` receives before one
/// copy of the fence.
async fn positions_until_fence(
    subscription: &mut Subscription<Message>,
) -> Vec<(u64, Option<Position>)> {
    let mut items = Vec::new();
    loop {
        let (message, position) = within("the next message", subscription.recv_with_position())
            .await
            .unwrap_or_else(|e| panic!("expected a message, got {e:?} after {items:?}"));
        match number(&message) {
            FENCE => return items,
            n => items.push((n, position)),
        }
    }
}

/// Broadcasts the fence from `node` to `topics`.
async fn fence(node: &PubSub<Message>, topics: &[Topic]) {
    within(
        "the fence",
        node.broadcast(topics.to_vec(), numbered(FENCE)),
    )
    .await
    .unwrap_or_else(|e| panic!("the fence from {}: {e}", node.node_name()));
}

/// Broadcasts a fence until the engine takes it, again after a failure
/// (an engine that just restarted may refuse for a moment: JetStream loads
/// its streams first; a connection made before the restart may fail its
/// first request with `Outcome::Unknown`), for at most the test wait. Only
/// for fences: a retried `Unknown` may deliver the fence twice, and what
/// comes after the first fence is not read.
async fn broadcast_retrying(node: &PubSub<Message>, topics: &[Topic], n: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        match node.broadcast(topics.to_vec(), numbered(n)).await {
            Ok(()) => return,
            Err(Error::Transport(_)) if Instant::now() < deadline => {
                // Paced, bounded by the deadline.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("broadcast {n}: {other}"),
        }
    }
}

/// Polls `condition` until it holds, for at most the test wait; the caller
/// then asserts it, so that a failure shows the values.
async fn settle(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `ready(Ok(()))` at the first poll.
fn ready_ok<F: std::future::Future<Output = Result<(), Error>>>(future: F) -> bool {
    matches!(future.now_or_never(), Some(Ok(())))
}

/// One guarantee, run in every mode: a module named after it with one
/// `#[tokio::test]` per mode. `nodes` is how many nodes the networked modes
/// get (in process has one); `not_applicable` says, for a mode, why the
/// guarantee does not apply there (the README's "n/a" cell).
macro_rules! guarantee {
    ($name:ident, nodes: $nodes:expr, not_applicable: $na:expr) => {
        mod $name {
            use super::*;

            /// Why the guarantee does not apply in `mode`, if it does not.
            pub(super) fn not_applicable(mode: Mode) -> Option<&'static str> {
                let why: NotApplicable = $na;
                why(mode)
            }

            async fn cell(mode: Mode) {
                if let Some(why) = not_applicable(mode) {
                    println!("{} in {mode:?}: n/a: {why}", stringify!($name));
                    return;
                }
                super::$name(Cluster::start(mode, $nodes).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_process() {
                cell(Mode::InProcess).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_live() {
                cell(Mode::RedisLive).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_durable() {
                cell(Mode::RedisDurable).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats_live() {
                cell(Mode::NatsLive).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats_durable() {
                cell(Mode::NatsDurable).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn phoenix() {
                cell(Mode::Phoenix).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn linked() {
                cell(Mode::Linked).await;
            }
        }
    };
}

/// Why a guarantee does not apply in a mode (`None`: it does).
type NotApplicable = fn(Mode) -> Option<&'static str>;

fn applies_everywhere(_: Mode) -> Option<&'static str> {
    None
}

fn needs_other_nodes(mode: Mode) -> Option<&'static str> {
    (mode == Mode::InProcess).then_some("one node, no transport: there are no other nodes")
}

fn needs_an_engine(mode: Mode) -> Option<&'static str> {
    (mode == Mode::InProcess)
        .then_some("no engine: a broadcast never fails, its future is ready at once with Ok")
}

fn needs_a_link(mode: Mode) -> Option<&'static str> {
    (mode == Mode::InProcess).then_some("no link to other nodes to break")
}

/// Every guarantee of the table, with its `not_applicable` (the README
/// check below reads the table against it).
const GUARANTEES: &[(&str, NotApplicable)] = &[
    ("local_delivery", local_delivery::not_applicable),
    ("other_nodes_once", other_nodes_once::not_applicable),
    (
        "one_copy_per_reached_topic",
        one_copy_per_reached_topic::not_applicable,
    ),
    (
        "a_repeated_topic_is_one_topic",
        a_repeated_topic_is_one_topic::not_applicable,
    ),
    ("order_per_topic", order_per_topic::not_applicable),
    ("order_across_topics", order_across_topics::not_applicable),
    (
        "ok_means_the_engine_has_it",
        ok_means_the_engine_has_it::not_applicable,
    ),
    (
        "err_while_the_engine_is_down",
        err_while_the_engine_is_down::not_applicable,
    ),
    ("dropped_broadcast", dropped_broadcast::not_applicable),
    ("broadcast_from", broadcast_from::not_applicable),
    ("local_broadcast", local_broadcast::not_applicable),
    ("direct_broadcast", direct_broadcast::not_applicable),
    ("sync", sync::not_applicable),
    ("subscribe_since", subscribe_since::not_applicable),
    ("log_position", log_position::not_applicable),
    ("connection_state", connection_state::not_applicable),
    ("stats_connection", stats_connection::not_applicable),
    ("broken_link", broken_link::not_applicable),
    ("lagged", lagged::not_applicable),
    (
        "leaving_stops_delivery",
        leaving_stops_delivery::not_applicable,
    ),
    ("stats_counts", stats_counts::not_applicable),
    ("server_gone", server_gone::not_applicable),
    ("presence", presence::not_applicable),
];

// ---------------------------------------------------------------------------

guarantee!(local_delivery, nodes: 1, not_applicable: applies_everywhere);

/// When this node's subscribers get a broadcast. Live (in process, Redis,
/// NATS, Phoenix, linked): when `broadcast` is called, before its future is
/// polled, without a position. Durable: nothing at the call; from the log
/// once the future returned `Ok`, with its position.
async fn local_delivery(cluster: Cluster) {
    let a = cluster.node(0);
    let mut here = a.subscribe(topic()).unwrap();
    cluster.sync().await;
    let sending = a.broadcast([topic()], numbered(1));
    if cluster.mode().is_durable() {
        assert_eq!(queued(&mut here), None, "durable: nothing at the call");
        sending.await.unwrap();
        let (message, position) = within("the copy from the log", here.recv_with_position())
            .await
            .unwrap();
        assert_eq!(number(&message), 1);
        assert!(position.is_some(), "a durable copy has its log position");
    } else {
        let (message, position) = here
            .try_recv_with_position()
            .expect("live: queued when broadcast is called, before the future is polled");
        assert_eq!((number(&message), position), (1, None));
        sending.await.unwrap();
    }
    fence(a, &[topic()]).await;
    assert_eq!(until_fence(&mut here, 1).await, [], "one copy");
}

guarantee!(other_nodes_once, nodes: 3, not_applicable: needs_other_nodes);

/// Every other node's subscribers of a reached topic receive a broadcast
/// that returned `Ok`, exactly once; the sender's own, once too (not again
/// from the engine).
async fn other_nodes_once(cluster: Cluster) {
    let mut subscriptions: Vec<_> = (0..cluster.len())
        .map(|i| cluster.node(i).subscribe(topic()).unwrap())
        .collect();
    cluster.sync().await;
    let a = cluster.node(0);
    a.broadcast([topic()], numbered(1)).await.unwrap();
    fence(a, &[topic()]).await;
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        assert_eq!(until_fence(subscription, 1).await, [Msg(1)], "node n{i}");
    }
}

guarantee!(one_copy_per_reached_topic, nodes: 2, not_applicable: applies_everywhere);

/// One copy per reached topic per subscription, on every node: a
/// subscription to `staff:teams`, the team's department and `staff:people`
/// gets two copies of `broadcast_team` (teams, department), none for
/// people.
async fn one_copy_per_reached_topic(cluster: Cluster) {
    let department = Uuid::from_u128(40);
    let topics = [
        staff::topic_teams(),
        staff::topic_department(department),
        staff::topic_people(),
    ];
    let mut subscriptions: Vec<_> = (0..cluster.len())
        .map(|i| cluster.node(i).subscribe_many(topics).unwrap())
        .collect();
    cluster.sync().await;
    let a = cluster.node(0);
    let team = Team {
        uuid: Uuid::from_u128(1),
        name: Some("1".to_owned()),
        department_uuid: Some(department),
    };
    staff::broadcast_team_on(a, TeamEvent::Created, team)
        .await
        .unwrap();
    fence(a, &topics[..2]).await;
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        assert_eq!(
            until_fence(subscription, 2).await,
            [Msg(1), Msg(1)],
            "node n{i}"
        );
    }
}

guarantee!(a_repeated_topic_is_one_topic, nodes: 2, not_applicable: applies_everywhere);

/// A topic listed more than once in one broadcast is one topic: a
/// subscription gets one copy per distinct listed topic it has, on the
/// sending node and on every other.
async fn a_repeated_topic_is_one_topic(cluster: Cluster) {
    let department = Uuid::from_u128(41);
    let topics = [staff::topic_teams(), staff::topic_department(department)];
    let mut subscriptions: Vec<_> = (0..cluster.len())
        .map(|i| cluster.node(i).subscribe_many(topics).unwrap())
        .collect();
    cluster.sync().await;
    let a = cluster.node(0);
    let listed = [topics[0], topics[0], topics[1], topics[0], topics[1]];
    a.broadcast(listed, numbered(1)).await.unwrap();
    fence(a, &topics).await;
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        assert_eq!(
            until_fence(subscription, 2).await,
            [Msg(1), Msg(1)],
            "node n{i}: one copy per distinct topic"
        );
    }
}

guarantee!(order_per_topic, nodes: 2, not_applicable: applies_everywhere);

/// The broadcasts of one sender to one topic arrive in the order they were
/// made, on every node.
async fn order_per_topic(cluster: Cluster) {
    let mut subscriptions: Vec<_> = (0..cluster.len())
        .map(|i| cluster.node(i).subscribe(topic()).unwrap())
        .collect();
    cluster.sync().await;
    let a = cluster.node(0);
    for n in 1..=10 {
        a.broadcast([topic()], numbered(n)).await.unwrap();
    }
    fence(a, &[topic()]).await;
    let expected: Vec<_> = (1..=10).map(Msg).collect();
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        assert_eq!(until_fence(subscription, 1).await, expected, "node n{i}");
    }
}

guarantee!(order_across_topics, nodes: 2, not_applicable: |mode| {
    (mode == Mode::NatsLive).then_some(
        "not guaranteed: each topic's subject is read on its own, so broadcasts to \
         different topics may arrive in another order (order per topic holds)",
    )
});

/// A subscription to several topics receives one sender's broadcasts to
/// different topics in the order they were made, on every node.
async fn order_across_topics(cluster: Cluster) {
    let topics = [topic(), other_topic()];
    let mut subscriptions: Vec<_> = (0..cluster.len())
        .map(|i| cluster.node(i).subscribe_many(topics).unwrap())
        .collect();
    cluster.sync().await;
    let a = cluster.node(0);
    for n in 1..=10 {
        let to = topics[usize::from(n % 2 == 0)];
        a.broadcast([to], numbered(n)).await.unwrap();
    }
    fence(a, &topics).await;
    let expected: Vec<_> = (1..=10).map(Msg).collect();
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        assert_eq!(until_fence(subscription, 2).await, expected, "node n{i}");
    }
}

guarantee!(ok_means_the_engine_has_it, nodes: 2, not_applicable: applies_everywhere);

/// What `Ok` means. In process: the future is ready at once with `Ok`.
/// Live: the engine took the message, so it reaches the other nodes even
/// if the sender is gone right after. Durable: the engine's log holds it,
/// so it reaches the other nodes even if the sender is gone and the engine
/// restarts (with its data) right after, without a gap.
async fn ok_means_the_engine_has_it(mut cluster: Cluster) {
    let mode = cluster.mode();
    if !mode.is_networked() {
        let a = cluster.node(0);
        let mut here = a.subscribe(topic()).unwrap();
        assert!(ready_ok(a.broadcast([topic()], numbered(1))));
        assert_eq!(queued(&mut here), Some(1));
        return;
    }
    let mut there = cluster.node(1).subscribe(topic()).unwrap();
    cluster.sync().await;
    cluster
        .node(0)
        .broadcast([topic()], numbered(1))
        .await
        .unwrap();
    cluster.remove(0);
    if mode.is_durable() {
        cluster.stop_engine();
        cluster.restart_engine().await;
    }
    assert_eq!(next(&mut there).await, Msg(1));
    cluster.wait_for(Connection::Connected).await;
    let b = cluster.node(1);
    broadcast_retrying(b, &[topic()], FENCE).await;
    assert_eq!(until_fence(&mut there, 1).await, [], "no gap, no copy");
}

guarantee!(err_while_the_engine_is_down, nodes: 2, not_applicable: needs_an_engine);

/// While the engine is down (and the node knows it: `Disconnected`),
/// `broadcast` returns `Error::Transport` with `Outcome::NotSent`. Who has
/// the message then: live, this node's subscribers (at the call) and
/// nobody else, ever; durable, nobody. After the engine is back, live
/// subscribers get `Gap::Disconnected`; durable ones no gap (the log was
/// kept).
async fn err_while_the_engine_is_down(mut cluster: Cluster) {
    let durable = cluster.mode().is_durable();
    let mut here = cluster.node(0).subscribe(topic()).unwrap();
    let mut there = cluster.node(1).subscribe(topic()).unwrap();
    cluster.sync().await;
    cluster.stop_engine();
    let a = cluster.node(0);
    within(
        "the sender to see the engine gone",
        a.wait_for_connection(Connection::Disconnected),
    )
    .await;
    let sent = within("the failed broadcast", a.broadcast([topic()], numbered(1))).await;
    let Err(Error::Transport(error)) = sent else {
        panic!("a broadcast while the engine is down: {sent:?}");
    };
    assert_eq!(error.outcome(), Outcome::NotSent, "{error}");
    if durable {
        assert_eq!(queued(&mut here), None, "durable: not delivered here");
    } else {
        assert_eq!(
            queued(&mut here),
            Some(1),
            "live: delivered here at the call"
        );
    }
    cluster.restart_engine().await;
    cluster.wait_for(Connection::Connected).await;
    cluster.sync().await;
    let a = cluster.node(0);
    broadcast_retrying(a, &[topic()], FENCE).await;
    let expected = if durable {
        vec![]
    } else {
        vec![Item::Gap(Gap::Disconnected)]
    };
    assert_eq!(until_fence(&mut here, 1).await, expected, "the sender");
    assert_eq!(until_fence(&mut there, 1).await, expected, "another node");
}

guarantee!(dropped_broadcast, nodes: 2, not_applicable: applies_everywhere);

/// A `Broadcast` future dropped unpolled: live, this node's subscribers
/// have the message and no other node ever gets it; durable, nobody gets
/// it.
async fn dropped_broadcast(cluster: Cluster) {
    let mut subscriptions: Vec<_> = (0..cluster.len())
        .map(|i| cluster.node(i).subscribe(topic()).unwrap())
        .collect();
    cluster.sync().await;
    let a = cluster.node(0);
    drop(a.broadcast([topic()], numbered(1)));
    let here = if cluster.mode().is_durable() {
        None
    } else {
        Some(1)
    };
    assert_eq!(queued(&mut subscriptions[0]), here);
    fence(a, &[topic()]).await;
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        assert_eq!(until_fence(subscription, 1).await, [], "node n{i}");
    }
}

guarantee!(broadcast_from, nodes: 2, not_applicable: applies_everywhere);

/// `broadcast_from(&sender, ..)` skips the sender's own subscription only:
/// the sender node's other subscribers get it at the call (durable too,
/// outside the log: no position), other nodes as a broadcast.
async fn broadcast_from(cluster: Cluster) {
    let a = cluster.node(0);
    let mut sender = a.subscribe(topic()).unwrap();
    let mut beside = a.subscribe(topic()).unwrap();
    let mut others: Vec<_> = (1..cluster.len())
        .map(|i| cluster.node(i).subscribe(topic()).unwrap())
        .collect();
    cluster.sync().await;
    let sending = a.broadcast_from(&sender, [topic()], numbered(1));
    let (message, position) = beside
        .try_recv_with_position()
        .expect("the sender node's other subscribers: at the call");
    assert_eq!((number(&message), position), (1, None));
    sending.await.unwrap();
    fence(a, &[topic()]).await;
    assert_eq!(until_fence(&mut sender, 1).await, [], "the sender");
    assert_eq!(until_fence(&mut beside, 1).await, [], "one copy");
    for (i, subscription) in others.iter_mut().enumerate() {
        assert_eq!(
            until_fence(subscription, 1).await,
            [Msg(1)],
            "node n{}",
            i + 1
        );
    }
}

guarantee!(local_broadcast, nodes: 2, not_applicable: applies_everywhere);

/// `local_broadcast` (and `local_broadcast_from`) reach this node's
/// subscribers at the call, in every mode (durable too: not through the
/// log, no position), return the copies queued, and never reach another
/// node.
async fn local_broadcast(cluster: Cluster) {
    let a = cluster.node(0);
    let mut here = a.subscribe(topic()).unwrap();
    let mut beside = a.subscribe(topic()).unwrap();
    let mut others: Vec<_> = (1..cluster.len())
        .map(|i| cluster.node(i).subscribe(topic()).unwrap())
        .collect();
    cluster.sync().await;
    assert_eq!(a.local_broadcast(&[topic()], numbered(1)), 2);
    assert_eq!(a.local_broadcast_from(&here, &[topic()], numbered(2)), 1);
    for (subscription, expected) in [(&mut here, &[1][..]), (&mut beside, &[1, 2][..])] {
        for n in expected {
            let (message, position) = subscription
                .try_recv_with_position()
                .expect("queued at the call");
            assert_eq!((number(&message), position), (*n, None));
        }
    }
    fence(a, &[topic()]).await;
    assert_eq!(until_fence(&mut here, 1).await, []);
    assert_eq!(until_fence(&mut beside, 1).await, []);
    for (i, subscription) in others.iter_mut().enumerate() {
        assert_eq!(until_fence(subscription, 1).await, [], "node n{}", i + 1);
    }
}

guarantee!(direct_broadcast, nodes: 3, not_applicable: applies_everywhere);

/// `direct_broadcast(node, ..)` reaches only `node`'s subscribers; to this
/// node's own name it is a local broadcast (at once, no position, durable
/// too). In process, another node's name is `Error::UnknownNode`.
async fn direct_broadcast(cluster: Cluster) {
    let mut subscriptions: Vec<_> = (0..cluster.len())
        .map(|i| cluster.node(i).subscribe(topic()).unwrap())
        .collect();
    cluster.sync().await;
    let a = cluster.node(0);
    let to_n1 = a.direct_broadcast("n1", &[topic()], numbered(1)).await;
    if cluster.mode().is_networked() {
        to_n1.unwrap();
        assert_eq!(next(&mut subscriptions[1]).await, Msg(1));
    } else {
        assert!(
            matches!(&to_n1, Err(Error::UnknownNode { node }) if node == "n1"),
            "{to_n1:?}"
        );
    }
    a.direct_broadcast("n0", &[topic()], numbered(2))
        .await
        .unwrap();
    let (message, position) = subscriptions[0]
        .try_recv_with_position()
        .expect("to its own name: delivered at once");
    assert_eq!((number(&message), position), (2, None));
    fence(a, &[topic()]).await;
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        assert_eq!(until_fence(subscription, 1).await, [], "node n{i}");
    }
}

guarantee!(sync, nodes: 2, not_applicable: applies_everywhere);

/// After `sync` returns `Ok` on a node, what other nodes broadcast to the
/// topics it subscribed before reaches it. NATS live: `Ok` once the
/// topics' interest is registered with the server; every other mode (NATS
/// durable too, whose nodes read the whole log) resolves at once.
async fn sync(cluster: Cluster) {
    if !cluster.mode().is_networked() {
        assert!(ready_ok(cluster.node(0).sync()), "in process: at once");
        return;
    }
    let (a, b) = (cluster.node(0), cluster.node(1));
    for n in 0..10 {
        let fresh = staff::topic_person(Uuid::from_u128(100 + u128::from(n)));
        let mut subscription = b.subscribe(fresh).unwrap();
        if cluster.mode() == Mode::NatsLive {
            within("sync", b.sync()).await.unwrap();
        } else {
            assert!(ready_ok(b.sync()), "resolves at once");
        }
        a.broadcast([fresh], numbered(n)).await.unwrap();
        assert_eq!(next(&mut subscription).await, Msg(n), "topic {n}");
    }
}

guarantee!(subscribe_since, nodes: 2, not_applicable: applies_everywhere);

/// `subscribe_since(topics, position)`: durable, replays the broadcasts to
/// `topics` after `position` in log order, then continues live, each
/// exactly once, with their positions; live modes (and in process),
/// `Error::NotDurable`.
async fn subscribe_since(cluster: Cluster) {
    let a = cluster.node(0);
    if !cluster.mode().is_durable() {
        let after = Position::new(1, 1).unwrap();
        for i in 0..cluster.len() {
            let resumed = cluster.node(i).subscribe_since([topic()], after).await;
            assert!(
                matches!(resumed, Err(Error::NotDurable)),
                "node n{i}: {resumed:?}"
            );
        }
        return;
    }
    let mut reader = a.subscribe(topic()).unwrap();
    for n in 1..=5 {
        a.broadcast([topic()], numbered(n)).await.unwrap();
    }
    let mut positions = Vec::new();
    for n in 1..=5 {
        let (message, position) = within("a message", reader.recv_with_position())
            .await
            .unwrap();
        assert_eq!(number(&message), n);
        positions.push(position.expect("a position"));
    }
    let b = cluster.node(1);
    let mut resumed = within("the replay", b.subscribe_since([topic()], positions[1]))
        .await
        .unwrap();
    a.broadcast([topic()], numbered(6)).await.unwrap();
    fence(a, &[topic()]).await;
    let got = positions_until_fence(&mut resumed).await;
    let numbers: Vec<_> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [3, 4, 5, 6], "replayed, then live, each once");
    let replayed: Vec<_> = got[..3].iter().map(|(_, at)| *at).collect();
    assert_eq!(
        replayed,
        positions[2..].iter().copied().map(Some).collect::<Vec<_>>()
    );
    assert_eq!(
        got[3].1,
        positions[4].next(),
        "the live one, next in the log"
    );
}

guarantee!(log_position, nodes: 2, not_applicable: applies_everywhere);

/// `log_position()`: durable, `None` while the log is empty, then the
/// position of the last entry the node read, delivered or skipped (an
/// entry for no subscriber here), positions growing by one per entry; live
/// modes, always `None`.
async fn log_position(cluster: Cluster) {
    let durable = cluster.mode().is_durable();
    let last = cluster.len() - 1;
    let (a, b) = (cluster.node(0), cluster.node(last));
    for i in 0..cluster.len() {
        assert_eq!(cluster.node(i).log_position(), None, "node n{i} at start");
    }
    let mut reader = b.subscribe(topic()).unwrap();
    cluster.sync().await;
    a.broadcast([topic()], numbered(1)).await.unwrap();
    a.broadcast([topic()], numbered(2)).await.unwrap();
    let mut positions = Vec::new();
    for n in 1..=2 {
        let (message, position) = within("a message", reader.recv_with_position())
            .await
            .unwrap();
        assert_eq!(number(&message), n);
        positions.push(position);
    }
    if !durable {
        assert_eq!(positions, [None, None]);
        for i in 0..cluster.len() {
            assert_eq!(cluster.node(i).log_position(), None, "node n{i}");
        }
        return;
    }
    let (first, second) = (positions[0].unwrap(), positions[1].unwrap());
    assert_eq!(first.next(), Some(second), "one entry apart");
    assert_eq!(b.log_position(), Some(second));
    // An entry for no subscriber: read and skipped.
    a.broadcast([other_topic()], numbered(3)).await.unwrap();
    let third = second.next();
    for i in 0..cluster.len() {
        let node = cluster.node(i);
        settle(|| node.log_position() == third).await;
        assert_eq!(
            node.log_position(),
            third,
            "node n{i}: the skipped entry read"
        );
    }
}

guarantee!(connection_state, nodes: 2, not_applicable: applies_everywhere);

/// `connection()`: `Local` in process; with a transport, `Connected` while
/// the node's link is up, `Disconnected` while it is broken (the others
/// stay `Connected`), `Connected` again after; `wait_for_connection`
/// resolves on each change. Linked: the stock side reports the extension's
/// transport.
async fn connection_state(cluster: Cluster) {
    let a = cluster.node(0);
    if !cluster.mode().is_networked() {
        assert_eq!(a.connection(), Connection::Local);
        within("Local", a.wait_for_connection(Connection::Local)).await;
        return;
    }
    cluster.wait_for(Connection::Connected).await;
    let b = cluster.node(1);
    assert_eq!(
        (a.connection(), b.connection()),
        (Connection::Connected, Connection::Connected)
    );
    cluster.cut(1);
    within(
        "the cut node to be Disconnected",
        b.wait_for_connection(Connection::Disconnected),
    )
    .await;
    assert_eq!(b.connection(), Connection::Disconnected);
    assert_eq!(a.connection(), Connection::Connected, "the other node");
    cluster.uncut(1);
    within(
        "the node to be Connected again",
        b.wait_for_connection(Connection::Connected),
    )
    .await;
    assert_eq!(b.connection(), Connection::Connected);
}

guarantee!(stats_connection, nodes: 2, not_applicable: applies_everywhere);

/// `stats().connection` is `connection()`, in every state: `Local` in
/// process; `Connected`, `Disconnected` while the node's link is broken,
/// `Connected` again after.
async fn stats_connection(cluster: Cluster) {
    let a = cluster.node(0);
    if !cluster.mode().is_networked() {
        assert_eq!(a.stats().connection, Connection::Local);
        return;
    }
    cluster.wait_for(Connection::Connected).await;
    let b = cluster.node(1);
    assert_eq!(b.stats().connection, Connection::Connected);
    cluster.cut(1);
    within(
        "the cut node to be Disconnected",
        b.wait_for_connection(Connection::Disconnected),
    )
    .await;
    assert_eq!(b.stats().connection, Connection::Disconnected);
    cluster.uncut(1);
    within(
        "the node to be Connected again",
        b.wait_for_connection(Connection::Connected),
    )
    .await;
    assert_eq!(b.stats().connection, Connection::Connected);
}

guarantee!(broken_link, nodes: 2, not_applicable: needs_a_link);

/// One node's link broken while another broadcasts, then restored. Live:
/// what was broadcast meanwhile is lost for it, and its subscribers get
/// one `Gap::Disconnected` (counted in `stats().gaps`), in queue order,
/// then the later broadcasts. Durable: it reads what it missed from the
/// log, in order, each once, and no gap. The sender's subscribers miss
/// nothing.
async fn broken_link(cluster: Cluster) {
    let durable = cluster.mode().is_durable();
    let (a, b) = (cluster.node(0), cluster.node(1));
    let mut here = a.subscribe(topic()).unwrap();
    let mut there = b.subscribe(topic()).unwrap();
    cluster.sync().await;
    cluster.cut(1);
    within(
        "the cut node to be Disconnected",
        b.wait_for_connection(Connection::Disconnected),
    )
    .await;
    a.broadcast([topic()], numbered(1)).await.unwrap();
    a.broadcast([topic()], numbered(2)).await.unwrap();
    cluster.uncut(1);
    within(
        "the node to be Connected again",
        b.wait_for_connection(Connection::Connected),
    )
    .await;
    cluster.sync().await;
    a.broadcast([topic()], numbered(3)).await.unwrap();
    fence(a, &[topic()]).await;
    assert_eq!(
        until_fence(&mut here, 1).await,
        [Msg(1), Msg(2), Msg(3)],
        "the sender's subscribers"
    );
    let (expected, gaps) = if durable {
        (vec![Msg(1), Msg(2), Msg(3)], 0)
    } else {
        (vec![Item::Gap(Gap::Disconnected), Msg(3)], 1)
    };
    assert_eq!(until_fence(&mut there, 1).await, expected, "the cut node");
    assert_eq!(b.stats().gaps, gaps);
    assert_eq!(a.stats().gaps, 0);
}

guarantee!(lagged, nodes: 2, not_applicable: applies_everywhere);

/// A subscriber that does not read, on the sender's node and on another:
/// once its queue (capacity `c`) is full, each broadcast drops its oldest
/// message; its next receive is `RecvError::Lagged(n)` with exactly the
/// number dropped (counted in `stats().lagged`), then the newest `c` in
/// order. Nobody else waits for it.
async fn lagged(cluster: Cluster) {
    const MORE: u64 = 3;
    let capacity = cluster.capacity();
    let mut slow: Vec<_> = (0..cluster.len())
        .map(|i| cluster.node(i).subscribe(topic()).unwrap())
        .collect();
    let mut fast: Vec<_> = (0..cluster.len())
        .map(|i| cluster.node(i).subscribe(topic()).unwrap())
        .collect();
    cluster.sync().await;
    let a = cluster.node(0);
    let sent = capacity as u64 + MORE;
    // In lock step: every node has each message before the next is sent.
    for n in 1..=sent {
        a.broadcast([topic()], numbered(n)).await.unwrap();
        for subscription in &mut fast {
            assert_eq!(next(subscription).await, Msg(n));
        }
    }
    for (i, subscription) in slow.iter_mut().enumerate() {
        assert_eq!(
            subscription.try_recv(),
            Err(TryRecvError::Lagged(MORE)),
            "node n{i}"
        );
        let kept: Vec<_> = std::iter::from_fn(|| queued(subscription)).collect();
        assert_eq!(kept, (MORE + 1..=sent).collect::<Vec<_>>(), "node n{i}");
        let node = cluster.node(i);
        settle(|| node.stats().lagged == MORE).await;
        assert_eq!(node.stats().lagged, MORE, "node n{i}: stats().lagged");
    }
}

guarantee!(leaving_stops_delivery, nodes: 2, not_applicable: applies_everywhere);

/// A subscription that leaves a topic (`unsubscribe`, dropped, or
/// `remove_topic`) receives nothing broadcast to it after, on any node;
/// `unsubscribe`d, it then reads `Closed`; the topic's count drops.
async fn leaving_stops_delivery(cluster: Cluster) {
    let mut witnesses = Vec::new();
    let mut unsubscribed = Vec::new();
    let mut removed = Vec::new();
    for i in 0..cluster.len() {
        let node = cluster.node(i);
        witnesses.push(node.subscribe(topic()).unwrap());
        let mut leaving = node.subscribe(topic()).unwrap();
        leaving.unsubscribe();
        unsubscribed.push(leaving);
        drop(node.subscribe(topic()).unwrap());
        let mut narrowed = node.subscribe_many([topic(), other_topic()]).unwrap();
        assert!(narrowed.remove_topic(&topic()));
        removed.push(narrowed);
        assert_eq!(node.subscriber_count(&topic()), 1, "node n{i}");
    }
    cluster.sync().await;
    let a = cluster.node(0);
    a.broadcast([topic()], numbered(1)).await.unwrap();
    fence(a, &[topic()]).await;
    for i in 0..cluster.len() {
        assert_eq!(until_fence(&mut witnesses[i], 1).await, [Msg(1)]);
        assert_eq!(unsubscribed[i].try_recv(), Err(TryRecvError::Closed));
        assert_eq!(queued(&mut removed[i]), None, "node n{i}");
    }
}

guarantee!(stats_counts, nodes: 2, not_applicable: applies_everywhere);

/// `stats()`: `published` counts the broadcasts made on the node and
/// `delivered` the copies queued for its subscribers; `received` the
/// broadcasts it took from the engine: live, those of other nodes;
/// durable, every entry it read from the log, its own included; linked,
/// none on the stock side (the extension's server, which has the
/// transport, counts them).
async fn stats_counts(cluster: Cluster) {
    let mut subscriptions: Vec<_> = (0..cluster.len())
        .map(|i| cluster.node(i).subscribe(topic()).unwrap())
        .collect();
    cluster.sync().await;
    let a = cluster.node(0);
    a.broadcast([topic()], numbered(1)).await.unwrap();
    a.broadcast([topic()], numbered(2)).await.unwrap();
    fence(a, &[topic()]).await;
    for subscription in &mut subscriptions {
        assert_eq!(until_fence(subscription, 1).await, [Msg(1), Msg(2)]);
    }
    for i in 0..cluster.len() {
        let published = if i == 0 { 3 } else { 0 };
        let received = match cluster.mode() {
            mode if mode.is_durable() => 3,
            Mode::Linked => 0,
            _ if i == 0 => 0,
            _ => 3,
        };
        // The counters move just after the copies are queued.
        let node = cluster.node(i);
        let counts = || {
            let stats = node.stats();
            (stats.published, stats.received, stats.delivered)
        };
        settle(|| counts() == (published, received, 3)).await;
        assert_eq!(
            counts(),
            (published, received, 3),
            "node n{i}: (published, received, delivered)"
        );
    }
}

guarantee!(server_gone, nodes: 1, not_applicable: applies_everywhere);

/// Once a node's server is gone (its last handle dropped; linked, both
/// sides), its subscriptions receive what was queued, then
/// `RecvError::Closed`.
async fn server_gone(mut cluster: Cluster) {
    let mut subscription = cluster.node(0).subscribe(topic()).unwrap();
    assert_eq!(cluster.node(0).local_broadcast(&[topic()], numbered(1)), 1);
    cluster.remove(0);
    assert_eq!(next(&mut subscription).await, Msg(1));
    assert_eq!(next(&mut subscription).await, Item::Closed);
}

guarantee!(presence, nodes: 2, not_applicable: applies_everywhere);

/// A presence tracked on one node is listed, each once, on every node (in
/// process: the one); untracking it (dropping its guard) removes it
/// everywhere. Waits on diffs, within the tests' short presence timing.
async fn presence(cluster: Cluster) {
    use staff_pubsub_tests::presence::{until_lists, viewer};
    let tracked = cluster
        .node(0)
        .track(staff_pubsub_tests::presence::TEAM, "ada", viewer("Ada"))
        .unwrap();
    for i in 0..cluster.len() {
        until_lists(cluster.node(i), &["Ada"]).await;
    }
    drop(tracked);
    for i in 0..cluster.len() {
        until_lists(cluster.node(i), &[]).await;
    }
}

// ---------------------------------------------------------------------------

/// The README's table names every guarantee of this file, in its order,
/// with a cell per mode, "n/a" exactly where `not_applicable` says so.
#[test]
fn the_readme_table_is_this_suite() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("the README");
    let section = readme
        .split("## Guarantees in every mode")
        .nth(1)
        .expect("the README's \"Guarantees in every mode\" section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let rows: Vec<Vec<&str>> = section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| line.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|row| row[0].trim_matches('`')).collect();
    let expected: Vec<&str> = GUARANTEES.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, expected, "the table's rows");
    for (row, (name, not_applicable)) in rows.iter().zip(GUARANTEES) {
        assert_eq!(row.len(), 1 + Mode::ALL.len(), "{name}: a cell per mode");
        for (cell, mode) in row[1..].iter().zip(Mode::ALL) {
            assert_eq!(
                cell.starts_with("n/a"),
                not_applicable(mode).is_some(),
                "{name} in {mode:?}: {cell}"
            );
        }
    }
}
