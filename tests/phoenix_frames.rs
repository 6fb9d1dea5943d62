//! The Phoenix frame codec against the golden frames of `tests/phoenix/`,
//! captured from a real Phoenix.PubSub 2.2.0 + phoenix_pubsub_redis 3.1.0
//! node (OTP 25): each decodes to its exact typed message or is skipped as
//! the manifest says, encoding the typed messages gives the same Erlang
//! terms (the same bytes where OTP 25's are predictable), and truncated,
//! corrupted and hostile frames are refused without panicking.

use std::path::{Path, PathBuf};

use serde_json::Value;
use staff_pubsub::phoenix::{
    decode_frame, decode_term, encode_frame, EtfError, Frame, FrameError, FrameMode, NodeName,
    Term, DEFAULT_MAX_FRAME_SIZE, MAX_DEPTH,
};
use staff_pubsub::staff::{
    Department, DepartmentEvent, Message, Person, PersonEvent, Team, TeamEvent, TeamMembership,
    TeamMembershipEvent,
};
use staff_pubsub::Uuid;

const DEPARTMENT: &str = "019ab6a2-2317-7c06-bd46-3e3923bc1aad";
const TEAM: &str = "019ab6a3-c1c6-748b-9697-6c080717373b";
const PERSON: &str = "019ab69f-fdef-7a06-8f32-b7a6b38b6b38";
const MEMBERSHIP: &str = "019ab69f-17f5-7647-8fde-01c2ce28b26c";

fn id(text: &str) -> Uuid {
    text.parse().expect("a UUID")
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("phoenix")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join("MANIFEST.json")).expect("MANIFEST.json");
    let manifest: Value = serde_json::from_str(&text).expect("JSON");
    manifest["files"].as_array().expect("files").clone()
}

