//! Presence across nodes over a real `nats-server` (started on free
//! loopback ports, see `support/nats_server.rs`), with a short timing
//! (`support/presence.rs`: heartbeats every 100 ms, down after 3 s), in
//! live and durable (JetStream) mode: a track on one node is listed and
//! reported on the other, and so are its update and its end; a node that
//! stops without a word has its presences reported as leaves after the
//! down period, and not before; the presence subjects are the reserved
//! ones, and frames that are not frames or messages that do not decode
//! are counted in `Stats::rejected`. Faults: the server killed and
//! restarted, and one node cut off (through a loopback proxy,
//! `support/proxy.rs`) for longer than the down period.

use std::time::Duration;

use staff_pubsub::nats::NatsConfig;
use staff_pubsub::{PubSub, Retention};
use staff_pubsub_tests::nats_server::NatsServer;
use staff_pubsub_tests::presence::{
    listed, names, presences_cross, set, timing, until_joins, until_leaves, until_lists, viewer,
    Viewer, DOWN_PERIOD, PATIENCE, TEAM,
};
use staff_pubsub_tests::proxy::Proxy;

const NAMESPACE: &str = "presence-test";

fn config(url: &str) -> NatsConfig {
    NatsConfig::new(url)
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
}

async fn build(config: NatsConfig, name: &str) -> PubSub<()> {
    let pubsub = PubSub::<()>::builder()
        .presence_timing(timing())
        .expect("a valid timing")
        .node_name(name)
        .nats(config)
        .await
        .unwrap_or_else(|error| panic!("node {name}: {error}"));
    // The replica starts with the tracker.
    drop(pubsub.tracker::<Viewer>());
    pubsub
}

