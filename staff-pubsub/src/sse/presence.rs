//! Presence over the SSE bridge: what one connection tracks and watches,
//! and its `presence_state` / `presence_diff` events (the wire format is
//! in the [bridge's docs](super#presence-who-is-here)).
//!
//! A connection's [`Feed`] holds the [`Tracked`] guards of its presences
//! (dropped with the connection's stream: a leave) and one
//! [`PresenceDiffs`] per watched topic. A stalled connection (its stream
//! not polled for the stall timeout) has its guards taken by a watchdog
//! task, and its stream ends when it is polled again.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::loom::sync::{Arc, Mutex, Weak};
use crate::presence::{
    Presence, PresenceDiff, PresenceDiffs, PresenceError, PresenceId, PresenceRecvError, Tracked,
    Tracker,
};
use crate::{PubSub, Topic};

/// The SSE event with a topic's whole presence list.
pub const PRESENCE_STATE_EVENT: &str = "presence_state";

/// The SSE event with what changed in a topic's presence.
pub const PRESENCE_DIFF_EVENT: &str = "presence_diff";

/// How long a connection that tracks presences may go without its stream
/// being polled (the browser does not read, or is gone without closing
/// its connection) before its presences leave and its stream is ended
/// ([`SseBridge::stall_timeout`](super::SseBridge::stall_timeout)).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a connection does with a topic's presence: the application's
/// answer, from the hook of
/// [`SseBridge::presence`](super::SseBridge::presence) or given to
/// [`SseBridge::open_with_presence`](super::SseBridge::open_with_presence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceGrant<Meta> {
    /// The connection sees who is on the topic (`presence_state`, then
    /// `presence_diff`) without being listed.
    Watch,
    /// The connection is listed as `key` with `meta` for as long as it
    /// lasts, and sees who is on the topic (itself included).
    Track {
        /// The key it is listed under (a user id: several connections of
        /// one user are one key with several metas, as in Phoenix).
        key: String,
        /// Its metadata, sent to every watcher as JSON.
        meta: Meta,
    },
}

impl<Meta> PresenceGrant<Meta> {
    /// [`PresenceGrant::Track`] of `key` and `meta`.
    pub fn track(key: impl Into<String>, meta: Meta) -> Self {
        Self::Track {
            key: key.into(),
            meta,
        }
    }
}

/// Why a connection's presence could not be set up: the topic and the
/// tracker's error.
pub(crate) struct GrantError {
    pub(crate) topic: Topic,
    pub(crate) error: PresenceError,
}

/// What the stream of a connection asks of its presence, whatever the
/// metadata type.
pub(crate) trait PresenceFeed: Send {
    /// The next presence event, or `Ended` once the connection was found
    /// stalled. Never ready when there is nothing to send.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<FeedItem>;

    /// The stream made progress (it was polled, or an event was taken).
    fn touch(&self);
}

/// An item of a [`PresenceFeed`].
pub(crate) enum FeedItem {
    /// An SSE event: its name and data.
    Event(&'static str, String),
    /// The connection was stalled: its presences left; end the stream.
    Ended,
}

/// The guards of a connection's presences and its liveness, shared with
/// its watchdog.
struct Guards<Meta> {
    tracked: Mutex<Vec<Tracked<Meta>>>,
    /// Milliseconds since `epoch` of the stream's last progress.
    touched: AtomicU64,
    epoch: Instant,
    /// Set by the watchdog when it took the guards.
    stalled: AtomicBool,
}

impl<Meta> Guards<Meta> {
    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.touched.store(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = self.epoch.elapsed();
        now.saturating_sub(Duration::from_millis(self.touched.load(Ordering::Relaxed)))
    }
}

/// Takes the guards of a connection whose stream was not polled for
/// `timeout`: its presences leave. Ends with the connection.
async fn watchdog<Meta: Send + Sync + 'static>(guards: Weak<Guards<Meta>>, timeout: Duration) {
    let every = (timeout / 4).max(Duration::from_millis(5));
    loop {
        tokio::time::sleep(every).await;
        let Some(guards) = guards.upgrade() else {
            return;
        };
        if guards.idle() >= timeout {
            guards.stalled.store(true, Ordering::Release);
            let taken = std::mem::take(&mut *guards.tracked.lock());
            tracing::debug!(
                presences = taken.len(),
                "SSE presence: the connection stalled: its presences leave"
            );
            drop(taken);
            return;
        }
    }
}

