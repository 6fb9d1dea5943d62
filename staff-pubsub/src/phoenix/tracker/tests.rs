//! The tracker codec against the 142 captured frames of
//! `tests/phoenix/tracker/` (a copy of `../shared/phoenix/tracker/`), and
//! against hostile mutations of them.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::phoenix::etf::{AtomEncoding, Term, TermRef};
use crate::phoenix::frame::{FrameMode, NodeName};
use crate::phoenix::DEFAULT_MAX_FRAME_SIZE;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/phoenix/tracker")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(dir().join("frames.json")).expect("frames.json");
    serde_json::from_str(&text).expect("frames.json is JSON")
}

fn files() -> Vec<Value> {
    manifest()["files"].as_array().expect("files").clone()
}

fn bytes(file: &str) -> Vec<u8> {
    std::fs::read(dir().join(file)).expect(file)
}

fn decode(bytes: &[u8]) -> Result<TrackerFrame, TrackerError> {
    decode_tracker_frame(bytes, DEFAULT_MAX_FRAME_SIZE)
}

/// Every file of the extract is there with its size, and, where the
/// shared captures exist (not in CI), the copy is byte-identical to them.
#[test]
fn the_golden_copy_is_complete_and_equals_the_shared_frames() {
    let files = files();
    assert_eq!(files.len(), 142);
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/phoenix/tracker");
    for entry in &files {
        let file = entry["file"].as_str().expect("file");
        let ours = bytes(file);
        assert_eq!(
            ours.len() as u64,
            entry["bytes"].as_u64().expect("bytes"),
            "{file}"
        );
        if shared.is_dir() {
            let theirs = std::fs::read(shared.join(file)).expect("shared file");
            assert!(theirs == ours, "{file} differs from the shared capture");
        }
    }
}

fn name_form(name: &NodeName) -> &'static str {
    match name {
        NodeName::Binary(_) => "binary",
        NodeName::Atom(_) => "atom",
    }
}

/// Every golden frame decodes to the manifest's envelope, kind, payload
/// form and sender, and re-encodes to its own bytes.
#[test]
fn every_golden_frame_decodes_and_reencodes_byte_identically() {
    let mut forms = std::collections::BTreeMap::new();
    for entry in files() {
        let file = entry["file"].as_str().expect("file");
        let golden = bytes(file);
        let frame = decode(&golden).unwrap_or_else(|error| panic!("{file}: {error}"));
        let mode = match frame.mode {
            FrameMode::Except => "except",
            FrameMode::Only => "only",
        };
        assert_eq!(mode, entry["mode"], "{file}");
        assert_eq!(frame.node.text(), entry["envelope_node_name"], "{file}");
        assert_eq!(
            name_form(&frame.node),
            entry["envelope_node_name_type"],
            "{file}"
        );
        assert_eq!(frame.topic, entry["topic"], "{file}");
        assert_eq!(frame.message.kind(), entry["kind"], "{file}");
        let sender = frame.message.sender();
        assert_eq!(sender.name.text(), entry["sender"], "{file}");
        assert_eq!(sender.vsn, entry["sender_vsn"], "{file}");
        let form = match &frame.message {
            TrackerMessage::Heartbeat { delta: None, .. } => Some("empty"),
            TrackerMessage::Heartbeat { delta: Some(_), .. }
            | TrackerMessage::TransferAck {
                payload: TransferPayload::Delta(_),
                ..
            } => Some("delta"),
            TrackerMessage::TransferAck {
                payload: TransferPayload::State { .. },
                ..
            } => Some("state"),
            _ => None,
        };
        assert_eq!(json!(form), entry["payload_form"], "{file}");
        // The Python replica writes OTP 26's atoms; every Elixir node OTP 25's.
        let python = entry["sender"] == "rust-1";
        assert_eq!(
            frame.atoms,
            if python {
                AtomEncoding::Utf8
            } else {
                AtomEncoding::Latin1
            },
            "{file}"
        );
        *forms.entry((frame.message.kind(), form)).or_insert(0) += 1;
        let ours = encode_tracker_frame(&frame, 0).expect(file);
        assert!(
            ours == golden,
            "{file}: re-encoded bytes differ\nours:   {ours:?}\ngolden: {golden:?}"
        );
    }
    // Every kind and payload form is among them.
    assert_eq!(forms.len(), 6, "{forms:?}");
}

