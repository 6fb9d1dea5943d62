//! The SSE bridge on a durable server, over real HTTP on
//! loopback, against the in-memory log: events have their log positions
//! as ids, and a browser that comes back with `Last-Event-ID` is replayed
//! what it missed, then continues live; `resync` only when that is not
//! possible.

mod web;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use serde_json::json;
use staff_pubsub::sse::SseBridge;
use staff_pubsub::staff::{self, Department, DepartmentEvent, Message, Team, TeamEvent};
use staff_pubsub::{Position, PubSub, Retention, Uuid};
use staff_pubsub_tests::memory_log::MemoryLog;
use web::{SseClient, SseEvent};

const TEAMS: &str = "topic=staff:teams";

async fn durable(log: &MemoryLog<Message>, name: &str) -> PubSub<Message> {
    PubSub::builder()
        .node_name(name)
        .build_with(log.connect())
        .await
        .expect("attach to the memory log")
}

async fn serve(pubsub: &PubSub<Message>) -> SocketAddr {
    let bridge = SseBridge::new(pubsub.clone(), staff::parse_topic, Message::event_name);
    web::serve(Router::new().route("/events", bridge.route())).await
}

fn team(name: &str) -> Team {
    Team {
        uuid: Uuid::now_v7(),
        name: Some(name.into()),
        department_uuid: None,
    }
}

/// Broadcasts a new team named `name` and returns it.
async fn create_team(pubsub: &PubSub<Message>, name: &str) -> Team {
    let team = team(name);
    staff::broadcast_team_on(pubsub, TeamEvent::Created, team.clone())
        .await
        .unwrap();
    team
}

