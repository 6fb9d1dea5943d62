//! The Redis transport never loses a message silently and every broadcast is
//! bounded in time: each test here stands for one way it once did or could,
//! against a real `redis-server` that the test starts (and kills, pauses or
//! restarts with another password). Waits are bounded (`within`); nothing
//! sleeps and hopes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff::{self, Team, TeamEvent};
use staff_pubsub::{Connection, Error, Outcome, PubSub, Subscription, Topic, TryRecvError, Uuid};
use staff_pubsub_tests::logs;
use staff_pubsub_tests::redis_server::{publish_raw, RedisServer};
use staff_pubsub_tests::within;

type Message = staff::Message;

const NAMESPACE: &str = "faults";
const ROOMS: Topic = Topic::new("chat:rooms");

fn config(url: impl Into<String>) -> RedisConfig {
    RedisConfig::new(url)
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

async fn node<M>(server: &RedisServer, name: Option<&str>) -> PubSub<M>
where
    M: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let builder = PubSub::builder();
    let builder = match name {
        Some(name) => builder.node_name(name),
        None => builder,
    };
    builder
        .redis(config(server.url()))
        .await
        .unwrap_or_else(|e| panic!("node {name:?}: {e}"))
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

fn name_of(message: &Message) -> &str {
    match message {
        Message::Team(_, team) => team.name.as_deref().unwrap_or(""),
        other => panic!("not a team message: {other:?}"),
    }
}

/// The next item as text: a team's name, or the error's `Debug`.
async fn next<M>(subscription: &mut Subscription<M>, show: fn(&M) -> &str) -> String {
    match within("the next item", subscription.recv()).await {
        Ok(message) => show(&message).to_owned(),
        Err(error) => format!("{error:?}"),
    }
}

/// Polls `condition` until it holds, for at most the test wait.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

// 1. Node names.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_built_without_a_name_get_unique_names_and_reach_each_other() {
    let server = RedisServer::start().await;
    let a: PubSub<Message> = node(&server, None).await;
    let b: PubSub<Message> = node(&server, None).await;
    assert_ne!(a.node_name(), b.node_name());
    for name in [a.node_name(), b.node_name()] {
        assert_ne!(name, staff_pubsub::DEFAULT_NODE_NAME);
        assert!(
            name.contains(&format!("-{}-", std::process::id())),
            "host, pid, random: {name}"
        );
    }
    // An in-process server keeps the plain default.
    assert_eq!(
        PubSub::<Message>::new().node_name(),
        staff_pubsub::DEFAULT_NODE_NAME
    );

    let mut on_a = a.subscribe(staff::topic_teams()).unwrap();
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();
    a.broadcast([staff::topic_teams()], team("from a"))
        .await
        .unwrap();
    assert_eq!(next(&mut on_b, name_of).await, "from a");
    b.broadcast([staff::topic_teams()], team("from b"))
        .await
        .unwrap();
    assert_eq!(next(&mut on_a, name_of).await, "from a", "a's own copy");
    assert_eq!(next(&mut on_a, name_of).await, "from b");
    assert_eq!(a.stats().name_conflicts + b.stats().name_conflicts, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn two_live_nodes_with_one_name_still_reach_each_other_and_report_the_clash() {
    let (_guard, logs) = logs::capture();
    let server = RedisServer::start().await;
    let a: PubSub<Message> = node(&server, Some("web")).await;
    let b: PubSub<Message> = node(&server, Some("web")).await;
    let mut on_a = a.subscribe(staff::topic_teams()).unwrap();
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();

    // One broadcast of a: b receives it and reports the clash.
    a.broadcast([staff::topic_teams()], team("from a"))
        .await
        .unwrap();
    assert_eq!(next(&mut on_b, name_of).await, "from a");
    assert_eq!(b.stats().name_conflicts, 1);
    assert!(
        logs.has_line_with(&["ERROR", "another live node uses this node's name", "web"]),
        "{:#?}",
        logs.lines()
    );
    // One broadcast of b: a does too. Neither takes its own back.
    b.broadcast([staff::topic_teams()], team("from b"))
        .await
        .unwrap();
    assert_eq!(next(&mut on_a, name_of).await, "from a");
    assert_eq!(next(&mut on_a, name_of).await, "from b");
    assert_eq!(a.stats().name_conflicts, 1);
    assert_eq!(next(&mut on_b, name_of).await, "from b");
    assert!(matches!(on_a.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(on_b.try_recv(), Err(TryRecvError::Empty)));
}

// 2. The receive task.

/// A message type whose own code misbehaves on chosen values, once
/// received: its `Deserialize` panics on `"panic"`, panics with a payload
/// whose destructor panics too on `"double panic"`, and its `Drop` panics
/// on `"drop bomb"`.
#[derive(Debug)]
struct Touchy {
    text: String,
    received: bool,
}

#[allow(non_snake_case)]
fn Touchy(text: String) -> Touchy {
    Touchy {
        text,
        received: false,
    }
}

static DROP_BOMBS: AtomicUsize = AtomicUsize::new(0);

impl Serialize for Touchy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Touchy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "panic" => panic!("Touchy refuses to deserialize"),
            "double panic" => std::panic::panic_any(Bomb),
            _ => Ok(Self {
                text,
                received: true,
            }),
        }
    }
}

