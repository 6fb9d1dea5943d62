//! One bus over a durable Redis log: the application installs its extended
//! spec's server with `RedisConfig::durable`; a library's stock broadcasts
//! go through the log like the application's own, and both sides of this
//! node deliver them from there, once each, with their positions. Its own
//! test binary: it installs the process-wide server.

use std::time::Duration;

use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff;
use staff_pubsub::{refute_receive, PubSub, Retention, TryRecvError, Uuid};
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
        .namespace("one-bus-durable")
        .connect_timeout(Duration::from_secs(2))
        .durable(Retention::entries(1_000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_and_extension_broadcasts_go_through_the_log_once_each() {
    let server = RedisServer::start().await;
    let here = app::builder()
        .node_name("here")
        .redis(config(&server))
        .await
        .unwrap();
    app::install(here).unwrap();
    let there: PubSub<app::Message> = app::builder()
        .node_name("there")
        .redis(config(&server))
        .await
        .unwrap();

    let department = Uuid::now_v7();
    let mut there_page = there.subscribe(app::topic_department(department)).unwrap();
    let mut here_stock = staff::subscribe(staff::topic_department(department)).unwrap();
    let mut here_page = app::subscribe(app::topic_department(department)).unwrap();

    // The library's stock broadcast: not delivered here at the call...
    let creating = library::create_team("Squad A", Some(department));
    assert_eq!(here_stock.try_recv(), Err(TryRecvError::Empty));
    creating.await.unwrap();
    // ...but from the log, once on each side here and once there, at one
    // position.
    let (stock, at_stock) = within("the stock copy", here_stock.recv_with_position())
        .await
        .unwrap();
    let (page, at_page) = within("the app copy", here_page.recv_with_position())
        .await
        .unwrap();
    let (_, at_there) = within("the other node's copy", there_page.recv_with_position())
        .await
        .unwrap();
    assert!(matches!(
        *stock,
        staff::Message::Team(staff::TeamEvent::Created, _)
    ));
    assert!(matches!(
        *page,
        app::Message::Team(app::TeamEvent::Created, _)
    ));
    assert!(at_stock.is_some());
    assert_eq!(at_stock, at_page);
    assert_eq!(at_page, at_there);

    // The other node's extension broadcast reaches the app side here.
    let location = app::Location {
        uuid: Uuid::now_v7(),
        department_uuid: Some(department),
    };
    app::broadcast_location_on(&there, app::LocationEvent::Created, location)
        .await
        .unwrap();
    let (_, at) = within("the location", here_page.recv_with_position())
        .await
        .unwrap();
    assert_eq!(at, at_page.and_then(staff_pubsub::Position::next));
    // The sending node gets its own broadcast from the log too.
    let (_, at_sender) = within("the sender's copy", there_page.recv_with_position())
        .await
        .unwrap();
    assert_eq!(at_sender, at);

    refute_receive!(here_stock, _);
    refute_receive!(here_page, _);
    refute_receive!(there_page, _);

    // The stock side, which has no transport of its own, reads the same
    // log: it knows its position and resumes through the linked server,
    // with the messages in its own form (the location, which has none, is
    // left out).
    library::create_team("Squad B", Some(department))
        .await
        .unwrap();
    let (_, latest) = within("the second team", here_stock.recv_with_position())
        .await
        .unwrap();
    assert_eq!(staff::server().log_position(), latest);
    assert_eq!(app::server().log_position(), latest);
    let mut resumed = staff::server()
        .subscribe_since(
            [staff::topic_department(department)],
            at_stock.expect("a position"),
        )
        .await
        .unwrap();
    let (replayed, at) = within("the replay", resumed.recv_with_position())
        .await
        .unwrap();
    assert!(matches!(
        &*replayed,
        staff::Message::Team(staff::TeamEvent::Created, team) if team.name.as_deref() == Some("Squad B")
    ));
    assert_eq!(at, latest);
    refute_receive!(resumed, _);
}
