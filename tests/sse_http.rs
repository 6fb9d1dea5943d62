//! The SSE bridge (`staff_pubsub::sse`, feature `sse`) and the staff_web
//! example's JSON API, over real HTTP on loopback, without a browser.

#[path = "../examples/staff_web/app.rs"]
mod app;
mod web;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use staff_pubsub::sse::SseBridge;
use staff_pubsub::staff::{self, Department, DepartmentEvent, Message, Team, TeamEvent};
use staff_pubsub::{refute_receive, PubSub, Topic, Uuid};
use staff_pubsub_tests::within;
use web::{get, post, SseClient};

fn bridge(pubsub: &PubSub<Message>) -> SseBridge<Message> {
    SseBridge::new(pubsub.clone(), staff::parse_topic, Message::event_name)
}

async fn serve(bridge: &SseBridge<Message>) -> SocketAddr {
    web::serve(Router::new().route("/events", bridge.route())).await
}

fn team(department: Option<Uuid>, name: &str) -> Team {
    Team {
        uuid: Uuid::now_v7(),
        name: Some(name.into()),
        department_uuid: department,
    }
}

/// Opens `/events?<query>`, checks the `ready` event and returns the client.
async fn subscribed(addr: SocketAddr, query: &str) -> SseClient {
    let mut client = SseClient::open(addr, &format!("/events?{query}"), &[]).await;
    assert_eq!(client.status, 200, "GET /events?{query}");
    let ready = client.expect().await;
    assert_eq!(ready.event, "ready");
    client
}

#[tokio::test]
async fn one_event_per_message_named_by_its_atom_with_its_json_form_and_a_sequence_id() {
    let pubsub = PubSub::new();
    let addr = serve(&bridge(&pubsub)).await;
    let department = Uuid::now_v7();
    let query = format!("topic=staff:teams&topic=staff:department:{department}");
    let mut client = SseClient::open(addr, &format!("/events?{query}"), &[]).await;
    assert_eq!(client.status, 200);
    let content_type = client
        .headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.clone());
    assert_eq!(content_type.as_deref(), Some("text/event-stream"));
    let ready = client.expect().await;
    assert_eq!((ready.event.as_str(), ready.id.as_str()), ("ready", "1"));
    assert_eq!(
        ready.json(),
        serde_json::json!({"topics": ["staff:teams", format!("staff:department:{department}")]})
    );

    // A team of the department reaches both topics: two copies, as the
    // delivery rule says; then a department event reaches one.
    let created = team(Some(department), "Squad A");
    staff::broadcast_team_on(&pubsub, TeamEvent::Created, created.clone())
        .await
        .unwrap();
    let renamed = Department {
        uuid: department,
        name: Some("R&D".into()),
    };
    staff::broadcast_department_on(&pubsub, DepartmentEvent::Updated, renamed.clone())
        .await
        .unwrap();
    let expected_team = serde_json::to_value(Message::Team(TeamEvent::Created, created)).unwrap();
    for id in ["2", "3"] {
        let event = client.expect().await;
        assert_eq!(event.event, "team_created");
        assert_eq!(event.id, id);
        assert_eq!(event.json(), expected_team);
        assert_eq!(event.json()["scope"], "staff");
    }
    let event = client.expect().await;
    assert_eq!(
        (event.event.as_str(), event.id.as_str()),
        ("department_updated", "4")
    );
    assert_eq!(
        event.json(),
        serde_json::json!({"scope": "staff", "event": "department_updated",
            "payload": {"uuid": department, "name": "R&D"}})
    );
}

#[tokio::test]
async fn each_connection_has_its_own_sequence() {
    let pubsub = PubSub::new();
    let addr = serve(&bridge(&pubsub)).await;
    let mut first = subscribed(addr, "topic=staff:teams").await;
    staff::broadcast_team_on(&pubsub, TeamEvent::Created, team(None, "a"))
        .await
        .unwrap();
    assert_eq!(first.expect().await.id, "2");
    let mut second = subscribed(addr, "topic=staff:teams").await;
    staff::broadcast_team_on(&pubsub, TeamEvent::Created, team(None, "b"))
        .await
        .unwrap();
    assert_eq!(first.expect().await.id, "3");
    assert_eq!(second.expect().await.id, "2");
}