// ------------------------------------------------- semantic: the manifest's summaries

fn name_json(name: &NodeName) -> Value {
    match name {
        NodeName::Binary(text) => json!(text),
        NodeName::Atom(text) => json!(format!(":{text}")),
    }
}

fn ref_json(replica: &ReplicaRef) -> Value {
    json!([name_json(&replica.name), replica.vsn])
}

fn tag_json(tag: &Tag) -> Value {
    json!([ref_json(&tag.replica), tag.clock])
}

/// A list of JSON values as a set: sorted by their text.
fn set(mut items: Vec<Value>) -> Value {
    items.sort_by_key(Value::to_string);
    Value::Array(items)
}

fn context_json(context: &Context) -> Value {
    set(context
        .iter()
        .map(|(replica, clock)| json!([ref_json(replica), clock]))
        .collect())
}

fn term_json(term: &Term) -> Value {
    match term {
        Term::Int(value) => json!(i64::try_from(*value).expect("small")),
        Term::Binary(bytes) => json!(String::from_utf8_lossy(bytes)),
        Term::Atom(name) => json!(format!(":{name}")),
        other => panic!("no JSON for {other:?}"),
    }
}

fn values_json(values: &Values) -> Value {
    set(values
        .iter()
        .map(|(tag, presence)| {
            let meta: serde_json::Map<String, Value> = presence
                .meta
                .to_pairs()
                .expect("a meta")
                .iter()
                .map(|(key, value)| match key {
                    Term::Atom(name) => (name.clone(), term_json(value)),
                    other => panic!("meta key {other:?}"),
                })
                .collect();
            let pid = &presence.pid;
            json!({
                "tag": tag_json(tag),
                "pid": format!("#PID<{}.{}.{}.{}>", pid.node, pid.id, pid.serial, pid.creation),
                "topic": presence.topic,
                "key": term_json(&presence.key.to_term().expect("a key")),
                "meta": meta,
            })
        })
        .collect())
}

fn state_json(state: &State) -> Value {
    let mut out = json!({
        "replica": ref_json(&state.replica),
        "context": context_json(&state.context),
        "clouds": set(state
            .clouds
            .iter()
            .map(|(replica, cloud)| {
                json!([ref_json(replica), set(cloud.members.iter().map(tag_json).collect())])
            })
            .collect()),
        "range": [context_json(&state.range.0), context_json(&state.range.1)],
    });
    if let Some(values) = &state.values {
        out["values"] = values_json(values);
    }
    out
}

/// The manifest's summary with its lists as sets, and without what it
/// renders as inspect strings (`ref`, `payload_form`, `replicas`).
fn normalized(summary: &Value) -> Value {
    fn context(value: &Value) -> Value {
        set(value.as_array().cloned().unwrap_or_default())
    }
    fn state(value: &Value) -> Value {
        let mut out = json!({
            "replica": value["replica"],
            "context": context(&value["context"]),
            "clouds": set(value["clouds"]
                .as_array()
                .expect("clouds")
                .iter()
                .map(|cloud| json!([cloud[0], context(&cloud[1])]))
                .collect()),
            "range": if value["range"] == json!([{}, {}]) {
                json!([[], []])
            } else {
                json!([context(&value["range"][0]), context(&value["range"][1])])
            },
        });
        if let Some(values) = value.get("values") {
            out["values"] = context(values);
        }
        out
    }
    let mut out = json!({ "replica_ref": summary["replica_ref"] });
    if let Some(clocks) = summary.get("clocks") {
        out["clocks"] = json!({
            "replica": clocks["replica"],
            "context": context(&clocks["context"]),
        });
    }
    match summary.get("delta") {
        Some(delta) if delta.is_object() => out["delta"] = state(delta),
        Some(_) => out["delta"] = Value::Null,
        None => {}
    }
    if let Some(full) = summary.get("state") {
        out["state"] = state(full);
        out["values"] = context(&summary["values"]);
    }
    out
}

