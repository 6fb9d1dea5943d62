//! Presence across two nodes over a real `redis-server` (started on a free
//! loopback port, see `support/redis_server.rs`), with a short timing
//! (`support/presence.rs`: heartbeats every 100 ms, down after 3 s), in
//! live and durable mode: a track on one node is listed and reported on
//! the other, and so are its update and its end; a node that stops without
//! a word has its presences reported as leaves after the down period, and
//! not before. Faults: the server killed and restarted, and one node cut
//! off (through a loopback proxy, `support/proxy.rs`) for longer than the
//! down period.

use std::time::Duration;

use staff_pubsub::redis::RedisConfig;
use staff_pubsub::{PubSub, Retention};
use staff_pubsub_tests::presence::{
    listed, presences_cross, set, timing, until_joins, until_leaves, until_lists, viewer, Viewer,
    DOWN_PERIOD, TEAM,
};
use staff_pubsub_tests::proxy::Proxy;
use staff_pubsub_tests::redis_server::RedisServer;

fn config(url: &str) -> RedisConfig {
    RedisConfig::new(url)
        .namespace("presence-test")
        .connect_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

async fn build(config: RedisConfig, name: &str) -> PubSub<()> {
    let pubsub = PubSub::<()>::builder()
        .presence_timing(timing())
        .expect("a valid timing")
        .node_name(name)
        .redis(config)
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
async fn presences_cross_redis_and_a_silent_node_leaves_after_the_down_period() {
    let server = RedisServer::start().await;
    let a = node(&server.url(), "a").await;
    let b = node(&server.url(), "b").await;
    presences_cross(&a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presences_cross_redis_in_durable_mode_too() {
    let server = RedisServer::start().await;
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
async fn after_a_server_restart_every_presence_is_listed_once_on_every_node() {
    let mut server = RedisServer::start().await;
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
    let server = RedisServer::start().await;
    let proxy = Proxy::start(server.port()).await;
    let a = node(&server.url(), "a").await;
    let b = node(&proxy.url("redis"), "b").await;
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

/// A node killed with SIGKILL, over Redis: see
/// [`killed_and_restarted`](staff_pubsub_tests::presence::killed_and_restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_leaves_and_a_restarted_one_is_a_new_version() {
    use staff_pubsub_tests::presence::{killed_and_restarted, KILLED_PERIOD};
    let server = RedisServer::start().await;
    let url = server.url();
    let here = PubSub::<()>::builder()
        .node_name("here")
        .presence_timing(
            staff_pubsub::presence::PresenceTiming::new().broadcast_period(KILLED_PERIOD),
        )
        .expect("a valid timing")
        .redis(RedisConfig::new(server.url()).namespace("sigkill"))
        .await
        .expect("connected");
    killed_and_restarted(
        &here,
        env!("CARGO_BIN_EXE_cluster"),
        &["--redis", &url, "--namespace", "sigkill"],
    )
    .await;
}