impl Drop for Touchy {
    fn drop(&mut self) {
        if self.received && self.text == "drop bomb" && !std::thread::panicking() {
            DROP_BOMBS.fetch_add(1, Ordering::Relaxed);
            panic!("Touchy refuses to be dropped");
        }
    }
}

/// A panic payload whose destructor panics: a panic that nothing but the
/// task's end can contain.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the panic payload's destructor panics");
    }
}

fn touchy(message: &Touchy) -> &str {
    &message.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_deserialize_or_drop_is_skipped_and_counted_and_the_task_goes_on() {
    let server = RedisServer::start().await;
    let a: PubSub<Touchy> = node(&server, Some("a")).await;
    let b: PubSub<Touchy> = PubSub::builder()
        .node_name("b")
        .capacity(1)
        .redis(config(server.url()))
        .await
        .unwrap();
    let mut reader = b.subscribe(ROOMS).unwrap();
    let fence = Topic::new("chat:fence");
    let mut fence_reader = b.subscribe(fence).unwrap();

    a.broadcast([ROOMS], Touchy("panic".into())).await.unwrap();
    a.broadcast([ROOMS], Touchy("after the panic".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut reader, touchy).await, "after the panic");
    assert_eq!(b.stats().rejected, 1);

    // A full queue evicts "drop bomb" on b's receive task: its destructor
    // panics there, is contained, and the next message still comes.
    a.broadcast([ROOMS], Touchy("drop bomb".into()))
        .await
        .unwrap();
    a.broadcast([ROOMS], Touchy("evicts the bomb".into()))
        .await
        .unwrap();
    a.broadcast([fence], Touchy("fence".into())).await.unwrap();
    assert_eq!(next(&mut fence_reader, touchy).await, "fence");
    assert!(DROP_BOMBS.load(Ordering::Relaxed) >= 1);
    assert_eq!(next(&mut reader, touchy).await, "Lagged(1)");
    assert_eq!(next(&mut reader, touchy).await, "evicts the bomb");
    assert_eq!(b.stats().rejected, 2);
    assert_eq!(b.stats().gaps, 0, "contained: no restart, no gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_task_that_dies_is_restarted_and_every_subscriber_gets_a_gap() {
    let server = RedisServer::start().await;
    let a: PubSub<Touchy> = node(&server, Some("a")).await;
    let b: PubSub<Touchy> = node(&server, Some("b")).await;
    let mut one = b.subscribe(ROOMS).unwrap();
    let mut two = b.subscribe(Topic::new("chat:other")).unwrap();

    a.broadcast([ROOMS], Touchy("before".into())).await.unwrap();
    assert_eq!(next(&mut one, touchy).await, "before");
    // The payload of this panic cannot even be dropped: the task dies.
    a.broadcast([ROOMS], Touchy("double panic".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut one, touchy).await, "Gap(Disconnected)");
    assert_eq!(next(&mut two, touchy).await, "Gap(Disconnected)");
    assert_eq!(b.stats().gaps, 1);
    within(
        "b to be connected again",
        b.wait_for_connection(Connection::Connected),
    )
    .await;
    a.broadcast([ROOMS], Touchy("after the restart".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut one, touchy).await, "after the restart");
}

// 3. Gap order.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_comes_after_what_was_queued_before_the_outage_and_before_what_came_after() {
    let mut server = RedisServer::start().await;
    let a: PubSub<Message> = node(&server, Some("a")).await;
    let b: PubSub<Message> = node(&server, Some("b")).await;
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();
    for name in ["old 1", "old 2"] {
        a.broadcast([staff::topic_teams()], team(name))
            .await
            .unwrap();
    }
    eventually("b to queue both", || on_b.len() == 2).await;

    server.kill();
    within(
        "b to notice",
        b.wait_for_connection(Connection::Disconnected),
    )
    .await;
    server.restart().await;
    within(
        "b to reconnect",
        b.wait_for_connection(Connection::Connected),
    )
    .await;
    eventually("a to reconnect", || a.connection() == Connection::Connected).await;
    a.broadcast([staff::topic_teams()], team("new"))
        .await
        .unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next(&mut on_b, name_of).await);
    }
    assert_eq!(seen, ["old 1", "old 2", "Gap(Disconnected)", "new"]);
}