fn summary(message: &TrackerMessage) -> Value {
    match message {
        TrackerMessage::Heartbeat {
            replica,
            delta,
            clocks,
        } => json!({
            "replica_ref": ref_json(replica),
            "clocks": {"replica": ref_json(&clocks.replica), "context": context_json(&clocks.context)},
            "delta": delta.as_ref().map(state_json),
        }),
        TrackerMessage::TransferReq {
            replica, clocks, ..
        } => json!({
            "replica_ref": ref_json(replica),
            "clocks": {"replica": ref_json(&clocks.replica), "context": context_json(&clocks.context)},
        }),
        TrackerMessage::TransferAck {
            replica, payload, ..
        } => match payload {
            TransferPayload::Delta(delta) => {
                json!({"replica_ref": ref_json(replica), "delta": state_json(delta)})
            }
            TransferPayload::State { state, values } => json!({
                "replica_ref": ref_json(replica),
                "state": state_json(state),
                "values": values_json(values),
            }),
        },
        TrackerMessage::GracefulPermdown { replica } => json!({"replica_ref": ref_json(replica)}),
    }
}

/// What each golden frame decodes to is what Elixir decoded: the typed
/// message, rendered as the manifest's JSON summary, equals it (refs,
/// clocks, contexts, clouds, ranges, values with pids, topics, keys and
/// metas); the pids and references equal the manifest's wire fields.
#[test]
fn every_golden_frame_decodes_to_what_elixir_decoded() {
    for entry in files() {
        let file = entry["file"].as_str().expect("file");
        let frame = decode(&bytes(file)).expect(file);
        assert_eq!(
            summary(&frame.message),
            normalized(&entry["summary"]),
            "{file}"
        );
        let mut pids = Vec::new();
        let mut collect = |values: &Values| {
            for (_, presence) in values {
                let pid = &presence.pid;
                pids.push(format!(
                    "pid node={} ID={} Serial={} Creation={}",
                    pid.node, pid.id, pid.serial, pid.creation
                ));
            }
        };
        match &frame.message {
            TrackerMessage::Heartbeat {
                delta: Some(delta), ..
            }
            | TrackerMessage::TransferAck {
                payload: TransferPayload::Delta(delta),
                ..
            } => collect(delta.values.as_ref().expect("a delta has values")),
            TrackerMessage::TransferAck {
                payload: TransferPayload::State { state, values },
                ..
            } => {
                assert_eq!(state.values, None, "{file}");
                assert_eq!(state.mode, StateMode::Normal, "{file}");
                collect(values);
            }
            _ => {}
        }
        let want: Vec<String> = entry["pids_and_refs"]
            .as_array()
            .expect("pids_and_refs")
            .iter()
            .filter_map(|item| item.as_str())
            .filter(|item| item.starts_with("pid "))
            .map(str::to_owned)
            .collect();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        want_sorted.dedup();
        pids.sort();
        pids.dedup();
        assert_eq!(pids, want_sorted, "{file}");
    }
}

/// The MapSet shapes and the State's mode per sender: Elixir 1.14 writes
/// `version: 2`, the Python replica (as Elixir 1.15+) does not.
#[test]
fn mapset_shapes_follow_the_sender() {
    let mut seen = [0_usize; 2];
    for entry in files() {
        let file = entry["file"].as_str().expect("file");
        let frame = decode(&bytes(file)).expect(file);
        let state = match &frame.message {
            TrackerMessage::Heartbeat {
                delta: Some(state), ..
            }
            | TrackerMessage::TransferAck {
                payload: TransferPayload::Delta(state) | TransferPayload::State { state, .. },
                ..
            } => state,
            _ => continue,
        };
        let want = if entry["sender"] == "rust-1" {
            MapSetForm::Unversioned
        } else {
            MapSetForm::Versioned
        };
        for (_, cloud) in &state.clouds {
            assert_eq!(cloud.form, want, "{file}");
            seen[usize::from(want == MapSetForm::Unversioned)] += 1;
        }
    }
    assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
}

// ------------------------------------------------- own frames in OTP's order

