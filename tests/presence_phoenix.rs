//! A Rust tracker as a replica of Elixir's own `Phoenix.Tracker`, over a
//! real `redis-server` (started on a free loopback port), driven by the
//! frames Elixir nodes sent in the captures (`tests/phoenix/tracker/`, a
//! copy of `../shared/phoenix/tracker/`) as if those nodes were there,
//! with a short timing (`support/presence.rs`: heartbeats every 100 ms,
//! down after 1.5 s):
//!
//! - Elixir's presences (a track, an update, an untrack) are listed with
//!   their metas and reported as diffs; a silent Elixir node is taken down
//!   after the down period (its presences leave), not before;
//! - this node's idle heartbeat is Elixir's, byte for byte but for name
//!   and vsn; its delta heartbeat has the shape of Elixir's; it answers a
//!   transfer request as Elixir did (a delta, the reference echoed) and
//!   asks a replica whose clock it lacks for a transfer as Elixir did, and
//!   takes the full-state answer;
//! - with `pool_size: 4`, it is a replica of each shard, a topic's
//!   presences in shard `phash2(topic, 4)`;
//! - atom-named Elixir nodes are named as atoms; a `graceful_permdown`
//!   takes a node's presences away at once;
//! - hostile frames on the shard topic are skipped and counted;
//! - two Rust nodes speak Phoenix's protocol to each other.
//!
//! Every wait is bounded; "nothing before" is checked on time measured
//! around the event awaited.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubStream;
use staff_pubsub::phoenix::tracker::{
    decode_tracker_frame, encode_tracker_frame, ReplicaRef, TrackerFrame, TrackerMessage,
    TransferPayload,
};
use staff_pubsub::phoenix::{
    decode_term, FrameMode, NodeName, PhoenixConfig, PhoenixTracker, Term, DEFAULT_MAX_FRAME_SIZE,
};
use staff_pubsub::staff::{self, Message};
use staff_pubsub::{PubSub, Topic};
use staff_pubsub_tests::presence::{
    next, timing, until_joins, until_leaves, until_lists, viewer, Viewer, DOWN_PERIOD, TEAM,
};
use staff_pubsub_tests::redis_server::{publish_raw, raw_subscriber, RedisServer};
use staff_pubsub_tests::within;

const PUBSUB: &str = "MyApp.PubSub";
const CHANNEL: &str = "phx:Elixir.MyApp.PubSub.Adapter";
const TRACKER: &str = "MyApp.Tracker";
const SHARD_TOPIC: &str = "phx_presence:Elixir.MyApp.Tracker_shard0";
/// The topic of the captured presences.
const GOLDEN_TEAM: Topic = Topic::new("staff:team:019ab6a3-c1c6-748b-9697-6c080717373b");
const GOLDEN_DEPARTMENT: Topic =
    Topic::new("staff:department:019ab6a2-2317-7c06-bd46-3e3923bc1aad");

fn golden(file: &str) -> Vec<u8> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("phoenix/tracker");
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn frame_of(bytes: &[u8]) -> TrackerFrame {
    decode_tracker_frame(bytes, DEFAULT_MAX_FRAME_SIZE).expect("a tracker frame")
}

/// The metadata of `phx-b`'s presence in file 015 (a second device), of
/// a second tracker (`MyAppWeb.Presence`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Device {
    device: String,
    name: String,
    online_at: u64,
}

fn config(server: &RedisServer) -> PhoenixConfig {
    PhoenixConfig::new(server.url(), PUBSUB)
        .connect_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .presence::<Viewer>(PhoenixTracker::new(TRACKER))
        .presence::<Device>(PhoenixTracker::new("MyAppWeb.Presence"))
}

async fn node(server: &RedisServer, name: &str) -> PubSub<Message> {
    staff::builder()
        .node_name(name)
        .presence_timing(timing())
        .expect("a valid timing")
        .phoenix(config(server))
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"))
}

