//! The NATS transport against real `nats-server`s that each test starts on
//! free loopback ports (see `support/nats_server.rs`). Every wait is
//! bounded; "nothing else arrived" is checked after `sync` and a fence.
//! What every mode guarantees alike (local and direct broadcasts,
//! `broadcast_from`, a failed broadcast and the gap after a restart, ...)
//! is checked once for all modes in `tests/guarantees.rs`; this file keeps
//! what is NATS's own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use staff_pubsub::nats::NatsConfig;
use staff_pubsub::staff::{self, Team, TeamEvent};
use staff_pubsub::{
    assert_receive, refute_receive, Connection, Error, Outcome, PubSub, RecvError, Topic, Uuid,
};
use staff_pubsub_tests::child::Cluster;
use staff_pubsub_tests::nats_server::NatsServer;
use staff_pubsub_tests::{conformance, contract_for, logs, within};

contract_for!(Stock, staff);

type Message = staff::Message;

const NAMESPACE: &str = "test";

fn config(server: &NatsServer) -> NatsConfig {
    NatsConfig::new(server.url())
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
}

async fn node(server: &NatsServer, name: &str) -> PubSub<Message> {
    staff::builder()
        .node_name(name)
        .nats(config(server))
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_fan_out_reaches_every_node_as_in_process() {
    let server = NatsServer::start().await;
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
async fn a_node_receives_only_the_topics_it_has_subscribers_of() {
    let server = NatsServer::start().await;
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let wanted = staff::topic_person(Uuid::now_v7());
    let unwanted = staff::topic_person(Uuid::now_v7());
    let mut on_b = b.subscribe(wanted).unwrap();
    b.sync().await.unwrap();
    let baseline = b.stats().received;

    for _ in 0..10 {
        a.broadcast([unwanted], team("not for b")).await.unwrap();
    }
    a.broadcast([wanted], team("for b")).await.unwrap();
    assert_receive!(on_b, Message::Team(..));
    // Only the one envelope b has a subscriber for reached it.
    assert_eq!(b.stats().received - baseline, 1);
    assert!(server.subjects().await.contains(&format!(
        "{NAMESPACE}.staff.person.{}",
        wanted.id().unwrap()
    )));
    assert!(!server.subjects().await.contains(&format!(
        "{NAMESPACE}.staff.person.{}",
        unwanted.id().unwrap()
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_churn_leaves_no_subject_behind() {
    let server = NatsServer::start().await;
    let a = node(&server, "a").await;
    a.sync().await.unwrap();
    let before = server.subjects().await;
    let mut subscriptions = Vec::new();
    for round in 0..200 {
        let topic = staff::topic_person(Uuid::from_u128(round % 50));
        subscriptions.push(a.subscribe(topic).unwrap());
        if round % 3 == 0 {
            subscriptions.swap_remove(0);
        }
    }
    let mut live = subscriptions.pop().unwrap();
    live.add_topic(staff::topic_teams()).unwrap();
    drop(subscriptions);
    a.sync().await.unwrap();
    let mut expected = before.clone();
    expected.extend(
        live.topics()
            .iter()
            .map(|topic| format!("{NAMESPACE}.{}", topic.to_string().replace(':', "."))),
    );
    expected.sort();
    assert_eq!(server.subjects().await, expected);
    drop(live);
    a.sync().await.unwrap();
    assert_eq!(
        server.subjects().await,
        before,
        "only the node's own subjects"
    );
    assert_eq!(a.stats().topics, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaces_never_see_each_other() {
    let server = NatsServer::start().await;
    let a = node(&server, "a").await;
    let other: PubSub<Message> = staff::builder()
        .node_name("a")
        .nats(config(&server).namespace("other.tenant"))
        .await
        .unwrap();
    let mut on_other = other.subscribe(staff::topic_teams()).unwrap();
    other.sync().await.unwrap();
    a.broadcast([staff::topic_teams()], team("test"))
        .await
        .unwrap();
    refute_receive!(on_other, _);
    let bad = staff::builder()
        .nats(config(&server).namespace("no spaces.>"))
        .await;
    assert!(
        matches!(bad, Err(Error::Connect(ref e)) if e.to_string().contains("not a subject prefix")),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_subject_is_skipped_and_counted() {
    let server = NatsServer::start().await;
    let b = node(&server, "b").await;
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();
    b.sync().await.unwrap();
    let subject = format!("{NAMESPACE}.staff.teams");
    for garbage in [&b"hello"[..], b"{}", b"{\"v\":2}", &[0xff, 0x00]] {
        server.publish_raw(&subject, garbage).await;
    }
    let good = serde_json::to_vec(&serde_json::json!({
        "v": 1, "origin": "tool", "mode": "all", "topics": ["staff:teams"],
        "message": serde_json::to_value(team("good")).unwrap(),
    }))
    .unwrap();
    server.publish_raw(&subject, &good).await;
    assert_receive!(on_b, Message::Team(_, t) if t.name.as_deref() == Some("good"));
    assert_eq!(b.stats().rejected, 4);
}

/// A message type whose `Deserialize` takes its time: the receive side
/// falls behind a burst, the client's small buffer overflows.
#[derive(Debug, Serialize)]
struct Slow(u32);

static SLOW_DECODES: AtomicUsize = AtomicUsize::new(0);

impl<'de> Deserialize<'de> for Slow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SLOW_DECODES.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        u32::deserialize(deserializer).map(Slow)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_becomes_a_gap_not_a_silent_hole() {
    const ROOMS: Topic = Topic::new("chat:rooms");
    let server = NatsServer::start().await;
    let a: PubSub<Slow> = PubSub::builder()
        .node_name("a")
        .nats(config(&server))
        .await
        .unwrap();
    let b: PubSub<Slow> = PubSub::builder()
        .node_name("b")
        .nats(config(&server).subscription_capacity(4))
        .await
        .unwrap();
    let mut on_b = b.subscribe(ROOMS).unwrap();
    b.sync().await.unwrap();
    for n in 0..400 {
        a.broadcast([ROOMS], Slow(n)).await.unwrap();
    }
    let mut gaps = 0;
    let mut received = 0;
    within("a gap among the messages", async {
        while gaps == 0 {
            match on_b.recv().await {
                Ok(_) => received += 1,
                Err(RecvError::Gap(_)) => gaps += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert!(received < 400, "some were dropped, and the gap says so");
    // One gap for the burst, not one per dropped message.
    let gaps = b.stats().gaps;
    assert!((1..=3).contains(&gaps), "{gaps} gaps counted");
}

/// A numbered message whose decoding takes 800 ms for one number,
/// [`STUCK`]: the receive side stops for that long in the middle of a burst.
#[derive(Debug, Serialize)]
struct Numbered(u32);

const STUCK: u32 = 10;

impl<'de> Deserialize<'de> for Numbered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(deserializer)?;
        if n == STUCK {
            std::thread::sleep(Duration::from_millis(800));
        }
        Ok(Numbered(n))
    }
}

/// What a subscriber read: a message's number, or a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Message(u32),
    Gap,
}

/// Checks that `read` is told every loss exactly where it happened, in
/// broadcast order `0, 1, 2, ..`: numbers only go up, and a gap stands
/// between two numbers exactly when numbers between them are missing
/// (each loss told once, no gap where nothing was lost).
fn assert_gaps_exactly_at_losses(read: &[Read]) {
    let shown = || {
        read.iter()
            .map(|read| match read {
                Read::Message(n) => n.to_string(),
                Read::Gap => "GAP".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut last: Option<u32> = None;
    let mut gaps_since = 0;
    for item in read {
        match *item {
            Read::Gap => gaps_since += 1,
            Read::Message(n) => {
                let expected = last.map_or(0, |last| last + 1);
                assert!(
                    n >= expected,
                    "message {n} after {last:?}: an older message after a newer one: {}",
                    shown()
                );
                if n == expected {
                    assert_eq!(
                        gaps_since,
                        0,
                        "a gap between {last:?} and {n}, where nothing was lost: {}",
                        shown()
                    );
                } else {
                    assert_eq!(
                        gaps_since,
                        1,
                        "{expected}..{n} lost, and {gaps_since} gaps between {last:?} and {n}: {}",
                        shown()
                    );
                }
                gaps_since = 0;
                last = Some(n);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumers_gap_comes_exactly_where_messages_were_lost() {
    const ROOMS: Topic = Topic::new("chat:rooms");
    let server = NatsServer::start().await;
    let a: PubSub<Numbered> = PubSub::builder()
        .node_name("a")
        .nats(config(&server))
        .await
        .unwrap();
    // The subscriber's own queue holds everything: only the transport's
    // buffer of 32 can overflow.
    let b: PubSub<Numbered> = PubSub::builder()
        .node_name("b")
        .capacity(4096)
        .nats(config(&server).subscription_capacity(32))
        .await
        .unwrap();
    let mut on_b = b.subscribe(ROOMS).unwrap();
    b.sync().await.unwrap();
    // The subscriber reads as it comes, as a page does, until the last
    // message or 3 s of silence.
    const LAST: u32 = 1_010;
    let reader = tokio::spawn(async move {
        let mut read = Vec::new();
        while let Ok(received) = tokio::time::timeout(Duration::from_secs(3), on_b.recv()).await {
            match received {
                Ok(message) => {
                    read.push(Read::Message(message.0));
                    if message.0 == LAST {
                        break;
                    }
                }
                Err(RecvError::Gap(_)) => read.push(Read::Gap),
                Err(other) => panic!("{other:?} after {read:?}"),
            }
        }
        read
    });
    // A burst: `STUCK` holds the receive side for 800 ms while the rest
    // arrive, more than the buffer holds.
    for n in 0..1_000 {
        a.broadcast([ROOMS], Numbered(n)).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + staff_pubsub_tests::WAIT;
    while b.stats().gaps == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no gap within {:?}",
            staff_pubsub_tests::WAIT
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // After the loss, fewer than the buffer holds: these come after a gap,
    // not before it.
    for n in 1_000..=LAST {
        a.broadcast([ROOMS], Numbered(n)).await.unwrap();
    }
    let read = within("the reader", reader).await.unwrap();
    assert_gaps_exactly_at_losses(&read);
    assert_eq!(
        read.last(),
        Some(&Read::Message(LAST)),
        "the messages after the loss are delivered: {read:?}"
    );
    assert!(
        read.iter().filter(|read| **read != Read::Gap).count() <= LAST as usize,
        "nothing was lost: the test did not overflow the buffer: {read:?}"
    );
    // The message being decoded when the loss began comes before the gap.
    let before_gap: Vec<Read> = read
        .iter()
        .copied()
        .take_while(|read| *read != Read::Gap)
        .collect();
    assert!(before_gap.contains(&Read::Message(STUCK)), "{read:?}");
}

/// Every form of a server address with credentials reaches a server that
/// requires them, and no spelling of the secret shows in any log line,
/// async-nats's own at TRACE included.
#[tokio::test(flavor = "current_thread")]
async fn no_credential_form_reaches_the_clients_logs_at_any_level() {
    let (_guard, logs) = logs::capture_at(tracing::Level::TRACE);
    // `@` and `/` in the password: written `%40` and `%2F` in a URL.
    let users = [
        NatsServer::start_with(&["--user", "app", "--pass", "Zq9Pw@x/7"]).await,
        NatsServer::start_with(&["--user", "app", "--pass", "Zq9Pw@x/7"]).await,
    ];
    let tokens = [
        NatsServer::start_with(&["--auth", "Zq9Tok"]).await,
        NatsServer::start_with(&["--auth", "Zq9Tok"]).await,
    ];
    let hostport = |server: &NatsServer| format!("127.0.0.1:{}", server.port());
    let (u0, u1) = (hostport(&users[0]), hostport(&users[1]));
    let (t0, t1) = (hostport(&tokens[0]), hostport(&tokens[1]));
    let pw = "app:Zq9Pw%40x%2F7";
    let forms = [
        NatsConfig::new(format!("nats://{pw}@{u0}")),
        NatsConfig::new(format!("{pw}@{u0}")),
        NatsConfig::new(format!("nats://{pw}@{u0},nats://{pw}@{u1}")),
        NatsConfig::new(format!("{pw}@{u0}, {pw}@{u1}")),
        NatsConfig::new(format!("{pw}@{u0},nats://{u1}")),
        NatsConfig::new(format!("nats://{pw}@{u0}/?name=x&password=Zq9Opt")),
        NatsConfig::new(format!("{u0},{u1}")).user_and_password("app", "Zq9Pw@x/7"),
        NatsConfig::new(format!("nats://Zq9Tok@{t0}")),
        NatsConfig::new(format!("Zq9Tok@{t0}")),
        NatsConfig::new(format!("Zq9Tok@{t0},Zq9Tok@{t1}")),
        NatsConfig::new(t0.clone()).token("Zq9Tok"),
    ];
    for (n, form) in forms.into_iter().enumerate() {
        let shown = format!("{form:?}");
        let pubsub: PubSub<Message> = staff::builder()
            .node_name("a")
            .nats(form.namespace(NAMESPACE))
            .await
            .unwrap_or_else(|error| panic!("form {n} ({shown}): {error}"));
        let mut subscription = pubsub.subscribe(staff::topic_teams()).unwrap();
        pubsub.sync().await.unwrap();
        pubsub
            .broadcast([staff::topic_teams()], team("through"))
            .await
            .unwrap();
        assert_receive!(subscription, Message::Team(..));
        drop(subscription);
        drop(pubsub);
        for text in std::iter::once(&shown).chain(&logs.lines()) {
            assert!(!text.contains("Zq9"), "form {n}: a secret shows: {text}");
        }
    }
    // The client's own logs were captured, at TRACE.
    assert!(
        logs.has_line_with(&["TRACE", "async_nats"]),
        "no TRACE line of async-nats"
    );
    assert!(
        logs.has_line_with(&["DEBUG", "async_nats"]),
        "no DEBUG line of async-nats"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn credentials_never_show() {
    let (_guard, logs) = logs::capture();
    let server = NatsServer::start_with(&["--user", "app", "--pass", "S3cretPw"]).await;
    let good = config(&server).user_and_password("app", "S3cretPw");
    let shown_config = format!("{good:?}");
    let pubsub = staff::builder().nats(good).await.unwrap();
    drop(pubsub);
    let wrong = staff::builder()
        .nats(config(&server).user_and_password("app", "S3cretPwX"))
        .await
        .expect_err("a wrong password");
    let in_url = staff::builder()
        .nats(
            NatsConfig::new(server.url().replace("nats://", "nats://app:S3cretPwY@"))
                .namespace(NAMESPACE),
        )
        .await
        .expect_err("a wrong password in the URL");
    let token = staff::builder()
        .nats(config(&server).token("S3cretTok"))
        .await
        .expect_err("no token auth");
    let texts = [
        shown_config,
        format!("{wrong} {wrong:?}"),
        format!("{in_url} {in_url:?}"),
        format!("{token} {token:?}"),
    ];
    for text in texts.iter().chain(&logs.lines()) {
        assert!(!text.contains("S3cret"), "a secret shows: {text}");
    }
    assert!(
        texts[1].contains("cannot connect to NATS at"),
        "{}",
        texts[1]
    );
}

/// The `cluster` example with `--nats`, as a second OS process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_crosses_two_os_processes_through_the_cluster_example() {
    let server = NatsServer::start().await;
    let url = server.url();
    let mut child = Cluster::start(
        env!("CARGO_BIN_EXE_cluster"),
        &["--node", "child", "--nats", &url, "--namespace", NAMESPACE],
    );
    child.wait_for("ready: node child").await;

    let parent = node(&server, "parent").await;
    let mut teams = parent.subscribe(staff::topic_teams()).unwrap();
    parent.sync().await.unwrap();

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

    child.type_line("from the child");
    assert_receive!(teams, Message::Team(_, t) if t.name.as_deref() == Some(name.as_str()));
    assert_receive!(teams, Message::Team(_, t) if t.name.as_deref() == Some("from the child"));
}

/// A server that stops answering while its connections stay open (frozen,
/// or cut off) holds no broadcast past the response timeout: the client's
/// buffers fill up, and a broadcast still returns, with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_holds_no_broadcast_past_the_response_timeout() {
    let server = NatsServer::start().await;
    let timeout = Duration::from_millis(300);
    let a: PubSub<Message> = staff::builder()
        .node_name("a")
        .nats(config(&server).response_timeout(timeout))
        .await
        .unwrap();
    server.pause();
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..64 {
        let a = a.clone();
        tasks.spawn(async move {
            // Enough to fill the socket's and the client's buffers.
            let mut errors = 0;
            let mut slowest = Duration::ZERO;
            for round in 0..20 {
                let big = Message::Team(
                    TeamEvent::Created,
                    Team {
                        uuid: Uuid::now_v7(),
                        name: Some(format!("{n}.{round} {}", "x".repeat(60_000))),
                        department_uuid: None,
                    },
                );
                let one = std::time::Instant::now();
                errors += usize::from(a.broadcast([staff::topic_teams()], big).await.is_err());
                slowest = slowest.max(one.elapsed());
            }
            (errors, slowest)
        });
    }
    let mut errors = 0;
    let mut slowest = Duration::ZERO;
    while let Some(joined) = within("every broadcast to return", tasks.join_next()).await {
        let (failed, took) = joined.unwrap();
        errors += failed;
        slowest = slowest.max(took);
    }
    server.resume();
    assert!(errors > 0, "a frozen server took 77 MB?");
    assert!(
        slowest < timeout + Duration::from_millis(1500),
        "the slowest broadcast took {slowest:?} ({:?} in all)",
        started.elapsed()
    );
}

/// While the server is away, `sync` answers within its bound (an error)
/// however many topics wait; once it is back, the topics are subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_is_bounded_while_the_server_is_away_and_catches_up_after() {
    let mut server = NatsServer::start().await;
    let timeout = Duration::from_millis(300);
    let b: PubSub<Message> = staff::builder()
        .node_name("b")
        .nats(config(&server).response_timeout(timeout))
        .await
        .unwrap();
    server.kill();
    within(
        "b to notice",
        b.wait_for_connection(Connection::Disconnected),
    )
    .await;
    let subscriptions: Vec<_> = (0..2_100_u128)
        .map(|n| {
            b.subscribe(staff::topic_person(Uuid::from_u128(n)))
                .unwrap()
        })
        .collect();
    let started = std::time::Instant::now();
    let synced = b.sync().await;
    assert!(synced.is_err(), "{synced:?}");
    assert!(
        started.elapsed() < timeout * 2 + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    server.restart().await;
    within(
        "b to reconnect",
        b.wait_for_connection(Connection::Connected),
    )
    .await;
    within("the subscriptions to catch up", async {
        while b.sync().await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let subjects = server.subjects().await;
    let persons = subjects
        .iter()
        .filter(|subject| subject.starts_with(&format!("{NAMESPACE}.staff.person.")))
        .count();
    assert_eq!(persons, subscriptions.len());
}

/// Namespaces whose subjects overlap (`app` with topic `tenant:x`, and
/// `app.tenant` with topic `x`) still never see each other: an envelope on
/// a topic's subject must list that topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_namespaces_never_see_each_other() {
    const NESTED: Topic = Topic::new("tenant:x");
    const PLAIN: Topic = Topic::new("x");
    let server = NatsServer::start().await;
    let a: PubSub<Message> = staff::builder()
        .node_name("a")
        .nats(config(&server).namespace("app"))
        .await
        .unwrap();
    let b: PubSub<Message> = staff::builder()
        .node_name("b")
        .nats(config(&server).namespace("app.tenant"))
        .await
        .unwrap();
    let mut on_b = b.subscribe_many([PLAIN, NESTED]).unwrap();
    b.sync().await.unwrap();
    a.broadcast([NESTED], team("from app")).await.unwrap();
    // A fence from b's own namespace: b has handled a's envelope by then.
    let c: PubSub<Message> = staff::builder()
        .node_name("c")
        .nats(config(&server).namespace("app.tenant"))
        .await
        .unwrap();
    c.broadcast([PLAIN], team("fence")).await.unwrap();
    assert_receive!(on_b, Message::Team(_, t) if t.name.as_deref() == Some("fence"));
    refute_receive!(on_b, _);
    assert_eq!(b.stats().rejected, 1, "counted as misrouted");
    // A topic segment starting with `_` could reach the direct subject.
    let refused = a.broadcast([Topic::new("tenant:_direct")], team("x")).await;
    assert!(
        matches!(refused, Err(Error::Transport(ref e)) if e.outcome() == Outcome::NotSent),
        "{refused:?}"
    );
}

/// A subscription the server refuses (here: over its limit) is not
/// confirmed by `sync`: the refusal is reported, not silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_reports_a_subscription_the_server_refused() {
    let dir = std::env::temp_dir().join(format!("nats-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("limit.conf");
    std::fs::write(&conf, "max_subscriptions: 5\n").unwrap();
    let server = NatsServer::start_with(&["-c", conf.to_str().unwrap()]).await;
    let b = node(&server, "b").await;
    let subscriptions: Vec<_> = (0..6_u128)
        .map(|n| {
            b.subscribe(staff::topic_person(Uuid::from_u128(n)))
                .unwrap()
        })
        .collect();
    // The refusal reaches the client's events a moment after the server
    // sent it: one of the next syncs reports it.
    let reported = within("a sync to report the refusal", async {
        loop {
            if let Err(Error::Sync(error)) = b.sync().await {
                return error.to_string();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(reported.contains("refused"), "{reported}");
    drop(subscriptions);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `NatsConfig::max_topics`, as Redis's: a broadcast listing more topics
/// fails with `NotSent` (this node's subscribers have it), a received
/// direct broadcast listing more is skipped and counted; zero is refused
/// at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_topics_bounds_what_is_sent_and_received() {
    let server = NatsServer::start().await;
    let topics = [
        staff::topic_teams(),
        staff::topic_people(),
        staff::topic_departments(),
    ];
    let sender = node(&server, "sender").await;
    let bounded = staff::builder()
        .node_name("bounded")
        .nats(config(&server).max_topics(2))
        .await
        .unwrap();
    let mut here = bounded.subscribe(staff::topic_teams()).unwrap();
    let error = bounded
        .broadcast(topics, team("three topics"))
        .await
        .expect_err("more topics than max_topics");
    let staff_pubsub::Error::Transport(transport) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(
        transport.outcome(),
        staff_pubsub::Outcome::NotSent,
        "{error}"
    );
    let got = here.try_recv().expect("delivered here at the call");
    assert!(
        matches!(&*got, Message::Team(_, t) if t.name.as_deref() == Some("three topics")),
        "{got:?}"
    );
    bounded.sync().await.unwrap();
    sender
        .direct_broadcast("bounded", &topics, team("direct, three topics"))
        .await
        .unwrap();
    sender
        .direct_broadcast("bounded", &topics[..1], team("fence"))
        .await
        .unwrap();
    let fence = within("the fence", here.recv()).await.unwrap();
    assert!(
        matches!(&*fence, Message::Team(_, t) if t.name.as_deref() == Some("fence")),
        "{fence:?}"
    );
    assert_eq!(bounded.stats().rejected, 1);

    let error = staff::builder()
        .node_name("zero")
        .nats(config(&server).max_topics(0))
        .await
        .expect_err("zero topics");
    assert!(error.to_string().contains("at least one"), "{error}");
}
