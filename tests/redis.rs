//! The Redis transport against real `redis-server`s: each test starts its own
//! on a free loopback port (see `support/redis_server.rs`) and kills it when
//! done. Every wait is bounded (`within`); "nothing else arrived" is checked
//! after a fence, a later message that Redis delivers after the ones before.
//! What every mode guarantees alike (`broadcast_from`, `direct_broadcast`,
//! a slow subscriber's lag, a failed broadcast, ...) is checked once for
//! all modes in `tests/guarantees.rs`; this file keeps what is Redis's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use serde_json::{json, Value};
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff::{self, Team, TeamEvent, TeamMembership, TeamMembershipEvent};
use staff_pubsub::wire::WireError;
use staff_pubsub::{Error, PubSub, RecvError, Subscription, Topic, TryRecvError, Uuid};
use staff_pubsub_tests::child::Cluster;
use staff_pubsub_tests::conformance;
use staff_pubsub_tests::contract_for;
use staff_pubsub_tests::redis_server::{free_port, publish_raw, raw_subscriber, RedisServer};
use staff_pubsub_tests::within;

contract_for!(Stock, staff);

type Message = staff::Message;

const NAMESPACE: &str = "test";
const FENCE: Topic = Topic::new("test:fence");

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig::new(server.url())
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

async fn node_with(name: &str, config: RedisConfig) -> PubSub<Message> {
    PubSub::builder()
        .node_name(name)
        .redis(config)
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"))
}

async fn node(server: &RedisServer, name: &str) -> PubSub<Message> {
    node_with(name, config(server)).await
}

fn team(name: &str) -> Message {
    Message::Team(
        TeamEvent::Created,
        Team {
            uuid: Uuid::now_v7(),
            name: Some(name.to_owned()),
            department_uuid: None,
        },
    )
}

fn team_name(message: &Arc<Message>) -> &str {
    match &**message {
        Message::Team(_, team) => team.name.as_deref().unwrap_or(""),
        other => panic!("not a team message: {other:?}"),
    }
}

