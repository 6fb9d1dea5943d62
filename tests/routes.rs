//! The route table shows what a broadcast reaches: each topic once, even
//! when two fields of a payload lead to the same collection topic.

use staff_pubsub::spec::{Target, TargetKey};
use staff_pubsub::{PubSub, TryRecvError, Uuid};

/// A spec whose relation joins two people.
#[staff_pubsub::staff_events(scope = "mentoring")]
pub mod mentoring {
    use staff_pubsub::Uuid;

    /// The payload of person events.
    #[entity(name = "person", collection = "people", events(person_joined))]
    pub struct Person {
        /// The person.
        pub uuid: Uuid,
    }

    /// One person mentors another: both endpoints are people.
    #[relation(events(mentorship_started))]
    pub struct Mentorship {
        /// The relation.
        pub uuid: Uuid,
        /// The mentor: reaches `mentoring:people` and the mentor's topic.
        #[endpoint(person)]
        pub mentor_uuid: Uuid,
        /// The mentee: reaches `mentoring:people` (again) and the mentee's topic.
        #[endpoint(person)]
        pub mentee_uuid: Uuid,
        /// A second mentor, optional: reaches that person's topic when `Some`.
        #[route(person)]
        pub co_mentor_uuid: Option<Uuid>,
    }
}

fn keyed(topic: &'static str, field: &'static str, optional: bool) -> Target {
    Target {
        topic,
        key: Some(TargetKey { field, optional }),
    }
}

#[test]
fn a_relation_with_two_endpoints_of_one_entity_lists_the_collection_once() {
    let route = mentoring::ROUTES
        .iter()
        .find(|route| route.function == "broadcast_mentorship")
        .expect("the mentorship route");
    assert_eq!(
        route.targets,
        [
            Target {
                topic: "mentoring:people",
                key: None
            },
            keyed("mentoring:person", "mentor_uuid", false),
            keyed("mentoring:person", "mentee_uuid", false),
            keyed("mentoring:person", "co_mentor_uuid", true),
        ]
    );
}

#[tokio::test]
async fn the_collection_is_reached_once_as_the_table_says() {
    let pubsub = PubSub::new();
    let (mentor, mentee) = (Uuid::now_v7(), Uuid::now_v7());
    let mut people = pubsub.subscribe(mentoring::topic_people()).unwrap();
    let mut both = pubsub
        .subscribe_many([
            mentoring::topic_person(mentor),
            mentoring::topic_person(mentee),
        ])
        .unwrap();
    let link = mentoring::Mentorship {
        uuid: Uuid::now_v7(),
        mentor_uuid: mentor,
        mentee_uuid: mentee,
        co_mentor_uuid: Some(mentor),
    };
    mentoring::broadcast_mentorship_on(&pubsub, mentoring::MentorshipEvent::Started, link)
        .await
        .unwrap();
    assert!(people.try_recv().is_ok());
    assert!(matches!(people.try_recv(), Err(TryRecvError::Empty)));
    // One copy per reached topic: the mentor's topic is reached once,
    // although two fields name the mentor.
    assert!(both.try_recv().is_ok());
    assert!(both.try_recv().is_ok());
    assert!(matches!(both.try_recv(), Err(TryRecvError::Empty)));
}