/// Waits until `pubsub` has read the log up to entry `seq`.
async fn read_up_to(pubsub: &PubSub<Message>, log: &MemoryLog<Message>, seq: u64) {
    let wanted = log.position(seq);
    staff_pubsub_tests::within("the node to read the log", async {
        while pubsub.log_position() != wanted {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

async fn open(addr: SocketAddr, query: &str, last_event_id: Option<&str>) -> SseClient {
    let headers: Vec<(&str, &str)> = last_event_id
        .map(|id| ("last-event-id", id))
        .into_iter()
        .collect();
    let client = SseClient::open(addr, &format!("/events?{query}"), &headers).await;
    assert_eq!(client.status, 200);
    client
}

/// The event is `team_created` for `team`, with id `id`.
fn assert_team(event: &SseEvent, team: &Team, id: Option<Position>) {
    assert_eq!(event.event, "team_created", "{event:?}");
    assert_eq!(
        event.json()["payload"]["name"],
        json!(team.name),
        "{event:?}"
    );
    let id = id.map(|id| id.to_string()).unwrap_or_default();
    assert_eq!(event.id, id, "{event:?}");
}

/// Nothing more comes for a while (every passing call waits this long).
async fn refute_event(client: &mut SseClient) {
    if let Ok(event) = tokio::time::timeout(Duration::from_millis(200), client.next()).await {
        panic!("unexpected {event:?}");
    }
}

#[tokio::test]
async fn events_of_a_durable_server_have_their_log_positions_as_ids() {
    let log = MemoryLog::new(Retention::entries(1000));
    let pubsub = durable(&log, "a").await;
    let addr = serve(&pubsub).await;

    // An empty log: `ready` has no id (there is no position yet).
    let mut early = open(addr, TEAMS, None).await;
    let ready = early.expect().await;
    assert_eq!((ready.event.as_str(), ready.id.as_str()), ("ready", ""));
    assert_eq!(ready.json(), json!({"topics": ["staff:teams"]}));
    let first = create_team(&pubsub, "first").await;
    assert_team(&early.expect().await, &first, log.position(1));

    // Then `ready` names the node's position, and every message after it
    // comes with its own: a team of a department reaches both topics of
    // this connection, two events with one id.
    read_up_to(&pubsub, &log, 1).await;
    let department = Uuid::now_v7();
    let query = format!("{TEAMS}&topic=staff:department:{department}");
    let mut client = open(addr, &query, None).await;
    let ready = client.expect().await;
    assert_eq!(ready.id, log.position(1).unwrap().to_string());
    let mut of_department = team("of the department");
    of_department.department_uuid = Some(department);
    staff::broadcast_team_on(&pubsub, TeamEvent::Created, of_department.clone())
        .await
        .unwrap();
    for _ in 0..2 {
        assert_team(&client.expect().await, &of_department, log.position(2));
    }
    // A message that does not go through the log has no id: the browser
    // keeps the last one.
    let local = team("local");
    pubsub.local_broadcast(
        &[staff::topic_teams()],
        Message::Team(TeamEvent::Created, local.clone()),
    );
    assert_team(&client.expect().await, &local, None);
    refute_event(&mut client).await;
}

#[tokio::test]
async fn a_browser_that_comes_back_is_replayed_what_it_missed_then_continues_live() {
    let log = MemoryLog::new(Retention::entries(1000));
    let a = durable(&log, "a").await;
    let b = durable(&log, "b").await;
    let (on_a, on_b) = (serve(&a).await, serve(&b).await);
    let mut client = open(on_a, TEAMS, None).await;
    client.expect().await;
    let seen = create_team(&a, "seen").await;
    let event = client.expect().await;
    assert_team(&event, &seen, log.position(1));
    drop(client);

    // Missed: two teams and a department (another topic).
    let missed = [create_team(&a, "missed 1").await];
    let department = Department {
        uuid: Uuid::now_v7(),
        name: Some("elsewhere".into()),
    };
    staff::broadcast_department_on(&a, DepartmentEvent::Created, department)
        .await
        .unwrap();
    let missed = [missed[0].clone(), create_team(&a, "missed 2").await];
    read_up_to(&b, &log, 4).await;

    // Back, on the other node (positions are the log's, not a node's).
    let mut back = open(on_b, TEAMS, Some(&event.id)).await;
    let ready = back.expect().await;
    assert_eq!(ready.event, "ready");
    assert_eq!(ready.id, "", "a resumed ready keeps the browser's id");
    assert_eq!(
        ready.json(),
        json!({"topics": ["staff:teams"], "resumed": true})
    );
    assert_team(&back.expect().await, &missed[0], log.position(2));
    assert_team(&back.expect().await, &missed[1], log.position(4));
    let live = create_team(&a, "live").await;
    assert_team(&back.expect().await, &live, log.position(5));
    refute_event(&mut back).await;
    assert_eq!(log.replays(), 1);
}

#[tokio::test]
async fn a_browser_that_drops_before_any_message_resumes_from_ready() {
    let log = MemoryLog::new(Retention::entries(1000));
    let pubsub = durable(&log, "a").await;
    let addr = serve(&pubsub).await;
    create_team(&pubsub, "before").await;
    read_up_to(&pubsub, &log, 1).await;
    let mut client = open(addr, TEAMS, None).await;
    let ready = client.expect().await;
    assert_eq!(ready.id, log.position(1).unwrap().to_string());
    drop(client);
    let missed = create_team(&pubsub, "missed").await;
    read_up_to(&pubsub, &log, 2).await;
    let mut back = open(addr, TEAMS, Some(&ready.id)).await;
    assert_eq!(back.expect().await.json()["resumed"], true);
    assert_team(&back.expect().await, &missed, log.position(2));
    refute_event(&mut back).await;
}

#[tokio::test]
async fn the_last_event_id_query_parameter_resumes_too_and_the_header_wins() {
    let log = MemoryLog::new(Retention::entries(1000));
    let pubsub = durable(&log, "a").await;
    let addr = serve(&pubsub).await;
    let teams: Vec<Team> = {
        let mut teams = Vec::new();
        for name in ["one", "two", "three"] {
            teams.push(create_team(&pubsub, name).await);
        }
        teams
    };
    read_up_to(&pubsub, &log, 3).await;
    let one = log.position(1).unwrap().to_string();
    let two = log.position(2).unwrap().to_string();

    let mut by_query = open(addr, &format!("{TEAMS}&last_event_id={one}"), None).await;
    assert_eq!(by_query.expect().await.json()["resumed"], true);
    assert_team(&by_query.expect().await, &teams[1], log.position(2));
    assert_team(&by_query.expect().await, &teams[2], log.position(3));

    let mut both = open(addr, &format!("{TEAMS}&last_event_id={one}"), Some(&two)).await;
    assert_eq!(both.expect().await.json()["resumed"], true);
    assert_team(&both.expect().await, &teams[2], log.position(3));
    refute_event(&mut both).await;
}

#[tokio::test]
async fn a_resume_past_the_retained_log_says_trimmed_then_sends_what_is_left() {
    let log = MemoryLog::new(Retention::entries(2));
    let pubsub = durable(&log, "a").await;
    let addr = serve(&pubsub).await;
    let mut teams = Vec::new();
    for n in 1..=5 {
        teams.push(create_team(&pubsub, &format!("team {n}")).await);
    }
    read_up_to(&pubsub, &log, 5).await;
    let after = log.position(1).unwrap().to_string();
    let mut back = open(addr, TEAMS, Some(&after)).await;
    assert_eq!(back.expect().await.json()["resumed"], true);
    let resync = back.expect().await;
    assert_eq!(resync.event, "resync");
    assert_eq!(resync.id, "");
    assert_eq!(
        resync.json(),
        json!({"reason": "gap", "gap": "trimmed", "entries": 2})
    );
    assert_team(&back.expect().await, &teams[3], log.position(4));
    assert_team(&back.expect().await, &teams[4], log.position(5));
}

#[tokio::test]
async fn a_resume_further_behind_than_the_replay_limit_says_replay_limit() {
    let log = MemoryLog::new(Retention::entries(1000).max_replay(2));
    let pubsub = durable(&log, "a").await;
    let addr = serve(&pubsub).await;
    for n in 1..=4 {
        create_team(&pubsub, &format!("team {n}")).await;
    }
    read_up_to(&pubsub, &log, 4).await;
    let mut back = open(addr, TEAMS, Some(&log.position(1).unwrap().to_string())).await;
    assert_eq!(back.expect().await.json()["resumed"], true);
    assert_eq!(
        back.expect().await.json(),
        json!({"reason": "gap", "gap": "replay_limit", "entries": 3})
    );
    let live = create_team(&pubsub, "live").await;
    assert_team(&back.expect().await, &live, log.position(5));
}

#[tokio::test]
async fn an_id_of_another_log_says_log_lost() {
    let log = MemoryLog::new(Retention::entries(1000));
    let pubsub = durable(&log, "a").await;
    let addr = serve(&pubsub).await;
    create_team(&pubsub, "old log").await;
    read_up_to(&pubsub, &log, 1).await;
    let old = log.position(1).unwrap().to_string();
    log.lose();
    create_team(&pubsub, "new log").await;
    read_up_to(&pubsub, &log, 1).await;
    let mut back = open(addr, TEAMS, Some(&old)).await;
    assert_eq!(back.expect().await.json()["resumed"], true);
    assert_eq!(
        back.expect().await.json(),
        json!({"reason": "gap", "gap": "log_lost"})
    );
    let live = create_team(&pubsub, "live").await;
    assert_team(&back.expect().await, &live, log.position(2));
}

#[tokio::test]
async fn an_id_that_is_no_position_gets_a_new_subscription_and_reconnected() {
    let log = MemoryLog::new(Retention::entries(1000));
    let pubsub = durable(&log, "a").await;
    let addr = serve(&pubsub).await;
    create_team(&pubsub, "before").await;
    read_up_to(&pubsub, &log, 1).await;
    let head = log.position(1).unwrap().to_string();
    for id in ["41", "garbage", "002a-0", "2a-1", "002a-1-2"] {
        let mut back = open(addr, TEAMS, Some(id)).await;
        let ready = back.expect().await;
        assert_eq!(ready.json(), json!({"topics": ["staff:teams"]}), "{id}");
        assert_eq!(ready.id, head, "{id}: a new id to come back with");
        let resync = back.expect().await;
        assert_eq!(resync.event, "resync", "{id}");
        assert_eq!(resync.json(), json!({"reason": "reconnected"}), "{id}");
        refute_event(&mut back).await;
    }
    assert_eq!(log.replays(), 0);
}

#[tokio::test]
async fn a_log_that_cannot_be_read_gets_a_new_subscription_and_reconnected() {
    let log = MemoryLog::new(Retention::entries(1000));
    let pubsub = durable(&log, "a").await;
    let addr = serve(&pubsub).await;
    create_team(&pubsub, "one").await;
    create_team(&pubsub, "two").await;
    read_up_to(&pubsub, &log, 2).await;
    log.fail_replays(true);
    let mut back = open(addr, TEAMS, Some(&log.position(1).unwrap().to_string())).await;
    let ready = back.expect().await;
    assert_eq!(ready.json(), json!({"topics": ["staff:teams"]}));
    assert_eq!(ready.id, log.position(2).unwrap().to_string());
    assert_eq!(back.expect().await.json(), json!({"reason": "reconnected"}));
    let live = create_team(&pubsub, "live").await;
    assert_team(&back.expect().await, &live, log.position(3));
}

#[tokio::test]
async fn a_gap_while_connected_says_what_was_lost() {
    let log = MemoryLog::new(Retention::entries(1));
    let a = durable(&log, "a").await;
    let b = durable(&log, "b").await;
    let addr = serve(&b).await;
    let mut client = open(addr, TEAMS, None).await;
    client.expect().await;
    log.cut("b");
    for n in 1..=3 {
        create_team(&a, &format!("team {n}")).await;
    }
    log.restore("b");
    assert_eq!(
        client.expect().await.json(),
        json!({"reason": "gap", "gap": "trimmed", "entries": 2})
    );
    assert_eq!(
        client.expect().await.id,
        log.position(3).unwrap().to_string()
    );
}

#[tokio::test]
async fn a_server_that_is_not_durable_keeps_sequence_ids_and_says_reconnected() {
    let live = MemoryLog::live_only();
    let pubsub = durable(&live, "a").await;
    let addr = serve(&pubsub).await;
    let mut back = open(addr, TEAMS, Some("002a-1")).await;
    let ready = back.expect().await;
    assert_eq!((ready.event.as_str(), ready.id.as_str()), ("ready", "1"));
    let resync = back.expect().await;
    assert_eq!(resync.json(), json!({"reason": "reconnected"}));
    assert_eq!(resync.id, "2");
    let team = create_team(&pubsub, "live").await;
    let event = back.expect().await;
    assert_eq!(
        (event.event.as_str(), event.id.as_str()),
        ("team_created", "3")
    );
    assert_eq!(event.json()["payload"]["uuid"], json!(team.uuid));
}
