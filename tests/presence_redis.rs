//! Presence across two nodes over a real `redis-server` (started on a free
//! loopback port, see `support/redis_server.rs`), with a short timing
//! (`support/presence.rs`: heartbeats every 100 ms, down after 1.5 s): a
//! track on one node is listed and reported on the other, and so are its
//! update and its end; a node that stops without a word has its presences
//! reported as leaves after the down period, and not before.

use std::time::Duration;

use staff_pubsub::redis::RedisConfig;
use staff_pubsub::PubSub;
use staff_pubsub_tests::presence::{
    idle_interval, names, next, set, timing, viewer, Viewer, DOWN_PERIOD, TEAM,
};
use staff_pubsub_tests::redis_server::RedisServer;

fn config(url: &str) -> RedisConfig {
    RedisConfig::new(url)
        .namespace("presence-test")
        .connect_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

async fn node_at(url: &str, name: &str) -> PubSub<()> {
    let pubsub = PubSub::<()>::builder()
        .presence_timing(timing())
        .expect("a valid timing")
        .node_name(name)
        .redis(config(url))
        .await
        .expect("the node connects");
    // The replica starts with the tracker.
    drop(pubsub.tracker::<Viewer>());
    pubsub
}

async fn node(server: &RedisServer, name: &str) -> PubSub<()> {
    node_at(&server.url(), name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presences_cross_redis_and_a_silent_node_leaves_after_the_down_period() {
    let server = RedisServer::start().await;
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let mut at_b = b.presence_diffs::<Viewer>(TEAM);
    let mut at_a = a.presence_diffs::<Viewer>(TEAM);

    let mut ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    let diff = next(&mut at_b).await;
    assert_eq!(diff.joins.len(), 1, "{diff:?}");
    assert_eq!(diff.joins[0].id, ada.id());
    assert_eq!(names(&b), set(&["Ada"]));

    ada.update(viewer("Ada L.")).expect("updated");
    let diff = next(&mut at_b).await;
    assert_eq!((diff.joins.len(), diff.leaves.len()), (1, 1), "{diff:?}");
    assert_eq!(*diff.joins[0].meta, viewer("Ada L."));

    let bea = b.track(TEAM, "user-2", viewer("Bea")).expect("tracked");
    // a's own join and update come first.
    loop {
        let diff = next(&mut at_a).await;
        if diff.joins.iter().any(|join| &*join.key == "user-2") {
            assert_eq!(diff.joins[0].id, bea.id());
            break;
        }
    }

    drop(ada);
    let diff = next(&mut at_b).await;
    assert_eq!(
        &*diff.joins[0].key, "user-2",
        "b's own join first: {diff:?}"
    );
    let diff = next(&mut at_b).await;
    assert_eq!(diff.leaves.len(), 1, "{diff:?}");
    assert_eq!(&*diff.leaves[0].key, "user-1");
    assert_eq!(names(&b), set(&["Bea"]));

    // a's own leave, reported as it happened.
    let diff = at_a.try_recv().expect("a's leave").expect("no lag");
    assert_eq!(&*diff.leaves[0].key, "user-1");
    assert!(at_a.try_recv().is_none());

    // b goes without a word; its guard lives on.
    drop(b);
    let gone = tokio::time::Instant::now();
    let diff = next(&mut at_a).await;
    assert_eq!(diff.leaves.len(), 1, "{diff:?}");
    assert_eq!(&*diff.leaves[0].key, "user-2");
    let after = gone.elapsed();
    // b's last heartbeat came at most an idle interval before it went.
    assert!(
        after >= DOWN_PERIOD - idle_interval(),
        "taken down after {after:?}, before the down period {DOWN_PERIOD:?}"
    );
    assert!(names(&a).is_empty());
    drop(bea);
}
