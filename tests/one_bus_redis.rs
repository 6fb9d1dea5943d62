//! One bus across nodes: the application installs its extended spec's
//! server with the Redis transport (the documented way), and a library's
//! stock broadcasts travel over it like the application's own; what
//! another node broadcasts reaches this node's stock and extended
//! subscribers alike. Its own test binary: it installs the process-wide
//! server.

use std::time::Duration;

use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff;
use staff_pubsub::{assert_receive, refute_receive, Connection, PubSub, RecvError, Uuid};
use staff_pubsub_stock_library as library;
use staff_pubsub_tests::redis_server::RedisServer;
use staff_pubsub_tests::within;

/// The application's spec: the stock one plus locations.
#[staff_pubsub::staff_events(extends = staff_pubsub::staff)]
pub mod app {
    use staff_pubsub::Uuid;

    /// The payload of location events.
    #[entity(collection = "locations", events(location_created))]
    pub struct Location {
        /// The location's id.
        pub uuid: Uuid,
        /// Its department.
        #[route(department)]
        pub department_uuid: Option<Uuid>,
    }
}

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig::new(server.url())
        .namespace("one-bus")
        .connect_timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_transport_carries_both_specs_broadcasts_both_ways() {
    let server = RedisServer::start().await;
    let here = app::builder()
        .node_name("here")
        .redis(config(&server))
        .await
        .unwrap();
    app::install(here).unwrap();
    // Another node: the same application, another process in real life.
    let there: PubSub<app::Message> = app::builder()
        .node_name("there")
        .redis(config(&server))
        .await
        .unwrap();

    let department = Uuid::now_v7();
    let mut there_page = there.subscribe(app::topic_department(department)).unwrap();
    let mut here_stock = staff::subscribe(staff::topic_department(department)).unwrap();
    let mut here_page = app::subscribe(app::topic_department(department)).unwrap();

    // The library's stock broadcast here: once on each side here, and once
    // on the other node, through the extension's transport.
    library::create_team("Squad A", Some(department))
        .await
        .unwrap();
    assert_receive!(there_page, app::Message::Team(app::TeamEvent::Created, _));
    assert_receive!(
        here_stock,
        staff::Message::Team(staff::TeamEvent::Created, _)
    );
    assert_receive!(here_page, app::Message::Team(app::TeamEvent::Created, _));

    // The other node's broadcasts reach both sides here.
    let team = app::Team {
        uuid: Uuid::now_v7(),
        name: None,
        department_uuid: Some(department),
    };
    app::broadcast_team_on(&there, app::TeamEvent::Deleted, team)
        .await
        .unwrap();
    assert_receive!(
        here_stock,
        staff::Message::Team(staff::TeamEvent::Deleted, _)
    );
    assert_receive!(here_page, app::Message::Team(app::TeamEvent::Deleted, _));
    let location = app::Location {
        uuid: Uuid::now_v7(),
        department_uuid: Some(department),
    };
    app::broadcast_location_on(&there, app::LocationEvent::Created, location)
        .await
        .unwrap();
    assert_receive!(here_page, app::Message::Location(..));

    // Exactly once each: nothing more anywhere.
    refute_receive!(there_page, app::Message::Team(app::TeamEvent::Created, _));
    refute_receive!(here_stock, _);
    refute_receive!(here_page, _);
    assert_eq!(
        staff::server().stats().rejected + app::server().stats().rejected,
        0
    );
    // The stock server speaks for the bus: its node name and connection
    // state are the transport's, and a direct broadcast goes through it.
    assert_eq!(staff::server().node_name(), "here");
    assert_eq!(staff::server().connection(), Connection::Connected);
    let mut there_teams = there.subscribe(app::topic_teams()).unwrap();
    let team = staff::Team {
        uuid: Uuid::now_v7(),
        name: None,
        department_uuid: None,
    };
    staff::server()
        .direct_broadcast(
            "there",
            &[staff::topic_teams()],
            staff::Message::Team(staff::TeamEvent::Created, team),
        )
        .await
        .unwrap();
    assert_receive!(there_teams, app::Message::Team(..));

    // The transport loses its subscription: stock subscribers are told of
    // the gap as well as the extension's.
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut redis)
        .await
        .unwrap();
    let gap = within("the gap on the stock side", here_stock.recv()).await;
    assert_eq!(
        gap.err(),
        Some(RecvError::Gap(staff_pubsub::Gap::Disconnected))
    );
    let gap = within("the gap on the extension's side", here_page.recv()).await;
    assert_eq!(
        gap.err(),
        Some(RecvError::Gap(staff_pubsub::Gap::Disconnected))
    );
    within(
        "the stock side to see the reconnect",
        staff::server().wait_for_connection(Connection::Connected),
    )
    .await;
}

