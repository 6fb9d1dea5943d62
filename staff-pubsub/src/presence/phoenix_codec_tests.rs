//! The Phoenix codec of a replica against the captured frames of
//! `tests/phoenix/tracker/`: what Elixir sent reads as the protocol's
//! messages, and what this node writes is what Elixir writes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::*;
use crate::phoenix::tracker::decode_tracker_frame;
use crate::phoenix::DEFAULT_MAX_FRAME_SIZE;

const TOPIC: &str = "phx_presence:Elixir.MyApp.Tracker_shard0";
/// phx-a's vsn in run `main`.
const A_VSN: u64 = 1_796_555_971_553_093;

fn golden(file: &str) -> Vec<u8> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/phoenix/tracker");
    std::fs::read(dir.join(file)).expect(file)
}

fn shard(name: &str, atom: bool) -> PhoenixShard {
    PhoenixShard {
        topic: Arc::from(TOPIC),
        name: Arc::from(name),
        name_is_atom: atom,
        compression_level: 0,
        max_frame_size: DEFAULT_MAX_FRAME_SIZE,
    }
}

fn codec(name: &str) -> PhoenixCodec {
    PhoenixCodec::new(shard(name, false), 0x1234_5678_9abc)
}

fn me(name: &str, vsn: u64) -> Replica<Arc<str>> {
    Replica::new(Arc::from(name), vsn)
}

/// The metadata of the captures' presences, read as this node's type.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Viewer {
    name: String,
    #[serde(default)]
    status: Option<String>,
}

fn viewer(name: &str) -> Arc<Viewer> {
    Arc::new(Viewer {
        name: name.into(),
        status: None,
    })
}

#[test]
fn elixir_s_heartbeats_read_as_the_protocol_s_messages() {
    let mut codec = codec("rust-1");
    let a = me("phx-a", A_VSN);
    let (message, skipped) = codec
        .decode::<Viewer>(&golden("001_s1_heartbeat_empty_phx-a.bin"))
        .expect("an idle heartbeat");
    assert_eq!(skipped, 0);
    assert_eq!(
        message,
        Message::Heartbeat {
            from: a.clone(),
            delta: None,
            clocks: (a.clone(), [(a.clone(), 0)].into_iter().collect()),
        }
    );

    let (message, _) = codec
        .decode::<Viewer>(&golden("005_s2_heartbeat_delta_phx-a.bin"))
        .expect("a delta");
    let Message::Heartbeat {
        delta: Some(delta), ..
    } = message
    else {
        panic!("a heartbeat with a delta: {message:?}");
    };
    assert_eq!(delta.replica, a);
    assert_eq!(delta.clouds[&a], BTreeSet::from([1, 2, 3]));
    assert_eq!(delta.range.1[&a], 3);
    let values: Vec<_> = delta.values.iter().collect();
    assert_eq!(values.len(), 3);
    assert_eq!(*values[0].0, Tag::new(a.clone(), 1));
    assert_eq!(&*values[0].1.key, "user-1");
    assert_eq!(
        &*values[0].1.topic,
        "staff:team:019ab6a3-c1c6-748b-9697-6c080717373b"
    );
    assert_eq!(values[0].1.meta, viewer("Ada"));
    assert_eq!(values[1].1.meta, viewer("Grace"));
    // Elixir pids: marked remote, one id per pid.
    let ids: BTreeSet<PresenceId> = values.iter().map(|(_, value)| value.pid).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id.parts().0 & REMOTE != 0));

    // The same pid (user-1's, updated) in another frame is the same id.
    let (message, _) = codec
        .decode::<Viewer>(&golden("006_s2_heartbeat_delta_phx-a.bin"))
        .expect("an update");
    let Message::Heartbeat {
        delta: Some(update),
        ..
    } = message
    else {
        panic!("a delta");
    };
    let updated = update.values.values().next().expect("the new value");
    assert_eq!(updated.pid, values[0].1.pid);
    assert_eq!(updated.meta.status.as_deref(), Some("away"));
}

#[test]
fn atom_names_are_marked_and_every_kind_reads() {
    let mut codec = codec("rust-1");
    let (message, _) = codec
        .decode::<Viewer>(&golden("070_s6_heartbeat_empty_phx-a.bin"))
        .expect("an atom-named heartbeat");
    assert_eq!(&*message.sender().name, ":phx-a");
    assert_eq!(wire_name(":phx-a"), NodeName::Atom("phx-a".into()));
    assert_eq!(wire_name("phx-a"), NodeName::Binary("phx-a".into()));
    for file in [
        "012_s3_transfer_req_phx-b_to_phx-a.bin",
        "013_s3_transfer_ack_delta_phx-a_to_phx-b.bin",
        "083_s6c_graceful_permdown_phx-b.bin",
        "110_s8_transfer_ack_state_rust-1_to_phx-a.bin",
        "112_s8_transfer_ack_state_phx-a_to_rust-1.bin",
    ] {
        codec
            .decode::<Viewer>(&golden(file))
            .unwrap_or_else(|error| panic!("{file}: {error}"));
    }
}