#[tokio::test(flavor = "current_thread")]
async fn lag_becomes_a_resync_event_then_the_stream_goes_on() {
    // One runtime thread: while this test does not await, the server's
    // stream cannot drain the subscription, so the lag is certain.
    let pubsub = PubSub::builder().capacity(2).build();
    let addr = serve(&bridge(&pubsub)).await;
    let mut client = subscribed(addr, "topic=staff:teams").await;
    let teams: Vec<Team> = (0..10).map(|i| team(None, &format!("t{i}"))).collect();
    for t in &teams {
        pubsub.local_broadcast(
            &[staff::topic_teams()],
            Message::Team(TeamEvent::Created, t.clone()),
        );
    }
    let resync = client.expect().await;
    assert_eq!(resync.event, "resync", "{resync:?}");
    assert_eq!(resync.id, "2");
    assert_eq!(
        resync.json(),
        serde_json::json!({"reason": "lagged", "missed": 8})
    );
    for t in &teams[8..] {
        let event = client.expect().await;
        assert_eq!(event.event, "team_created");
        assert_eq!(event.json()["payload"]["uuid"], t.uuid.to_string());
    }
}

#[tokio::test]
async fn a_transport_gap_becomes_a_resync_event() {
    let pubsub = PubSub::new();
    let addr = serve(&bridge(&pubsub)).await;
    let mut client = subscribed(addr, "topic=staff:teams").await;
    pubsub.local_node().signal_gap();
    let resync = client.expect().await;
    assert_eq!(resync.event, "resync");
    assert_eq!(
        resync.json(),
        serde_json::json!({"reason": "gap", "gap": "disconnected"})
    );
}

#[tokio::test]
async fn a_reconnecting_event_source_is_told_to_resync() {
    let pubsub = PubSub::new();
    let addr = serve(&bridge(&pubsub)).await;
    let mut client = SseClient::open(
        addr,
        "/events?topic=staff:teams",
        &[("last-event-id", "41")],
    )
    .await;
    assert_eq!(client.expect().await.event, "ready");
    let resync = client.expect().await;
    assert_eq!(resync.event, "resync");
    assert_eq!(resync.json(), serde_json::json!({"reason": "reconnected"}));
    assert_eq!(resync.id, "2");
}

#[tokio::test]
async fn keep_alive_comments_flow_while_nothing_happens() {
    let pubsub = PubSub::new();
    let bridge = bridge(&pubsub).keep_alive(Duration::from_millis(50));
    let addr = serve(&bridge).await;
    let mut client = subscribed(addr, "topic=staff:teams").await;
    // Comments are skipped by `next`; the event after them proves they were read.
    within("two keep-alive comments", async {
        while client.comments < 2 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                event = client.next() => panic!("unexpected {event:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn close_ends_every_stream_and_refuses_new_ones() {
    let pubsub = PubSub::new();
    let bridge = bridge(&pubsub);
    let addr = serve(&bridge).await;
    let mut client = subscribed(addr, "topic=staff:teams").await;
    bridge.close();
    assert_eq!(within("the end of the stream", client.next()).await, None);
    let refused = get(addr, "/events?topic=staff:teams").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"], "unavailable");
}

#[tokio::test]
async fn the_stream_ends_when_the_server_is_gone() {
    let pubsub = PubSub::<Message>::new();
    let subscription = pubsub.subscribe(staff::topic_teams()).unwrap();
    let bridge = bridge(&pubsub);
    let response = {
        use axum::response::IntoResponse;
        bridge.stream(subscription, false).into_response()
    };
    let response = std::sync::Arc::new(std::sync::Mutex::new(Some(response)));
    let addr = web::serve(Router::new().route(
        "/",
        axum::routing::get(move || {
            let response = response.lock().unwrap().take().unwrap();
            async move { response }
        }),
    ))
    .await;
    let mut client = SseClient::open(addr, "/", &[]).await;
    assert_eq!(client.expect().await.event, "ready");
    drop(bridge);
    drop(pubsub);
    assert_eq!(within("the end of the stream", client.next()).await, None);
}

#[tokio::test]
async fn a_malformed_or_unknown_topic_is_a_400_naming_it() {
    let pubsub = PubSub::new();
    let addr = serve(&bridge(&pubsub)).await;
    for topic in [
        "staff:bogus",
        "staff:team:not-a-uuid",
        "staff:team:",
        "shop:orders",
        "",
        "staff:teams:extra",
    ] {
        let path = format!(
            "/events?topic=staff:teams&topic={}",
            topic.replace(':', "%3A")
        );
        let reply = get(addr, &path).await;
        assert_eq!(reply.status, 400, "{topic:?}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let body = reply.json();
        assert_eq!(body["error"], "invalid_topic", "{body}");
        assert_eq!(body["topic"], topic, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(pubsub.stats().subscriptions, 0);
}

#[tokio::test]
async fn no_topic_is_a_400() {
    let pubsub = PubSub::new();
    let addr = serve(&bridge(&pubsub)).await;
    for path in ["/events", "/events?", "/events?other=staff:teams"] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 400, "{path}");
        assert_eq!(reply.json()["error"], "no_topics");
    }
}

#[tokio::test]
async fn topics_per_connection_are_bounded() {
    let pubsub = PubSub::new();
    let addr = serve(&bridge(&pubsub).max_topics(3)).await;
    let topics: Vec<String> = (0..4)
        .map(|_| format!("topic=staff:team:{}", Uuid::now_v7()))
        .collect();
    let reply = get(addr, &format!("/events?{}", topics.join("&"))).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": "too_many_topics", "limit": 3,
            "message": "at most 3 topics per connection"})
    );
    // At the bound: served.
    let _client = subscribed(addr, &topics[..3].join("&")).await;
    assert_eq!(pubsub.stats().subscriptions, 1);
}

#[tokio::test]
async fn the_authorization_hook_sees_the_request_and_its_refusal_is_a_403() {
    let pubsub = PubSub::new();
    let secret = Uuid::now_v7();
    let bridge = bridge(&pubsub).authorize(move |request, topic: &Topic| {
        let admin = request.headers.get("x-role").is_some_and(|v| v == "admin");
        admin || *topic != staff::topic_department(secret)
    });
    let addr = serve(&bridge).await;
    let path = format!("/events?topic=staff:teams&topic=staff:department:{secret}");
    let reply = get(addr, &path).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"], "forbidden");
    assert_eq!(reply.json()["topic"], format!("staff:department:{secret}"));
    assert_eq!(pubsub.stats().subscriptions, 0);

    let mut admin = SseClient::open(addr, &path, &[("x-role", "admin")]).await;
    assert_eq!(admin.status, 200);
    assert_eq!(admin.expect().await.event, "ready");
}

/// A spec of another scope: the bridge serves it alike.
#[staff_pubsub::staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    /// An order changed.
    #[entity(collection = "orders", events(order_placed, order_shipped))]
    pub struct Order {
        /// The order.
        pub uuid: Uuid,
    }
}