/// Reverses every map the message holds: what `canonicalize` must undo.
fn scramble(message: &mut TrackerMessage) {
    fn state(state: &mut State) {
        state.context.reverse();
        state.range.0.reverse();
        state.range.1.reverse();
        state.clouds.reverse();
        for (_, cloud) in &mut state.clouds {
            cloud.members.reverse();
        }
        if let Some(values) = &mut state.values {
            values_(values);
        }
        state.replicas.reverse();
    }
    fn values_(values: &mut Values) {
        values.reverse();
        for (_, presence) in values {
            let mut pairs = presence.meta.to_pairs().expect("a meta");
            pairs.reverse();
            presence.meta = Meta::from_pairs(pairs, AtomEncoding::Latin1).expect("a meta");
        }
    }
    match message {
        TrackerMessage::Heartbeat { delta, clocks, .. } => {
            if let Some(delta) = delta {
                state(delta);
            }
            clocks.context.reverse();
        }
        TrackerMessage::TransferReq { clocks, .. } => clocks.context.reverse(),
        TrackerMessage::TransferAck { payload, .. } => match payload {
            TransferPayload::Delta(delta) => state(delta),
            TransferPayload::State {
                state: full,
                values,
            } => {
                state(full);
                values_(values);
            }
        },
        TrackerMessage::GracefulPermdown { .. } => {}
    }
}

/// Built in any order, an Elixir frame's message comes out of
/// `broadcast`/`direct` as OTP 25 wrote it: the canonical order is
/// OTP's. (Maps of the captures hold at most 32 pairs.)
#[test]
fn own_frames_are_written_in_otp_order() {
    let mut scrambled_some = 0;
    for entry in files() {
        if entry["sender"] == "rust-1" {
            continue;
        }
        let file = entry["file"].as_str().expect("file");
        let golden = bytes(file);
        let decoded = decode(&golden).expect(file);
        let mut message = decoded.message.clone();
        scramble(&mut message);
        if message != decoded.message {
            scrambled_some += 1;
        }
        let frame = match decoded.mode {
            FrameMode::Except => TrackerFrame::broadcast(
                decoded.node.clone(),
                &decoded.topic,
                message,
                decoded.atoms,
            ),
            FrameMode::Only => {
                TrackerFrame::direct(decoded.node.clone(), &decoded.topic, message, decoded.atoms)
            }
        };
        assert_eq!(frame, decoded, "{file}");
        assert!(
            encode_tracker_frame(&frame, 0).expect(file) == golden,
            "{file}"
        );
    }
    assert!(scrambled_some > 20, "{scrambled_some}");
}

/// The Python replica's frames (insertion-ordered maps, OTP 26 atoms)
/// also round-trip, and as OTP 25 would write them they are the same
/// term (the manifest's `reencode_equal: false`).
#[test]
fn python_frames_in_otp25_form_are_the_same_term() {
    let mut count = 0;
    for entry in files() {
        if entry["reencode_equal"] == true {
            continue;
        }
        count += 1;
        let file = entry["file"].as_str().expect("file");
        let golden = bytes(file);
        let frame = decode(&golden).expect(file);
        let mut otp25 = frame.clone();
        otp25.atoms = AtomEncoding::Latin1;
        otp25.canonicalize();
        let bytes = encode_tracker_frame(&otp25, 0).expect(file);
        assert!(bytes != golden, "{file}");
        // The same typed frame: the same term (`Term`'s equality would
        // tell the pids apart by their node atom's bytes).
        let again = decode(&bytes).expect(file);
        assert_eq!(again.message, otp25.message, "{file}");
        assert_eq!(again.atoms, AtomEncoding::Latin1, "{file}");
        // Only their order differs from the frame's: as sets, equal.
        let as_set = |frame: &TrackerFrame| normalized(&summary(&frame.message));
        assert_eq!(as_set(&again), as_set(&frame), "{file}");
    }
    assert_eq!(count, 16);
}

fn rust_replica() -> ReplicaRef {
    ReplicaRef::new(NodeName::Binary("rust-1".into()), 1_796_556_024_166_087)
}