// 4. Bounded in time.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broadcast_returns_within_the_timeouts_however_many_run_at_once() {
    const BROADCASTERS: usize = 40;
    let server = RedisServer::start().await;
    let a: PubSub<Message> = node(&server, Some("a")).await;
    a.broadcast([staff::topic_teams()], team("connected"))
        .await
        .unwrap();

    server.pause();
    // The first broadcast times out on the live connection, and drops it.
    let first = a.broadcast([staff::topic_teams()], team("first")).await;
    assert!(first.is_err(), "{first:?}");
    // Now every broadcast needs a new connection, to a Redis that answers
    // nothing: they share one attempt instead of queueing for their own.
    let bound = Duration::from_secs(2) + Duration::from_millis(1500);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..BROADCASTERS {
        let a = a.clone();
        tasks.spawn(async move {
            let result = a
                .broadcast([staff::topic_teams()], team(&format!("{n}")))
                .await;
            (result, Instant::now())
        });
    }
    let mut slowest = Duration::ZERO;
    while let Some(joined) = tasks.join_next().await {
        let (result, at) = joined.unwrap();
        assert!(result.is_err(), "{result:?}");
        slowest = slowest.max(at - start);
    }
    server.resume();
    assert!(
        slowest < bound,
        "the slowest of {BROADCASTERS} broadcasts took {slowest:?}"
    );
}

// 5. Envelope cost.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_topics_are_reached_once_and_too_many_topics_are_refused() {
    let server = RedisServer::start().await;
    let b: PubSub<Message> = node(&server, Some("b")).await;
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();
    let mut connection = server.connection().await;
    let message = serde_json::to_value(team("x")).unwrap();
    let envelope = |topics: Vec<&str>, name: &str| {
        let mut message = message.clone();
        message["payload"]["name"] = json!(name);
        serde_json::to_vec(
            &json!({"v": 1, "origin": "tool", "mode": "all", "topics": topics, "message": message}),
        )
        .unwrap()
    };

    // 70,000 times the same topic, under 1 MB: refused, counted, and the
    // receive task is not held up.
    let flood = envelope(vec!["staff:teams"; 70_000], "flood");
    assert!(flood.len() < staff_pubsub::wire::DEFAULT_MAX_MESSAGE_SIZE);
    publish_raw(&mut connection, NAMESPACE, &flood).await;
    // Three times the same topic, within the bound: one copy.
    publish_raw(
        &mut connection,
        NAMESPACE,
        &envelope(vec!["staff:teams", "staff:teams", "staff:teams"], "thrice"),
    )
    .await;
    // A long list (past the linear scan: 41 distinct topics, each twice,
    // `staff:teams` last): still one copy.
    let people: Vec<String> = (0..40_u128)
        .map(|n| format!("staff:person:{}", Uuid::from_u128(n)))
        .collect();
    let mut long: Vec<&str> = people.iter().map(String::as_str).collect();
    long.extend(people.iter().map(String::as_str));
    long.extend(["staff:teams", "staff:teams"]);
    publish_raw(&mut connection, NAMESPACE, &envelope(long, "long")).await;
    publish_raw(
        &mut connection,
        NAMESPACE,
        &envelope(vec!["staff:teams"], "fence"),
    )
    .await;
    assert_eq!(next(&mut on_b, name_of).await, "thrice");
    assert_eq!(next(&mut on_b, name_of).await, "long");
    assert_eq!(next(&mut on_b, name_of).await, "fence");
    assert_eq!(b.stats().rejected, 1);

    // The bound is configurable, on both sides.
    let small: PubSub<Message> = PubSub::builder()
        .node_name("small")
        .redis(config(server.url()).max_topics(2))
        .await
        .unwrap();
    let mut on_small = small.subscribe(staff::topic_teams()).unwrap();
    publish_raw(
        &mut connection,
        NAMESPACE,
        &envelope(
            vec!["staff:teams", "staff:people", "staff:departments"],
            "three",
        ),
    )
    .await;
    publish_raw(
        &mut connection,
        NAMESPACE,
        &envelope(vec!["staff:teams"], "fence"),
    )
    .await;
    assert_eq!(next(&mut on_small, name_of).await, "fence");
    assert_eq!(small.stats().rejected, 1);
    let refused = small
        .broadcast(
            [staff::topic_teams(), staff::topic_people(), ROOMS],
            team("too wide"),
        )
        .await;
    let Err(Error::Transport(error)) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(error.outcome(), Outcome::NotSent);
}

