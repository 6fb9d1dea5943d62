//! Presence over the SSE bridge (`SseBridge::presence`), over real HTTP on
//! loopback, without a browser: the exact events and JSON (`presence_state`
//! then `presence_diff`, Phoenix.Presence's shapes), a closed connection's
//! leave, a lagged diff stream resynced with `presence_state`, a stalled
//! connection's presence ended by the stall timeout, a refused presence,
//! and two servers over a real `redis-server`: a presence tracked through
//! node A's bridge shows in node B's bridge's events.

mod web;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::request::Parts;
use axum::Router;
use serde_json::{json, Value};
use staff_pubsub::presence::PresenceLimits;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::sse::{PresenceGrant, SseBridge};
use staff_pubsub::staff::{self, Message, Team, TeamEvent};
use staff_pubsub::{PubSub, Topic, Uuid};
use staff_pubsub_tests::presence::{timing, viewer, Viewer};
use staff_pubsub_tests::redis_server::RedisServer;
use staff_pubsub_tests::within;
use web::{SseClient, SseEvent};

/// The topic of the presences: the page's `staff:teams`.
fn teams() -> Topic {
    staff::topic_teams()
}

/// The grant of a request: tracked as its `x-user` header (named
/// `x-name`), or a watcher without one; presence on `staff:teams` only.
fn grant(request: &Parts, topic: &Topic) -> Option<PresenceGrant<Viewer>> {
    if *topic != teams() {
        return None;
    }
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    Some(match header("x-user") {
        Some(user) => PresenceGrant::track(user, viewer(&header("x-name").unwrap_or_default())),
        None => PresenceGrant::Watch,
    })
}

fn bridge(pubsub: &PubSub<Message>) -> SseBridge<Message> {
    SseBridge::new(pubsub.clone(), staff::parse_topic, Message::event_name).presence(grant)
}

async fn serve(bridge: &SseBridge<Message>) -> SocketAddr {
    web::serve(Router::new().route("/events", bridge.route())).await
}

/// A connection as `user` named `name` (a watcher for `None`), past `ready`.
async fn connect(addr: SocketAddr, query: &str, user: Option<(&str, &str)>) -> SseClient {
    let headers: Vec<(&str, &str)> = match user {
        Some((user, name)) => vec![("x-user", user), ("x-name", name)],
        None => vec![],
    };
    let mut client = SseClient::open(addr, &format!("/events?{query}"), &headers).await;
    assert_eq!(client.status, 200);
    let ready = client.expect().await;
    assert_eq!(ready.event, "ready", "{ready:?}");
    client
}

/// The `phx_ref` (and `phx_ref_prev`) of every meta of `payload` (a
/// `{key: {"metas": [...]}}`), taken out: the payload without them, and
/// the refs, key by key in order.
fn take_refs(payload: &Value) -> (Value, Vec<(String, String, Option<String>)>) {
    let mut payload = payload.clone();
    let mut refs = Vec::new();
    for (key, entry) in payload.as_object_mut().expect("an object of keys") {
        for meta in entry["metas"].as_array_mut().expect("metas") {
            let meta = meta.as_object_mut().expect("a meta object");
            let phx_ref = meta.remove("phx_ref").expect("a phx_ref");
            let prev = meta.remove("phx_ref_prev");
            refs.push((
                key.clone(),
                phx_ref.as_str().expect("a string ref").to_owned(),
                prev.map(|prev| prev.as_str().expect("a string ref").to_owned()),
            ));
        }
    }
    (payload, refs)
}

/// The next event, which must be `name` on `staff:teams`: its payload.
async fn expect_presence(client: &mut SseClient, name: &str) -> (SseEvent, Value) {
    let event = client.expect().await;
    assert_eq!(event.event, name, "{event:?}");
    let data = event.json();
    assert_eq!(data["topic"], "staff:teams", "{data}");
    assert_eq!(data["event"], name, "{data}");
    let object = data.as_object().unwrap();
    assert_eq!(object.len(), 3, "topic, event, payload: {data}");
    (event, data["payload"].clone())
}