/// This node's idle heartbeat is Elixir's, byte for byte, when it has
/// Elixir's name and vsn.
#[test]
fn an_idle_heartbeat_is_the_bytes_elixir_sends() {
    let mut codec = codec("phx-a");
    let a = me("phx-a", A_VSN);
    let out: Out<Viewer> = Outgoing {
        to: Destination::All,
        message: Message::Heartbeat {
            from: a.clone(),
            delta: None,
            clocks: (a.clone(), [(a, 0)].into_iter().collect()),
        },
    };
    let bytes = codec.encode(&out).expect("encoded");
    assert_eq!(bytes, golden("001_s1_heartbeat_empty_phx-a.bin"));
}

fn delta_of(replica: &Replica<Arc<str>>, origin: u64) -> Delta<Arc<str>, PresenceId, Arc<Viewer>> {
    let mut values = BTreeMap::new();
    values.insert(
        Tag::new(replica.clone(), 1),
        Value {
            pid: PresenceId::from_parts((origin, 1)),
            topic: Arc::from("team:1"),
            key: Arc::from("user-r"),
            meta: viewer("Ferris"),
        },
    );
    let mut clouds = Clouds::new();
    clouds.insert(replica.clone(), BTreeSet::from([1]));
    Delta {
        replica: replica.clone(),
        clouds,
        values,
        range: (
            [(replica.clone(), 0)].into_iter().collect(),
            [(replica.clone(), 1)].into_iter().collect(),
        ),
    }
}

#[test]
fn own_presences_go_with_a_pid_of_this_node_and_a_phx_ref() {
    let r = me("rust-1", 1_796_556_024_166_087);
    let mut sender = codec("rust-1");
    let origin = sender.origin;
    let out: Out<Viewer> = Outgoing {
        to: Destination::All,
        message: Message::Heartbeat {
            from: r.clone(),
            delta: Some(delta_of(&r, origin)),
            clocks: (r.clone(), [(r.clone(), 1)].into_iter().collect()),
        },
    };
    let bytes = sender.encode(&out).expect("encoded");
    let frame = decode_tracker_frame(&bytes, DEFAULT_MAX_FRAME_SIZE).expect("a tracker frame");
    assert_eq!(frame.mode, FrameMode::Except);
    assert_eq!(frame.node, NodeName::Binary("rust-1".into()));
    let TrackerMessage::Heartbeat {
        delta: Some(state), ..
    } = &frame.message
    else {
        panic!("a delta heartbeat");
    };
    let (_, presence) = &state.values.as_ref().expect("values")[0];
    assert_eq!(presence.pid.node, "rust-1@staff-pubsub.invalid");
    assert_eq!((presence.pid.id, presence.pid.serial), (1, 0));
    assert_ne!(presence.pid.creation, 0);
    let reference = presence.meta.get_str("phx_ref").expect("a phx_ref");
    assert_eq!(reference.len(), 16);
    assert_eq!(reference, phx_ref(r.vsn, 1));
    assert_eq!(presence.meta.get_str("name"), Some("Ferris"));

    // Another node reads it as it was, the pid as a remote one; this node
    // reads its own pid back as its own id.
    let (message, skipped) = codec("rust-2").decode::<Viewer>(&bytes).expect("decoded");
    assert_eq!(skipped, 0);
    let Message::Heartbeat {
        delta: Some(delta), ..
    } = &message
    else {
        panic!("a delta");
    };
    let value = delta.values.values().next().expect("a value");
    assert_eq!(value.meta, viewer("Ferris"));
    assert!(value.pid.parts().0 & REMOTE != 0);
    let (own, _) = sender.decode::<Viewer>(&bytes).expect("decoded");
    assert_eq!(own, out.message);
}