/// The next tracker frame on `topic` (any, if empty) that `wanted` takes.
async fn next_frame(
    stream: &mut PubSubStream,
    topic: &str,
    wanted: impl Fn(&TrackerFrame) -> bool,
) -> (Vec<u8>, TrackerFrame) {
    within("a tracker frame", async {
        loop {
            let message = stream.next().await.expect("the stream goes on");
            let bytes = message.get_payload_bytes().to_vec();
            let Ok(frame) = decode_tracker_frame(&bytes, DEFAULT_MAX_FRAME_SIZE) else {
                continue;
            };
            if (topic.is_empty() || frame.topic == topic) && wanted(&frame) {
                return (bytes, frame);
            }
        }
    })
    .await
}

fn sent_by(name: &str) -> impl Fn(&TrackerFrame) -> bool + '_ {
    move |frame| frame.message.sender().name == NodeName::Binary(name.to_owned())
}

/// The structure of a term: its types, atoms as themselves (struct names,
/// keys, modes), map entries as a set (sizes and order aside), a MapSet's
/// `version` key left out (Elixir 1.14 writes it, later ones do not; both
/// read both), a presence's meta as what every meta has.
fn shape(term: &Term) -> String {
    match term {
        Term::Int(_) | Term::BigInt { .. } => "int".into(),
        Term::Float(_) => "float".into(),
        Term::Atom(atom) => format!(":{atom}"),
        Term::Binary(_) => "bin".into(),
        Term::List(items, _) => {
            let mut items: Vec<String> = items.iter().map(shape).collect();
            items.sort();
            items.dedup();
            format!("[{}]", items.join(","))
        }
        // A presence, `{pid, topic, key, meta}`: its meta is the
        // application's, but always an atom-keyed map with a `phx_ref`.
        Term::Tuple(items)
            if matches!(items.first(), Some(Term::Opaque(88, _))) && items.len() == 4 =>
        {
            let Term::Map(meta) = &items[3] else {
                return "a presence whose meta is not a map".into();
            };
            let atom_keys = meta.iter().all(|(key, _)| matches!(key, Term::Atom(_)));
            let phx_ref = meta.iter().any(|(key, value)| {
                *key == Term::Atom("phx_ref".into())
                    && matches!(value, Term::Binary(b) if b.len() == 16)
            });
            let items: Vec<String> = items[..3].iter().map(shape).collect();
            format!(
                "{{{},meta(atom keys: {atom_keys}, phx_ref: {phx_ref})}}",
                items.join(",")
            )
        }
        Term::Tuple(items) => {
            let items: Vec<String> = items.iter().map(shape).collect();
            format!("{{{}}}", items.join(","))
        }
        Term::Map(pairs) => {
            let mut pairs: Vec<String> = pairs
                .iter()
                .filter(|(key, _)| *key != Term::Atom("version".into()))
                .map(|(key, value)| format!("{}=>{}", shape(key), shape(value)))
                .collect();
            pairs.sort();
            pairs.dedup();
            format!("%{{{}}}", pairs.join(","))
        }
        Term::Opaque(tag, _) => format!("#{tag}"),
        other => format!("{other:?}"),
    }
}

fn shape_of(bytes: &[u8]) -> String {
    shape(&decode_term(bytes, DEFAULT_MAX_FRAME_SIZE).expect("a term"))
}

/// `frame`, readdressed `:only` to `to`, encoded.
fn readdressed(mut frame: TrackerFrame, to: &str) -> Vec<u8> {
    frame.node = NodeName::Binary(to.to_owned());
    encode_tracker_frame(&frame, 0).expect("encoded")
}