/// One watched topic of a connection.
struct Watched<Meta> {
    topic: Topic,
    /// The list to send as `presence_state`, until sent.
    state: Option<Vec<Presence<Meta>>>,
    diffs: PresenceDiffs<Meta>,
    /// The tracker is gone: no more diffs.
    closed: bool,
}

/// The presence of one connection, with metadata `Meta`.
pub(crate) struct Feed<Meta> {
    tracker: Tracker<Meta>,
    watched: Vec<Watched<Meta>>,
    /// Where the next poll starts, so that a busy topic does not starve
    /// the others.
    next: usize,
    guards: Option<Arc<Guards<Meta>>>,
}

impl<Meta> Feed<Meta>
where
    Meta: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Tracks and watches what `grants` say, on `pubsub`'s tracker of
    /// `Meta`: tracked first, so that each `presence_state` lists the
    /// connection itself. With a tracked presence and a tokio runtime, a
    /// watchdog ends a connection stalled for `stall_timeout`. `None`
    /// when nothing is granted.
    pub(crate) fn new<M: Send + Sync + 'static>(
        pubsub: &PubSub<M>,
        grants: Vec<(Topic, PresenceGrant<Meta>)>,
        stall_timeout: Duration,
    ) -> Result<Option<Self>, GrantError> {
        if grants.is_empty() {
            return Ok(None);
        }
        let tracker = pubsub.tracker::<Meta>();
        let mut tracked = Vec::new();
        let mut topics: Vec<Topic> = Vec::new();
        for (topic, grant) in grants {
            if let PresenceGrant::Track { key, meta } = grant {
                // On an error the guards made so far drop: their presences leave.
                let guard = tracker
                    .track(topic, key, meta)
                    .map_err(|error| GrantError { topic, error })?;
                tracked.push(guard);
            }
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        let watched = topics
            .into_iter()
            .map(|topic| {
                let (list, diffs) = tracker.watch(topic);
                Watched {
                    topic,
                    state: Some(list),
                    diffs,
                    closed: false,
                }
            })
            .collect();
        let guards = (!tracked.is_empty()).then(|| {
            let guards = Arc::new(Guards {
                tracked: Mutex::new(tracked),
                touched: AtomicU64::new(0),
                epoch: Instant::now(),
                stalled: AtomicBool::new(false),
            });
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(watchdog(Arc::downgrade(&guards), stall_timeout));
                }
                Err(_) => tracing::warn!(
                    "SSE presence outside a tokio runtime: a stalled connection stays present"
                ),
            }
            guards
        });
        Ok(Some(Self {
            tracker,
            watched,
            next: 0,
            guards,
        }))
    }
}

impl<Meta> PresenceFeed for Feed<Meta>
where
    Meta: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<FeedItem> {
        if let Some(guards) = &self.guards {
            if guards.stalled.load(Ordering::Acquire) {
                return Poll::Ready(FeedItem::Ended);
            }
            guards.touch();
        }
        let count = self.watched.len();
        for offset in 0..count {
            let at = (self.next + offset) % count;
            let watched = &mut self.watched[at];
            if let Some(list) = watched.state.take() {
                self.next = (at + 1) % count;
                let data = state_data(watched.topic, &list);
                return Poll::Ready(FeedItem::Event(PRESENCE_STATE_EVENT, data));
            }
            while !watched.closed {
                match watched.diffs.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(diff))) => {
                        if let Some(data) = diff_data(&diff) {
                            self.next = (at + 1) % count;
                            return Poll::Ready(FeedItem::Event(PRESENCE_DIFF_EVENT, data));
                        }
                        // A diff that changes nothing the page sees: the next one.
                    }
                    Poll::Ready(Some(Err(PresenceRecvError::Lagged(missed)))) => {
                        // Diffs were dropped: the page gets the whole list
                        // again, and the diffs after it.
                        tracing::debug!(
                            topic = %watched.topic,
                            missed,
                            "SSE presence: the connection lagged: presence_state again"
                        );
                        let (list, diffs) = self.tracker.watch(watched.topic);
                        watched.diffs = diffs;
                        self.next = (at + 1) % count;
                        let data = state_data(watched.topic, &list);
                        return Poll::Ready(FeedItem::Event(PRESENCE_STATE_EVENT, data));
                    }
                    Poll::Ready(Some(Err(PresenceRecvError::Closed)) | None) => {
                        watched.closed = true;
                    }
                    Poll::Pending => break,
                }
            }
        }
        Poll::Pending
    }

    fn touch(&self) {
        if let Some(guards) = &self.guards {
            guards.touch();
        }
    }
}