#[tokio::test]
async fn any_spec_is_served() {
    let pubsub = PubSub::<shop::Message>::new();
    let bridge = SseBridge::new(pubsub.clone(), shop::parse_topic, shop::Message::event_name);
    let addr = web::serve(Router::new().route("/events", bridge.route())).await;
    assert_eq!(get(addr, "/events?topic=staff:teams").await.status, 400);
    let mut client = subscribed(addr, "topic=shop:orders").await;
    let order = shop::Order {
        uuid: Uuid::now_v7(),
    };
    shop::broadcast_order_on(&pubsub, shop::OrderEvent::Shipped, order.clone())
        .await
        .unwrap();
    let event = client.expect().await;
    assert_eq!(event.event, "order_shipped");
    assert_eq!(
        event.json(),
        serde_json::json!({"scope": "shop", "event": "order_shipped", "payload": {"uuid": order.uuid}})
    );
}

// The example's JSON API: bad input is a 4xx with a JSON error, nothing is
// broadcast, and the server goes on.

async fn example() -> (app::App, SocketAddr) {
    let app = app::App::new(PubSub::new(), "test").unwrap();
    let bridge = app.bridge();
    let addr = web::serve(app.router(&bridge)).await;
    (app, addr)
}

const ENGINEERING: &str = "01920000-0000-7000-8000-000000010001";
const PLATFORM: &str = "01920000-0000-7000-8000-000000020001";
const ADA: &str = "01920000-0000-7000-8000-000000000001";

