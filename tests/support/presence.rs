//! What the presence tests over real servers share (`presence_redis.rs`,
//! `presence_nats.rs`): a short [`PresenceTiming`], the metadata type, and
//! waits on diffs (never on time alone).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use staff_pubsub::presence::{PresenceDiff, PresenceDiffs, PresenceTiming};
use staff_pubsub::{PubSub, Topic};
use tokio::time::Instant;

/// The topic the presences are on.
pub const TEAM: Topic = Topic::new("team:1");

/// Heartbeats every 100 ms.
pub const BROADCAST_PERIOD: Duration = Duration::from_millis(100);
/// An idle node heartbeats every 3 periods.
pub const MAX_SILENT_PERIODS: u32 = 2;
/// A silent node is down after 3 s: ten idle intervals, so that a busy
/// machine's late ticks do not take a live node down.
pub const DOWN_PERIOD: Duration = Duration::from_secs(3);

/// The longest an idle node goes between heartbeats: `max_silent_periods
/// + 1` periods, each up to a tenth longer (the jitter).
#[must_use]
pub fn idle_interval() -> Duration {
    BROADCAST_PERIOD * (MAX_SILENT_PERIODS + 1) * 11 / 10
}

/// The tests' short timing: the constants above, permdown after a minute.
pub fn timing() -> PresenceTiming {
    PresenceTiming::new()
        .broadcast_period(BROADCAST_PERIOD)
        .max_silent_periods(MAX_SILENT_PERIODS)
        .down_period(DOWN_PERIOD)
        .permdown_period(Duration::from_secs(60))
}

/// How long a wait for a diff may take: the down period and a few
/// heartbeats, with room for a shared machine (and for a client's
/// reconnect after a server restart).
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The metadata of the presences.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewer {
    /// Who.
    pub name: String,
}

/// A viewer named `name`.
#[must_use]
pub fn viewer(name: &str) -> Viewer {
    Viewer {
        name: name.to_owned(),
    }
}

/// The next diff.
///
/// # Panics
///
/// When none comes within [`PATIENCE`], or the tracker is gone.
pub async fn next(diffs: &mut PresenceDiffs<Viewer>) -> Arc<PresenceDiff<Viewer>> {
    tokio::time::timeout(PATIENCE, diffs.recv())
        .await
        .expect("a diff in time")
        .expect("a diff")
}

/// The names `pubsub` lists on [`TEAM`], each once, and how many
/// presences it lists in all (a name listed twice is a duplicate).
#[must_use]
pub fn listed<M: Send + Sync + 'static>(pubsub: &PubSub<M>) -> (BTreeSet<String>, usize) {
    let presences = pubsub.presences::<Viewer>(TEAM);
    let names = presences
        .iter()
        .map(|presence| presence.meta.name.clone())
        .collect();
    (names, presences.len())
}

/// The names `pubsub` lists on [`TEAM`].
#[must_use]
pub fn names<M: Send + Sync + 'static>(pubsub: &PubSub<M>) -> BTreeSet<String> {
    listed(pubsub).0
}

/// A set of names.
#[must_use]
pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// Waits, on diffs, until `pubsub` lists exactly `wanted` on [`TEAM`],
/// each once.
///
/// # Panics
///
/// When it does not within [`PATIENCE`].
pub async fn until_lists<M: Send + Sync + 'static>(pubsub: &PubSub<M>, wanted: &[&str]) {
    let wanted = set(wanted);
    let deadline = Instant::now() + PATIENCE;
    let mut diffs = pubsub.presence_diffs::<Viewer>(TEAM);
    while listed(pubsub) != (wanted.clone(), wanted.len()) {
        match tokio::time::timeout_at(deadline, diffs.recv()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("{} stopped reporting: {error}", pubsub.node_name()),
            Err(_) => panic!(
                "{} lists {:?}, not {wanted:?}",
                pubsub.node_name(),
                listed(pubsub)
            ),
        }
    }
}

/// Reads `diffs` until `key` left, returning when (the other diffs read
/// on the way must not be leaves of it).
///
/// # Panics
///
/// When it does not leave within [`PATIENCE`].
pub async fn until_leaves(diffs: &mut PresenceDiffs<Viewer>, key: &str) -> Instant {
    loop {
        let diff = next(diffs).await;
        if diff.leaves.iter().any(|leave| &*leave.key == key) {
            return Instant::now();
        }
    }
}

/// Reads `diffs` until `key` joined.
///
/// # Panics
///
/// When it does not join within [`PATIENCE`].
pub async fn until_joins(diffs: &mut PresenceDiffs<Viewer>, key: &str) {
    loop {
        let diff = next(diffs).await;
        if diff.joins.iter().any(|join| &*join.key == key) {
            return;
        }
    }
}

/// The presence heartbeat period of [`killed_and_restarted`]'s nodes.
pub const KILLED_PERIOD: Duration = Duration::from_millis(250);