#[tokio::test]
async fn presence_state_first_then_diffs_in_phoenix_shapes_and_a_closed_connection_leaves() {
    let pubsub = PubSub::new();
    let addr = serve(&bridge(&pubsub)).await;

    // Ada: `ready` (id 1), then the list with herself (id 2).
    let mut ada = connect(addr, "topic=staff:teams", Some(("u1", "Ada"))).await;
    let (event, payload) = expect_presence(&mut ada, "presence_state").await;
    assert_eq!(event.id, "2");
    let (bare, refs) = take_refs(&payload);
    assert_eq!(bare, json!({"u1": {"metas": [{"name": "Ada"}]}}));
    let listed = pubsub.presences::<Viewer>(teams());
    assert_eq!(listed.len(), 1);
    let ada_ref = refs[0].1.clone();
    assert!(
        ada_ref.starts_with(&format!("{}.", listed[0].id)),
        "the ref names the presence: {ada_ref}"
    );

    // Bea, on two topics (presence on staff:teams only): both listed.
    let mut bea = connect(
        addr,
        "topic=staff:departments&topic=staff:teams",
        Some(("u2", "Bea")),
    )
    .await;
    let (_, payload) = expect_presence(&mut bea, "presence_state").await;
    let (bare, refs) = take_refs(&payload);
    assert_eq!(
        bare,
        json!({"u1": {"metas": [{"name": "Ada"}]}, "u2": {"metas": [{"name": "Bea"}]}})
    );
    assert_eq!(refs[0].1, ada_ref, "one presence, one ref on every stream");
    let bea_ref = refs[1].1.clone();

    // Ada is told of Bea: a diff with her join and no leaves (id 3).
    let (event, payload) = expect_presence(&mut ada, "presence_diff").await;
    assert_eq!(event.id, "3");
    assert_eq!(
        payload["leaves"],
        json!({}),
        "no leaves: an empty object, as Phoenix's"
    );
    let (bare, refs) = take_refs(&payload["joins"]);
    assert_eq!(bare, json!({"u2": {"metas": [{"name": "Bea"}]}}));
    assert_eq!(refs, vec![("u2".into(), bea_ref.clone(), None)]);

    // A watcher sees both, and is not listed itself: nobody is told of it.
    let mut watcher = connect(addr, "topic=staff:teams", None).await;
    let (_, payload) = expect_presence(&mut watcher, "presence_state").await;
    assert_eq!(take_refs(&payload).0.as_object().unwrap().len(), 2);
    assert_eq!(pubsub.presences::<Viewer>(teams()).len(), 2);

    // The application updates a presence of its own: one diff, the new
    // metadata joining with the old ref as `phx_ref_prev`, the old leaving.
    let mut cleo = pubsub
        .track(teams(), "u3", viewer("Cleo"))
        .expect("tracked");
    let (_, payload) = expect_presence(&mut ada, "presence_diff").await;
    let (_, refs) = take_refs(&payload["joins"]);
    let cleo_ref = refs[0].1.clone();
    cleo.update(viewer("Cleo P.")).expect("updated");
    let (_, payload) = expect_presence(&mut ada, "presence_diff").await;
    let (joins, join_refs) = take_refs(&payload["joins"]);
    let (leaves, leave_refs) = take_refs(&payload["leaves"]);
    assert_eq!(joins, json!({"u3": {"metas": [{"name": "Cleo P."}]}}));
    assert_eq!(leaves, json!({"u3": {"metas": [{"name": "Cleo"}]}}));
    assert_eq!(leave_refs, vec![("u3".into(), cleo_ref.clone(), None)]);
    assert_ne!(join_refs[0].1, cleo_ref, "an update is a new ref");
    assert_eq!(join_refs[0].2.as_deref(), Some(cleo_ref.as_str()));
    drop(cleo);
    let (_, payload) = expect_presence(&mut ada, "presence_diff").await;
    assert_eq!(
        take_refs(&payload["leaves"]).0.as_object().unwrap().len(),
        1
    );

    // Bea's connection closes: Ada is told, with the ref Bea joined with.
    drop(bea);
    let closed = Instant::now();
    let (_, payload) = expect_presence(&mut ada, "presence_diff").await;
    eprintln!("a closed connection's leave after {:?}", closed.elapsed());
    assert_eq!(payload["joins"], json!({}));
    let (bare, refs) = take_refs(&payload["leaves"]);
    assert_eq!(bare, json!({"u2": {"metas": [{"name": "Bea"}]}}));
    assert_eq!(refs[0].1, bea_ref);
    assert_eq!(pubsub.presences::<Viewer>(teams()).len(), 1);

    // Messages still flow on the same stream, with the next sequence ids.
    let team = Team {
        uuid: Uuid::now_v7(),
        name: Some("Squad".into()),
        department_uuid: None,
    };
    staff::broadcast_team_on(&pubsub, TeamEvent::Created, team)
        .await
        .unwrap();
    let event = ada.expect().await;
    assert_eq!(
        (event.event.as_str(), event.id.as_str()),
        ("team_created", "8")
    );
    drop(watcher);
}

