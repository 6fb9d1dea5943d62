//! The scenarios of PhoenixKitStaff's broadcast integration tests, ported:
//! what a LiveView subscribed to staff topics sees when staff data changes.

use staff_pubsub::staff::{
    self, Department, DepartmentEvent, Message, Person, PersonEvent, Team, TeamEvent,
    TeamMembership, TeamMembershipEvent,
};
use staff_pubsub::{PubSub, Subscription, TryRecvError, Uuid};
use staff_pubsub_tests::within;

fn received(subscription: &mut Subscription<Message>) -> Vec<String> {
    let mut events = Vec::new();
    loop {
        match subscription.try_recv() {
            Ok(message) => events.push(message.event_name().to_owned()),
            Err(TryRecvError::Empty) => return events,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

fn team(department: Option<Uuid>) -> Team {
    Team {
        uuid: Uuid::now_v7(),
        name: Some("Squad".into()),
        department_uuid: department,
    }
}

#[tokio::test]
async fn department_updated_is_seen_twice_by_a_subscriber_of_both_topics() {
    let pubsub = PubSub::new();
    let id = Uuid::now_v7();
    let mut live_view = pubsub
        .subscribe_many([staff::topic_departments(), staff::topic_department(id)])
        .unwrap();
    let department = Department {
        uuid: id,
        name: Some("Ops".into()),
    };
    staff::broadcast_department_on(&pubsub, DepartmentEvent::Updated, department)
        .await
        .unwrap();
    assert_eq!(
        received(&mut live_view),
        ["department_updated", "department_updated"]
    );
}

#[tokio::test]
async fn a_team_with_a_parent_department_reaches_the_department_topic() {
    let pubsub = PubSub::new();
    let department = Uuid::now_v7();
    let mut department_page = pubsub
        .subscribe(staff::topic_department(department))
        .unwrap();
    staff::broadcast_team_on(&pubsub, TeamEvent::Created, team(Some(department)))
        .await
        .unwrap();
    assert_eq!(received(&mut department_page), ["team_created"]);
}

#[tokio::test]
async fn a_team_without_a_department_does_not_reach_any_department_topic() {
    let pubsub = PubSub::new();
    let department = Uuid::now_v7();
    let mut department_page = pubsub
        .subscribe(staff::topic_department(department))
        .unwrap();
    let mut teams = pubsub.subscribe(staff::topic_teams()).unwrap();
    staff::broadcast_team_on(&pubsub, TeamEvent::Updated, team(None))
        .await
        .unwrap();
    staff::broadcast_team_on(&pubsub, TeamEvent::Updated, team(Some(Uuid::now_v7())))
        .await
        .unwrap();
    assert!(received(&mut department_page).is_empty());
    assert_eq!(received(&mut teams).len(), 2);
}

#[tokio::test]
async fn a_membership_reaches_the_team_and_the_person_but_not_the_department() {
    let pubsub = PubSub::new();
    let (department, team_id, person) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut team_page = pubsub.subscribe(staff::topic_team(team_id)).unwrap();
    let mut person_page = pubsub.subscribe(staff::topic_person(person)).unwrap();
    let mut people = pubsub.subscribe(staff::topic_people()).unwrap();
    let mut department_page = pubsub
        .subscribe(staff::topic_department(department))
        .unwrap();
    let membership = TeamMembership {
        uuid: Uuid::now_v7(),
        team_uuid: team_id,
        staff_person_uuid: person,
    };
    staff::broadcast_team_membership_on(&pubsub, TeamMembershipEvent::TeamPersonAdded, membership)
        .await
        .unwrap();
    assert_eq!(received(&mut team_page), ["team_person_added"]);
    assert_eq!(received(&mut person_page), ["team_person_added"]);
    assert_eq!(received(&mut people), ["team_person_added"]);
    assert!(received(&mut department_page).is_empty());
}

#[tokio::test]
async fn person_events_reach_only_that_person() {
    let pubsub = PubSub::new();
    let (ada, grace) = (Uuid::now_v7(), Uuid::now_v7());
    let mut ada_page = pubsub.subscribe(staff::topic_person(ada)).unwrap();
    let mut grace_page = pubsub.subscribe(staff::topic_person(grace)).unwrap();
    staff::broadcast_person_on(
        &pubsub,
        PersonEvent::EmploymentChanged,
        Person { uuid: ada },
    )
    .await
    .unwrap();
    assert_eq!(received(&mut ada_page), ["person_employment_changed"]);
    assert!(received(&mut grace_page).is_empty());
}

/// The analog of a LiveView's `handle_info`: one event specifically, the rest
/// generically.
fn handle_info(message: &Message) -> &'static str {
    match message {
        Message::Department(DepartmentEvent::Deleted, _) => "redirect",
        _ => "reload",
    }
}

#[tokio::test]
async fn the_default_server_serves_the_free_functions() {
    let id = Uuid::now_v7();
    let mut live_view = staff::subscribe(staff::topic_department(id)).unwrap();
    let department = Department {
        uuid: id,
        name: None,
    };
    staff::broadcast_department(DepartmentEvent::Updated, department.clone())
        .await
        .unwrap();
    staff::broadcast_department(DepartmentEvent::Deleted, department)
        .await
        .unwrap();
    let first = within("department_updated", live_view.recv())
        .await
        .unwrap();
    let second = within("department_deleted", live_view.recv())
        .await
        .unwrap();
    assert_eq!(
        [handle_info(&first), handle_info(&second)],
        ["reload", "redirect"]
    );
    assert_eq!(second.uuid(), id);
    assert!(staff::server().subscriber_count(&staff::topic_department(id)) == 1);
}