/// A Rust replica's own frames, each kind and form, decode back to
/// themselves, compressed or not, in both atom encodings.
#[test]
fn own_frames_of_every_kind_round_trip() {
    let me = rust_replica();
    let elixir = ReplicaRef::new(NodeName::Atom("phx-a".into()), 1_796_556_022_779_590);
    let node = Pid::node_for_replica("rust-1");
    assert_eq!(node, "rust-1@staff-pubsub.invalid");
    let value = |clock, id, key: &str| {
        (
            Tag::new(me.clone(), clock),
            Presence {
                pid: Pid::of_replica(node.clone(), id),
                topic: "staff:team:1".into(),
                key: RawTerm::from_term(&Term::Binary(key.as_bytes().to_vec()), AtomEncoding::Latin1)
                    .expect("a key"),
                meta: Meta::from_json(
                    &json!({"phx_ref": "GO6mL4mXj0g3Mn4P", "name": "Rusty", "online_at": 1_795_000_100}),
                    AtomEncoding::Latin1,
                )
                .expect("a meta"),
            },
        )
    };
    let cloud = |clocks: &[u64]| {
        vec![(
            me.clone(),
            MapSet::new(
                clocks.iter().map(|&c| Tag::new(me.clone(), c)).collect(),
                MapSetForm::default(),
            ),
        )]
    };
    let delta = State::delta(
        me.clone(),
        cloud(&[1, 2]),
        vec![value(2, 1, "user-9"), value(1, 2, "user-8")],
        (vec![(me.clone(), 0)], vec![(me.clone(), 2)]),
    );
    let full = State::full(
        me.clone(),
        vec![(me.clone(), 2)],
        cloud(&[]),
        vec![(me.clone(), ReplicaStatus::Up)],
    );
    let topic = shard_topic("MyApp.Tracker", 0);
    for atoms in [AtomEncoding::Latin1, AtomEncoding::Utf8] {
        let reference = reference(&node, [7, 0, 0], atoms).expect("reference");
        let frames = [
            TrackerFrame::broadcast(
                me.name.clone(),
                &topic,
                TrackerMessage::heartbeat(me.clone(), None, vec![(me.clone(), 2)]),
                atoms,
            ),
            TrackerFrame::broadcast(
                me.name.clone(),
                &topic,
                TrackerMessage::heartbeat(me.clone(), Some(delta.clone()), vec![(me.clone(), 2)]),
                atoms,
            ),
            TrackerFrame::direct(
                elixir.name.clone(),
                &topic,
                TrackerMessage::transfer_req(
                    reference.clone(),
                    me.clone(),
                    vec![(me.clone(), 2), (elixir.clone(), 0)],
                ),
                atoms,
            ),
            TrackerFrame::direct(
                elixir.name.clone(),
                &topic,
                TrackerMessage::transfer_ack(
                    reference.clone(),
                    me.clone(),
                    TransferPayload::Delta(delta.clone()),
                ),
                atoms,
            ),
            TrackerFrame::direct(
                elixir.name.clone(),
                &topic,
                TrackerMessage::transfer_ack(
                    reference,
                    me.clone(),
                    TransferPayload::State {
                        state: full.clone(),
                        values: vec![value(2, 1, "user-9")],
                    },
                ),
                atoms,
            ),
            TrackerFrame::broadcast(
                me.name.clone(),
                &topic,
                TrackerMessage::graceful_permdown(me.clone()),
                atoms,
            ),
        ];
        for frame in frames {
            for level in [0, 6] {
                let bytes = encode_tracker_frame(&frame, level).expect("encodes");
                assert_eq!(decode(&bytes).expect("decodes"), frame, "{frame:?}");
            }
        }
    }
    // The canonical order put the context's atom name before the binary
    // one, and the values by tag.
    let frame = TrackerFrame::direct(
        elixir.name.clone(),
        &topic,
        TrackerMessage::transfer_req(
            RawTerm::from_term(&Term::Int(0), AtomEncoding::Latin1).expect("0"),
            me.clone(),
            vec![(me.clone(), 2), (elixir.clone(), 0)],
        ),
        AtomEncoding::Latin1,
    );
    let TrackerMessage::TransferReq { clocks, .. } = &frame.message else {
        unreachable!()
    };
    assert_eq!(clocks.context[0].0, elixir);
}

/// A non-BEAM replica's pid is written as the README recommends:
/// `NEW_PID_EXT`, its own node atom, id, serial 0, creation 1.
#[test]
fn a_replica_pid_is_written_as_recommended() {
    let pid = Pid::of_replica("rust-1@127.0.0.1", 1);
    let mut out = Vec::new();
    crate::phoenix::etf::write_pid(
        &mut out,
        &pid.node,
        pid.id,
        pid.serial,
        pid.creation,
        AtomEncoding::Utf8,
    )
    .expect("pid");
    let mut want = vec![88, 119, 16];
    want.extend_from_slice(b"rust-1@127.0.0.1");
    want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(out, want);
}

// ------------------------------------------------- topics and phash2