fn bytes(file: &str) -> Vec<u8> {
    std::fs::read(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn team(name: &str, department: Option<&str>) -> Team {
    Team {
        uuid: id(TEAM),
        name: Some(name.to_owned()),
        department_uuid: department.map(id),
    }
}

fn ops() -> Department {
    Department {
        uuid: id(DEPARTMENT),
        name: Some("Ops".to_owned()),
    }
}

fn membership() -> TeamMembership {
    TeamMembership {
        uuid: id(MEMBERSHIP),
        team_uuid: id(TEAM),
        staff_person_uuid: id(PERSON),
    }
}

/// The typed message of each frame a staff decoder takes, written from
/// the manifest's `call`; `None` for the frames it skips.
fn expected(file: &str) -> Option<Message> {
    let group = &file[..2];
    let squad = || team("Squad A", Some(DEPARTMENT));
    Some(match (group, file) {
        ("01" | "08" | "10", _) => Message::Team(TeamEvent::Created, squad()),
        ("02", _) => Message::Team(TeamEvent::Created, team("Squad A", None)),
        ("03", _) => Message::Department(DepartmentEvent::Updated, ops()),
        (_, f) if f.starts_with("04a") || f.starts_with("04b") => {
            Message::Person(PersonEvent::Updated, Person { uuid: id(PERSON) })
        }
        ("04", _) => Message::Person(PersonEvent::EmploymentChanged, Person { uuid: id(PERSON) }),
        ("05", _) => Message::TeamMembership(TeamMembershipEvent::TeamPersonAdded, membership()),
        (_, f) if f.starts_with("06a") || f.starts_with("06d") => {
            Message::Department(DepartmentEvent::Updated, ops())
        }
        (_, f) if f.starts_with("06b") => Message::Team(TeamEvent::Updated, squad()),
        (_, f) if f.starts_with("06c") => Message::Team(
            TeamEvent::Created,
            team("Équipe Ω – 東京", Some(DEPARTMENT)),
        ),
        (_, f) if f.starts_with("06e") => Message::Team(TeamEvent::Created, squad()),
        ("07", _) => Message::Department(DepartmentEvent::Deleted, ops()),
        ("09", _) => return None,
        _ => panic!("no expectation for {file}"),
    })
}

/// The golden copy in `tests/phoenix/` is byte-identical to the captured
/// frames in `../shared/phoenix/`, when that directory exists (it does
/// not in CI), and every file the manifest lists is there.
#[test]
fn the_golden_copy_equals_the_shared_frames() {
    let files = manifest();
    assert_eq!(files.len(), 29, "the manifest lists 29 frames");
    for entry in &files {
        let file = entry["file"].as_str().expect("file");
        assert_eq!(
            bytes(file).len() as u64,
            entry["bytes"].as_u64().expect("bytes"),
            "{file}"
        );
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/phoenix");
    if !shared.is_dir() {
        eprintln!("{} not found: comparison skipped", shared.display());
        return;
    }
    // The frames are the folder's files; its subfolders (`tracker/`,
    // `bench/`) hold other captures.
    let mut names: Vec<String> = std::fs::read_dir(&shared)
        .expect("shared dir")
        .map(|entry| entry.expect("entry"))
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // Files only: `tracker/` holds the tracker captures.
    let mut ours: Vec<String> = std::fs::read_dir(dir())
        .expect("our dir")
        .map(|entry| entry.expect("entry"))
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    ours.sort();
    assert_eq!(names, ours, "the same files");
    for name in names {
        let theirs = std::fs::read(shared.join(&name)).expect("shared file");
        assert!(
            theirs == bytes(&name),
            "{name} differs from ../shared/phoenix"
        );
    }
}

/// Every golden frame: a `decode` frame decodes to the manifest's mode,
/// node and topic and the exact typed message; a `skip` frame is refused
/// for its own reason.
#[test]
fn every_golden_frame_decodes_to_its_typed_message_or_is_skipped() {
    let mut decoded = 0;
    for entry in manifest() {
        let file = entry["file"].as_str().expect("file");
        let result = decode_frame::<Message>(&bytes(file), DEFAULT_MAX_FRAME_SIZE);
        match entry["staff_decoder"].as_str() {
            Some("decode") => {
                let frame = result.unwrap_or_else(|e| panic!("{file}: {e}"));
                let mode = match entry["mode"].as_str() {
                    Some("except") => FrameMode::Except,
                    Some("only") => FrameMode::Only,
                    other => panic!("{file}: mode {other:?}"),
                };
                let name = entry["node_name"].as_str().expect("node_name").to_owned();
                let node = if entry["node_name_type"]
                    .as_str()
                    .expect("type")
                    .starts_with("atom")
                {
                    NodeName::Atom(name)
                } else {
                    NodeName::Binary(name)
                };
                assert_eq!(frame.mode, mode, "{file}");
                assert_eq!(frame.node, node, "{file}");
                assert_eq!(
                    frame.topic,
                    entry["topic"].as_str().expect("topic"),
                    "{file}"
                );
                assert_eq!(Some(frame.message), expected(file), "{file}");
                decoded += 1;
            }
            Some("skip") => {
                let error = result.expect_err(file);
                let reason_fits = match &file[..3] {
                    "09a" => {
                        matches!(&error, FrameError::Dispatcher(d) if d == "Phoenix.Channel.Server")
                    }
                    "09b" | "09d" => matches!(error, FrameError::NotThisSpec(_)),
                    "09c" => {
                        matches!(&error, FrameError::NotThisSpec(why) if why.contains("scope"))
                    }
                    "09e" => {
                        matches!(&error, FrameError::Payload { event, .. } if event == "team_created")
                    }
                    _ => false,
                };
                assert!(
                    reason_fits,
                    "{file}: skipped for the wrong reason: {error:?}"
                );
            }
            other => panic!("{file}: staff_decoder {other:?}"),
        }
    }
    assert_eq!(decoded, 24);
}

/// The message element of a frame's term, with the payload map restricted
/// to `keys` (the golden frames of group 6 carry keys the spec ignores).
fn restricted(term: &Term, keys: &[&str]) -> Term {
    let Term::Tuple(items) = term else {
        panic!("not a frame: {term:?}")
    };
    let Term::Tuple(message) = &items[4] else {
        panic!("not a message: {term:?}")
    };
    let Term::Map(pairs) = &message[2] else {
        panic!("not a payload: {term:?}")
    };
    let pairs = pairs
        .iter()
        .filter(|(key, _)| matches!(key, Term::Atom(name) if keys.contains(&name.as_str())))
        .cloned()
        .collect();
    let mut items = items.clone();
    items[4] = Term::Tuple(vec![
        message[0].clone(),
        message[1].clone(),
        Term::Map(pairs),
    ]);
    Term::Tuple(items)
}

/// Encoding each golden frame's typed message as Phoenix would send it
/// gives the golden frame's Erlang term; where OTP 25's bytes are
/// predictable (uncompressed, at most 32 keys, nothing the spec ignores)
/// the very bytes. Frames from a node named by an atom are compared with
/// their node as a binary (a Rust node's name is always a binary).
#[test]
fn encoding_the_typed_messages_gives_the_golden_terms() {
    let mut identical = 0;
    for entry in manifest() {
        let file = entry["file"].as_str().expect("file");
        let Some(message) = expected(file) else {
            continue;
        };
        let golden = bytes(file);
        let frame: Frame<Message> = decode_frame(&golden, DEFAULT_MAX_FRAME_SIZE).expect(file);
        let node = match &frame.node {
            NodeName::Binary(name) | NodeName::Atom(name) => name.clone(),
        };
        let level =
            u32::try_from(entry["compression_level"].as_u64().expect("level")).expect("u32");
        let ours = encode_frame(frame.mode, &node, &frame.topic, &message, level).expect(file);
        let mut want = decode_term(&golden, DEFAULT_MAX_FRAME_SIZE).expect(file);
        if let (Term::Tuple(items), NodeName::Atom(name)) = (&mut want, &frame.node) {
            items[2] = Term::Binary(name.clone().into_bytes());
        }
        let got = decode_term(&ours, DEFAULT_MAX_FRAME_SIZE).expect(file);
        let keys: &[&str] = &[
            "uuid",
            "name",
            "department_uuid",
            "team_uuid",
            "staff_person_uuid",
        ];
        assert_eq!(restricted(&got, keys), restricted(&want, keys), "{file}");
        if file.starts_with("06") {
            // The payload keys the spec has, and no others.
            assert_eq!(got, restricted(&got, keys), "{file}");
        } else {
            assert_eq!(got, want, "{file}");
        }
        let predictable =
            level == 0 && !file.starts_with("06") && matches!(frame.node, NodeName::Binary(_));
        if predictable {
            assert!(
                ours == golden,
                "{file}: bytes differ\nours:   {ours:?}\ngolden: {golden:?}"
            );
            identical += 1;
        }
        if level > 0 {
            assert_eq!(&ours[..2], &[131, 80], "{file}: compressed as Phoenix does");
        }
    }
    assert_eq!(identical, 16, "groups 1 to 5 and 7 byte for byte");
}

/// The round trip holds for every event of the stock spec, with and
/// without compression, and `None` is written as `nil`.
#[test]
fn every_event_round_trips() {
    let messages = [
        Message::Team(TeamEvent::Deleted, team("x", None)),
        Message::Department(
            DepartmentEvent::Created,
            Department {
                uuid: Uuid::now_v7(),
                name: None,
            },
        ),
        Message::Person(
            PersonEvent::Deleted,
            Person {
                uuid: Uuid::now_v7(),
            },
        ),
        Message::TeamMembership(TeamMembershipEvent::TeamPersonRemoved, membership()),
    ];
    for level in [0, 1, 9] {
        for message in &messages {
            let frame = encode_frame(FrameMode::Only, "rust-2", "staff:teams", message, level)
                .expect("encoded");
            let back: Frame<Message> =
                decode_frame(&frame, DEFAULT_MAX_FRAME_SIZE).expect("decoded");
            assert_eq!(&back.message, message);
            assert_eq!(back.mode, FrameMode::Only);
            assert_eq!(back.node, NodeName::Binary("rust-2".into()));
        }
    }
    let frame = encode_frame(FrameMode::Except, "n", "t", &messages[1], 0).expect("encoded");
    let term = decode_term(&frame, DEFAULT_MAX_FRAME_SIZE).expect("term");
    let Term::Tuple(items) = term else { panic!() };
    let Term::Tuple(message) = &items[4] else {
        panic!()
    };
    assert_eq!(message[0], Term::Atom("staff".into()));
    assert_eq!(message[1], Term::Atom("department_created".into()));
    let Term::Map(pairs) = &message[2] else {
        panic!()
    };
    assert!(pairs.contains(&(Term::Atom("name".into()), Term::Atom("nil".into()))));
}

/// A frame over the maximum is refused before it is read (a compressed
/// one by its stated size, before inflating).
/// The channel is `phx:` and the adapter's module name, as
/// `phoenix_pubsub_redis` derives it (the golden frames' channel).
#[test]
fn the_channel_is_derived_from_the_pubsub_name() {
    let channel = manifest()[0]["channel"]
        .as_str()
        .expect("channel")
        .to_owned();
    assert_eq!(staff_pubsub::phoenix::channel("MyApp.PubSub"), channel);
    assert_eq!(
        staff_pubsub::phoenix::channel("Elixir.MyApp.PubSub"),
        channel
    );
    let config = staff_pubsub::phoenix::PhoenixConfig::new("redis://127.0.0.1", "MyApp.PubSub");
    assert_eq!(config.channel(), channel);
}

#[test]
fn the_maximum_frame_size_is_enforced() {
    let plain = bytes("01a_team_created__staff_teams.bin");
    assert!(matches!(
        decode_frame::<Message>(&plain, plain.len() - 1),
        Err(FrameError::TooLarge {
            size: 220,
            max: 219
        })
    ));
    assert!(decode_frame::<Message>(&plain, plain.len()).is_ok());
    let compressed = bytes("08_team_created_compressed6__staff_teams.bin");
    // 185 bytes on the wire, 219 inflated.
    assert!(decode_frame::<Message>(&compressed, 219).is_ok());
    assert!(matches!(
        decode_frame::<Message>(&compressed, 218),
        Err(FrameError::Term(EtfError::Compressed(_)))
    ));
}

/// Every prefix of every golden frame is refused, without a panic.
#[test]
fn truncated_frames_are_refused() {
    for entry in manifest() {
        let file = entry["file"].as_str().expect("file");
        let golden = bytes(file);
        for len in 0..golden.len() {
            let result = decode_frame::<Message>(&golden[..len], DEFAULT_MAX_FRAME_SIZE);
            assert!(result.is_err(), "{file} cut at {len} decoded");
            assert!(
                decode_term(&golden[..len], DEFAULT_MAX_FRAME_SIZE).is_err(),
                "{file} cut at {len}"
            );
        }
        let mut longer = golden.clone();
        longer.push(106);
        assert!(
            matches!(
                decode_frame::<Message>(&longer, DEFAULT_MAX_FRAME_SIZE),
                Err(FrameError::Term(
                    EtfError::Trailing(1) | EtfError::Compressed(_)
                ))
            ),
            "{file} with a byte more"
        );
    }
}

/// A small deterministic generator, so that a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every byte of every golden frame replaced by interesting values, and
/// random multi-byte corruptions: decoding never panics, and whatever it
/// accepts is a staff message on a valid frame.
#[test]
fn corrupted_frames_never_panic() {
    let interesting = [
        0_u8, 1, 2, 3, 31, 32, 33, 97, 98, 100, 104, 105, 106, 107, 108, 109, 110, 111, 116, 118,
        119, 127, 128, 254, 255,
    ];
    let mut accepted = 0;
    for entry in manifest() {
        let file = entry["file"].as_str().expect("file");
        let golden = bytes(file);
        for at in 0..golden.len() {
            for value in interesting {
                let mut frame = golden.clone();
                frame[at] = value;
                if decode_frame::<Message>(&frame, DEFAULT_MAX_FRAME_SIZE).is_ok() {
                    accepted += 1;
                }
                let _ = decode_term(&frame, DEFAULT_MAX_FRAME_SIZE);
            }
        }
    }
    // Some corruptions are harmless (a letter of a name), most are not.
    assert!(accepted > 0);
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    let files = manifest();
    for _ in 0..20_000 {
        let file = files[random.below(files.len())]["file"]
            .as_str()
            .expect("file")
            .to_owned();
        let mut frame = bytes(&file);
        for _ in 0..=random.below(4) {
            let at = random.below(frame.len());
            frame[at] = random.next() as u8;
        }
        if random.below(4) == 0 {
            frame.truncate(random.below(frame.len()));
        }
        let _ = decode_frame::<Message>(&frame, DEFAULT_MAX_FRAME_SIZE);
        let _ = decode_term(&frame, DEFAULT_MAX_FRAME_SIZE);
    }
}

/// A frame `{3, :except, "x", "staff:teams", <message>, Phoenix.PubSub}`
/// around the encoded `message` term (without version byte).
fn frame_around(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![131, 104, 6, 97, 3, 100, 0, 6];
    frame.extend_from_slice(b"except");
    frame.extend_from_slice(&[109, 0, 0, 0, 1, b'x', 109, 0, 0, 0, 11]);
    frame.extend_from_slice(b"staff:teams");
    frame.extend_from_slice(message);
    frame.extend_from_slice(&[100, 0, 21]);
    frame.extend_from_slice(b"Elixir.Phoenix.PubSub");
    frame
}

fn atom(name: &str) -> Vec<u8> {
    let mut out = vec![100, 0, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out
}

fn binary(text: &str) -> Vec<u8> {
    let mut out = vec![109];
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// `{:staff, :team_created, %{uuid: TEAM, <extra key>: <value>}}`.
fn team_created_with(extra_key: &[u8], extra_value: &[u8]) -> Vec<u8> {
    let mut message = vec![104, 3];
    message.extend(atom("staff"));
    message.extend(atom("team_created"));
    message.extend_from_slice(&[116, 0, 0, 0, 2]);
    message.extend(atom("uuid"));
    message.extend(binary(TEAM));
    message.extend_from_slice(extra_key);
    message.extend_from_slice(extra_value);
    frame_around(&message)
}

/// The frame builder above is right: with a harmless extra key the frame
/// decodes (so that the refusals below are for the hostile part).
#[test]
fn a_built_frame_decodes() {
    let frame = team_created_with(&atom("extra"), &[106]);
    let decoded: Frame<Message> = decode_frame(&frame, DEFAULT_MAX_FRAME_SIZE).expect("decodes");
    assert_eq!(
        decoded.message,
        Message::Team(
            TeamEvent::Created,
            Team {
                uuid: id(TEAM),
                name: None,
                department_uuid: None
            }
        )
    );
}

#[test]
fn hostile_terms_are_refused() {
    let deep = |levels: usize| {
        let mut value = Vec::new();
        for _ in 0..levels {
            value.extend_from_slice(&[108, 0, 0, 0, 1]);
        }
        // The innermost `[]`, then each list's tail.
        value.extend(std::iter::repeat_n(106, levels + 1));
        value
    };
    // Lists nested just within the bound (the message adds 3 levels)
    // are fine in an ignored key; deeper is refused.
    let ok = team_created_with(&atom("extra"), &deep(MAX_DEPTH - 3));
    assert!(decode_frame::<Message>(&ok, DEFAULT_MAX_FRAME_SIZE).is_ok());
    for levels in [MAX_DEPTH - 2, 10_000, 150_000] {
        let frame = team_created_with(&atom("extra"), &deep(levels));
        assert_eq!(
            decode_frame::<Message>(&frame, DEFAULT_MAX_FRAME_SIZE),
            Err(FrameError::Term(EtfError::TooDeep)),
            "{levels} levels"
        );
    }
    // Lengths beyond the frame, for every kind that has one: refused as
    // such before anything is read (32-bit lengths), or as a truncated
    // term (16-bit lengths).
    let huge: [(&[u8], EtfError); 8] = [
        (
            &[108, 255, 255, 255, 255, 106],
            EtfError::Length(u64::from(u32::MAX)),
        ),
        (
            &[109, 255, 255, 255, 255, b'a'],
            EtfError::Length(u64::from(u32::MAX)),
        ),
        (
            &[116, 255, 255, 255, 255, 106, 106],
            EtfError::Length(u64::from(u32::MAX)),
        ),
        (
            &[105, 255, 255, 255, 255, 106],
            EtfError::Length(u64::from(u32::MAX)),
        ),
        (
            &[77, 255, 255, 255, 255, 1, 0],
            EtfError::Length(u64::from(u32::MAX)),
        ),
        (
            &[111, 255, 255, 255, 255, 0, 1],
            EtfError::Length(u64::from(u32::MAX)),
        ),
        (&[107, 255, 255, 1, 2], EtfError::Truncated),
        (&[100, 255, 255, b'a'], EtfError::Truncated),
    ];
    for (value, expected) in huge {
        let frame = team_created_with(&atom("extra"), value);
        assert_eq!(
            decode_frame::<Message>(&frame, DEFAULT_MAX_FRAME_SIZE),
            Err(FrameError::Term(expected)),
            "{value:?}"
        );
    }
    // Atoms: longer than 255 characters, or UTF-8 atoms that are not UTF-8.
    let mut long = vec![118, 1, 0];
    long.extend(std::iter::repeat_n(b'a', 256));
    let bad_utf8: &[u8] = &[119, 2, 0xc3, 0x28];
    for value in [&long[..], bad_utf8] {
        let frame = team_created_with(&atom("extra"), value);
        assert_eq!(
            decode_frame::<Message>(&frame, DEFAULT_MAX_FRAME_SIZE),
            Err(FrameError::Term(EtfError::InvalidAtom))
        );
    }
    // Tags of the distribution protocol, and unknown ones.
    for tag in [82_u8, 117, 121, 0, 200] {
        let frame = team_created_with(&atom("extra"), &[tag, 0, 0, 0, 0]);
        assert_eq!(
            decode_frame::<Message>(&frame, DEFAULT_MAX_FRAME_SIZE),
            Err(FrameError::Term(EtfError::UnsupportedTag(tag)))
        );
    }
}

/// Atom table abuse: a payload with 20,000 distinct atom keys is read
/// (the spec's keys found, the others ignored) and nothing of it is
/// retained; a pid and a reference in ignored keys are skipped too.
#[test]
fn many_atoms_and_opaque_terms_are_ignored() {
    let mut message = vec![104, 3];
    message.extend(atom("staff"));
    message.extend(atom("team_created"));
    let keys = 20_000_u32;
    message.push(116);
    message.extend_from_slice(&(keys + 3).to_be_bytes());
    for i in 0..keys {
        message.extend(atom(&format!("k{i:05}")));
        message.push(106);
    }
    message.extend(atom("uuid"));
    message.extend(binary(TEAM));
    // A pid: NEW_PID_EXT node, id, serial, creation.
    message.extend(atom("pid"));
    message.push(88);
    message.extend(atom("phx-a@127.0.0.1"));
    message.extend_from_slice(&[0; 12]);
    // A reference: NEWER_REFERENCE_EXT len 3, node, creation, ids.
    message.extend(atom("ref"));
    message.extend_from_slice(&[90, 0, 3]);
    message.extend(atom("phx-a@127.0.0.1"));
    message.extend_from_slice(&[0; 16]);
    let frame = frame_around(&message);
    let decoded: Frame<Message> = decode_frame(&frame, DEFAULT_MAX_FRAME_SIZE).expect("decodes");
    assert!(
        matches!(decoded.message, Message::Team(TeamEvent::Created, ref t) if t.uuid == id(TEAM))
    );
    // The pid where a field is expected is refused, not misread.
    let frame = team_created_with(&atom("name"), &{
        let mut pid = vec![88];
        pid.extend(atom("n@h"));
        pid.extend_from_slice(&[0; 12]);
        pid
    });
    assert!(matches!(
        decode_frame::<Message>(&frame, DEFAULT_MAX_FRAME_SIZE),
        Err(FrameError::Payload { .. })
    ));
}

/// Compressed frames: a zip bomb's stated size, a stream that inflates to
/// another size, and garbage instead of zlib are refused.
#[test]
fn hostile_compressed_frames_are_refused() {
    let stated = |size: u32, stream: &[u8]| {
        let mut frame = vec![131, 80];
        frame.extend_from_slice(&size.to_be_bytes());
        frame.extend_from_slice(stream);
        frame
    };
    let golden = bytes("08_team_created_compressed6__staff_teams.bin");
    let stream = &golden[6..];
    for (size, stream) in [
        (u32::MAX, stream),
        (219 * 2000, stream),
        (218, stream),
        (220, stream),
        (219, &stream[..stream.len() - 4]),
        (219, &[0x78, 0x9c, 1, 2, 3, 4][..]),
        (5, &[][..]),
    ] {
        let frame = stated(size, stream);
        assert!(
            matches!(
                decode_frame::<Message>(&frame, DEFAULT_MAX_FRAME_SIZE),
                Err(FrameError::Term(
                    EtfError::Compressed(_) | EtfError::Truncated
                ))
            ),
            "stated {size}, {} bytes of stream",
            stream.len()
        );
    }
    assert!(decode_frame::<Message>(&stated(219, stream), DEFAULT_MAX_FRAME_SIZE).is_ok());
}

/// An application's extension of the stock spec.
#[staff_pubsub::staff_events(extends = staff_pubsub::staff)]
pub mod app {
    use staff_pubsub::Uuid;

    /// A location.
    #[entity(collection = "locations", events(location_created))]
    pub struct Location {
        /// The location.
        pub uuid: Uuid,
        /// Its name.
        pub name: Option<String>,
        /// Its department.
        #[route(department)]
        pub department_uuid: Option<Uuid>,
    }
}

/// A spec of its own scope.
#[staff_pubsub::staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    /// An order.
    #[entity(collection = "orders", events(order_placed))]
    pub struct Order {
        /// The order.
        pub uuid: Uuid,
    }
}

/// Any spec's message: an extension reads the stock events and its own;
/// another scope reads its own and skips `:staff` frames (and the other
/// way round).
#[test]
fn any_spec_decodes_its_own_frames() {
    let golden = bytes("01a_team_created__staff_teams.bin");
    let frame: Frame<app::Message> =
        decode_frame(&golden, DEFAULT_MAX_FRAME_SIZE).expect("stock event");
    assert!(
        matches!(frame.message, app::Message::Team(app::TeamEvent::Created, ref t) if t.uuid == id(TEAM))
    );

    let location = app::Message::Location(
        app::LocationEvent::Created,
        app::Location {
            uuid: Uuid::now_v7(),
            name: None,
            department_uuid: Some(id(DEPARTMENT)),
        },
    );
    let encoded = encode_frame(FrameMode::Except, "rust-1", "staff:locations", &location, 0)
        .expect("encoded");
    let back: Frame<app::Message> =
        decode_frame(&encoded, DEFAULT_MAX_FRAME_SIZE).expect("decoded");
    assert_eq!(back.message, location);
    // The stock spec has no location_created: skipped, not misread.
    assert!(matches!(
        decode_frame::<Message>(&encoded, DEFAULT_MAX_FRAME_SIZE),
        Err(FrameError::NotThisSpec(why)) if why.contains("location_created")
    ));

    let order = shop::Message::Order(
        shop::OrderEvent::Placed,
        shop::Order {
            uuid: Uuid::now_v7(),
        },
    );
    let encoded =
        encode_frame(FrameMode::Except, "rust-1", "shop:orders", &order, 0).expect("encoded");
    let term = decode_term(&encoded, DEFAULT_MAX_FRAME_SIZE).expect("term");
    let Term::Tuple(items) = term else {
        panic!("{term:?}")
    };
    assert!(
        matches!(&items[4], Term::Tuple(m) if m[0] == Term::Atom("shop".into()) && m[1] == Term::Atom("order_placed".into()))
    );
    let back: Frame<shop::Message> =
        decode_frame(&encoded, DEFAULT_MAX_FRAME_SIZE).expect("decoded");
    assert_eq!(back.message, order);
    assert!(matches!(
        decode_frame::<shop::Message>(&golden, DEFAULT_MAX_FRAME_SIZE),
        Err(FrameError::NotThisSpec(why)) if why.contains(":shop")
    ));
    assert!(matches!(
        decode_frame::<Message>(&encoded, DEFAULT_MAX_FRAME_SIZE),
        Err(FrameError::NotThisSpec(_))
    ));
}