/// Both sides with a transport would deliver twice: they are not linked,
/// and an ERROR says why.
#[tokio::test(flavor = "current_thread")]
async fn two_transports_are_not_linked_and_the_reason_is_logged() {
    let (_guard, logs) = staff_pubsub_tests::logs::capture();
    let server = RedisServer::start().await;
    let base: PubSub<staff::Message> = staff::builder()
        .redis(config(&server).namespace("two"))
        .await
        .unwrap();
    let extension: PubSub<app::Message> = app::builder()
        .redis(config(&server).namespace("two"))
        .await
        .unwrap();
    assert!(!staff_pubsub::__private::link(
        &base,
        &extension,
        |m| Some(app::Message::from(m.clone())),
        |m| staff::Message::try_from(m.clone()).ok(),
    ));
    assert!(
        logs.has_line_with(&["ERROR", "both have a transport"]),
        "{:#?}",
        logs.lines()
    );
}

/// Presence across nodes through a linked server: what the stock spec's
/// server (no transport of its own) tracks is in its extension's tracker,
/// which gossips over the extension's transport; another node lists it,
/// and what that node tracks is listed through the stock server here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_server_s_presences_cross_nodes_on_its_peer_s_transport() {
    use staff_pubsub_tests::presence::{timing, until_lists, viewer, Viewer, TEAM};
    let server = RedisServer::start().await;
    let node = |name: &'static str| {
        let config = config(&server).namespace("presence");
        async move {
            app::builder()
                .node_name(name)
                .presence_timing(timing())
                .unwrap()
                .redis(config)
                .await
                .unwrap()
        }
    };
    let (here, there) = (node("here").await, node("there").await);
    app::scope(here.clone(), async {
        let stock = staff::server();
        assert_eq!(stock.node_name(), "here");
        let _library_page = stock.track(TEAM, "ada", viewer("Ada")).unwrap();
        until_lists(&there, &["Ada"]).await;
        let _there_page = there.track(TEAM, "cy", viewer("Cy")).unwrap();
        until_lists(&stock, &["Ada", "Cy"]).await;
        until_lists(&here, &["Ada", "Cy"]).await;
        assert_eq!(stock.presences::<Viewer>(TEAM).len(), 2);
    })
    .await;
}

/// The other way round: the transport on the stock spec's server (the
/// extension's in process). The extension's server then gives the stock
/// server's tracker, which gossips over the stock server's transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_linked_to_a_stock_server_with_the_transport_shares_its_trackers() {
    use staff_pubsub_tests::presence::{names, set, timing, until_lists, viewer, TEAM};
    let server = RedisServer::start().await;
    let stock_node = |name: &'static str| {
        let config = config(&server).namespace("presence-base");
        async move {
            staff::builder()
                .node_name(name)
                .presence_timing(timing())
                .unwrap()
                .redis(config)
                .await
                .unwrap()
        }
    };
    let (base, there) = (stock_node("here").await, stock_node("there").await);
    let extension: PubSub<app::Message> = PubSub::new();
    assert!(staff_pubsub::__private::link(
        &base,
        &extension,
        |m| Some(app::Message::from(m.clone())),
        |m| staff::Message::try_from(m.clone()).ok(),
    ));
    let _app_page = extension.track(TEAM, "ada", viewer("Ada")).unwrap();
    assert_eq!(names(&base), set(&["Ada"]), "one tracker on this node");
    until_lists(&there, &["Ada"]).await;
    let _there_page = there.track(TEAM, "cy", viewer("Cy")).unwrap();
    until_lists(&extension, &["Ada", "Cy"]).await;
}