async fn node(url: &str, name: &str) -> PubSub<()> {
    build(config(url), name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presences_cross_nats_and_a_silent_node_leaves_after_the_down_period() {
    let server = NatsServer::start().await;
    let a = node(&server.url(), "a").await;
    let b = node(&server.url(), "b").await;
    presences_cross(&a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presences_cross_nats_in_durable_mode_too() {
    let server = NatsServer::start_jetstream().await;
    let durable = |name| {
        build(
            config(&server.url()).durable(Retention::entries(1_000)),
            name,
        )
    };
    let a = durable("a").await;
    let b = durable("b").await;
    presences_cross(&a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_subjects_are_reserved_and_what_is_not_a_message_is_counted() {
    let server = NatsServer::start().await;
    let a = node(&server.url(), "a").await;
    let b = node(&server.url(), "node.b").await;
    let _ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    until_lists(&b, &["Ada"]).await;

    let tracker = std::any::type_name::<Viewer>()
        .replace('_', "_5F")
        .replace("::", "_3A_3A");
    let all = format!("{NAMESPACE}._presence.{tracker}");
    let subjects = server.subjects().await;
    for wanted in [all.clone(), format!("{all}.a"), format!("{all}.node_2Eb")] {
        assert!(subjects.contains(&wanted), "{wanted} in {subjects:?}");
    }

    // Not a frame; a frame whose message does not decode; a frame for
    // another node (not a fault, not counted).
    server.publish_raw(&all, b"\x00").await;
    server.publish_raw(&all, b"\x00\x01x\x00\x00garbage").await;
    server.publish_raw(&all, b"\x00\x01x\x00\x01cgarbage").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while b.stats().rejected < 2 || a.stats().rejected < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rejected: a {}, b {}",
            a.stats().rejected,
            b.stats().rejected
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What followed still crosses.
    let _bea = b.track(TEAM, "user-2", viewer("Bea")).expect("tracked");
    until_lists(&a, &["Ada", "Bea"]).await;
    assert_eq!((a.stats().rejected, b.stats().rejected), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_every_presence_is_listed_once_on_every_node() {
    let mut server = NatsServer::start().await;
    let a = node(&server.url(), "a").await;
    let b = node(&server.url(), "b").await;
    let _ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    let _bea = b.track(TEAM, "user-2", viewer("Bea")).expect("tracked");
    until_lists(&a, &["Ada", "Bea"]).await;
    until_lists(&b, &["Ada", "Bea"]).await;
    let mut at_a = a.presence_diffs::<Viewer>(TEAM);
    let mut at_b = b.presence_diffs::<Viewer>(TEAM);

    server.kill();
    // Tracked while the server is away.
    let _cy = a.track(TEAM, "user-3", viewer("Cy")).expect("tracked");
    // Longer than the down period: each takes the other down.
    until_leaves(&mut at_a, "user-2").await;
    until_leaves(&mut at_b, "user-1").await;
    assert_eq!(listed(&a), (set(&["Ada", "Cy"]), 2));
    assert_eq!(listed(&b), (set(&["Bea"]), 1));

    server.restart().await;
    until_lists(&a, &["Ada", "Bea", "Cy"]).await;
    until_lists(&b, &["Ada", "Bea", "Cy"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_longer_than_the_down_period_leaves_and_comes_back() {
    let server = NatsServer::start().await;
    let proxy = Proxy::start(server.port()).await;
    let a = node(&server.url(), "a").await;
    let b = node(&proxy.url("nats"), "b").await;
    let _ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    let _bea = b.track(TEAM, "user-2", viewer("Bea")).expect("tracked");
    until_lists(&a, &["Ada", "Bea"]).await;
    until_lists(&b, &["Ada", "Bea"]).await;
    let mut at_a = a.presence_diffs::<Viewer>(TEAM);
    let mut at_b = b.presence_diffs::<Viewer>(TEAM);

    proxy.block();
    assert!(proxy.cut() >= 1, "b was connected through the proxy");
    let cut = tokio::time::Instant::now();
    until_leaves(&mut at_a, "user-2").await;
    let after = cut.elapsed();
    assert!(
        after >= DOWN_PERIOD / 2,
        "b taken down after {after:?}, before the down period"
    );
    until_leaves(&mut at_b, "user-1").await;
    assert_eq!(listed(&a), (set(&["Ada"]), 1));
    assert_eq!(listed(&b), (set(&["Bea"]), 1));

    proxy.unblock();
    until_joins(&mut at_a, "user-2").await;
    until_joins(&mut at_b, "user-1").await;
    assert_eq!(listed(&a), (set(&["Ada", "Bea"]), 2));
    assert_eq!(listed(&b), (set(&["Ada", "Bea"]), 2));
}

/// A node name too long for a NATS subject (escaped, it would pass the
/// server's control line, which closes the whole connection): the
/// node's presence stays on it alone, and its connection, broadcasts
/// and the other nodes' presence go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_too_long_for_a_subject_keeps_presence_local_and_the_connection_up() {
    use staff_pubsub::Connection;
    let (_guard, logs) = staff_pubsub_tests::logs::capture();
    let server = NatsServer::start().await;
    let long = ".".repeat(1500); // 4,500 bytes escaped // 4,500 bytes escaped
    let odd = node(&server.url(), &long).await;
    let other = node(&server.url(), "other").await;
    let _ada = odd.track(TEAM, "ada", viewer("Ada")).expect("tracked");
    let _bea = other.track(TEAM, "bea", viewer("Bea")).expect("tracked");
    assert_eq!(names(&odd), set(&["Ada"]), "in process");

    assert!(
        logs.has_line_with(&["WARN", "presence stays on this node", "1024 bytes"]),
        "{:#?}",
        logs.lines()
    );
    // Its connection is up: a round trip to the server after the tracker
    // opened (a subject past the server's control line would have had the
    // server close it, and again after each reconnect).
    odd.sync().await.expect("a round trip");
    assert_eq!(odd.connection(), Connection::Connected);
    assert_eq!(
        names(&other),
        set(&["Bea"]),
        "the odd node's presence stays on it"
    );
}

/// A node killed with SIGKILL, over NATS: see
/// [`killed_and_restarted`](staff_pubsub_tests::presence::killed_and_restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_leaves_and_a_restarted_one_is_a_new_version() {
    use staff_pubsub_tests::presence::{killed_and_restarted, KILLED_PERIOD};
    let server = NatsServer::start().await;
    let url = server.url();
    let here = PubSub::<()>::builder()
        .node_name("here")
        .presence_timing(
            staff_pubsub::presence::PresenceTiming::new().broadcast_period(KILLED_PERIOD),
        )
        .expect("a valid timing")
        .nats(NatsConfig::new(&url).namespace("sigkill"))
        .await
        .expect("connected");
    killed_and_restarted(
        &here,
        env!("CARGO_BIN_EXE_cluster"),
        &["--nats", &url, "--namespace", "sigkill"],
    )
    .await;
}