/// Elixir's track, update and untrack (phx-a in run `main`) are listed
/// and reported on the Rust node, with their metas; when phx-a goes
/// silent, its presences leave after the down period, not before.
#[tokio::test]
async fn elixir_s_presences_are_listed_and_leave_when_elixir_goes_silent() {
    let server = RedisServer::start().await;
    let mut redis = server.connection().await;
    let rust = node(&server, "rust-1").await;
    let tracker = rust.tracker::<Viewer>();
    let (now, mut diffs) = tracker.watch(GOLDEN_TEAM);
    assert!(now.is_empty());

    // phx-a's first heartbeat: it is up, with nothing yet.
    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("001_s1_heartbeat_empty_phx-a.bin"),
    )
    .await;
    // Three tracks (two on the team), an update of user-1, an untrack of
    // user-3 (on the department).
    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("005_s2_heartbeat_delta_phx-a.bin"),
    )
    .await;
    let diff = next(&mut diffs).await;
    let joined: Vec<(&str, &str)> = diff
        .joins
        .iter()
        .map(|p| (&*p.key, p.meta.name.as_str()))
        .collect();
    assert_eq!(joined, [("user-1", "Ada"), ("user-2", "Grace")], "{diff:?}");
    assert_eq!(rust.presences::<Viewer>(GOLDEN_DEPARTMENT).len(), 1);

    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("006_s2_heartbeat_delta_phx-a.bin"),
    )
    .await;
    let diff = next(&mut diffs).await;
    assert_eq!((diff.joins.len(), diff.leaves.len()), (1, 1), "{diff:?}");
    assert_eq!(
        (&*diff.joins[0].key, &*diff.leaves[0].key),
        ("user-1", "user-1")
    );
    assert_eq!(diff.joins[0].id, diff.leaves[0].id, "the same pid");

    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("007_s2_heartbeat_delta_phx-a.bin"),
    )
    .await;
    let silent = tokio::time::Instant::now();
    let mut department = rust.presence_diffs::<Viewer>(GOLDEN_DEPARTMENT);
    if !rust.presences::<Viewer>(GOLDEN_DEPARTMENT).is_empty() {
        until_leaves(&mut department, "user-3").await;
    }
    let listed: BTreeMap<String, Vec<String>> = tracker
        .list(GOLDEN_TEAM)
        .into_iter()
        .map(|(key, metas)| {
            (
                key.to_string(),
                metas.iter().map(|p| p.meta.name.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        BTreeMap::from([
            ("user-1".to_owned(), vec!["Ada".to_owned()]),
            ("user-2".to_owned(), vec!["Grace".to_owned()]),
        ])
    );

    // phx-a says nothing more: down after the down period.
    let diff = next(&mut diffs).await;
    let gone = silent.elapsed();
    let mut left: Vec<&str> = diff.leaves.iter().map(|p| &*p.key).collect();
    left.sort_unstable();
    assert_eq!(
        (diff.joins.len(), left),
        (0, vec!["user-1", "user-2"]),
        "{diff:?}"
    );
    assert!(
        gone >= DOWN_PERIOD - Duration::from_millis(100),
        "down after {gone:?}, before the down period"
    );
    assert!(tracker.list(GOLDEN_TEAM).is_empty());
}

/// The Rust node's frames are Elixir's: an idle heartbeat of the same
/// bytes, a delta heartbeat of the same shape as phx-b's (015); a
/// transfer request answered as phx-a answered phx-b's (012 → 013: a
/// delta, the reference echoed, to the requester's name); a replica
/// whose clock it lacks (rust-1's first heartbeat, 107) asked for a
/// transfer as phx-a asked (109), and the full-state answer (110)
/// merged: its presence listed with its meta.
#[tokio::test]
async fn its_frames_are_elixir_s_and_it_answers_and_asks_as_elixir_does() {
    let server = RedisServer::start().await;
    let mut redis = server.connection().await;
    let mut raw = raw_subscriber(&server, CHANNEL).await;
    // Named as long as phx-a, so that the frames have the same size.
    let rust = node(&server, "phx-r").await;
    let tracker = rust.tracker::<Viewer>();
    let devices = rust.tracker::<Device>();

    // Its first heartbeat: idle, at once. With phx-a's name and vsn, it
    // is the bytes phx-a sent (001).
    let (bytes, mut frame) = next_frame(&mut raw, SHARD_TOPIC, sent_by("phx-r")).await;
    assert_eq!(frame.mode, FrameMode::Except);
    let TrackerMessage::Heartbeat {
        replica,
        delta: None,
        clocks,
    } = &mut frame.message
    else {
        panic!("an idle heartbeat: {frame:?}");
    };
    let me = replica.clone();
    assert_eq!(clocks.context, vec![(me.clone(), 0)], "alone, no dot yet");
    let elixir = frame_of(&golden("001_s1_heartbeat_empty_phx-a.bin"));
    let phx_a = elixir.message.sender().clone();
    *replica = phx_a.clone();
    clocks.replica = phx_a.clone();
    clocks.context = vec![(phx_a.clone(), 0)];
    frame.node = phx_a.name.clone();
    assert_eq!(bytes.len(), 196);
    assert_eq!(
        encode_tracker_frame(&frame, 0).expect("encoded"),
        golden("001_s1_heartbeat_empty_phx-a.bin")
    );

    // A delta heartbeat (one track, here of a second tracker, a replica
    // of MyAppWeb.Presence beside MyApp.Tracker's) has the shape of
    // phx-b's (015): the State's ten keys, the dot, the range, the
    // value's pid, topic, binary key and atom-keyed meta with phx_ref.
    let presence_topic = "phx_presence:Elixir.MyAppWeb.Presence_shard0";
    let mut phone = devices.diffs(GOLDEN_TEAM);
    let _tracked_device = devices
        .track(
            GOLDEN_TEAM,
            "user-1",
            Device {
                device: "phone".into(),
                name: "Ada".into(),
                online_at: 1_795_000_060,
            },
        )
        .expect("tracked");
    within("the device's join", phone.recv())
        .await
        .expect("a join");
    let (bytes, frame) = next_frame(&mut raw, presence_topic, |frame| {
        matches!(
            &frame.message,
            TrackerMessage::Heartbeat { delta: Some(_), .. }
        )
    })
    .await;
    let TrackerMessage::Heartbeat {
        delta: Some(state), ..
    } = &frame.message
    else {
        unreachable!()
    };
    let value = &state.values.as_ref().expect("values")[0].1;
    assert_eq!(value.pid.node, "phx-r@staff-pubsub.invalid");
    assert_eq!(value.meta.get_str("phx_ref").map(str::len), Some(16));
    // (Topics and names are binaries: the shape is the same on any.)
    let elixir = golden("015_s3_heartbeat_delta_phx-b.bin");
    assert_eq!(shape_of(&bytes), shape_of(&elixir));

    // A transfer request as phx-b sent phx-a (012), to this node, whose
    // context lists it: answered as phx-a answered (013), with a delta
    // generation of this node's, to phx-b by its name, the reference
    // echoed.
    let _ada = tracker
        .track(GOLDEN_TEAM, "user-r", viewer("Ferris"))
        .expect("tracked");
    let _ = next_frame(&mut raw, SHARD_TOPIC, |frame| {
        matches!(
            &frame.message,
            TrackerMessage::Heartbeat { delta: Some(_), .. }
        )
    })
    .await;
    let mut request = frame_of(&golden("012_s3_transfer_req_phx-b_to_phx-a.bin"));
    let TrackerMessage::TransferReq {
        reference, clocks, ..
    } = &mut request.message
    else {
        panic!("a transfer_req");
    };
    let asked = reference.clone();
    let phx_b = clocks.replica.clone();
    clocks.context = vec![(me.clone(), 0), (phx_b.clone(), 0)];
    publish_raw(&mut redis, CHANNEL, &readdressed(request, "phx-r")).await;
    let (bytes, answer) = next_frame(&mut raw, SHARD_TOPIC, |frame| {
        frame.message.kind() == "transfer_ack"
    })
    .await;
    assert_eq!((answer.mode, &answer.node), (FrameMode::Only, &phx_b.name));
    let TrackerMessage::TransferAck {
        reference,
        replica,
        payload: TransferPayload::Delta(delta),
    } = &answer.message
    else {
        panic!("a delta transfer_ack, as 013: {answer:?}");
    };
    assert_eq!((reference, replica), (&asked, &me));
    let values = delta.values.as_ref().expect("values");
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].1.meta.get_str("name"), Some("Ferris"));
    assert_eq!(delta.range, (vec![(me.clone(), 0)], vec![(me.clone(), 1)]));
    assert_eq!(
        shape_of(&bytes),
        shape_of(&golden("013_s3_transfer_ack_delta_phx-a_to_phx-b.bin")),
    );

    // rust-1's first heartbeat (107) claims a dot it never broadcast:
    // this node asks it for a transfer, as phx-a did (109), naming it as
    // its ref does, with a context that lists it.
    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("107_s8_heartbeat_empty_rust-1.bin"),
    )
    .await;
    let rust_1: ReplicaRef = frame_of(&golden("107_s8_heartbeat_empty_rust-1.bin"))
        .message
        .sender()
        .clone();
    let (bytes, ask) = next_frame(&mut raw, SHARD_TOPIC, |frame| {
        frame.message.kind() == "transfer_req" && frame.node == NodeName::Binary("rust-1".into())
    })
    .await;
    assert_eq!(ask.mode, FrameMode::Only);
    let TrackerMessage::TransferReq {
        replica, clocks, ..
    } = &ask.message
    else {
        unreachable!()
    };
    assert_eq!(replica, &me);
    assert!(clocks.context.contains(&(rust_1.clone(), 0)), "{clocks:?}");
    assert_eq!(
        shape_of(&bytes),
        shape_of(&golden("109_s8_transfer_req_phx-a_to_rust-1.bin"))
    );

    // rust-1's full-state answer (110), to this node: user-9 is listed.
    let mut diffs = tracker.diffs(GOLDEN_TEAM);
    let answer = frame_of(&golden("110_s8_transfer_ack_state_rust-1_to_phx-a.bin"));
    publish_raw(&mut redis, CHANNEL, &readdressed(answer, "phx-r")).await;
    until_joins(&mut diffs, "user-9").await;
    let listed = tracker.list(GOLDEN_TEAM);
    assert_eq!(listed["user-9"][0].meta.name, "Rusty");
    assert_eq!(listed["user-r"][0].meta.name, "Ferris");
    assert_eq!(rust.stats().rejected, 0);
}