#[tokio::test]
async fn without_the_hook_or_on_other_topics_no_presence_events() {
    let pubsub = PubSub::new();
    let plain = SseBridge::new(pubsub.clone(), staff::parse_topic, Message::event_name);
    let addr = serve(&plain).await;
    let mut client = connect(addr, "topic=staff:teams", Some(("u1", "Ada"))).await;
    let other = serve(&bridge(&pubsub)).await;
    let mut departments = connect(other, "topic=staff:departments", Some(("u2", "Bea"))).await;
    let _tracked = pubsub.track(teams(), "u3", viewer("Cleo")).unwrap();
    assert!(pubsub.presences::<Viewer>(teams()).len() == 1);
    staff::broadcast_department_on(
        &pubsub,
        staff::DepartmentEvent::Created,
        staff::Department {
            uuid: Uuid::now_v7(),
            name: Some("R&D".into()),
        },
    )
    .await
    .unwrap();
    // The next event of each is the message: no presence event before it.
    assert_eq!(departments.expect().await.event, "department_created");
    staff::broadcast_team_on(
        &pubsub,
        TeamEvent::Created,
        Team {
            uuid: Uuid::now_v7(),
            name: None,
            department_uuid: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(client.expect().await.event, "team_created");
}

#[tokio::test(flavor = "current_thread")]
async fn a_lagged_diff_stream_resyncs_with_a_fresh_presence_state() {
    // One runtime thread: while the test does not await, the server's
    // stream cannot read its diffs, so they pile up past the queue.
    let pubsub = PubSub::new();
    let addr = serve(&bridge(&pubsub)).await;
    let mut ada = connect(addr, "topic=staff:teams", Some(("u1", "Ada"))).await;
    expect_presence(&mut ada, "presence_state").await;

    let diffs = staff_pubsub::presence::DIFF_QUEUE_CAPACITY + 100;
    let mut kept = Vec::new();
    for i in 0..diffs {
        let tracked = pubsub
            .track(teams(), format!("k{i}"), viewer(&format!("n{i}")))
            .unwrap();
        // Every tenth stays; the others leave: more diffs, fewer presences.
        if i % 10 == 0 {
            kept.push(tracked);
        }
    }
    let listed = pubsub.presences::<Viewer>(teams()).len();
    assert_eq!(listed, 1 + kept.len());

    // The page is sent the whole list again, not the diffs it lost, and
    // nothing of what was dropped after it.
    let (_, payload) = expect_presence(&mut ada, "presence_state").await;
    let (bare, _) = take_refs(&payload);
    let keys = bare.as_object().unwrap();
    assert_eq!(keys.len(), listed);
    assert!(keys.contains_key("u1") && keys.contains_key("k0"));
    assert!(
        !keys.contains_key("k1"),
        "a presence that left is not listed"
    );

    // Then diffs again, in order.
    drop(kept.pop());
    let (_, payload) = expect_presence(&mut ada, "presence_diff").await;
    assert_eq!(payload["leaves"].as_object().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stalled_connection_leaves_after_the_stall_timeout() {
    let pubsub = PubSub::builder().capacity(8).build();
    let stall = Duration::from_millis(400);
    let bridge = bridge(&pubsub)
        .keep_alive(Duration::from_millis(50))
        .stall_timeout(stall);
    let addr = serve(&bridge).await;
    let mut watcher = connect(addr, "topic=staff:teams", None).await;
    expect_presence(&mut watcher, "presence_state").await;

    // A browser that never reads, tracked as Bea.
    let stalled = SseClient::stalled_with(
        addr,
        "/events?topic=staff:teams",
        &[("x-user", "u2"), ("x-name", "Bea")],
    )
    .await;
    let (_, payload) = expect_presence(&mut watcher, "presence_diff").await;
    assert!(payload["joins"].get("u2").is_some(), "{payload}");

    // Its socket fills: its subscription's queue overflows (the stream
    // is no longer polled), and, once the stall timeout passed, it leaves.
    let name = "n".repeat(64 * 1024);
    let mut sent = 0;
    within("the stalled connection's queue to overflow", async {
        while pubsub.stats().lagged == 0 {
            let team = Team {
                uuid: Uuid::now_v7(),
                name: Some(name.clone()),
                department_uuid: None,
            };
            staff::broadcast_team_on(&pubsub, TeamEvent::Created, team)
                .await
                .unwrap();
            sent += 1;
            // The watcher reads what it is sent.
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(1), watcher.next()).await
            {
                assert_ne!(event.event, "presence_diff", "left too early: {event:?}");
            }
        }
    })
    .await;
    let full = Instant::now();
    eprintln!("stalled after {sent} broadcasts of 64 KiB");
    let event = within("the stalled connection's leave", async {
        loop {
            let event = watcher.expect().await;
            if event.event == "presence_diff" {
                return event;
            }
        }
    })
    .await;
    let took = full.elapsed();
    let leaves = &event.json()["payload"]["leaves"];
    assert!(leaves.get("u2").is_some(), "{event:?}");
    assert!(
        took < stall * 4,
        "left {took:?} after the socket filled, the stall timeout is {stall:?}"
    );
    assert_eq!(pubsub.presences::<Viewer>(teams()).len(), 0);

    // When it reads again, its stream ends (the browser would reconnect).
    let mut stalled = SseClient::from_stream(stalled).await;
    within("the stalled stream to end", async {
        while stalled.next().await.is_some() {}
    })
    .await;
}

#[tokio::test]
async fn a_presence_that_cannot_be_tracked_is_a_503_and_nothing_is_tracked() {
    let pubsub = PubSub::new();
    pubsub.tracker::<Viewer>().set_limits(PresenceLimits {
        max_presences: 100,
        max_meta_bytes: 16,
    });
    let addr = serve(&bridge(&pubsub)).await;
    let long = "x".repeat(32);
    let reply = web::request(
        addr,
        "GET",
        "/events?topic=staff:teams",
        &[("x-user", "u1"), ("x-name", &long)],
        b"",
    )
    .await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.json()["error"], "presence");
    assert_eq!(reply.json()["topic"], "staff:teams");
    assert!(pubsub.presences::<Viewer>(teams()).is_empty());
    assert_eq!(pubsub.stats().subscriptions, 0, "nothing stays subscribed");
}

/// A node over Redis with the short presence timing.
async fn node(server: &RedisServer, name: &str) -> PubSub<Message> {
    PubSub::<Message>::builder()
        .presence_timing(timing())
        .expect("a valid timing")
        .node_name(name)
        .redis(
            RedisConfig::new(server.url())
                .namespace("sse-presence")
                .connect_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap_or_else(|error| panic!("node {name}: {error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_tracked_through_node_a_shows_in_node_b_bridge() {
    let server = RedisServer::start().await;
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let at_a = serve(&bridge(&a)).await;
    let at_b = serve(&bridge(&b)).await;

    // A watcher on B first: its list is empty, then Ada joins through A.
    let mut watcher = connect(at_b, "topic=staff:teams", None).await;
    let (_, payload) = expect_presence(&mut watcher, "presence_state").await;
    assert_eq!(payload, json!({}));
    let mut ada = connect(at_a, "topic=staff:teams", Some(("u1", "Ada"))).await;
    let (_, payload) = expect_presence(&mut ada, "presence_state").await;
    let (_, ada_refs) = take_refs(&payload);
    let (_, payload) = expect_presence(&mut watcher, "presence_diff").await;
    let (bare, refs) = take_refs(&payload["joins"]);
    assert_eq!(bare, json!({"u1": {"metas": [{"name": "Ada"}]}}));
    assert_eq!(refs[0].1, ada_refs[0].1, "the same ref on both nodes");

    // A browser that comes to B later is listed the presence from A, and
    // is listed on A in turn.
    let mut bea = connect(at_b, "topic=staff:teams", Some(("u2", "Bea"))).await;
    let (_, payload) = expect_presence(&mut bea, "presence_state").await;
    let (bare, _) = take_refs(&payload);
    assert_eq!(
        bare,
        json!({"u1": {"metas": [{"name": "Ada"}]}, "u2": {"metas": [{"name": "Bea"}]}})
    );
    let (_, payload) = expect_presence(&mut ada, "presence_diff").await;
    assert!(payload["joins"].get("u2").is_some(), "{payload}");

    // Ada's connection to A closes: B's browsers are told.
    drop(ada);
    for client in [&mut watcher, &mut bea] {
        loop {
            let (_, payload) = expect_presence(client, "presence_diff").await;
            if payload["leaves"].get("u1").is_some() {
                assert_eq!(take_refs(&payload["leaves"]).1[0].1, ada_refs[0].1);
                break;
            }
        }
    }
}
