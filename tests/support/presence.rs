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