/// Elixir nodes named by atoms (run `atom`, phoenix_pubsub_redis 3.1.0):
/// phx-b's presence is listed, and leaves at once on its
/// `graceful_permdown` (not after the down period); phx-a, whose clock
/// claims dots this node has not seen, is asked for a transfer by its
/// name as an atom, as its ref has it.
#[tokio::test]
async fn atom_named_elixir_nodes_and_a_graceful_permdown() {
    let server = RedisServer::start().await;
    let mut redis = server.connection().await;
    let mut raw = raw_subscriber(&server, CHANNEL).await;
    let rust = node(&server, "rust-1").await;
    let tracker = rust.tracker::<Viewer>();
    let mut diffs = tracker.diffs(GOLDEN_TEAM);

    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("079_s6_heartbeat_delta_phx-b.bin"),
    )
    .await;
    until_joins(&mut diffs, "user-2").await;
    assert_eq!(tracker.list(GOLDEN_TEAM)["user-2"][0].meta.name, "Grace");

    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("083_s6c_graceful_permdown_phx-b.bin"),
    )
    .await;
    let said = tokio::time::Instant::now();
    let left = until_leaves(&mut diffs, "user-2").await;
    assert!(
        left - said < DOWN_PERIOD / 2,
        "at once, not after the down period"
    );
    assert!(tracker.list(GOLDEN_TEAM).is_empty());

    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("082_s6b_heartbeat_empty_phx-a.bin"),
    )
    .await;
    let (_, ask) = next_frame(&mut raw, SHARD_TOPIC, |frame| {
        frame.message.kind() == "transfer_req"
    })
    .await;
    assert_eq!(
        (ask.mode, ask.node),
        (FrameMode::Only, NodeName::Atom("phx-a".into()))
    );
    assert_eq!(rust.stats().rejected, 0);
}