/// What is queued now, without waiting.
fn drain(subscription: &mut Subscription<Message>) -> Vec<Arc<Message>> {
    let mut messages = Vec::new();
    loop {
        match subscription.try_recv() {
            Ok(message) => messages.push(message),
            Err(TryRecvError::Empty) => return messages,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// The next `n` items: team names, or the error's `Debug` (`Gap`).
async fn items(subscription: &mut Subscription<Message>, n: usize) -> Vec<String> {
    let mut items = Vec::new();
    for _ in 0..n {
        items.push(match within("an item", subscription.recv()).await {
            Ok(message) => team_name(&message).to_owned(),
            Err(error) => format!("{error:?}"),
        });
    }
    items
}

async fn recv(subscription: &mut Subscription<Message>) -> Arc<Message> {
    within("a message", subscription.recv())
        .await
        .expect("a message, not an error")
}

async fn next_raw(stream: &mut PubSubStream) -> Value {
    let message = within("a message on the channel", stream.next())
        .await
        .expect("the stream goes on");
    serde_json::from_slice(message.get_payload_bytes()).expect("the channel carries JSON")
}

async fn numsub(connection: &mut MultiplexedConnection, channel: &str) -> i64 {
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(connection)
        .await
        .unwrap();
    count
}

/// The ids of the clients connected to the server.
async fn client_ids(connection: &mut MultiplexedConnection) -> std::collections::BTreeSet<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(connection)
        .await
        .unwrap();
    list.lines()
        .filter_map(|line| line.split(' ').find(|field| field.starts_with("id=")))
        .map(str::to_owned)
        .collect()
}

/// Polls `condition` until it holds, for at most the test wait.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_fan_out_reaches_every_node_as_in_process() {
    let server = RedisServer::start().await;
    let nodes = vec![
        node(&server, "a").await,
        node(&server, "b").await,
        node(&server, "c").await,
    ];
    conformance::check_broadcasts_across::<Stock>(&nodes).await;
    for node in &nodes {
        let stats = node.stats();
        assert_eq!((stats.rejected, stats.gaps), (0, 0), "{}", node.node_name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_per_broadcast_in_the_documented_envelope_and_the_origin_gets_it_once() {
    let server = RedisServer::start().await;
    let mut channel = raw_subscriber(&server, NAMESPACE).await;
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let mut on_a = a.subscribe(staff::topic_teams()).unwrap();
    let mut fence_a = a.subscribe(FENCE).unwrap();
    let mut on_b = b
        .subscribe(staff::topic_person(Uuid::from_u128(3)))
        .unwrap();

    let membership = TeamMembership {
        uuid: Uuid::from_u128(1),
        team_uuid: Uuid::from_u128(2),
        staff_person_uuid: Uuid::from_u128(3),
    };
    staff::broadcast_team_membership_on(
        &a,
        TeamMembershipEvent::TeamPersonAdded,
        membership.clone(),
    )
    .await
    .unwrap();

    // One PUBLISH for four topics, in the documented form.
    let envelope = next_raw(&mut channel).await;
    let message = Message::TeamMembership(TeamMembershipEvent::TeamPersonAdded, membership);
    let instance = envelope["instance"].as_str().expect("the instance id");
    assert!(
        instance.len() == 16 && instance.bytes().all(|b| b.is_ascii_hexdigit()),
        "{instance}"
    );
    assert_eq!(
        envelope,
        json!({
            "v": 1,
            "origin": "a",
            "instance": instance,
            "mode": "except_origin",
            "topics": [
                "staff:teams",
                "staff:team:00000000-0000-0000-0000-000000000002",
                "staff:people",
                "staff:person:00000000-0000-0000-0000-000000000003",
            ],
            "message": serde_json::to_value(&message).unwrap(),
        })
    );
    assert_eq!(*recv(&mut on_b).await, message);

    // The fence is the very next message on the channel: no second PUBLISH.
    b.direct_broadcast("a", &[FENCE], team("fence"))
        .await
        .unwrap();
    let fence = next_raw(&mut channel).await;
    assert_eq!(
        (&fence["origin"], &fence["mode"], &fence["target"]),
        (&json!("b"), &json!("only"), &json!("a"))
    );
    recv(&mut fence_a).await;
    assert_eq!(
        drain(&mut on_a).len(),
        1,
        "the origin's own subscriber gets one copy"
    );
    assert_eq!(a.stats().received, 1, "only the fence came from the wire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_broadcast_publishes_nothing() {
    let server = RedisServer::start().await;
    let mut channel = raw_subscriber(&server, NAMESPACE).await;
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let mut local = a.subscribe(staff::topic_teams()).unwrap();
    let mut remote = b.subscribe(staff::topic_teams()).unwrap();
    let mut fence = b.subscribe(FENCE).unwrap();

    assert_eq!(a.local_broadcast(&[staff::topic_teams()], team("here")), 1);
    a.broadcast([FENCE], team("fence")).await.unwrap();

    let first = next_raw(&mut channel).await;
    assert_eq!(
        first["topics"],
        json!(["test:fence"]),
        "the local broadcast reached the channel"
    );
    recv(&mut fence).await;
    assert!(drain(&mut remote).is_empty());
    assert_eq!(team_name(&drain(&mut local)[0]), "here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaces_on_one_redis_never_see_each_other() {
    let server = RedisServer::start().await;
    let in_ns = |ns: &'static str| config(&server).namespace(ns);
    // The same node names in both namespaces.
    let one_x = node_with("x", in_ns("one")).await;
    let one_y = node_with("y", in_ns("one")).await;
    let two_x = node_with("x", in_ns("two")).await;
    let two_y = node_with("y", in_ns("two")).await;
    let mut one_teams = one_y.subscribe(staff::topic_teams()).unwrap();
    let mut two_teams = two_y.subscribe(staff::topic_teams()).unwrap();
    let mut one_fence = one_y.subscribe(FENCE).unwrap();
    let mut two_fence = two_y.subscribe(FENCE).unwrap();

    one_x
        .broadcast([staff::topic_teams()], team("one"))
        .await
        .unwrap();
    two_x
        .broadcast([staff::topic_teams()], team("two"))
        .await
        .unwrap();
    assert_eq!(team_name(&recv(&mut one_teams).await), "one");
    assert_eq!(team_name(&recv(&mut two_teams).await), "two");

    one_x.broadcast([FENCE], team("fence")).await.unwrap();
    two_x.broadcast([FENCE], team("fence")).await.unwrap();
    recv(&mut one_fence).await;
    recv(&mut two_fence).await;
    assert!(drain(&mut one_teams).is_empty());
    assert!(drain(&mut two_teams).is_empty());

    let mut connection = server.connection().await;
    assert_eq!(numsub(&mut connection, "one").await, 2);
    assert_eq!(numsub(&mut connection, "two").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_is_skipped_and_counted_and_valid_messages_still_arrive() {
    let server = RedisServer::start().await;
    let a = node(&server, "a").await;
    let b = node_with("b", config(&server).max_message_size(4096)).await;
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();
    let mut connection = server.connection().await;

    let valid = |message: Value| json!({ "v": 1, "origin": "other", "mode": "all", "topics": ["staff:teams"], "message": message });
    let good = serde_json::to_value(team("from another client")).unwrap();
    let mut unknown_event = good.clone();
    unknown_event["event"] = json!("team_exploded");
    let mut other_scope = good.clone();
    other_scope["scope"] = json!("billing");
    let mut oversize = good.clone();
    oversize["payload"]["name"] = json!("x".repeat(5000));
    let mut next_version = valid(good.clone());
    next_version["v"] = json!(2);
    let complete = serde_json::to_vec(&valid(good.clone())).unwrap();

    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"hello".to_vec()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x81, 0x92]),
        ("JSON but no envelope", b"{\"hello\":\"world\"}".to_vec()),
        (
            "unknown version",
            serde_json::to_vec(&next_version).unwrap(),
        ),
        ("truncated", complete[..complete.len() / 2].to_vec()),
        ("oversize", serde_json::to_vec(&valid(oversize)).unwrap()),
        (
            "unknown event",
            serde_json::to_vec(&valid(unknown_event)).unwrap(),
        ),
        (
            "other scope",
            serde_json::to_vec(&valid(other_scope)).unwrap(),
        ),
    ];
    for (_, bytes) in &garbage {
        publish_raw(&mut connection, NAMESPACE, bytes).await;
    }
    // A broken message for another node is not even decoded.
    let for_c = json!({ "v": 1, "origin": "x", "mode": "only", "target": "c", "topics": [], "message": "junk" });
    publish_raw(
        &mut connection,
        NAMESPACE,
        &serde_json::to_vec(&for_c).unwrap(),
    )
    .await;

    // Valid messages after the garbage still arrive: from another client...
    publish_raw(&mut connection, NAMESPACE, &complete).await;
    assert_eq!(team_name(&recv(&mut on_b).await), "from another client");
    // ... and from a node.
    a.broadcast([staff::topic_teams()], team("after the garbage"))
        .await
        .unwrap();
    assert_eq!(team_name(&recv(&mut on_b).await), "after the garbage");

    let stats = b.stats();
    assert_eq!(
        stats.rejected,
        garbage.len() as u64,
        "one count per skipped message: {:?}",
        garbage.iter().map(|(what, _)| *what).collect::<Vec<_>>()
    );
    assert_eq!(stats.received, 2);
}

/// A node skips its own `except_origin` envelopes unread, by their first
/// bytes: anything that begins so is skipped uncounted, unless it is too
/// large (then it is refused and counted as any other); its own envelopes
/// in another mode are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_begin_as_the_nodes_own_broadcast_are_skipped_unread() {
    let server = RedisServer::start().await;
    let b = node_with("b", config(&server).max_message_size(4096)).await;
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();
    let mut connection = server.connection().await;
    let instance = format!("{:016x}", b.local_node().instance());
    let own = format!(r#"{{"v":1,"origin":"b","instance":"{instance}","mode":"except_origin","#);

    // Unread: not even checked for JSON.
    publish_raw(
        &mut connection,
        NAMESPACE,
        format!("{own}garbage").as_bytes(),
    )
    .await;
    // Too large: refused and counted, as any oversize message.
    let oversize = format!("{own}{}", "x".repeat(5000));
    publish_raw(&mut connection, NAMESPACE, oversize.as_bytes()).await;
    // Its own name and instance in mode `all`: for it, delivered.
    let message = serde_json::to_value(team("own, for all")).unwrap();
    let all = json!({ "v": 1, "origin": "b", "instance": instance, "mode": "all", "topics": ["staff:teams"], "message": message });
    publish_raw(
        &mut connection,
        NAMESPACE,
        &serde_json::to_vec(&all).unwrap(),
    )
    .await;

    assert_eq!(team_name(&recv(&mut on_b).await), "own, for all");
    let stats = b.stats();
    assert_eq!((stats.rejected, stats.received), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_broadcast_is_refused_with_a_typed_error() {
    let server = RedisServer::start().await;
    let a = node_with("a", config(&server).max_message_size(1024)).await;
    let b = node(&server, "b").await;
    let mut local = a.subscribe(staff::topic_teams()).unwrap();
    let mut remote = b.subscribe(staff::topic_teams()).unwrap();
    let mut fence = b.subscribe(FENCE).unwrap();

    let error = a
        .broadcast([staff::topic_teams()], team(&"x".repeat(2000)))
        .await
        .expect_err("an oversize message is refused");
    let Error::Transport(transport) = &error else {
        panic!("not a transport error: {error:?}")
    };
    let wire = std::error::Error::source(transport)
        .and_then(|source| source.downcast_ref::<WireError>())
        .expect("the cause is a WireError");
    assert!(
        matches!(wire, WireError::TooLarge { max: 1024, size } if *size > 2000),
        "{wire:?}"
    );
    // This node's subscribers got it before the transport refused it.
    assert_eq!(drain(&mut local).len(), 1);

    a.broadcast([FENCE], team("fence")).await.unwrap();
    recv(&mut fence).await;
    assert!(drain(&mut remote).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_an_error_within_the_connect_timeout() {
    let timeout = Duration::from_millis(500);
    let unreachable = |url: String| {
        RedisConfig::new(url)
            .namespace(NAMESPACE)
            .connect_timeout(timeout)
    };

    // Nothing listens on the port: refused at once.
    let url = format!("redis://127.0.0.1:{}", free_port());
    let start = Instant::now();
    let error = PubSub::<Message>::builder()
        .node_name("a")
        .redis(unreachable(url.clone()))
        .await
        .expect_err("no Redis there");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
    // What it is, where, and why, the cause once.
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("cannot connect to Redis at {url}: ")),
        "{shown}"
    );
    assert!(std::error::Error::source(&error).is_none(), "{error:?}");

    // Something listens and never answers: the connect timeout bounds it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let start = Instant::now();
    let result = PubSub::<Message>::builder()
        .node_name("a")
        .redis(unreachable(format!("redis://127.0.0.1:{port}")))
        .await;
    let elapsed = start.elapsed();
    holder.abort();
    assert!(matches!(result, Err(Error::Connect(_))), "{result:?}");
    assert!(
        elapsed >= timeout / 2 && elapsed < timeout * 4,
        "returned after {elapsed:?}"
    );

    // Configuration mistakes are errors too, not panics.
    let server_url = "redis://127.0.0.1:1".to_owned();
    let empty_name = PubSub::<Message>::builder()
        .node_name("")
        .redis(unreachable(server_url.clone()))
        .await;
    assert!(
        matches!(empty_name, Err(Error::EmptyNodeName)),
        "{empty_name:?}"
    );
    let empty_namespace = PubSub::<Message>::builder()
        .node_name("a")
        .redis(unreachable(server_url).namespace(""))
        .await;
    assert!(matches!(empty_namespace, Err(Error::Connect(_))));
    let not_redis = PubSub::<Message>::builder()
        .node_name("a")
        .redis(unreachable("http://127.0.0.1:80".to_owned()))
        .await;
    assert!(matches!(not_redis, Err(Error::Connect(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_fails_broadcasts_and_a_restart_brings_a_gap_then_delivery() {
    let mut server = RedisServer::start().await;
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let mut on_a = a.subscribe(staff::topic_teams()).unwrap();
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();

    a.broadcast([staff::topic_teams()], team("before"))
        .await
        .unwrap();
    assert_eq!(team_name(&recv(&mut on_b).await), "before");
    assert_eq!(drain(&mut on_a).len(), 1);

    server.kill();
    for attempt in 0..3 {
        let start = Instant::now();
        let result = a
            .broadcast([staff::topic_teams()], team(&format!("lost {attempt}")))
            .await;
        assert!(
            matches!(result, Err(Error::Transport(_))),
            "broadcast {attempt} while Redis is down: {result:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    assert!(b
        .broadcast([staff::topic_teams()], team("lost too"))
        .await
        .is_err());

    server.restart().await;

    // Both nodes resubscribe and tell their subscribers of the gap; the gap
    // comes after the copies queued locally while Redis was down (they are
    // older than the reconnect).
    eventually("both nodes to resubscribe", || {
        let gaps = (a.stats().gaps, b.stats().gaps);
        async move { gaps == (1, 1) }
    })
    .await;
    assert_eq!(
        items(&mut on_a, 4).await,
        ["lost 0", "lost 1", "lost 2", "Gap(Disconnected)"]
    );
    assert_eq!(
        items(&mut on_b, 2).await,
        ["lost too", "Gap(Disconnected)"],
        "b got none of a's lost broadcasts"
    );

    // Messages flow again, both ways.
    a.broadcast([staff::topic_teams()], team("after a"))
        .await
        .expect("the publisher reconnects");
    assert_eq!(team_name(&recv(&mut on_b).await), "after a");
    assert_eq!(team_name(&drain(&mut on_a)[0]), "after a", "the local copy");
    b.broadcast([staff::topic_teams()], team("after b"))
        .await
        .expect("the publisher reconnects");
    assert_eq!(team_name(&recv(&mut on_a).await), "after b");
    assert_eq!((a.stats().gaps, b.stats().gaps), (1, 1));
}

/// A connection that stops answering, without closing, is noticed by the
/// periodic `PING`: here Redis pauses every client for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stops_answering_is_noticed_by_the_health_check() {
    let server = RedisServer::start().await;
    let a = node(&server, "a").await;
    let b = node_with(
        "b",
        config(&server)
            .health_check_interval(Duration::from_millis(100))
            .response_timeout(Duration::from_millis(300)),
    )
    .await;
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();

    let mut connection = server.connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut connection)
        .await
        .unwrap();

    let gap = within("the gap after the pause", on_b.recv()).await;
    assert_eq!(gap, Err(RecvError::Gap(staff_pubsub::Gap::Disconnected)));
    a.broadcast([staff::topic_teams()], team("after the pause"))
        .await
        .unwrap();
    assert_eq!(team_name(&recv(&mut on_b).await), "after the pause");
}

/// One reconnect is one gap, also for a subscription to several topics
/// whose owner is waiting in `recv`, on another thread, when the gap is
/// signalled. The test's own task (not a spawned one) reads, so that it runs
/// in parallel with the transport's task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_to_several_topics_gets_one_gap_per_reconnect() {
    const RECONNECTS: usize = 3;
    let mut server = RedisServer::start().await;
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let mut subscription = b
        .subscribe_many([
            staff::topic_departments(),
            staff::topic_teams(),
            staff::topic_people(),
        ])
        .unwrap();
    // The reader reports each message it read, so that the next kill comes
    // after it: a message Redis accepted may still be lost if Redis dies
    // before writing it to the subscriber.
    let (read_tx, mut read) = tokio::sync::mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        for round in 1..=RECONNECTS {
            server.kill();
            server.restart().await;
            // Both nodes resubscribed: a's publisher has dropped its dead
            // connection too.
            eventually("both nodes to resubscribe", || {
                let gaps = (a.stats().gaps, b.stats().gaps);
                async move { gaps == (round as u64, round as u64) }
            })
            .await;
            a.broadcast([staff::topic_teams()], team(&format!("after {round}")))
                .await
                .unwrap();
            within("the reader to read", read.recv()).await;
        }
        // Kept alive until the reader has read: dropping a node drops what
        // it has not dispatched yet.
        (server, a, b)
    });

    let mut seen = Vec::new();
    let last = Ok(format!("after {RECONNECTS}"));
    while seen.last() != Some(&last) {
        let item = within("the next item", subscription.recv()).await;
        assert!(
            item != Err(RecvError::Closed) && seen.len() < 10 * RECONNECTS,
            "{item:?} after {seen:?}"
        );
        let item = item.map(|message| team_name(&message).to_owned());
        if let Ok(name) = &item {
            read_tx.send(name.clone()).unwrap();
        }
        seen.push(item);
    }
    let expected: Vec<_> = (1..=RECONNECTS)
        .flat_map(|round| {
            [
                Err(RecvError::Gap(staff_pubsub::Gap::Disconnected)),
                Ok(format!("after {round}")),
            ]
        })
        .collect();
    assert_eq!(seen, expected);
    drop(driver.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_stops_its_task_and_closes_its_connections() {
    let server = RedisServer::start().await;
    let mut connection = server.connection().await;
    let baseline_clients = client_ids(&mut connection).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline_tasks = metrics.num_alive_tasks();

    let a = node(&server, "a").await;
    let mut subscription = a.subscribe(staff::topic_teams()).unwrap();
    assert_eq!(numsub(&mut connection, NAMESPACE).await, 1);
    assert!(metrics.num_alive_tasks() > baseline_tasks);

    drop(a);
    // The subscription outlives the server: it ends, and holds nothing up.
    assert_eq!(
        within("the end of the subscription", subscription.recv()).await,
        Err(RecvError::Closed)
    );
    eventually("the channel's subscriber to leave", || {
        let mut connection = connection.clone();
        async move { numsub(&mut connection, NAMESPACE).await == 0 }
    })
    .await;
    // Connections the server still lists that were not there before: the
    // node's. (One from before, such as the readiness probe's, may leave.)
    eventually("the node's connections to close", || {
        let mut connection = connection.clone();
        let baseline = baseline_clients.clone();
        async move {
            let now = client_ids(&mut connection).await;
            now.is_subset(&baseline)
        }
    })
    .await;
    eventually("the node's tasks to end", || {
        let alive = metrics.num_alive_tasks();
        async move { alive == baseline_tasks }
    })
    .await;
}

/// The `cluster` example as a second OS process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_crosses_two_os_processes_through_the_cluster_example() {
    let server = RedisServer::start().await;
    let url = server.url();
    let mut child = Cluster::start(
        env!("CARGO_BIN_EXE_cluster"),
        &["--node", "child", "--redis", &url, "--namespace", NAMESPACE],
    );
    child.wait_for("ready: node child").await;

    let parent = node(&server, "parent").await;
    let mut teams = parent.subscribe(staff::topic_teams()).unwrap();

    // Parent to child.
    let name = format!("from the parent {}", Uuid::now_v7());
    staff::broadcast_team_on(
        &parent,
        TeamEvent::Created,
        Team {
            uuid: Uuid::now_v7(),
            name: Some(name.clone()),
            department_uuid: None,
        },
    )
    .await
    .unwrap();
    let line = child.wait_for(&name).await;
    assert!(line.starts_with("[child] received"), "{line}");
    assert!(line.contains("\"event\":\"team_created\""), "{line}");

    // Child to parent: a line typed on its stdin becomes a broadcast.
    child.type_line("from the child");
    let message = recv(&mut teams).await;
    // The parent's own broadcast came back only locally.
    assert_eq!(team_name(&message), name);
    assert_eq!(team_name(&recv(&mut teams).await), "from the child");
}
