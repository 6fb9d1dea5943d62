//! The Phoenix transport against a real `redis-server` (started by each
//! test on a free loopback port): golden frames published raw reach the
//! subscribers of the node they are for, Rust broadcasts are the frames
//! Phoenix sends, Rust nodes follow the `:except` / `:only` rules, and the
//! shared Redis behaviours (gap after a reconnect, hidden passwords)
//! hold. Every wait is bounded (`within`); "nothing else arrived" is
//! checked after a fence, a later frame that Redis delivers after the
//! ones before it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubStream;
use serde_json::Value;
use staff_pubsub::phoenix::{
    decode_term, encode_frame, FrameMode, NameForm, PhoenixConfig, DEFAULT_MAX_FRAME_SIZE,
};
use staff_pubsub::staff::{
    self, Department, DepartmentEvent, Message, Team, TeamEvent, TeamMembership,
    TeamMembershipEvent,
};
use staff_pubsub::{Connection, Error, Outcome, PubSub, RecvError, Subscription, Topic, Uuid};
use staff_pubsub_tests::redis_server::{free_port, publish_raw, raw_subscriber, RedisServer};
use staff_pubsub_tests::{logs, within};

const PUBSUB: &str = "MyApp.PubSub";
const CHANNEL: &str = "phx:Elixir.MyApp.PubSub.Adapter";
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

fn golden(file: &str) -> Vec<u8> {
    std::fs::read(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The manifest's frames, in file-name order.
fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join("MANIFEST.json")).expect("MANIFEST.json");
    let manifest: Value = serde_json::from_str(&text).expect("JSON");
    let mut files = manifest["files"].as_array().expect("files").clone();
    files.sort_by_key(|entry| entry["file"].as_str().expect("file").to_owned());
    files
}