/// `futures_util`'s `poll_next_unpin`, without the trait import dance.
trait PollNextUnpin: futures_core::Stream + Unpin {
    fn poll_next_unpin(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        std::pin::Pin::new(self).poll_next(cx)
    }
}

impl<S: futures_core::Stream + Unpin> PollNextUnpin for S {}

/// A presence's `phx_ref`: its id and a hash of its metadata's JSON, so
/// that an update (the same id, new metadata) has a new ref, as Phoenix's
/// do, and a leave names the ref its join had.
fn phx_ref(id: PresenceId, meta_json: &str) -> String {
    // SipHash with fixed keys: the same metadata hashes the same for the
    // life of the process (refs are compared within one node's stream).
    let mut hasher = std::hash::DefaultHasher::new();
    meta_json.hash(&mut hasher);
    format!("{id}.{:016x}", hasher.finish())
}

/// One entry of `metas`: the metadata's JSON object with `phx_ref` added
/// (a metadata that is not an object is `{"meta": <it>, "phx_ref": ...}`),
/// and its ref. `None` when the metadata does not encode (logged).
fn meta_entry<Meta: Serialize>(presence: &Presence<Meta>) -> Option<(Map<String, Value>, String)> {
    let json = match serde_json::to_string(&*presence.meta) {
        Ok(json) => json,
        Err(error) => {
            tracing::error!(%error, key = %presence.key, "SSE presence: metadata does not encode: left out");
            return None;
        }
    };
    let reference = phx_ref(presence.id, &json);
    let mut entry = match serde_json::from_str::<Value>(&json) {
        Ok(Value::Object(object)) => object,
        Ok(other) => {
            let mut object = Map::new();
            object.insert("meta".into(), other);
            object
        }
        Err(error) => {
            tracing::error!(%error, "SSE presence: metadata JSON does not parse: left out");
            return None;
        }
    };
    entry.insert("phx_ref".into(), Value::String(reference.clone()));
    Some((entry, reference))
}

/// `{key: {"metas": [...]}}` of `entries`, keys sorted, each key's metas in
/// the order given.
fn by_key(entries: Vec<(&str, Map<String, Value>)>) -> Value {
    let mut grouped: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (key, entry) in entries {
        grouped.entry(key).or_default().push(Value::Object(entry));
    }
    let mut payload = Map::new();
    for (key, metas) in grouped {
        let mut metas_object = Map::new();
        metas_object.insert("metas".into(), Value::Array(metas));
        payload.insert(key.to_owned(), Value::Object(metas_object));
    }
    Value::Object(payload)
}

fn message(topic: Topic, event: &str, payload: Value) -> String {
    serde_json::json!({"topic": topic.to_string(), "event": event, "payload": payload}).to_string()
}

/// The data of `presence_state`: `{"topic", "event", "payload": {key: {"metas": [...]}}}`.
pub(crate) fn state_data<Meta: Serialize>(topic: Topic, list: &[Presence<Meta>]) -> String {
    let entries = list
        .iter()
        .filter_map(|presence| Some((&*presence.key, meta_entry(presence)?.0)))
        .collect();
    message(topic, PRESENCE_STATE_EVENT, by_key(entries))
}