#[test]
fn phash2_matches_the_manifest_vectors() {
    let manifest = manifest();
    let vectors = manifest["phash2_vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 8);
    for vector in vectors {
        let topic = vector["topic"].as_str().expect("topic");
        assert_eq!(phash2(topic.as_bytes()), vector["phash2"], "{topic}");
        assert_eq!(
            phash2_range(topic.as_bytes(), 1 << 32),
            vector["phash2_range_2_32"].as_u64().map(|v| v as u32),
            "{topic}"
        );
        for (i, shard) in vector["shard_for_pool_size"]
            .as_array()
            .expect("shards")
            .iter()
            .enumerate()
        {
            let pool = NonZeroU32::new(i as u32 + 1).expect("non-zero");
            assert_eq!(shard_for_topic(topic, pool), *shard, "{topic} pool {pool}");
            assert_eq!(
                phash2_range(topic.as_bytes(), u64::from(pool.get())),
                shard.as_u64().map(|v| v as u32)
            );
        }
    }
    assert_eq!(phash2_range(b"x", 0), None);
    assert_eq!(phash2_range(b"x", (1 << 32) + 1), None);
}

/// The captures' pool of 4: each shard's frames are on the topic of its
/// number, and the topic tracked in the delta of shard 2 (`room:3`)
/// hashes to 2.
#[test]
fn shard_topics_name_the_captured_shards() {
    for entry in files() {
        let topic = entry["topic"].as_str().expect("topic");
        let (tracker, shard) = parse_shard_topic(topic).expect(topic);
        assert_eq!(shard_topic(tracker, shard), topic);
        let file = entry["file"].as_str().expect("file");
        if let Some(n) = file
            .strip_suffix(".bin")
            .and_then(|f| f.rsplit_once("_shard"))
        {
            assert_eq!(n.1.parse::<u32>().expect("shard"), shard, "{file}");
        }
    }
    let four = NonZeroU32::new(4).expect("4");
    let frame = decode(&bytes("034_s5_heartbeat_delta_phx-a_shard2.bin")).expect("034");
    let TrackerMessage::Heartbeat {
        delta: Some(delta), ..
    } = &frame.message
    else {
        panic!("034 is a delta heartbeat")
    };
    for (_, presence) in delta.values.as_ref().expect("values") {
        assert_eq!(
            shard_for_topic(&presence.topic, four),
            2,
            "{}",
            presence.topic
        );
    }
    for bad in [
        "phx_presence:Elixir.T_shard",
        "phx_presence:Elixir._shard1",
        "phx_presence:Elixir.T_shard-1",
        "phx_presence:Elixir.T_shard+1",
        "phx_presence:Elixir.T_shard99999999999",
        "phx:Elixir.T_shard1",
    ] {
        assert_eq!(parse_shard_topic(bad), None, "{bad}");
    }
}

// ------------------------------------------------- hostile input

/// Every prefix of every golden frame is refused with a typed error.
#[test]
fn every_truncation_of_every_golden_frame_is_a_typed_error() {
    for entry in files() {
        let file = entry["file"].as_str().expect("file");
        let golden = bytes(file);
        for len in 0..golden.len() {
            assert!(decode(&golden[..len]).is_err(), "{file} cut at {len}");
        }
    }
}

/// Changed bytes at every position of every golden frame never panic;
/// a changed frame that still decodes re-encodes, and that decodes to
/// the same frame.
#[test]
fn changed_bytes_never_panic_and_what_decodes_is_stable() {
    let mut decoded = 0_usize;
    let mut refused = 0_usize;
    for entry in files() {
        let file = entry["file"].as_str().expect("file");
        let golden = bytes(file);
        let mut mutant = golden.clone();
        for pos in 0..golden.len() {
            for change in [0xff_u8, 0x01, 0x80] {
                mutant[pos] = golden[pos] ^ change;
                match decode(&mutant) {
                    Ok(frame) => {
                        decoded += 1;
                        // A changed atom may no longer fit OTP 25's form,
                        // or a name may now be too long: then it is a
                        // typed error, else the frame is stable.
                        if let Ok(again) = encode_tracker_frame(&frame, 0) {
                            assert_eq!(decode(&again).as_ref(), Ok(&frame), "{file} at {pos}");
                        }
                    }
                    Err(_) => refused += 1,
                }
            }
            mutant[pos] = golden[pos];
        }
    }
    assert!(decoded > 1000 && refused > 1000, "{decoded} {refused}");
}

/// Counts far beyond the frame are refused before anything is reserved
/// for them; so are deep nesting, an oversized frame and a compressed
/// frame claiming more than the maximum.
#[test]
fn stated_lengths_are_bounded_before_allocating() {
    let golden = bytes("005_s2_heartbeat_delta_phx-a.bin");
    // Every map, binary and list of the frame, by where its tag is.
    fn containers(body: &[u8], pos: usize, out: &mut Vec<usize>) {
        let (term, _) = crate::phoenix::etf::read(body, pos).expect("valid");
        let (count, items) = match term {
            TermRef::Tuple { arity, items } => (arity, items),
            TermRef::Map { arity, items } => (arity * 2, items),
            TermRef::List { count, items } if count > 0 => (count + 1, items),
            TermRef::Binary(_) => {
                out.push(pos);
                return;
            }
            _ => return,
        };
        if body[pos] != 104 {
            out.push(pos);
        }
        let mut at = items.as_ptr() as usize - body.as_ptr() as usize;
        for _ in 0..count {
            containers(body, at, out);
            at = crate::phoenix::etf::skip(body, at, 0).expect("valid");
        }
    }
    let mut positions = Vec::new();
    containers(&golden[1..], 0, &mut positions);
    let mut checked = 0;
    for pos in positions.into_iter().map(|pos| pos + 1) {
        let mut hostile = golden.clone();
        hostile[pos + 1..pos + 5].copy_from_slice(&u32::MAX.to_be_bytes());
        // A count of 4 G items in a frame of 1196 bytes: refused, never
        // reserved for.
        assert!(
            matches!(
                decode(&hostile),
                Err(TrackerError::Frame(crate::phoenix::FrameError::Term(
                    crate::phoenix::EtfError::Length(_) | crate::phoenix::EtfError::Truncated
                )))
            ),
            "count at {pos}: {:?}",
            decode(&hostile)
        );
        checked += 1;
    }
    assert!(checked > 30, "{checked}");
    assert!(matches!(
        decode_tracker_frame(&golden, golden.len() - 1),
        Err(TrackerError::Frame(
            crate::phoenix::FrameError::TooLarge { .. }
        ))
    ));
    let mut compressed = vec![131, 80];
    compressed.extend_from_slice(&u32::MAX.to_be_bytes());
    compressed.extend_from_slice(&[0x78, 0x9c, 0x03, 0x00]);
    assert!(decode(&compressed).is_err());
    let mut deep = vec![131];
    for _ in 0..100_000 {
        deep.extend_from_slice(&[104, 1]);
    }
    deep.push(106);
    assert!(decode(&deep).is_err());
}

/// The typed errors: an application's broadcast is `NotTracker`, a
/// tracker kind of the wrong shape is `Malformed` naming the kind.
#[test]
fn errors_tell_other_messages_from_malformed_tracker_ones() {
    let golden = bytes("083_s6c_graceful_permdown_phx-b.bin");
    let frame = decode(&golden).expect("083");
    let with = |message: &[u8]| {
        // The same envelope around another message term.
        let mut out = vec![131, 104, 6, 97, 3];
        crate::phoenix::etf::write_atom(&mut out, "except").expect("atom");
        crate::phoenix::etf::write_binary(&mut out, b"phx-b").expect("binary");
        crate::phoenix::etf::write_binary(&mut out, frame.topic.as_bytes()).expect("binary");
        out.extend_from_slice(message);
        crate::phoenix::etf::write_atom(&mut out, "Elixir.Phoenix.PubSub").expect("atom");
        out
    };
    let atom = |name: &str| {
        let mut out = Vec::new();
        crate::phoenix::etf::write_atom(&mut out, name).expect("atom");
        out
    };
    // {:staff, :team_created, %{}}: an application's message.
    let mut app = vec![104, 3];
    app.extend(atom("staff"));
    app.extend(atom("team_created"));
    app.extend([116, 0, 0, 0, 0]);
    assert!(matches!(
        decode(&with(&app)),
        Err(TrackerError::NotTracker(_))
    ));
    // {:pub, :other, 1}: not a tracker kind.
    let mut other = vec![104, 3];
    other.extend(atom("pub"));
    other.extend(atom("other"));
    other.extend([97, 1]);
    assert!(matches!(
        decode(&with(&other)),
        Err(TrackerError::NotTracker(_))
    ));
    // {:pub, :graceful_permdown, {"phx-b", -1}}: a negative vsn.
    let mut negative = vec![104, 3];
    negative.extend(atom("pub"));
    negative.extend(atom("graceful_permdown"));
    negative.extend([104, 2, 109, 0, 0, 0, 1, b'b', 98, 255, 255, 255, 255]);
    assert_eq!(
        decode(&with(&negative)),
        Err(TrackerError::Malformed {
            kind: "graceful_permdown",
            what: "a vsn is not a non-negative 64-bit integer"
        })
    );
    // {:pub, :heartbeat, ref}: the wrong size.
    let mut short = vec![104, 3];
    short.extend(atom("pub"));
    short.extend(atom("heartbeat"));
    short.extend([97, 1]);
    assert!(matches!(
        decode(&with(&short)),
        Err(TrackerError::Malformed {
            kind: "heartbeat",
            ..
        })
    ));
}

/// A State missing a field every receiver reads is refused; a field
/// twice in a context is refused.
#[test]
fn a_state_without_a_field_or_with_a_key_twice_is_malformed() {
    let golden = bytes("005_s2_heartbeat_delta_phx-a.bin");
    let mut frame = decode(&golden).expect("005");
    // Drop `range` from the encoded State: rename its atom to `rangx`.
    let at = golden
        .windows(6)
        .position(|w| w == [100, 0, 5, b'r', b'a', b'n'])
        .expect("range key");
    let mut hostile = golden.clone();
    hostile[at + 7] = b'x';
    assert!(matches!(
        decode(&hostile),
        Err(TrackerError::Malformed { kind: "heartbeat", what }) if what.contains("lacks")
    ));
    let TrackerMessage::Heartbeat { clocks, .. } = &mut frame.message else {
        panic!("a heartbeat")
    };
    let first = clocks.context[0].clone();
    clocks.context.push(first);
    let twice = encode_tracker_frame(&frame, 0).expect("encodes");
    assert_eq!(
        decode(&twice),
        Err(TrackerError::Malformed {
            kind: "heartbeat",
            what: "a map holds a key twice"
        })
    );
}

/// A meta is carried as its bytes and read in place; built from JSON it
/// is the bytes OTP 25 wrote for the same map.
#[test]
fn metas_are_read_in_place_and_built_as_otp_writes_them() {
    let frame = decode(&bytes("006_s2_heartbeat_delta_phx-a.bin")).expect("006");
    let TrackerMessage::Heartbeat {
        delta: Some(delta), ..
    } = &frame.message
    else {
        panic!("006 is a delta heartbeat")
    };
    let values = delta.values.as_ref().expect("values");
    let meta = &values[0].1.meta;
    assert_eq!(meta.get_str("phx_ref_prev"), Some("GO6mI__VuMAAZQGC"));
    assert_eq!(meta.get_str("name"), Some("Ada"));
    assert_eq!(
        meta.get_str("online_at"),
        None,
        "an integer is not a string"
    );
    assert_eq!(meta.get_str("absent"), None);
    let mut json = serde_json::Map::new();
    for (key, value) in meta.to_pairs().expect("pairs") {
        let (Term::Atom(key), value) = (key, value) else {
            panic!("atom keys")
        };
        json.insert(
            key,
            match value {
                Term::Binary(text) => json!(String::from_utf8(text).expect("UTF-8")),
                Term::Int(n) => json!(i64::try_from(n).expect("small")),
                other => panic!("{other:?}"),
            },
        );
    }
    let built = Meta::from_json(&Value::Object(json), AtomEncoding::Latin1).expect("a meta");
    assert_eq!(&built, meta);
    let utf8 = Meta::from_json(&json!({"name": "Ada"}), AtomEncoding::Utf8).expect("a meta");
    assert_eq!(utf8.raw().as_bytes()[5], 119, "{:?}", utf8.raw().as_bytes());
    assert_eq!(utf8.get_str("name"), Some("Ada"));
    assert!(Meta::from_json(&json!(["not", "a", "map"]), AtomEncoding::Latin1).is_none());
}