/// Frames on the shard topic that are not the tracker's, or that lie, and
/// another tracker's frames are skipped and counted (a configured
/// tracker's, before its replica starts, only skipped); a presence whose meta the Rust type cannot read
/// is skipped (counted), the rest of its frame taken.
#[tokio::test]
async fn hostile_frames_are_skipped_and_counted() {
    let server = RedisServer::start().await;
    let mut redis = server.connection().await;
    let rust = node(&server, "rust-1").await;
    let tracker = rust.tracker::<Viewer>();
    let mut diffs = tracker.diffs(GOLDEN_TEAM);
    let before = rust.stats().rejected;

    // Not ETF at all.
    publish_raw(&mut redis, CHANNEL, b"\x83\x68garbage").await;
    // A heartbeat whose envelope names another node than its sender.
    let mut forged = frame_of(&golden("001_s1_heartbeat_empty_phx-a.bin"));
    forged.node = NodeName::Binary("phx-x".into());
    publish_raw(
        &mut redis,
        CHANNEL,
        &encode_tracker_frame(&forged, 0).expect("encoded"),
    )
    .await;
    // A staff message on the shard topic: not a tracker message.
    let mut staff_frame = decode_term(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("phoenix/01a_team_created__staff_teams.bin"),
        )
        .expect("a golden frame"),
        DEFAULT_MAX_FRAME_SIZE,
    )
    .expect("a term");
    if let Term::Tuple(items) = &mut staff_frame {
        items[3] = Term::Binary(SHARD_TOPIC.as_bytes().to_vec());
    }
    let not_tracker = term_bytes(&staff_frame);
    publish_raw(&mut redis, CHANNEL, &not_tracker).await;
    // Another tracker's frame (a shard this node is not configured for).
    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("026_s5_heartbeat_empty_phx-a_shard3.bin"),
    )
    .await;
    // A frame of a configured tracker whose replica has not started
    // (`Device`'s): this node's business, dropped, not counted.
    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("093_s7_heartbeat_empty_phx-a.bin"),
    )
    .await;

    // phx-a up, then a delta whose user-2 meta has a name that is not a
    // string: user-2 skipped, user-1 taken.
    publish_raw(
        &mut redis,
        CHANNEL,
        &golden("001_s1_heartbeat_empty_phx-a.bin"),
    )
    .await;
    let mut delta = frame_of(&golden("005_s2_heartbeat_delta_phx-a.bin"));
    let TrackerMessage::Heartbeat {
        delta: Some(state), ..
    } = &mut delta.message
    else {
        panic!("a delta");
    };
    let values = state.values.as_mut().expect("values");
    let bad = staff_pubsub::phoenix::tracker::Meta::from_pairs(
        vec![(Term::Atom("name".into()), Term::Int(7))],
        staff_pubsub::phoenix::AtomEncoding::Latin1,
    )
    .expect("a meta");
    values[1].1.meta = bad;
    publish_raw(
        &mut redis,
        CHANNEL,
        &encode_tracker_frame(&delta, 0).expect("encoded"),
    )
    .await;
    let diff = next(&mut diffs).await;
    let joined: Vec<&str> = diff.joins.iter().map(|p| &*p.key).collect();
    assert_eq!(joined, ["user-1"]);
    // Garbage, the forged sender, the staff message, the other tracker's
    // frame, user-2's meta.
    assert_eq!(rust.stats().rejected - before, 5);
}

