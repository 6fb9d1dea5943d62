//! Installing a configured default server at start-up. One test in its own
//! binary: the default server is process-wide.

use staff_pubsub::staff::{self, Person, PersonEvent};
use staff_pubsub::{PubSub, RecvError, Uuid};
use staff_pubsub_tests::within;

#[tokio::test]
async fn an_installed_server_is_the_default_and_cannot_be_replaced() {
    let configured = PubSub::<staff::Message>::builder()
        .capacity(2)
        .node_name("web-1")
        .build();
    staff::install(configured.clone()).unwrap();

    assert_eq!(staff::server().node_name(), "web-1");
    let mut people = staff::subscribe(staff::topic_people()).unwrap();
    assert_eq!(
        configured.subscriber_count(&staff::topic_people()),
        1,
        "not the installed server"
    );
    for _ in 0..3 {
        staff::broadcast_person(
            PersonEvent::Updated,
            Person {
                uuid: Uuid::now_v7(),
            },
        )
        .await
        .unwrap();
    }
    // The installed capacity (2) applies: the first of three is reported missed.
    assert_eq!(
        within("the lag report", people.recv()).await,
        Err(RecvError::Lagged(1))
    );

    let again = PubSub::<staff::Message>::builder()
        .node_name("web-2")
        .build();
    let refused = staff::install(again).unwrap_err();
    assert_eq!(
        refused.0.node_name(),
        "web-2",
        "the refused server is given back"
    );
    assert_eq!(staff::server().node_name(), "web-1");
}