#[tokio::test]
async fn the_example_refuses_bad_input_without_broadcasting() {
    let (app, addr) = example().await;
    let mut everything = app
        .pubsub()
        .subscribe_many([
            staff::topic_departments(),
            staff::topic_teams(),
            staff::topic_people(),
        ])
        .unwrap();
    let unknown = Uuid::now_v7();
    let oversize = format!(r#"{{"name":"{}"}}"#, "a".repeat(app::MAX_BODY));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/api/departments", "{not json".into(), 400, "invalid JSON"),
        ("/api/departments", "{}".into(), 400, "missing field `name`"),
        (
            "/api/departments",
            r#"{"name":42}"#.into(),
            400,
            "invalid type",
        ),
        (
            "/api/departments",
            r#"{"name":"  "}"#.into(),
            400,
            "1 to 100 characters",
        ),
        ("/api/departments", oversize, 413, "length limit"),
        (
            "/api/departments/rename",
            format!(r#"{{"uuid":"{unknown}","name":"x"}}"#),
            404,
            "unknown department",
        ),
        (
            "/api/departments/rename",
            r#"{"uuid":"nope","name":"x"}"#.into(),
            400,
            "UUID",
        ),
        (
            "/api/departments/delete",
            format!(r#"{{"uuid":"{unknown}"}}"#),
            404,
            "unknown department",
        ),
        (
            "/api/teams",
            format!(r#"{{"department_uuid":"{unknown}","name":"x"}}"#),
            404,
            "unknown department",
        ),
        (
            "/api/teams",
            format!(r#"{{"department_uuid":"{ENGINEERING}"}}"#),
            400,
            "missing field `name`",
        ),
        (
            "/api/teams/rename",
            format!(r#"{{"uuid":"{unknown}","name":"x"}}"#),
            404,
            "unknown team",
        ),
        (
            "/api/teams/delete",
            format!(r#"{{"uuid":"{unknown}"}}"#),
            404,
            "unknown team",
        ),
        (
            "/api/members",
            format!(r#"{{"team_uuid":"{PLATFORM}","person_uuid":"{unknown}"}}"#),
            404,
            "unknown person",
        ),
        (
            "/api/members",
            format!(r#"{{"team_uuid":"{unknown}","person_uuid":"{ADA}"}}"#),
            404,
            "unknown team",
        ),
        (
            "/api/members/delete",
            format!(r#"{{"team_uuid":"{PLATFORM}","person_uuid":"{ADA}"}}"#),
            404,
            "unknown member",
        ),
        ("/api/nowhere", "{}".into(), 404, "no such page"),
    ];
    for (path, body, status, message) in &cases {
        let reply = post(addr, path, body.as_bytes()).await;
        assert_eq!(reply.status, *status, "{path} {body:.80}: {reply:?}");
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.contains(message),
            "{path}: {error:?} lacks {message:?}"
        );
    }
    refute_receive!(everything, _);
    assert_eq!(app.pubsub().stats().published, 0);

    // Unharmed: a valid request still works and is broadcast.
    let reply = post(addr, "/api/departments", br#"{"name":"Research"}"#).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let message = within("the broadcast", everything.recv()).await.unwrap();
    assert!(
        matches!(&*message, Message::Department(DepartmentEvent::Created, d) if d.name.as_deref() == Some("Research"))
    );
    let state = get(addr, "/api/state").await.json();
    assert!(state["departments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == "Research"));
}

#[tokio::test]
async fn the_example_broadcasts_each_change_and_serves_the_page() {
    let (app, addr) = example().await;
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("new EventSource("));
    let mut events = subscribed(addr, "topic=staff:departments&topic=staff:teams").await;
    // A page that names no viewer watches who views, unlisted: nobody yet.
    let viewers = events.expect().await;
    assert_eq!(viewers.event, "presence_state");
    assert_eq!(
        viewers.json(),
        serde_json::json!({"topic": "staff:departments", "event": "presence_state", "payload": {}})
    );
    let reply = post(
        addr,
        "/api/teams",
        format!(r#"{{"department_uuid":"{ENGINEERING}","name":"Data"}}"#).as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let team = reply.json()["uuid"].as_str().unwrap().to_owned();
    let event = events.expect().await;
    assert_eq!(event.event, "team_created");
    assert_eq!(event.json()["payload"]["name"], "Data");

    let steps: Vec<(&str, String, &str)> = vec![
        (
            "/api/teams/rename",
            format!(r#"{{"uuid":"{team}","name":"Data Eng"}}"#),
            "team_updated",
        ),
        (
            "/api/members",
            format!(r#"{{"team_uuid":"{team}","person_uuid":"{ADA}"}}"#),
            "team_person_added",
        ),
        (
            "/api/members/delete",
            format!(r#"{{"team_uuid":"{team}","person_uuid":"{ADA}"}}"#),
            "team_person_removed",
        ),
        (
            "/api/teams/delete",
            format!(r#"{{"uuid":"{team}"}}"#),
            "team_deleted",
        ),
        (
            "/api/departments/rename",
            format!(r#"{{"uuid":"{ENGINEERING}","name":"Eng"}}"#),
            "department_updated",
        ),
    ];
    for (path, body, expected) in steps {
        let reply = post(addr, path, body.as_bytes()).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(events.expect().await.event, expected, "{path}");
    }
    // Deleting a department announces its teams' deletion first.
    let reply = post(
        addr,
        "/api/departments/delete",
        format!(r#"{{"uuid":"{ENGINEERING}"}}"#).as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(events.expect().await.event);
    }
    assert_eq!(
        names,
        ["team_deleted", "team_deleted", "department_deleted"]
    );
    let state = get(addr, "/api/state").await.json();
    assert_eq!(state["departments"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.store().view("x")["departments"][0]["name"],
        "Operations"
    );
    // The example's hook: no single person's topic.
    let refused = get(addr, &format!("/events?topic=staff:person:{ADA}")).await;
    assert_eq!(refused.status, 403);
}