/// With `pool_size: 4` (run `pool4`), the Rust tracker is a replica of
/// each of phx-a's four shards: phx-a's presences, one per shard topic,
/// are listed on their topics; this node heartbeats on the four topics
/// with four versions; its own presence on `room:3` goes out on shard 2
/// (`:erlang.phash2("room:3", 4)`), where Elixir's `list` reads it; the
/// limit of presences is the tracker's, across its shards.
#[tokio::test]
async fn a_pool_of_shards_is_a_replica_per_shard() {
    let server = RedisServer::start().await;
    let mut redis = server.connection().await;
    let mut raw = raw_subscriber(&server, CHANNEL).await;
    let config = PhoenixConfig::new(server.url(), PUBSUB)
        .connect_timeout(Duration::from_secs(2))
        .presence::<Viewer>(PhoenixTracker::new(TRACKER).pool_size(4));
    let rust = staff::builder()
        .node_name("rust-1")
        .presence_timing(timing())
        .expect("a valid timing")
        .phoenix(config)
        .await
        .expect("a node");
    let tracker = rust.tracker::<Viewer>();

    // Its first heartbeats: one per shard topic, four versions.
    let mut vsns = std::collections::BTreeMap::new();
    while vsns.len() < 4 {
        let (_, frame) = next_frame(&mut raw, "", |_| true).await;
        if frame.message.sender().name == NodeName::Binary("rust-1".into()) {
            vsns.insert(frame.topic.clone(), frame.message.sender().vsn);
        }
    }
    let topics: Vec<String> = (0..4)
        .map(|shard| format!("phx_presence:Elixir.MyApp.Tracker_shard{shard}"))
        .collect();
    assert_eq!(vsns.keys().cloned().collect::<Vec<_>>(), topics);
    assert_eq!(
        vsns.values()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        4
    );

    // phx-a's shards come up, then each tracks on its own topic.
    const ROOMS: [Topic; 4] = [
        Topic::new("room:1"),
        Topic::new("room:2"),
        Topic::new("room:3"),
        Topic::new("room:4"),
    ];
    let mut diffs: Vec<_> = ROOMS.iter().map(|room| tracker.diffs(*room)).collect();
    for file in [
        "026_s5_heartbeat_empty_phx-a_shard3.bin",
        "027_s5_heartbeat_empty_phx-a_shard2.bin",
        "028_s5_heartbeat_empty_phx-a_shard1.bin",
        "029_s5_heartbeat_empty_phx-a_shard0.bin",
        "034_s5_heartbeat_delta_phx-a_shard2.bin",
        "035_s5_heartbeat_delta_phx-a_shard3.bin",
        "036_s5_heartbeat_delta_phx-a_shard1.bin",
        "037_s5_heartbeat_delta_phx-a_shard0.bin",
    ] {
        publish_raw(&mut redis, CHANNEL, &golden(file)).await;
    }
    for ((room, diffs), (key, name)) in ROOMS.iter().zip(&mut diffs).zip([
        ("user-2", "u2"),
        ("user-1", "u1"),
        ("user-3", "u3"),
        ("user-4", "u4"),
    ]) {
        until_joins(diffs, key).await;
        let listed = tracker.list(*room);
        assert_eq!(listed[key][0].meta.name, name, "{room}");
        assert_eq!(listed.len(), 1, "{room}");
    }

    // Its own presence on room:3 goes out on shard 2.
    let _rusty = tracker
        .track(Topic::new("room:3"), "user-9", viewer("Rusty"))
        .expect("tracked");
    let (_, frame) = next_frame(&mut raw, "", |frame| {
        matches!(
            &frame.message,
            TrackerMessage::Heartbeat { delta: Some(_), .. }
        ) && frame.message.sender().name == NodeName::Binary("rust-1".into())
    })
    .await;
    assert_eq!(frame.topic, topics[2]);
    assert_eq!(tracker.list(Topic::new("room:3")).len(), 2);
    assert_eq!(rust.stats().rejected, 0);

    // The limit of presences is the tracker's, across its shards.
    tracker.set_limits(staff_pubsub::presence::PresenceLimits {
        max_presences: 1,
        ..Default::default()
    });
    assert_eq!(tracker.len(), 1);
    assert!(matches!(
        tracker.track(Topic::new("room:1"), "user-8", viewer("Ferris")),
        Err(staff_pubsub::presence::PresenceError::TooManyPresences { limit: 1 })
    ));
}