// 7. What `Err` means.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_says_whether_the_message_was_certainly_not_sent_or_may_arrive() {
    let mut server = RedisServer::start().await;
    let a: PubSub<Message> = node(&server, Some("a")).await;
    let b: PubSub<Message> = node(&server, Some("b")).await;
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();

    // Frozen after the write: the reply never comes, yet Redis has the
    // PUBLISH and delivers it once it runs again. Outcome unknown.
    server.pause();
    let frozen = a
        .broadcast([staff::topic_teams()], team("maybe"))
        .await
        .expect_err("no reply from a frozen Redis");
    let Error::Transport(error) = &frozen else {
        panic!("{frozen:?}")
    };
    assert_eq!(error.outcome(), Outcome::Unknown, "{frozen:?}");
    server.resume();
    assert_eq!(
        next(&mut on_b, name_of).await,
        "maybe",
        "delivered after all"
    );

    // Nothing listens: the connection is refused. Certainly not sent.
    server.kill();
    within(
        "a to notice",
        a.wait_for_connection(Connection::Disconnected),
    )
    .await;
    let refused = a
        .broadcast([staff::topic_teams()], team("never"))
        .await
        .expect_err("no Redis");
    let Error::Transport(error) = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(error.outcome(), Outcome::NotSent, "{refused:?}");
    assert!(
        error.to_string().starts_with("cannot connect to Redis at "),
        "{error}"
    );

    // Too large: certainly not sent, whatever the state of Redis.
    let huge = Message::Team(
        TeamEvent::Created,
        Team {
            uuid: Uuid::nil(),
            name: Some("x".repeat(2 << 20)),
            department_uuid: None,
        },
    );
    let Err(Error::Transport(error)) = a.broadcast([staff::topic_teams()], huge).await else {
        panic!("a message over the maximum size");
    };
    assert_eq!(error.outcome(), Outcome::NotSent);
}

// 8. Secrets.

const PASSWORD: &str = "S3c/ret";

/// Every URL form redis-rs accepts, each with the password where that form
/// carries one: whether it connects or not, no `Debug`, `Display`, error
/// source or log line shows the password.
#[tokio::test(flavor = "current_thread")]
async fn no_password_shows_in_debug_errors_or_logs_for_any_url_form() {
    let (_guard, logs) = logs::capture();
    let server = RedisServer::start_with(&[
        "--requirepass",
        PASSWORD,
        "--user",
        "app",
        "on",
        ">S3c/ret",
        "~*",
        "&*",
        "+@all",
    ])
    .await;
    let port = server.port();
    let socket = server.socket();
    let socket = socket.display();
    let encoded = "S3c%2Fret";
    let urls = [
        // (url, whether it connects)
        (format!("redis://app:{encoded}@127.0.0.1:{port}"), true),
        (format!("redis://:{encoded}@127.0.0.1:{port}/0"), true),
        (format!("redis+unix://{socket}?pass={PASSWORD}"), true),
        (format!("unix://{socket}?user=app&pass={PASSWORD}"), true),
        (format!("redis://app:{PASSWORD}@127.0.0.1:{port}"), false),
        (format!("redis://app:{encoded}x@127.0.0.1:{port}"), false),
        (format!("redis+unix://{socket}?pass={PASSWORD}x"), false),
        (format!("unix://{socket}?user=app&pass={PASSWORD}x"), false),
        (format!("rediss://app:{encoded}@127.0.0.1:{port}"), false),
        (format!("valkey://app:{encoded}@127.0.0.1:1"), false),
    ];
    let mut shown = Vec::new();
    for (url, connects) in &urls {
        let config = config(url.as_str());
        shown.push(format!("{config:?}"));
        let result = PubSub::<Message>::builder()
            .node_name("n")
            .redis(config)
            .await;
        match result {
            Ok(pubsub) => {
                assert!(connects, "{url} connected");
                shown.push(format!("{pubsub:?}"));
            }
            Err(error) => {
                assert!(!connects, "{url}: {error}");
                shown.push(format!("{error} {error:?}"));
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    shown.push(format!("{cause} {cause:?}"));
                    source = cause.source();
                }
            }
        }
    }
    let lines = logs.lines();
    assert!(
        logs.has_line_with(&["connected to Redis", "app:***@"]),
        "{lines:#?}"
    );
    for text in shown.iter().chain(&lines) {
        for secret in ["S3c", encoded] {
            assert!(!text.contains(secret), "the password shows: {text}");
        }
    }
}