#[test]
fn a_transfer_answer_echoes_the_reference_and_carries_only_this_replica() {
    let mut codec = codec("phx-a");
    let (request, _) = codec
        .decode::<Viewer>(&golden("012_s3_transfer_req_phx-b_to_phx-a.bin"))
        .expect("a transfer request");
    let TrackerFrame {
        message: TrackerMessage::TransferReq {
            reference: asked, ..
        },
        ..
    } = decode_tracker_frame(
        &golden("012_s3_transfer_req_phx-b_to_phx-a.bin"),
        DEFAULT_MAX_FRAME_SIZE,
    )
    .expect("decoded")
    else {
        panic!("a transfer_req");
    };
    let a = me("phx-a", A_VSN);
    let b = request.sender().clone();
    let origin = codec.origin;
    let mut full_values = delta_of(&a, origin).values;
    full_values.insert(
        Tag::new(b.clone(), 1),
        Value {
            pid: PresenceId::from_parts((REMOTE | 7, 1)),
            topic: Arc::from("team:1"),
            key: Arc::from("user-b"),
            meta: viewer("B's"),
        },
    );
    let full = FullState {
        replica: a.clone(),
        context: [(a.clone(), 1), (b.clone(), 1)].into_iter().collect(),
        clouds: Clouds::new(),
        replicas: BTreeMap::new(),
        values: full_values,
    };
    let out: Out<Viewer> = Outgoing {
        to: Destination::Name(Arc::clone(&b.name)),
        message: Message::TransferAck {
            from: a.clone(),
            payload: Transfer::Full(full),
        },
    };
    let bytes = codec.encode(&out).expect("encoded");
    let frame = decode_tracker_frame(&bytes, DEFAULT_MAX_FRAME_SIZE).expect("a tracker frame");
    assert_eq!(frame.mode, FrameMode::Only);
    assert_eq!(frame.node, NodeName::Binary("phx-b".into()));
    let TrackerMessage::TransferAck {
        reference,
        payload: TransferPayload::State { state, values },
        ..
    } = frame.message
    else {
        panic!("a full-state transfer_ack");
    };
    assert_eq!(reference, asked, "the request's reference, echoed");
    let mine = ReplicaRef::new(NodeName::Binary("phx-a".into()), A_VSN);
    assert_eq!(state.context, vec![(mine.clone(), 1)]);
    assert_eq!(state.clouds.len(), 1);
    assert_eq!(values.len(), 1, "only this replica's values");
    assert_eq!(values[0].0.replica, mine);
}

#[test]
fn hostile_frames_are_refused_and_bad_presences_skipped() {
    let mut codec = codec("rust-1");
    // A broadcast whose envelope names another node than its sender.
    let mut frame = decode_tracker_frame(
        &golden("001_s1_heartbeat_empty_phx-a.bin"),
        DEFAULT_MAX_FRAME_SIZE,
    )
    .expect("decoded");
    frame.node = NodeName::Binary("phx-x".into());
    let forged = wire::encode_tracker_frame(&frame, 0).expect("encoded");
    assert!(codec.decode::<Viewer>(&forged).is_err());
    // A binary name that would read as an atom.
    frame.node = NodeName::Binary(":phx-a".into());
    let TrackerMessage::Heartbeat {
        replica, clocks, ..
    } = &mut frame.message
    else {
        panic!("a heartbeat");
    };
    replica.name = NodeName::Binary(":phx-a".into());
    clocks.replica.name = NodeName::Binary(":phx-a".into());
    let marked = wire::encode_tracker_frame(&frame, 0).expect("encoded");
    assert!(codec.decode::<Viewer>(&marked).is_err());
    // Another topic, and not a tracker frame at all.
    frame.topic = "phx_presence:Elixir.Other_shard0".into();
    let other = wire::encode_tracker_frame(&frame, 0).expect("encoded");
    assert!(codec.decode::<Viewer>(&other).is_err());
    assert!(codec.decode::<Viewer>(b"\x83garbage").is_err());
    assert!(codec
        .decode::<Viewer>(&golden("../01a_team_created__staff_teams.bin"))
        .is_err());

    // A meta this node's type cannot read: that presence is skipped, the
    // rest taken.
    #[derive(Debug, serde::Deserialize)]
    struct Strict {
        #[allow(dead_code)]
        role: String,
    }
    let (message, skipped) = codec
        .decode::<Strict>(&golden("005_s2_heartbeat_delta_phx-a.bin"))
        .expect("the heartbeat is taken");
    assert_eq!(skipped, 2, "only user-2 has a role");
    let Message::Heartbeat {
        delta: Some(delta), ..
    } = message
    else {
        panic!("a delta");
    };
    assert_eq!(delta.values.len(), 1);
    assert_eq!(delta.clouds.values().map(BTreeSet::len).sum::<usize>(), 3);
    let _: Json = Json::Null;
}

fn heartbeat_of(
    r: &Replica<Arc<str>>,
    delta: Delta<Arc<str>, PresenceId, Arc<Viewer>>,
) -> Out<Viewer> {
    let clock = delta.range.1.get(r).copied().unwrap_or(0);
    Outgoing {
        to: Destination::All,
        message: Message::Heartbeat {
            from: r.clone(),
            delta: Some(delta),
            clocks: (r.clone(), [(r.clone(), clock)].into_iter().collect()),
        },
    }
}

