//! Phoenix as it is deployed, against a real `redis-server`
//! started by each test on a free loopback port:
//!
//! - node names in both forms: a Rust node takes an `:only` frame that
//!   names it as a binary or as an atom; a direct broadcast names its
//!   target in the form the target was heard in (its `:except` frames),
//!   else in the configured default (an atom unless set);
//! - UUID fields take UUID strings only: charlists, integer lists,
//!   integers, atoms and raw or non-UTF-8 binaries are skipped, counted
//!   and logged at DEBUG naming the field;
//! - a failing engine logs one WARN per cause (then one every 30 s), the
//!   rest at DEBUG, with the count of what was not logged at WARN.
//!
//! Every wait is bounded (`within`); "nothing else arrived" is checked
//! after a fence, a later frame Redis delivers after the ones before it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubStream;
use staff_pubsub::phoenix::{
    decode_frame, encode_frame, encode_frame_named, Frame, FrameMode, NameForm, NodeName,
    PhoenixConfig, DEFAULT_MAX_FRAME_SIZE,
};
use staff_pubsub::staff::{self, Message, Team, TeamEvent};
use staff_pubsub::{PubSub, Uuid};
use staff_pubsub_tests::phoenix::{fence_frame, team, until_fence, CHANNEL};
use staff_pubsub_tests::redis_server::{publish_raw, raw_subscriber, RedisServer};
use staff_pubsub_tests::{logs, within};

const PUBSUB: &str = "MyApp.PubSub";
const TEAM: &str = "019ab6a3-c1c6-748b-9697-6c080717373b";