/// The bytes of a term, as `term_to_binary` writes it.
fn term_bytes(term: &Term) -> Vec<u8> {
    let raw = staff_pubsub::phoenix::tracker::RawTerm::from_term(
        term,
        staff_pubsub::phoenix::AtomEncoding::Latin1,
    )
    .expect("encoded");
    let mut bytes = vec![131];
    bytes.extend_from_slice(raw.as_bytes());
    bytes
}

/// Two Rust nodes on the Phoenix engine see each other's presences,
/// speaking Phoenix's protocol (their frames on the shard topic are
/// tracker frames, `:except` their binary names); a presence tracked
/// before the other node started reaches it by a transfer; a track, an update and an untrack cross; a node dropped
/// without a word has its presences leave after the down period.
#[tokio::test]
async fn two_rust_nodes_speak_phoenix_s_protocol_to_each_other() {
    let server = RedisServer::start().await;
    let mut raw = raw_subscriber(&server, CHANNEL).await;
    let a = node(&server, "rust-a").await;
    let mut at_a = a.presence_diffs::<Viewer>(TEAM);
    let mut ada = a.track(TEAM, "user-1", viewer("Ada")).expect("tracked");
    // Its delta goes out before b is there: b gets Ada by a transfer
    // (`:only` frames both ways).
    let _ = next_frame(&mut raw, SHARD_TOPIC, |frame| {
        matches!(
            &frame.message,
            TrackerMessage::Heartbeat { delta: Some(_), .. }
        )
    })
    .await;
    let b = node(&server, "rust-b").await;
    let mut at_b = b.presence_diffs::<Viewer>(TEAM);
    until_lists(&b, &["Ada"]).await;
    let (_, answer) = next_frame(&mut raw, SHARD_TOPIC, |frame| {
        frame.message.kind() == "transfer_ack"
    })
    .await;
    assert_eq!(
        (answer.mode, &answer.node),
        (FrameMode::Only, &NodeName::Binary("rust-b".into()))
    );

    let _bea = b.track(TEAM, "user-2", viewer("Bea")).expect("tracked");
    until_joins(&mut at_a, "user-2").await;
    until_lists(&a, &["Ada", "Bea"]).await;
    until_lists(&b, &["Ada", "Bea"]).await;

    ada.update(viewer("Ada L.")).expect("updated");
    until_lists(&b, &["Ada L.", "Bea"]).await;
    drop(ada);
    until_leaves(&mut at_b, "user-1").await;
    until_lists(&b, &["Bea"]).await;

    // What went over Redis: tracker frames of both, on the shard topic.
    let (_, frame) = next_frame(&mut raw, SHARD_TOPIC, sent_by("rust-b")).await;
    assert_eq!(frame.node, NodeName::Binary("rust-b".into()));
    let (_, frame) = next_frame(&mut raw, SHARD_TOPIC, sent_by("rust-a")).await;
    assert_eq!(frame.node, NodeName::Binary("rust-a".into()));

    drop(b);
    let gone = tokio::time::Instant::now();
    let left = until_leaves(&mut at_a, "user-2").await;
    assert!(left - gone >= DOWN_PERIOD - Duration::from_millis(300));
    until_lists(&a, &[]).await;
    assert_eq!(a.stats().rejected, 0);
}