fn sent_meta(codec: &mut PhoenixCodec, out: &Out<Viewer>) -> Option<wire::Meta> {
    let bytes = codec.encode(out).expect("encoded");
    let frame = decode_tracker_frame(&bytes, DEFAULT_MAX_FRAME_SIZE).expect("decoded");
    let TrackerMessage::Heartbeat {
        delta: Some(state), ..
    } = frame.message
    else {
        panic!("a delta heartbeat");
    };
    state
        .values
        .expect("values")
        .into_iter()
        .next()
        .map(|(_, presence)| presence.meta)
}

/// An update's value carries `phx_ref_prev`, the `phx_ref` of the value
/// it replaced; an untracked presence is forgotten.
#[test]
fn an_update_carries_phx_ref_prev() {
    let r = me("rust-1", 1_796_556_024_166_087);
    let mut codec = codec("rust-1");
    let origin = codec.origin;
    let tracked = delta_of(&r, origin);
    let meta = sent_meta(&mut codec, &heartbeat_of(&r, tracked.clone())).expect("a value");
    assert_eq!(meta.get_str("phx_ref_prev"), None);

    // The update: dot 1 removed, 2 consumed, the value at 3.
    let mut updated = tracked.clone();
    let value = updated
        .values
        .remove(&Tag::new(r.clone(), 1))
        .expect("the value");
    updated.values.insert(Tag::new(r.clone(), 3), value);
    updated.clouds.insert(r.clone(), BTreeSet::from([1, 2, 3]));
    updated.range = (
        [(r.clone(), 1)].into_iter().collect(),
        [(r.clone(), 3)].into_iter().collect(),
    );
    let out = heartbeat_of(&r, updated);
    let meta = sent_meta(&mut codec, &out).expect("a value");
    assert_eq!(meta.get_str("phx_ref"), Some(phx_ref(r.vsn, 3).as_str()));
    let previous = phx_ref(r.vsn, 1);
    assert_eq!(meta.get_str("phx_ref_prev"), Some(previous.as_str()));
    // Sent again (a transfer), the same.
    let meta = sent_meta(&mut codec, &out).expect("a value");
    assert_eq!(meta.get_str("phx_ref_prev"), Some(previous.as_str()));

    // The untrack: dot 3 removed, 4 consumed, no value.
    let mut untracked = tracked;
    untracked.values.clear();
    untracked.clouds.insert(r.clone(), BTreeSet::from([3, 4]));
    assert!(sent_meta(&mut codec, &heartbeat_of(&r, untracked)).is_none());
    assert!(codec.sent.is_empty(), "forgotten");
}

/// A replica named by an atom writes its name as one, and is read back
/// as the same replica.
#[test]
fn an_atom_named_replica_writes_atoms() {
    let shard = shard("rust-1", true);
    assert_eq!(&*replica_name(&shard), ":rust-1");
    let mut codec = PhoenixCodec::new(shard, 42);
    let r = me(":rust-1", 7);
    let out: Out<Viewer> = Outgoing {
        to: Destination::All,
        message: Message::GracefulPermdown { from: r.clone() },
    };
    let bytes = codec.encode(&out).expect("encoded");
    let frame = decode_tracker_frame(&bytes, DEFAULT_MAX_FRAME_SIZE).expect("decoded");
    assert_eq!(frame.node, NodeName::Atom("rust-1".into()));
    assert_eq!(
        frame.message,
        TrackerMessage::GracefulPermdown {
            replica: ReplicaRef::new(NodeName::Atom("rust-1".into()), 7)
        }
    );
    let (message, _) = codec.decode::<Viewer>(&bytes).expect("decoded");
    assert_eq!(message, out.message);
}

/// Every byte of captured frames of each kind corrupted, and every
/// truncation: the codec refuses or reads them, never panics.
#[test]
fn corrupted_frames_never_panic() {
    let mut codec = codec("rust-1");
    for file in [
        "005_s2_heartbeat_delta_phx-a.bin",
        "012_s3_transfer_req_phx-b_to_phx-a.bin",
        "013_s3_transfer_ack_delta_phx-a_to_phx-b.bin",
        "083_s6c_graceful_permdown_phx-b.bin",
        "110_s8_transfer_ack_state_rust-1_to_phx-a.bin",
    ] {
        let bytes = golden(file);
        for at in 0..bytes.len() {
            for flip in [0xff_u8, 0x01, 0x80] {
                let mut corrupted = bytes.clone();
                corrupted[at] ^= flip;
                let _ = codec.decode::<Viewer>(&corrupted);
            }
            let _ = codec.decode::<Viewer>(&bytes[..at]);
        }
    }
}