fn golden(file: &str) -> Vec<u8> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("phoenix");
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn config(server: &RedisServer) -> PhoenixConfig {
    PhoenixConfig::new(server.url(), PUBSUB)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

async fn node_with(name: &str, config: PhoenixConfig) -> PubSub<Message> {
    staff::builder()
        .node_name(name)
        .phoenix(config)
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"))
}

/// The next frame on the channel, decoded.
async fn next_frame(stream: &mut PubSubStream) -> Frame<Message> {
    let message = within("a frame on the channel", stream.next())
        .await
        .expect("the stream goes on");
    decode_frame(message.get_payload_bytes(), DEFAULT_MAX_FRAME_SIZE).expect("a staff frame")
}

/// A frame from a Phoen
/// What `subscription` receives up
/// An Elixir `direct_broadcast` names its target as an atom when that is
/// how it spells node names (`:"rust-1"`), or as a binary: the Rust node
/// takes both, and no other node takes either.
#[tokio::test]
async fn a_rust_node_answers_to_its_name_as_an_atom_and_as_a_binary() {
    let server = RedisServer::start().await;
    let rust_1 = node_with("rust-1", config(&server)).await;
    let rust_2 = node_with("rust-2", config(&server)).await;
    let mut on_1 = rust_1.subscribe(staff::topic_teams()).unwrap();
    let mut on_2 = rust_2.subscribe(staff::topic_teams()).unwrap();
    let mut publisher = server.connection().await;
    let only = |name: NodeName, text: &str| {
        encode_frame_named(FrameMode::Only, &name, "staff:teams", &team(text), 0).unwrap()
    };
    publish_raw(
        &mut publisher,
        CHANNEL,
        &only(NodeName::Atom("rust-1".into()), "to the atom"),
    )
    .await;
    publish_raw(
        &mut publisher,
        CHANNEL,
        &only(NodeName::Binary("rust-1".into()), "to the binary"),
    )
    .await;
    publish_raw(
        &mut publisher,
        CHANNEL,
        &only(NodeName::Atom("rust-3".into()), "to another"),
    )
    .await;
    publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
    assert_eq!(
        until_fence(&mut on_1).await,
        [team("to the atom"), team("to the binary")]
    );
    assert_eq!(until_fence(&mut on_2).await, []);
    assert_eq!(rust_1.stats().rejected, 0);
}

/// A direct broadcast names its target in the form the target's own
/// broadcasts carry: the golden frames of an Elixir node started without
/// `node_name` (`:"phx-a@127.0.0.1"`) and with `node_name: :"phx-a"` teach
/// atoms, a string-named node a binary; a node not heard from is named as
/// an atom (Phoenix's default), or as `default_name_form` says; the latest
/// frame of a name decides.
#[tokio::test]
async fn direct_broadcasts_name_the_target_as_it_names_itself() {
    let server = RedisServer::start().await;
    let rust = node_with("rust-1", config(&server)).await;
    let binary_default = node_with(
        "rust-2",
        config(&server).default_name_form(NameForm::Binary),
    )
    .await;
    let mut teams = rust.subscribe(staff::topic_teams()).unwrap();
    let mut publisher = server.connection().await;
    for file in [
        "10a_team_created_node_default_atom__staff_teams.bin",
        "10b_team_created_node_explicit_atom__staff_teams.bin",
        "01a_team_created__staff_teams.bin",
    ] {
        publish_raw(&mut publisher, CHANNEL, &golden(file)).await;
    }
    let from_phx_b =
        encode_frame(FrameMode::Except, "phx-b", "staff:teams", &team("b"), 0).unwrap();
    publish_raw(&mut publisher, CHANNEL, &from_phx_b).await;
    publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
    // Read: the frames were handled, so their names are known.
    assert_eq!(until_fence(&mut teams).await.len(), 4);

    let mut raw = raw_subscriber(&server, CHANNEL).await;
    let mut target_of = async |from: &PubSub<Message>, node: &str| {
        from.direct_broadcast(node, &[staff::topic_teams()], team("direct"))
            .await
            .unwrap();
        // Past the frames published meanwhile (the raw subscriber reads
        // the whole channel).
        loop {
            let frame = next_frame(&mut raw).await;
            if frame.mode == FrameMode::Only {
                assert_eq!(frame.message, team("direct"));
                return frame.node;
            }
        }
    };
    assert_eq!(
        target_of(&rust, "phx-a@127.0.0.1").await,
        NodeName::Atom("phx-a@127.0.0.1".into())
    );
    // "phx-a" came as an atom (10b), then as a binary (01a): the latest.
    assert_eq!(
        target_of(&rust, "phx-a").await,
        NodeName::Binary("phx-a".into())
    );
    assert_eq!(
        target_of(&rust, "phx-b").await,
        NodeName::Binary("phx-b".into())
    );
    assert_eq!(
        target_of(&rust, "phx-z").await,
        NodeName::Atom("phx-z".into()),
        "a node not heard from is named as Phoenix names nodes by default"
    );
    assert_eq!(
        target_of(&binary_default, "phx-z").await,
        NodeName::Binary("phx-z".into())
    );
    // rust-2 heard the same frames: what it learned wins over its default.
    assert_eq!(
        target_of(&binary_default, "phx-a@127.0.0.1").await,
        NodeName::Atom("phx-a@127.0.0.1".into())
    );

    publish_raw(
        &mut publisher,
        CHANNEL,
        &golden("10b_team_created_node_explicit_atom__staff_teams.bin"),
    )
    .await;
    publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
    assert_eq!(until_fence(&mut teams).await.len(), 1);
    assert_eq!(
        target_of(&rust, "phx-a").await,
        NodeName::Atom("phx-a".into()),
        "heard as an atom again"
    );
}

// ------------------------------------------------------------ uuid fields

fn atom(name: &str) -> Vec<u8> {
    let mut out = vec![100, 0, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out
}

fn binary(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![109];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// `{3, :except, "phx-x", "staff:teams", {:staff, :team_created, %{uuid: <uuid>}}, Phoenix.PubSub}`.
fn team_created_with_uuid(uuid: &[u8]) -> Vec<u8> {
    let mut frame = vec![131, 104, 6, 97, 3];
    frame.extend(atom("except"));
    frame.extend(binary(b"phx-x"));
    frame.extend(binary(b"staff:teams"));
    frame.extend_from_slice(&[104, 3]);
    frame.extend(atom("staff"));
    frame.extend(atom("team_created"));
    frame.extend_from_slice(&[116, 0, 0, 0, 1]);
    frame.extend(atom("uuid"));
    frame.extend_from_slice(uuid);
    frame.extend(atom("Elixir.Phoenix.PubSub"));
    frame
}

fn created(uuid: Uuid) -> Message {
    Message::Team(
        TeamEvent::Created,
        Team {
            uuid,
            name: None,
            department_uuid: None,
        },
    )
}

/// UUID fields take what an Elixir application sends as a UUID, a UUID
/// string (`Ecto.UUID`'s canonical form, in either case; the other forms
/// `Uuid::parse_str` reads), and nothing else: a charlist, a list of 16
/// integers, an integer, an atom, and 16-byte binaries (raw bytes, or 16
/// letters) are skipped, each counted in `rejected` and logged at DEBUG
/// with the field's name.
#[tokio::test(flavor = "current_thread")]
async fn uuid_fields_take_uuid_strings_only() {
    let (_guard, logs) = logs::capture();
    let server = RedisServer::start().await;
    let rust = node_with("rust-1", config(&server)).await;
    let mut teams = rust.subscribe(staff::topic_teams()).unwrap();
    let mut publisher = server.connection().await;

    let id: Uuid = TEAM.parse().unwrap();
    let accepted = [
        binary(TEAM.as_bytes()),
        binary(TEAM.to_uppercase().as_bytes()),
        binary(id.simple().to_string().as_bytes()),
    ];
    let charlist = {
        let mut out = vec![107, 0, 16];
        out.extend_from_slice(b"abcdefghijklmnop");
        out
    };
    let integers = {
        let mut out = vec![108, 0, 0, 0, 16];
        for byte in id.as_bytes() {
            // SMALL_INTEGER_EXT for each byte: no STRING_EXT shortcut.
            out.extend_from_slice(&[98, 0, 0, 0, *byte]);
        }
        out.push(106);
        out
    };
    let refused = [
        charlist,
        integers,
        vec![98, 0, 0, 0, 42],
        atom(TEAM),
        binary(id.as_bytes()),
        binary(&[0xff; 16]),
        binary(b"abcdefghijklmnop"),
    ];
    for uuid in accepted.iter().chain(&refused) {
        publish_raw(&mut publisher, CHANNEL, &team_created_with_uuid(uuid)).await;
    }
    publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
    assert_eq!(until_fence(&mut teams).await, vec![created(id); 3]);
    assert_eq!(rust.stats().rejected, refused.len() as u64);
    let skipped: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|line| line.contains("skipped a Phoenix frame"))
        .collect();
    assert_eq!(skipped.len(), refused.len(), "{skipped:#?}");
    for line in &skipped {
        assert!(line.contains("DEBUG"), "{line}");
        assert!(line.contains("field `uuid`"), "{line}");
    }
}

// ---------------------------------------------------------- failure logs

/// With Redis gone, every broadcast fails; one WARN says so (per cause,
/// then one every 30 s), the others go to DEBUG, and the next WARN counts
/// them. Applies to every transport: the line is the server's, not the
/// engine's (here the Phoenix wire and Redis live).
#[tokio::test(flavor = "current_thread")]
async fn failed_broadcasts_are_logged_at_warn_once_per_cause() {
    let (_guard, logs) = logs::capture();
    let mut server = RedisServer::start().await;
    let phoenix = node_with("rust-1", config(&server)).await;
    let redis = staff::builder()
        .node_name("rust-2")
        .redis(
            staff_pubsub::redis::RedisConfig::new(server.url())
                .connect_timeout(Duration::from_millis(500))
                .response_timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    server.kill();
    let mut failed = 0;
    for n in 0..20 {
        for node in [&phoenix, &redis] {
            let result = node
                .broadcast([staff::topic_teams()], team(&n.to_string()))
                .await;
            failed += u64::from(result.is_err());
        }
    }
    assert_eq!(failed, 40, "Redis is gone: every broadcast fails");
    let lines = logs.lines();
    let warn: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("WARN") && line.contains("broadcast not sent to other nodes"))
        .collect();
    let debug = lines
        .iter()
        .filter(|line| line.contains("DEBUG") && line.contains("broadcast not sent to other nodes"))
        .count();
    // One per server, unless a server's cause changed on the way (a refused
    // connection, then a timeout): each change is one more line.
    assert!(
        (2..=6).contains(&warn.len()),
        "{} WARN lines: {warn:#?}",
        warn.len()
    );
    assert_eq!(warn.len() + debug, 40, "each failure is logged once");
    assert!(
        warn.iter().any(|line| line.contains("unlogged=0")),
        "{warn:#?}"
    );
}

/// A frame naming its node as an atom is, byte for byte, what Phoenix
/// wrote for the same broadcast from a node without `node_name` (`node()`)
/// and from one with `node_name: :"phx-a"`: the golden frames 10a and 10b.
/// (The `:only` frames a direct broadcast writes to an atom-named node use
/// the same writer.)
#[test]
fn atom_node_names_are_written_as_phoenix_writes_them() {
    let department: Uuid = "019ab6a2-2317-7c06-bd46-3e3923bc1aad".parse().unwrap();
    let message = Message::Team(
        TeamEvent::Created,
        Team {
            uuid: TEAM.parse().unwrap(),
            name: Some("Squad A".into()),
            department_uuid: Some(department),
        },
    );
    for (node, file) in [
        (
            "phx-a@127.0.0.1",
            "10a_team_created_node_default_atom__staff_teams.bin",
        ),
        (
            "phx-a",
            "10b_team_created_node_explicit_atom__staff_teams.bin",
        ),
    ] {
        let ours = encode_frame_named(
            FrameMode::Except,
            &NodeName::Atom(node.into()),
            "staff:teams",
            &message,
            0,
        )
        .unwrap();
        assert!(ours == golden(file), "{file} differs from ours");
    }
}