/// A node killed with SIGKILL: another OS process (the `cluster` example
/// at `binary`, started with `engine_args` and `--node child`, present on
/// `staff:teams` under its node name, heartbeating every
/// [`KILLED_PERIOD`], down after 20 of them, as Phoenix derives it). Its
/// presence leaves `here` (a node of the same engine and namespace, timed
/// alike) within the down period plus an idle heartbeat interval, and
/// not before half the down period. Started again under the same name it
/// is listed again; killed and started again at once, it is a new
/// version: its old presence leaves as soon as the new one is heard,
/// before the down period.
///
/// # Panics
///
/// When any of that does not hold.
pub async fn killed_and_restarted(here: &PubSub<()>, binary: &str, engine_args: &[&str]) {
    use crate::child::Cluster;
    use staff_pubsub::staff;

    // Phoenix's rule: 10 silent periods, down after twice that; an idle
    // node heartbeats every 11 periods (a tenth more with the jitter).
    let down = KILLED_PERIOD * 20;
    let idle = KILLED_PERIOD * 11 * 11 / 10;
    let period = KILLED_PERIOD.as_millis().to_string();
    let mut args = vec!["--node", "child", "--presence-period", &period];
    args.extend_from_slice(engine_args);
    let child = || Cluster::start(binary, &args);
    let online = staff::topic_teams();
    let (_, mut diffs) = here.tracker::<String>().watch(online);
    let ids = || -> Vec<_> {
        here.presences::<String>(online)
            .iter()
            .map(|presence| (presence.key.to_string(), presence.id))
            .collect()
    };
    // Waits on diffs until `done` holds of this node's list.
    async fn until(
        diffs: &mut PresenceDiffs<String>,
        mut done: impl FnMut() -> bool,
        what: &str,
    ) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            match tokio::time::timeout_at(deadline, diffs.recv()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => panic!("{what}: {error}"),
                Err(_) => panic!("{what}: not within {PATIENCE:?}"),
            }
        }
        Instant::now()
    }

    let first = child();
    until(&mut diffs, || ids().len() == 1, "the child listed").await;

    first.kill();
    let killed = Instant::now();
    let left = until(&mut diffs, || ids().is_empty(), "the killed child leaves").await;
    let after = left - killed;
    assert!(
        after >= down / 2,
        "taken down after {after:?}, down period {down:?}"
    );
    // Within the down period and an idle interval, with room for a loaded
    // machine's late ticks.
    assert!(
        after <= down + idle + Duration::from_secs(2),
        "taken down after {after:?}"
    );

    // Started again: listed again, under a presence of its own.
    let second = child();
    until(
        &mut diffs,
        || ids().len() == 1,
        "the restarted child listed",
    )
    .await;
    let old = ids()[0].1;

    // Killed and started again at once: the new version's presence is
    // listed and the old one leaves, without waiting for the down period.
    second.kill();
    let killed = Instant::now();
    let _third = child();
    let replaced = until(
        &mut diffs,
        || {
            let now = ids();
            now.len() == 1 && now[0].1 != old
        },
        "the new version replaces the old",
    )
    .await;
    assert!(
        replaced - killed < down,
        "the old version left after {:?}, not before the down period {down:?}",
        replaced - killed
    );
}

/// Track, update and untrack on one node are listed and reported on the
/// other; then `b` goes without a word and `a` reports its presence as a
/// leave after the down period, not before half of it.
///
/// # Panics
///
/// When any of that does not hold.
pub async fn presences_cross(a: &PubSub<()>, b: PubSub<()>) {
    let mut at_b = b.presence_diffs::<Viewer>(TEAM);
    let mut at_a = a.presence_diffs::<Viewer>(TEAM);

    let mut ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    let diff = next(&mut at_b).await;
    assert_eq!(diff.joins.len(), 1, "{diff:?}");
    assert_eq!(diff.joins[0].id, ada.id(), "the id travels with it");
    assert_eq!(names(&b), set(&["Ada"]));

    ada.update(viewer("Ada L.")).expect("updated");
    let diff = next(&mut at_b).await;
    assert_eq!((diff.joins.len(), diff.leaves.len()), (1, 1), "{diff:?}");
    assert_eq!(*diff.joins[0].meta, viewer("Ada L."));
    assert_eq!(*diff.leaves[0].meta, viewer("Ada"));

    let bea = b.track(TEAM, "user-2", viewer("Bea")).expect("tracked");
    until_joins(&mut at_a, "user-2").await;
    assert_eq!(names(a), set(&["Ada L.", "Bea"]));

    drop(ada);
    until_leaves(&mut at_b, "user-1").await;
    assert_eq!(names(&b), set(&["Bea"]));
    // Nothing else is pending at a: its own leave, then quiet.
    until_leaves(&mut at_a, "user-1").await;
    assert!(at_a.try_recv().is_none());

    // b goes without a word; its guard lives on.
    drop(b);
    let gone = tokio::time::Instant::now();
    let diff = next(&mut at_a).await;
    assert_eq!(diff.leaves.len(), 1, "{diff:?}");
    assert_eq!(&*diff.leaves[0].key, "user-2");
    let after = gone.elapsed();
    // Not at the first missed heartbeat: b's last one came up to an idle
    // interval before it went, and ticks run late on a loaded machine, so
    // half the down period is the bound that holds.
    assert!(
        after >= DOWN_PERIOD / 2,
        "taken down after {after:?}, before the down period {DOWN_PERIOD:?}"
    );
    assert!(names(a).is_empty());
    drop(bea);
}
