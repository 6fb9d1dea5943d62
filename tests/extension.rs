//! An application's spec that extends the stock staff spec with `location`,
//! `skill` and the `person_skill` relation, as a user crate would.

use staff_pubsub::staff;
use staff_pubsub::{PubSub, TryRecvError, Uuid};
use staff_pubsub_tests::conformance;
use staff_pubsub_tests::contract_for;

/// The application's staff events: the stock ones plus its own.
#[staff_pubsub::staff_events(extends = staff_pubsub::staff)]
pub mod app {
    use staff_pubsub::Uuid;

    /// The payload of location events.
    #[entity(
        collection = "locations",
        events(location_created, location_updated, location_deleted)
    )]
    pub struct Location {
        /// The location's id.
        pub uuid: Uuid,
        /// Its name.
        pub name: Option<String>,
        /// The department it belongs to: location events reach its topic too.
        #[route(department)]
        pub department_uuid: Option<Uuid>,
    }

    /// The payload of skill events.
    #[entity(collection = "skills", events(skill_created, skill_deleted))]
    pub struct Skill {
        /// The skill's id.
        pub uuid: Uuid,
    }

    /// A person gained or lost a skill.
    #[relation(events(person_skill_added, person_skill_removed))]
    pub struct PersonSkill {
        /// The relation's id.
        pub uuid: Uuid,
        /// The person: reaches the people topic and the person's topic.
        #[endpoint(person)]
        pub staff_person_uuid: Uuid,
        /// The skill: reaches the skill's own topic only.
        #[route(skill)]
        pub skill_uuid: Uuid,
    }
}

contract_for!(Extended, app);

#[test]
fn the_extended_spec_keeps_every_stock_topic_and_parse_rule() {
    conformance::check_topics::<Extended>();
    conformance::check_parse::<Extended>();
    conformance::check_events::<Extended>();
    conformance::check_payload_fields::<Extended>();
    conformance::check_route_table::<Extended>();
    conformance::check_json::<Extended>();
}

#[tokio::test]
async fn the_extended_spec_keeps_the_stock_fan_out() {
    conformance::check_broadcasts::<Extended>(&PubSub::new()).await;
    conformance::check_delivery::<Extended>().await;
}

#[test]
fn stock_payloads_and_events_are_the_stock_types() {
    // Re-exported, not copied: a stock payload is an `app` payload.
    let team: app::Team = staff::Team {
        uuid: Uuid::nil(),
        name: None,
        department_uuid: None,
    };
    let event: staff::TeamEvent = app::TeamEvent::Created;
    assert_eq!(app::Message::Team(event, team).event_name(), "team_created");
}

#[test]
fn new_topics_sit_beside_the_stock_ones() {
    let id = Uuid::from_u128(7);
    assert_eq!(app::topic_locations().to_string(), "staff:locations");
    assert_eq!(
        app::topic_location(id).to_string(),
        format!("staff:location:{id}")
    );
    assert_eq!(
        app::topic_skill(id).to_string(),
        format!("staff:skill:{id}")
    );
    assert_eq!(
        app::parse_topic(&format!("staff:skill:{id}")),
        Ok(app::topic_skill(id))
    );
    assert!(
        staff::parse_topic("staff:locations").is_err(),
        "the stock spec knows no locations"
    );
    assert_eq!(app::EVENTS.len(), staff::EVENTS.len() + 7);
}

#[tokio::test]
async fn one_department_subscription_sees_department_team_and_location_events() {
    let pubsub = PubSub::<app::Message>::new();
    let department = Uuid::now_v7();
    let mut page = pubsub.subscribe(app::topic_department(department)).unwrap();

    app::broadcast_department_on(
        &pubsub,
        app::DepartmentEvent::Updated,
        app::Department {
            uuid: department,
            name: None,
        },
    )
    .await
    .unwrap();
    app::broadcast_team_on(
        &pubsub,
        app::TeamEvent::Created,
        app::Team {
            uuid: Uuid::now_v7(),
            name: None,
            department_uuid: Some(department),
        },
    )
    .await
    .unwrap();
    let location = app::Location {
        uuid: Uuid::now_v7(),
        name: Some("Berlin".into()),
        department_uuid: Some(department),
    };
    app::broadcast_location_on(&pubsub, app::LocationEvent::Created, location.clone())
        .await
        .unwrap();
    let elsewhere = app::Location {
        uuid: Uuid::now_v7(),
        name: None,
        department_uuid: None,
    };
    app::broadcast_location_on(&pubsub, app::LocationEvent::Created, elsewhere)
        .await
        .unwrap();

    let mut seen = Vec::new();
    while let Ok(message) = page.try_recv() {
        seen.push(match &*message {
            app::Message::Department(event, _) => event.as_str(),
            app::Message::Team(event, _) => event.as_str(),
            app::Message::Location(app::LocationEvent::Created, created) => {
                assert_eq!(created, &location);
                "location_created"
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(
        seen,
        ["department_updated", "team_created", "location_created"]
    );
}

#[tokio::test]
async fn a_person_skill_reaches_people_the_person_and_the_skill() {
    let pubsub = PubSub::<app::Message>::new();
    let (person, skill) = (Uuid::now_v7(), Uuid::now_v7());
    let topics = [
        app::topic_people(),
        app::topic_person(person),
        app::topic_skill(skill),
        app::topic_skills(),
        app::topic_teams(),
    ];
    let mut subscriptions: Vec<_> = topics
        .iter()
        .map(|t| pubsub.subscribe(*t).unwrap())
        .collect();
    let link = app::PersonSkill {
        uuid: Uuid::now_v7(),
        staff_person_uuid: person,
        skill_uuid: skill,
    };
    app::broadcast_person_skill_on(&pubsub, app::PersonSkillEvent::Added, link)
        .await
        .unwrap();

    let reached: Vec<bool> = subscriptions
        .iter_mut()
        .map(|s| s.try_recv().is_ok())
        .collect();
    assert_eq!(reached, [true, true, true, false, false]);
    assert!(subscriptions
        .iter_mut()
        .all(|s| s.try_recv() == Err(TryRecvError::Empty)));
}

#[test]
fn extended_messages_serialize_in_the_stock_form() {
    let location = app::Location {
        uuid: Uuid::from_u128(1),
        name: None,
        department_uuid: None,
    };
    let json = serde_json::to_value(app::Message::Location(
        app::LocationEvent::Deleted,
        location.clone(),
    ))
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "scope": "staff", "event": "location_deleted", "payload": { "uuid": Uuid::from_u128(1) } })
    );
    let back: app::Message = serde_json::from_value(json).unwrap();
    assert_eq!(
        back,
        app::Message::Location(app::LocationEvent::Deleted, location)
    );
}