/// The data of `presence_diff`: `{"topic", "event", "payload": {"joins":
/// {...}, "leaves": {...}}}`. An update (a leave and a join of one id)
/// gives its join `phx_ref_prev`, the ref that leaves; an update to the
/// same metadata changes nothing the page sees and is left out. `None`
/// when nothing is left.
pub(crate) fn diff_data<Meta: Serialize>(diff: &PresenceDiff<Meta>) -> Option<String> {
    let mut left: HashMap<PresenceId, String> = HashMap::new();
    let mut leaves = Vec::new();
    for presence in &diff.leaves {
        if let Some((entry, reference)) = meta_entry(presence) {
            left.insert(presence.id, reference.clone());
            leaves.push((&*presence.key, entry, reference));
        }
    }
    let mut unchanged: Vec<String> = Vec::new();
    let mut joins = Vec::new();
    for presence in &diff.joins {
        let Some((mut entry, reference)) = meta_entry(presence) else {
            continue;
        };
        match left.get(&presence.id) {
            Some(previous) if *previous == reference => {
                unchanged.push(reference);
                continue;
            }
            Some(previous) => {
                entry.insert("phx_ref_prev".into(), Value::String(previous.clone()));
            }
            None => {}
        }
        joins.push((&*presence.key, entry));
    }
    let leaves: Vec<(&str, Map<String, Value>)> = leaves
        .into_iter()
        .filter(|(_, _, reference)| !unchanged.contains(reference))
        .map(|(key, entry, _)| (key, entry))
        .collect();
    if joins.is_empty() && leaves.is_empty() {
        return None;
    }
    let mut payload = Map::new();
    payload.insert("joins".into(), by_key(joins));
    payload.insert("leaves".into(), by_key(leaves));
    Some(message(
        diff.topic,
        PRESENCE_DIFF_EVENT,
        Value::Object(payload),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Viewer {
        name: &'static str,
    }

    fn presence(key: &str, id: u64, name: &'static str) -> Presence<Viewer> {
        Presence {
            key: key.into(),
            meta: Arc::new(Viewer { name }),
            id: PresenceId::from_parts((7, id)),
        }
    }

    const TEAM: Topic = Topic::new("team:1");

    #[test]
    fn a_state_groups_metas_by_key_with_their_refs() {
        let list = [
            presence("u1", 1, "Ada"),
            presence("u2", 2, "Bea"),
            presence("u1", 3, "Ada"),
        ];
        let data: Value = serde_json::from_str(&state_data(TEAM, &list)).unwrap();
        assert_eq!(data["topic"], "team:1");
        assert_eq!(data["event"], "presence_state");
        let metas = data["payload"]["u1"]["metas"].as_array().unwrap();
        assert_eq!(metas.len(), 2);
        assert_eq!(metas[0]["name"], "Ada");
        assert_ne!(
            metas[0]["phx_ref"], metas[1]["phx_ref"],
            "two presences, two refs"
        );
        assert_eq!(data["payload"]["u2"]["metas"][0]["name"], "Bea");
    }

    #[test]
    fn an_update_is_a_join_with_the_previous_ref_and_a_leave_of_it() {
        let diff = PresenceDiff {
            topic: TEAM,
            joins: vec![presence("u1", 1, "Ada L.")],
            leaves: vec![presence("u1", 1, "Ada")],
        };
        let data: Value = serde_json::from_str(&diff_data(&diff).unwrap()).unwrap();
        let join = &data["payload"]["joins"]["u1"]["metas"][0];
        let leave = &data["payload"]["leaves"]["u1"]["metas"][0];
        assert_eq!(join["name"], "Ada L.");
        assert_eq!(leave["name"], "Ada");
        assert_ne!(join["phx_ref"], leave["phx_ref"]);
        assert_eq!(join["phx_ref_prev"], leave["phx_ref"]);
    }

    #[test]
    fn an_update_to_the_same_metadata_sends_nothing() {
        let diff = PresenceDiff {
            topic: TEAM,
            joins: vec![presence("u1", 1, "Ada")],
            leaves: vec![presence("u1", 1, "Ada")],
        };
        assert_eq!(diff_data(&diff), None);
    }

    #[test]
    fn a_metadata_that_is_not_an_object_is_wrapped() {
        let list = [Presence {
            key: Arc::from("u1"),
            meta: Arc::new(5_u32),
            id: PresenceId::from_parts((7, 1)),
        }];
        let data: Value = serde_json::from_str(&state_data(TEAM, &list)).unwrap();
        assert_eq!(data["payload"]["u1"]["metas"][0]["meta"], 5);
    }
}
