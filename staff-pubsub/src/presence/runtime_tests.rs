//! The replica runtime across servers: three servers on an in-memory
//! gossip network, on tokio's paused time (a wait for a diff advances the
//! clock to the next timer, so the down period passes at once).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::shard::ShardConfig;
use super::{PresenceDiff, PresenceDiffs, PresenceTiming};
use crate::error::TransportError;
use crate::gossip::GossipHandle;
use crate::gossip::MemoryHub;
use crate::loom::sync::Arc;
use crate::server::PubSub;
use crate::topic::Topic;
use crate::transport::{BoxFuture, Envelope, Transport};

const TEAM: Topic = Topic::new("team:1");

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Viewer {
    name: String,
}

fn viewer(name: &str) -> Viewer {
    Viewer {
        name: name.to_owned(),
    }
}

/// Broadcasts go nowhere: these servers share presences only.
struct NoBroadcasts;

impl Transport<()> for NoBroadcasts {
    fn publish<'a>(&'a self, _: Envelope<'a, ()>) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

async fn server(hub: &MemoryHub, name: &str) -> PubSub<()> {
    timed_server(hub, name, PresenceTiming::default()).await
}

async fn timed_server(hub: &MemoryHub, name: &str, timing: PresenceTiming) -> PubSub<()> {
    let gossip: GossipHandle = Arc::new(hub.node(name));
    let pubsub = PubSub::<()>::builder()
        .presence_timing(timing)
        .expect("a valid timing")
        .node_name(name)
        .build_with_gossip(|_| async move { Ok((NoBroadcasts, Some(gossip))) })
        .await
        .expect("the server builds");
    // The replica starts with the tracker.
    drop(pubsub.tracker::<Viewer>());
    pubsub
}

fn config() -> ShardConfig {
    ShardConfig::default()
}

/// Longer than any wait here should take: the down period and a few
/// broadcast periods.
fn patience() -> Duration {
    let config = config();
    Duration::from_millis(config.down_period_ms + 4 * config.broadcast_period_ms)
}

async fn next(diffs: &mut PresenceDiffs<Viewer>) -> Arc<PresenceDiff<Viewer>> {
    tokio::time::timeout(patience(), diffs.recv())
        .await
        .expect("a diff in time")
        .expect("a diff")
}

fn names(pubsub: &PubSub<()>) -> BTreeSet<String> {
    pubsub
        .presences::<Viewer>(TEAM)
        .iter()
        .map(|presence| presence.meta.name.clone())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// Waits (on diffs, not on time) until `pubsub` lists `wanted` on TEAM.
async fn until_lists(pubsub: &PubSub<()>, wanted: &BTreeSet<String>) {
    let deadline = Instant::now() + patience();
    let mut diffs = pubsub.presence_diffs::<Viewer>(TEAM);
    while names(pubsub) != *wanted {
        match tokio::time::timeout_at(deadline, diffs.recv()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("{} stopped reporting: {error}", pubsub.node_name()),
            Err(_) => panic!(
                "{} lists {:?}, not {wanted:?}",
                pubsub.node_name(),
                names(pubsub)
            ),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_track_on_one_node_is_listed_and_reported_on_the_others_and_so_is_its_end() {
    let hub = MemoryHub::default();
    let a = server(&hub, "a").await;
    let b = server(&hub, "b").await;
    let c = server(&hub, "c").await;
    let mut at_b = b.presence_diffs::<Viewer>(TEAM);
    let mut at_c = c.presence_diffs::<Viewer>(TEAM);

    let mut ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    for (node, diffs) in [(&b, &mut at_b), (&c, &mut at_c)] {
        let diff = next(diffs).await;
        assert_eq!(diff.joins.len(), 1, "{diff:?}");
        assert!(diff.leaves.is_empty(), "{diff:?}");
        assert_eq!(&*diff.joins[0].key, "user-1");
        assert_eq!(diff.joins[0].id, ada.id(), "the id travels with it");
        let listed = node.tracker::<Viewer>().list(TEAM);
        assert_eq!(listed.len(), 1);
        assert_eq!(*listed["user-1"][0].meta, viewer("Ada"));
    }

    // An update is one diff everywhere: the new meta joins, the old leaves.
    ada.update(viewer("Ada L.")).expect("updated");
    for diffs in [&mut at_b, &mut at_c] {
        let diff = next(diffs).await;
        assert_eq!(diff.joins.len(), 1, "{diff:?}");
        assert_eq!(diff.leaves.len(), 1, "{diff:?}");
        assert_eq!(*diff.joins[0].meta, viewer("Ada L."));
        assert_eq!(*diff.leaves[0].meta, viewer("Ada"));
    }

    // Tracked on two nodes: two presences of one key.
    let ada_on_c = c
        .track(TEAM, "user-1", viewer("Ada on c"))
        .expect("tracked");
    until_lists(&a, &set(&["Ada L.", "Ada on c"])).await;
    assert_eq!(a.tracker::<Viewer>().list(TEAM)["user-1"].len(), 2);

    drop(ada);
    ada_on_c.untrack();
    for node in [&a, &b, &c] {
        until_lists(node, &set(&[])).await;
    }
    // The leaves came as diffs too (b saw: join, update, join on c, then
    // the two leaves, in one diff or two).
    let mut left = 0;
    while let Some(diff) = at_b.try_recv() {
        left += diff.expect("no lag").leaves.len();
    }
    assert_eq!(left, 2, "b was told both presences left");
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_is_taken_down_after_the_down_period_and_its_presences_leave() {
    let hub = MemoryHub::default();
    let a = server(&hub, "a").await;
    let b = server(&hub, "b").await;
    let c = server(&hub, "c").await;
    let _ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    let mut at_b = b.presence_diffs::<Viewer>(TEAM);
    let mut at_c = c.presence_diffs::<Viewer>(TEAM);
    assert_eq!(next(&mut at_b).await.joins.len(), 1);
    assert_eq!(next(&mut at_c).await.joins.len(), 1);

    // The server goes with no word (its guard lives on, as a crashed
    // node's presences do in the others' eyes).
    drop(a);
    let gone = Instant::now();
    let config = config();
    for diffs in [&mut at_b, &mut at_c] {
        let diff = next(diffs).await;
        assert_eq!(diff.leaves.len(), 1, "{diff:?}");
        assert_eq!(&*diff.leaves[0].key, "user-1");
    }
    let after = gone.elapsed();
    let down = Duration::from_millis(config.down_period_ms);
    let period = Duration::from_millis(config.broadcast_period_ms);
    assert!(
        after + 2 * period >= down,
        "taken down after {after:?}, before the down period {down:?}"
    );
    assert!(
        after <= down + 2 * period,
        "taken down after {after:?}: later than the down period and a heartbeat"
    );
    let (_, peers) = b.tracker::<Viewer>().replicas();
    assert!(
        peers
            .iter()
            .any(|(replica, up)| &*replica.name == "a" && !up),
        "b holds a as down: {peers:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_builder_s_timing_drives_the_replica() {
    let timing = PresenceTiming::new()
        .broadcast_period(Duration::from_millis(100))
        .max_silent_periods(2)
        .down_period(Duration::from_millis(1_000));
    let hub = MemoryHub::default();
    let a = timed_server(&hub, "a", timing.clone()).await;
    let b = timed_server(&hub, "b", timing).await;
    let start = Instant::now();
    let _ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    let mut at_b = b.presence_diffs::<Viewer>(TEAM);
    assert_eq!(next(&mut at_b).await.joins.len(), 1);
    assert!(
        start.elapsed() <= Duration::from_millis(250),
        "the join came with a heartbeat of the short period: {:?}",
        start.elapsed()
    );

    drop(a);
    let gone = Instant::now();
    let diff = next(&mut at_b).await;
    assert_eq!(diff.leaves.len(), 1, "{diff:?}");
    let after = gone.elapsed();
    // a's last heartbeat came at most an idle interval (3 periods and a
    // tenth) before it went; b looks every period (and a tenth).
    assert!(
        after >= Duration::from_millis(1_000 - 330),
        "taken down after {after:?}, before the down period"
    );
    assert!(
        after <= Duration::from_millis(1_000 + 110),
        "taken down after {after:?}, later than the short down period and a tick"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_rejoins_as_a_new_version_and_its_old_presences_leave_at_once() {
    let hub = MemoryHub::default();
    let a = server(&hub, "a").await;
    let b = server(&hub, "b").await;
    let old_version = a.tracker::<Viewer>().replicas().0;
    let ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    let mut at_b = b.presence_diffs::<Viewer>(TEAM);
    assert_eq!(next(&mut at_b).await.joins.len(), 1);

    drop(a);
    drop(ada);
    let restarted = Instant::now();
    let a = server(&hub, "a").await;
    let new_version = a.tracker::<Viewer>().replicas().0;
    assert_eq!(new_version.name, old_version.name);
    assert_ne!(new_version.vsn, old_version.vsn);
    let _grace = a.track(TEAM, "user-2", viewer("Grace")).expect("tracked");

    until_lists(&b, &set(&["Grace"])).await;
    let config = config();
    assert!(
        restarted.elapsed() < Duration::from_millis(config.down_period_ms),
        "the old version ended when the new one heartbeat, not after the down period: {:?}",
        restarted.elapsed()
    );
    let (_, peers) = b.tracker::<Viewer>().replicas();
    assert_eq!(
        peers,
        vec![(new_version, true)],
        "b knows the new version only"
    );
    until_lists(&a, &set(&["Grace"])).await;
}

#[tokio::test(start_paused = true)]
async fn a_partition_heals_to_one_state() {
    let hub = MemoryHub::default();
    let a = server(&hub, "a").await;
    let b = server(&hub, "b").await;
    let c = server(&hub, "c").await;
    let ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    let carl = c.track(TEAM, "user-3", viewer("Carl")).expect("tracked");
    for node in [&a, &b, &c] {
        until_lists(node, &set(&["Ada", "Carl"])).await;
    }

    hub.partition(&[&["a"], &["b", "c"]]);
    // Each side changes, and waits until the other is down.
    let _bea = b.track(TEAM, "user-2", viewer("Bea")).expect("tracked");
    drop(carl);
    let _alf = a.track(TEAM, "user-4", viewer("Alf")).expect("tracked");
    drop(ada);
    until_lists(&a, &set(&["Alf"])).await;
    until_lists(&b, &set(&["Bea"])).await;
    until_lists(&c, &set(&["Bea"])).await;

    hub.heal();
    let healed = set(&["Alf", "Bea"]);
    for node in [&a, &b, &c] {
        until_lists(node, &healed).await;
    }
    // And it stays so: another down period later, nothing moved.
    tokio::time::sleep(patience()).await;
    for node in [&a, &b, &c] {
        assert_eq!(names(node), healed, "{}", node.node_name());
    }
}

#[tokio::test(start_paused = true)]
async fn garbage_and_forged_messages_are_skipped_and_counted() {
    let hub = MemoryHub::default();
    let a = server(&hub, "a").await;
    let b = server(&hub, "b").await;
    let tracker = std::any::type_name::<Viewer>();
    hub.inject(tracker, "mallory", b"\x92\x01garbage".to_vec());
    // A well-formed message from "mallory" that says it is from "a".
    let forged: super::codec::Msg<Viewer> = super::shard::Message::GracefulPermdown {
        from: a.tracker::<Viewer>().replicas().0,
    };
    hub.inject(
        tracker,
        "mallory",
        super::codec::encode(&forged).expect("encodes"),
    );
    // What arrives after them on b's queue: a's track.
    let _ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    until_lists(&b, &set(&["Ada"])).await;
    assert_eq!(b.stats().rejected, 2);
    assert_eq!(a.stats().rejected, 2, "a got them too");
}

#[tokio::test(start_paused = true)]
async fn without_gossip_a_server_tracks_in_process_only() {
    let hub = MemoryHub::default();
    let a = server(&hub, "a").await;
    let alone = PubSub::<()>::builder().node_name("a2").build();
    let _ada = alone.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    tokio::time::sleep(patience()).await;
    assert!(names(&a).is_empty());
    assert_eq!(names(&alone), set(&["Ada"]));
}