fn config(server: &RedisServer) -> PhoenixConfig {
    PhoenixConfig::new(server.url(), PUBSUB)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

async fn node_with(name: &str, config: PhoenixConfig) -> PubSub<Message> {
    staff::builder()
        .node_name(name)
        .phoenix(config)
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"))
}

async fn node(server: &RedisServer, name: &str) -> PubSub<Message> {
    node_with(name, config(server)).await
}

async fn next_raw(stream: &mut PubSubStream) -> Vec<u8> {
    let message = within("a frame on the channel", stream.next())
        .await
        .expect("the stream goes on");
    message.get_payload_bytes().to_vec()
}

fn squad() -> Team {
    Team {
        uuid: id(TEAM),
        name: Some("Squad A".into()),
        department_uuid: Some(id(DEPARTMENT)),
    }
}

fn fence_message() -> Message {
    Message::Team(
        TeamEvent::Deleted,
        Team {
            uuid: Uuid::nil(),
            name: Some("fence".into()),
            department_uuid: None,
        },
    )
}

/// A frame from a Phoenix node named "fence" on `staff:teams`: every node
/// takes it.
fn fence_frame() -> Vec<u8> {
    encode_frame(
        FrameMode::Except,
        "fence",
        "staff:teams",
        &fence_message(),
        0,
    )
    .unwrap()
}

/// What `subscription` receives up to the fence (excluded).
async fn until_fence(subscription: &mut Subscription<Message>) -> Vec<Message> {
    let mut got = Vec::new();
    loop {
        let message = within("the fence", subscription.recv())
            .await
            .expect("a message");
        if *message == fence_message() {
            return got;
        }
        got.push(Message::clone(&message));
    }
}

fn all_topics() -> Vec<Topic> {
    vec![
        staff::topic_teams(),
        staff::topic_team(id(TEAM)),
        staff::topic_department(id(DEPARTMENT)),
        staff::topic_departments(),
        staff::topic_people(),
        staff::topic_person(id(PERSON)),
    ]
}

/// The typed message of a golden frame a staff decoder takes.
fn expected(file: &str) -> Message {
    let ops = Department {
        uuid: id(DEPARTMENT),
        name: Some("Ops".into()),
    };
    let person = staff::Person { uuid: id(PERSON) };
    match &file[..3] {
        "01a" | "01b" | "01c" | "08_" | "10a" | "10b" | "06e" => {
            Message::Team(TeamEvent::Created, squad())
        }
        "02a" | "02b" => Message::Team(
            TeamEvent::Created,
            Team {
                department_uuid: None,
                ..squad()
            },
        ),
        "03a" | "03b" | "06a" | "06d" => Message::Department(DepartmentEvent::Updated, ops),
        "04a" | "04b" => Message::Person(staff::PersonEvent::Updated, person),
        "04c" | "04d" => Message::Person(staff::PersonEvent::EmploymentChanged, person),
        "05a" | "05b" | "05c" | "05d" => Message::TeamMembership(
            TeamMembershipEvent::TeamPersonAdded,
            TeamMembership {
                uuid: id(MEMBERSHIP),
                team_uuid: id(TEAM),
                staff_person_uuid: id(PERSON),
            },
        ),
        "06b" => Message::Team(TeamEvent::Updated, squad()),
        "06c" => Message::Team(
            TeamEvent::Created,
            Team {
                name: Some("Équipe Ω – 東京".into()),
                ..squad()
            },
        ),
        "07_" => Message::Department(DepartmentEvent::Deleted, ops),
        other => panic!("no expectation for {other}"),
    }
}

/// Every golden frame, published raw as Phoenix published it, reaches the
/// subscribers of a node named `rust-1` (the target of the direct
/// broadcast) as its typed message, in order; the frames a staff decoder
/// skips are counted. A node named `phx-a` (the capturing node's name)
/// takes only the frames from the atom-named nodes: the others are its
/// own (`:except "phx-a"`) or another node's direct broadcast, and are
/// not decoded at all.
#[tokio::test]
async fn golden_frames_reach_the_subscribers_of_the_node_they_are_for() {
    let server = RedisServer::start().await;
    let rust = node(&server, "rust-1").await;
    let phx = node(&server, "phx-a").await;
    let mut on_rust = rust.subscribe_many(all_topics()).unwrap();
    let mut on_phx = phx.subscribe_many(all_topics()).unwrap();
    let mut publisher = server.connection().await;

    let mut for_rust = Vec::new();
    let mut for_phx = Vec::new();
    let mut skipped = 0;
    for entry in manifest() {
        let file = entry["file"].as_str().unwrap();
        publish_raw(&mut publisher, CHANNEL, &golden(file)).await;
        if entry["staff_decoder"] == "skip" {
            skipped += 1;
            continue;
        }
        for_rust.push(expected(file));
        if entry["node_name_type"]
            .as_str()
            .unwrap()
            .starts_with("atom")
        {
            for_phx.push(expected(file));
        }
    }
    publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;

    assert_eq!(for_rust.len(), 24);
    assert_eq!(until_fence(&mut on_rust).await, for_rust);
    assert_eq!(skipped, 5);
    assert_eq!(rust.stats().rejected, 5, "the skipped frames are counted");
    assert_eq!(until_fence(&mut on_phx).await, for_phx);
    assert_eq!(for_phx.len(), 2);
    assert_eq!(
        phx.stats().rejected,
        0,
        "frames not for this node are not decoded"
    );
}

/// What a Rust node named `phx-a` publishes is, byte for byte, what the
/// Phoenix node `phx-a` published for the same calls: one frame per
/// topic, `:except` itself; `:only` the target for a direct broadcast;
/// nothing for a local broadcast. Compressed, it is the same term.
#[tokio::test]
async fn rust_broadcasts_are_the_frames_phoenix_sends() {
    let server = RedisServer::start().await;
    // The capture's direct broadcast named "rust-1" as a binary; a node not
    // heard from is an atom by default.
    let rust = node_with("phx-a", config(&server).default_name_form(NameForm::Binary)).await;
    let mut raw = raw_subscriber(&server, CHANNEL).await;

    staff::broadcast_team_on(&rust, TeamEvent::Created, squad())
        .await
        .unwrap();
    let mut frames = vec![
        next_raw(&mut raw).await,
        next_raw(&mut raw).await,
        next_raw(&mut raw).await,
    ];
    let mut want = vec![
        golden("01a_team_created__staff_teams.bin"),
        golden("01b_team_created__staff_team_T.bin"),
        golden("01c_team_created__staff_department_D.bin"),
    ];
    frames.sort();
    want.sort();
    assert!(frames == want, "team_created frames differ from Phoenix's");

    // A local broadcast publishes nothing: the next frame is the membership's.
    rust.local_broadcast(&[staff::topic_teams()], fence_message());
    let membership = TeamMembership {
        uuid: id(MEMBERSHIP),
        team_uuid: id(TEAM),
        staff_person_uuid: id(PERSON),
    };
    staff::broadcast_team_membership_on(&rust, TeamMembershipEvent::TeamPersonAdded, membership)
        .await
        .unwrap();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for _ in 0..4 {
        frames.push(next_raw(&mut raw).await);
    }
    let mut want: Vec<Vec<u8>> = [
        "05a_team_person_added__staff_teams.bin",
        "05b_team_person_added__staff_team_T.bin",
        "05c_team_person_added__staff_people.bin",
        "05d_team_person_added__staff_person_P.bin",
    ]
    .into_iter()
    .map(golden)
    .collect();
    frames.sort();
    want.sort();
    assert!(
        frames == want,
        "team_person_added frames differ from Phoenix's"
    );

    let ops = Department {
        uuid: id(DEPARTMENT),
        name: Some("Ops".into()),
    };
    rust.direct_broadcast(
        "rust-1",
        &[staff::topic_departments()],
        Message::Department(DepartmentEvent::Deleted, ops),
    )
    .await
    .unwrap();
    assert!(
        next_raw(&mut raw).await
            == golden("07_department_deleted_direct_rust1__staff_departments.bin"),
        "the direct broadcast differs from Phoenix's"
    );

    let compressing = node_with("phx-a", config(&server).compression_level(6)).await;
    compressing
        .broadcast(
            [staff::topic_teams()],
            Message::Team(TeamEvent::Created, squad()),
        )
        .await
        .unwrap();
    let frame = next_raw(&mut raw).await;
    let golden = golden("08_team_created_compressed6__staff_teams.bin");
    assert_eq!(&frame[..2], &[131, 80], "compressed");
    assert_eq!(
        decode_term(&frame, DEFAULT_MAX_FRAME_SIZE).unwrap(),
        decode_term(&golden, DEFAULT_MAX_FRAME_SIZE).unwrap()
    );
}

/// Three Rust nodes: a broadcast reaches every node once (the sender's
/// subscribers from the sender, not again from Redis); a direct broadcast
/// reaches its target only. Nothing is counted as rejected: a node's own
/// frames are skipped by name, unread.
#[tokio::test]
async fn rust_nodes_follow_except_and_only() {
    let server = RedisServer::start().await;
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let c = node(&server, "c").await;
    let mut on_a = a.subscribe(staff::topic_teams()).unwrap();
    let mut on_b = b.subscribe(staff::topic_teams()).unwrap();
    let mut on_c = c.subscribe(staff::topic_teams()).unwrap();

    let first = Message::Team(TeamEvent::Created, squad());
    a.broadcast([staff::topic_teams()], first.clone())
        .await
        .unwrap();
    let direct = Message::Team(TeamEvent::Updated, squad());
    a.direct_broadcast("b", &[staff::topic_teams()], direct.clone())
        .await
        .unwrap();
    c.broadcast([staff::topic_teams()], fence_message())
        .await
        .unwrap();

    assert_eq!(until_fence(&mut on_a).await, std::slice::from_ref(&first));
    assert_eq!(until_fence(&mut on_b).await, [first.clone(), direct]);
    assert_eq!(until_fence(&mut on_c).await, [first]);
    for node in [&a, &b, &c] {
        assert_eq!(node.stats().rejected, 0);
    }
}

/// Skipped frames are logged at DEBUG, never WARN: a Phoenix
/// application's channel carries many messages that are not for the spec.
#[tokio::test(flavor = "current_thread")]
async fn skipped_frames_are_logged_at_debug() {
    let (_guard, logs) = logs::capture();
    let server = RedisServer::start().await;
    let rust = node(&server, "rust-1").await;
    let mut teams = rust.subscribe(staff::topic_teams()).unwrap();
    let mut publisher = server.connection().await;
    publish_raw(
        &mut publisher,
        CHANNEL,
        &golden("09c_skip_other_scope_tuple__staff_teams.bin"),
    )
    .await;
    publish_raw(&mut publisher, CHANNEL, b"not a term at all").await;
    publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
    assert!(until_fence(&mut teams).await.is_empty());
    assert_eq!(rust.stats().rejected, 2);
    assert!(logs.has_line_with(&["DEBUG", "skipped a Phoenix frame", "scope is not :staff"]));
    assert!(logs.has_line_with(&["DEBUG", "skipped a Phoenix frame", "version byte 110"]));
    assert!(
        !logs.lines().iter().any(|line| line.contains("WARN")),
        "{:?}",
        logs.lines()
    );
}

/// After Redis restarts, the node resubscribes and its subscribers are
/// told of the gap; golden frames reach them again.
#[tokio::test]
async fn a_restart_gives_a_gap_then_frames_flow_again() {
    let mut server = RedisServer::start().await;
    let rust = node(&server, "rust-1").await;
    let mut teams = rust.subscribe(staff::topic_teams()).unwrap();
    server.restart().await;
    let gap = within("the gap", teams.recv()).await;
    assert_eq!(
        gap.err(),
        Some(RecvError::Gap(staff_pubsub::Gap::Disconnected))
    );
    within("connected", rust.wait_for_connection(Connection::Connected)).await;
    let mut publisher = server.connection().await;
    publish_raw(
        &mut publisher,
        CHANNEL,
        &golden("01a_team_created__staff_teams.bin"),
    )
    .await;
    let message = within("the frame", teams.recv()).await.unwrap();
    assert_eq!(
        message,
        Arc::new(Message::Team(TeamEvent::Created, squad()))
    );
}

/// The shared Redis code: no server is `Error::Connect` with the password
/// hidden; a frame over the maximum is not sent (`NotSent`), and this
/// node's subscribers still got it.
#[tokio::test]
async fn connect_errors_hide_the_password_and_large_frames_are_not_sent() {
    let port = free_port();
    let url = format!("redis://app:S3cret@127.0.0.1:{port}");
    let error = staff::builder()
        .phoenix(PhoenixConfig::new(url, PUBSUB).connect_timeout(Duration::from_millis(500)))
        .await
        .expect_err("nothing listens");
    let text = error.to_string();
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
    assert!(text.contains("redis://app:***@127.0.0.1"), "{text}");
    assert!(!format!("{error:?}{text}").contains("S3cret"), "{text}");

    let server = RedisServer::start().await;
    let error = staff::builder()
        .phoenix(PhoenixConfig::new(server.url(), ""))
        .await
        .expect_err("no PubSub name");
    assert!(error.to_string().contains("must not be empty"), "{error}");
    let small = node_with("rust-1", config(&server).max_frame_size(150)).await;
    let mut teams = small.subscribe(staff::topic_teams()).unwrap();
    let error = small
        .broadcast(
            [staff::topic_teams()],
            Message::Team(TeamEvent::Created, squad()),
        )
        .await
        .expect_err("too large");
    let Error::Transport(transport) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(transport.outcome(), Outcome::NotSent, "{error}");
    assert!(teams.try_recv().is_ok(), "delivered locally");
}