// 9. Failures a person can see.

#[tokio::test(flavor = "current_thread")]
async fn a_persistent_reconnect_failure_is_a_warning_with_its_cause_and_the_state_shows_it() {
    let (_guard, logs) = logs::capture();
    let mut server = RedisServer::start_with(&["--requirepass", "Old-Pw9"]).await;
    let url = format!("redis://:Old-Pw9@127.0.0.1:{}", server.port());
    let b: PubSub<Message> = PubSub::builder()
        .node_name("b")
        .redis(config(url))
        .await
        .unwrap();
    assert_eq!(b.connection(), Connection::Connected);
    assert_eq!(b.stats().connection, Connection::Connected);
    assert_eq!(PubSub::<Message>::new().connection(), Connection::Local);

    server.restart_with(&["--requirepass", "New-Pw9"]).await;
    within(
        "b to notice",
        b.wait_for_connection(Connection::Disconnected),
    )
    .await;
    let warned = tokio::time::timeout(staff_pubsub_tests::WAIT, async {
        while !logs.has_line_with(&["WARN", "cannot reconnect to Redis", "authentication failed"]) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        warned.is_ok(),
        "no warning with the cause: {:#?}",
        logs.lines()
    );
    // Rate-limited: the backoff retries at least every 200 ms, and the
    // same cause is warned about once (then every 30 s); each retry is a
    // DEBUG line.
    within("three more retries", async {
        while logs
            .lines()
            .iter()
            .filter(|line| line.contains("Redis reconnection failed"))
            .count()
            < 3
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let warnings = logs
        .lines()
        .iter()
        .filter(|line| line.contains("WARN") && line.contains("authentication failed"))
        .count();
    assert_eq!(warnings, 1, "{:#?}", logs.lines());
    assert_eq!(b.connection(), Connection::Disconnected);
    assert!(
        logs.lines().iter().all(|line| !line.contains("Pw9")),
        "{:#?}",
        logs.lines()
    );

    // Back with the right password: connected, and the gap is queued.
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();
    server.restart_with(&["--requirepass", "Old-Pw9"]).await;
    within(
        "b to reconnect",
        b.wait_for_connection(Connection::Connected),
    )
    .await;
    assert_eq!(
        on_b.try_recv(),
        Err(TryRecvError::Gap(staff_pubsub::Gap::Disconnected))
    );
}

// A server outliving its runtime.

/// A networked server belongs to the tokio runtime it was built in. If that
/// runtime shuts down, the server stops receiving: not silently, its state
/// turns disconnected and its subscribers get a gap.
#[test]
fn a_server_whose_runtime_shut_down_says_it_no_longer_receives() {
    let first = tokio::runtime::Runtime::new().unwrap();
    let (server, a) = first.block_on(async {
        let server = RedisServer::start().await;
        let a: PubSub<Message> = node(&server, Some("a")).await;
        (server, a)
    });
    let mut on_a = a.subscribe(staff::topic_teams()).unwrap();
    assert_eq!(a.connection(), Connection::Connected);
    drop(first);
    assert_eq!(a.connection(), Connection::Disconnected);
    assert_eq!(
        on_a.try_recv(),
        Err(TryRecvError::Gap(staff_pubsub::Gap::Disconnected))
    );
    drop(server);
}
