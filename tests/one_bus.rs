//! One bus per application: a library that knows only the stock spec
//! (`staff-pubsub-stock-library`) broadcasts stock events, and this
//! application, which extends the spec, subscribes through either spec; and
//! the other way round. Every subscriber of a reached topic receives each
//! broadcast once per reached topic, whichever side broadcast and whichever
//! side it subscribed through.
//!
//! Each test runs in its own `app::scope`, so the tests of this binary run
//! in parallel without seeing each other (the scope is itself under test);
//! `the_process_wide_servers_are_one_bus` uses the process-wide servers
//! with topics of its own.

use staff_pubsub::staff;
use staff_pubsub::{assert_receive, refute_receive, PubSub, Uuid};
use staff_pubsub_stock_library as library;

/// The application's spec: the stock one plus locations.
#[staff_pubsub::staff_events(extends = staff_pubsub::staff)]
pub mod app {
    use staff_pubsub::Uuid;

    /// The payload of location events.
    #[entity(collection = "locations", events(location_created, location_deleted))]
    pub struct Location {
        /// The location's id.
        pub uuid: Uuid,
        /// Its department: location events reach the department's topic too.
        #[route(department)]
        pub department_uuid: Option<Uuid>,
    }
}

fn location(department: Uuid) -> app::Location {
    app::Location {
        uuid: Uuid::now_v7(),
        department_uuid: Some(department),
    }
}

#[tokio::test]
async fn a_library_broadcasting_stock_events_reaches_the_applications_subscribers() {
    app::scope(PubSub::new(), async {
        let department = Uuid::now_v7();
        let mut page = app::subscribe(app::topic_department(department)).unwrap();
        let mut teams = app::subscribe_many([app::topic_teams(), app::topic_department(department)])
            .unwrap();
        let mut stock_page = staff::subscribe(staff::topic_department(department)).unwrap();

        let team = library::create_team("Squad A", Some(department)).await.unwrap();

        let got = assert_receive!(page, app::Message::Team(app::TeamEvent::Created, t) => t.clone());
        assert_eq!(got, team);
        // Two of its topics are reached: two copies, as the delivery rule says.
        for _ in 0..2 {
            assert_receive!(teams, app::Message::Team(app::TeamEvent::Created, t) if t.uuid == team.uuid);
        }
        assert_receive!(stock_page, staff::Message::Team(staff::TeamEvent::Created, t) if *t == team);
        refute_receive!(page, _);
        refute_receive!(teams, _);
        refute_receive!(stock_page, _);
    })
    .await;
}

#[tokio::test]
async fn the_applications_broadcasts_reach_the_librarys_subscribers() {
    app::scope(PubSub::new(), async {
        let department = Uuid::now_v7();
        let team = app::Team {
            uuid: Uuid::now_v7(),
            name: None,
            department_uuid: Some(department),
        };
        let mut watched = library::watch_team(team.uuid).unwrap();
        let mut stock_page = staff::subscribe(staff::topic_department(department)).unwrap();
        let mut page = app::subscribe(app::topic_department(department)).unwrap();

        // A stock entity broadcast through the extension: both sides get it.
        app::broadcast_team(app::TeamEvent::Updated, team.clone())
            .await
            .unwrap();
        assert_receive!(watched, staff::Message::Team(staff::TeamEvent::Updated, t) if *t == team);
        assert_receive!(
            stock_page,
            staff::Message::Team(staff::TeamEvent::Updated, _)
        );
        assert_receive!(page, app::Message::Team(app::TeamEvent::Updated, _));

        // The extension's own entity has no stock form: the extension's
        // subscribers get it, the stock ones cannot.
        app::broadcast_location(app::LocationEvent::Created, location(department))
            .await
            .unwrap();
        assert_receive!(page, app::Message::Location(app::LocationEvent::Created, _));
        refute_receive!(stock_page, _);
        refute_receive!(watched, _);
        refute_receive!(page, _);
    })
    .await;
}

#[tokio::test]
async fn a_scope_isolates_its_servers_from_the_process_wide_ones_and_from_other_scopes() {
    let department = Uuid::now_v7();
    let mut outside = app::subscribe(app::topic_department(department)).unwrap();
    let mut outside_stock = staff::subscribe(staff::topic_department(department)).unwrap();
    let (first, second) = (PubSub::new(), PubSub::new());
    let in_first = app::scope(first.clone(), async move {
        let mut inside = app::subscribe(app::topic_department(department)).unwrap();
        library::create_team("inside", Some(department))
            .await
            .unwrap();
        assert_receive!(inside, app::Message::Team(..));
        refute_receive!(inside, _);
    });
    let in_second = app::scope(second.clone(), async move {
        let mut inside = staff::subscribe(staff::topic_department(department)).unwrap();
        refute_receive!(inside, _);
    });
    tokio::join!(in_first, in_second);
    // The stock broadcast was made on the scope's stock server and mirrored
    // to the extension's: one copy delivered there, none in the other scope.
    assert_eq!(first.stats().delivered, 1);
    assert_eq!(second.stats().delivered, 0);
    refute_receive!(outside, _);
    refute_receive!(outside_stock, _);
}

#[tokio::test]
async fn a_server_reused_across_scopes_keeps_its_bus() {
    let pubsub = PubSub::new();
    for round in 0..3 {
        app::scope(pubsub.clone(), async move {
            let department = Uuid::now_v7();
            let mut page = app::subscribe(app::topic_department(department)).unwrap();
            library::create_team(&format!("round {round}"), Some(department))
                .await
                .unwrap();
            assert_receive!(page, app::Message::Team(app::TeamEvent::Created, _));
        })
        .await;
    }
}

#[tokio::test]
async fn the_process_wide_servers_are_one_bus() {
    // Topics of this test's own: other tests run in scopes.
    let department = Uuid::now_v7();
    let mut page = app::subscribe(app::topic_department(department)).unwrap();
    let mut stock_page = staff::subscribe(staff::topic_department(department)).unwrap();

    library::create_team("global", Some(department))
        .await
        .unwrap();
    assert_receive!(page, app::Message::Team(app::TeamEvent::Created, _));
    assert_receive!(
        stock_page,
        staff::Message::Team(staff::TeamEvent::Created, _)
    );

    app::broadcast_location(app::LocationEvent::Deleted, location(department))
        .await
        .unwrap();
    assert_receive!(page, app::Message::Location(app::LocationEvent::Deleted, _));
    refute_receive!(page, _);
    refute_receive!(stock_page, _);
}

#[test]
fn messages_convert_between_the_specs() {
    let team = staff::Team {
        uuid: Uuid::nil(),
        name: None,
        department_uuid: None,
    };
    let stock = staff::Message::Team(staff::TeamEvent::Created, team);
    let extended = app::Message::from(stock.clone());
    assert_eq!(staff::Message::try_from(extended), Ok(stock));
    let own = app::Message::Location(app::LocationEvent::Created, location(Uuid::nil()));
    assert_eq!(staff::Message::try_from(own.clone()), Err(own));
}

/// Presence is one bus too: the two linked servers give the same tracker,
/// so a presence tracked through either is listed and reported through
/// both (in process: the extension's server keeps the trackers).
#[tokio::test]
async fn linked_servers_share_their_trackers() {
    use staff_pubsub_tests::presence::{names, set, viewer, Viewer, TEAM};
    app::scope(PubSub::new(), async {
        let (stock, extended) = (staff::server(), app::server());
        let (_, mut stock_diffs) = stock.tracker::<Viewer>().watch(TEAM);
        let (_, mut extended_diffs) = extended.tracker::<Viewer>().watch(TEAM);

        let library_page = stock.track(TEAM, "ada", viewer("Ada")).unwrap();
        let app_page = extended.track(TEAM, "bob", viewer("Bob")).unwrap();
        assert_eq!(names(&stock), set(&["Ada", "Bob"]));
        assert_eq!(names(&extended), set(&["Ada", "Bob"]));
        for diffs in [&mut stock_diffs, &mut extended_diffs] {
            let first = diffs.try_recv().expect("a diff").unwrap();
            let second = diffs.try_recv().expect("a diff").unwrap();
            assert_eq!(&*first.joins[0].key, "ada");
            assert_eq!(&*second.joins[0].key, "bob");
        }
        drop(library_page);
        assert_eq!(names(&extended), set(&["Bob"]));
        drop(app_page);
        assert!(names(&stock).is_empty());
    })
    .await;
}
