// A spec that uses every feature of the DSL compiles and behaves.
use staff_pubsub::{PubSub, Uuid};

/// A school's events.
#[staff_pubsub::staff_events(scope = "school")]
pub mod school {
    use staff_pubsub::Uuid;

    /// A campus.
    #[derive(Debug, Clone)]
    #[entity(collection = "campuses", events(campus_opened, campus_closed))]
    pub struct Campus {
        /// Id.
        pub uuid: Uuid,
        /// Name.
        pub name: Option<String>,
    }

    /// A class, in a campus, maybe with a parent class.
    #[entity(name = "class", collection = "classes", events(class_created, class_moved))]
    pub struct SchoolClass {
        /// Id.
        pub uuid: Uuid,
        /// Always in a campus.
        #[route(campus)]
        pub campus_uuid: Uuid,
        /// Sometimes split from another class.
        #[route(campus)]
        pub old_campus_uuid: Option<Uuid>,
        /// Extra data that is not routed.
        pub room: Option<Room>,
    }

    /// A pupil.
    #[entity(collection = "pupils", events(pupil_enrolled))]
    pub struct Pupil {
        /// Id.
        pub uuid: Uuid,
    }

    /// A pupil in a class.
    #[relation(events(pupil_joined_class, pupil_left_class))]
    pub struct Enrolment {
        /// Id.
        pub uuid: Uuid,
        /// The class.
        #[endpoint(class)]
        pub class_uuid: Uuid,
        /// The pupil.
        #[endpoint(pupil)]
        pub pupil_uuid: Uuid,
        /// The campus, for the campus page.
        #[route(campus)]
        pub campus_uuid: Option<Uuid>,
    }

    /// One pupil mentoring another: both endpoints are pupils.
    #[relation(events(mentoring_started))]
    pub struct Mentoring {
        /// Id.
        pub uuid: Uuid,
        /// The mentor.
        #[endpoint(pupil)]
        pub mentor_uuid: Uuid,
        /// The mentee.
        #[endpoint(pupil)]
        pub mentee_uuid: Uuid,
        /// A raw identifier, routed.
        #[route(campus)]
        pub r#where: Option<Uuid>,
    }

    /// An account whose event atom has a digit after the entity's prefix.
    #[entity(collection = "accounts", events(account_2fa_enabled, account_closed))]
    pub struct Account {
        /// Id.
        pub uuid: Uuid,
    }

    /// A user type in the spec module, used by a payload.
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Room {
        /// Its number.
        pub number: u32,
    }

    /// User code lives beside the spec.
    pub fn main_campus() -> Uuid {
        Uuid::from_u128(1)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let campus = school::main_campus();
    assert_eq!(school::topic_campuses().to_string(), "school:campuses");
    assert_eq!(school::topic_class(campus).to_string(), format!("school:class:{campus}"));
    assert_eq!(school::parse_topic("school:classes"), Ok(school::topic_classes()));
    assert_eq!(school::SchoolClassEvent::Moved.as_str(), "class_moved");
    assert_eq!("pupil_left_class".parse::<school::EnrolmentEvent>(), Ok(school::EnrolmentEvent::PupilLeftClass));
    assert!("pupil_exploded".parse::<school::EnrolmentEvent>().is_err());
    assert_eq!(school::ROUTES.len(), 6);
    assert_eq!(school::SPEC.topic_kinds.len(), 8);

    // The default server: installed at start-up, then used by the free functions.
    let installed = PubSub::<school::Message>::builder().capacity(4).build();
    school::install(installed.clone()).unwrap();
    assert!(school::install(PubSub::new()).is_err(), "installed twice");
    let mut campus_page = school::subscribe(school::topic_campus(campus)).unwrap();
    assert_eq!(installed.subscriber_count(&school::topic_campus(campus)), 1);

    let class = school::SchoolClass {
        uuid: Uuid::from_u128(2),
        campus_uuid: campus,
        old_campus_uuid: None,
        room: Some(school::Room { number: 7 }),
    };
    school::broadcast_class(school::SchoolClassEvent::Created, class.clone()).await.unwrap();
    let enrolment = school::Enrolment {
        uuid: Uuid::from_u128(3),
        class_uuid: class.uuid,
        pupil_uuid: Uuid::from_u128(4),
        campus_uuid: Some(campus),
    };
    school::broadcast_enrolment(school::EnrolmentEvent::PupilJoinedClass, enrolment).await.unwrap();

    let first = campus_page.recv().await.unwrap();
    assert_eq!(*first, school::Message::SchoolClass(school::SchoolClassEvent::Created, class));
    let second = campus_page.recv().await.unwrap();
    assert_eq!(second.event_name(), "pupil_joined_class");

    // A relation whose two endpoints are pupils reaches `school:pupils` once.
    let mut pupils = school::subscribe(school::topic_pupils()).unwrap();
    let mentoring = school::Mentoring {
        uuid: Uuid::from_u128(5),
        mentor_uuid: Uuid::from_u128(6),
        mentee_uuid: Uuid::from_u128(7),
        r#where: None,
    };
    school::broadcast_mentoring(school::MentoringEvent::Started, mentoring).await.unwrap();
    assert!(pupils.try_recv().is_ok());
    assert!(pupils.try_recv().is_err(), "a second copy on the collection topic");
    let route = school::ROUTES.iter().find(|r| r.entity == "mentoring").unwrap();
    assert_eq!(route.targets.iter().filter(|t| t.topic == "school:pupils").count(), 1, "listed once, as it is reached");
    assert!(route.targets.iter().any(|t| t.key.is_some_and(|k| k.field == "where")), "the route table names the JSON field");
    assert_eq!(school::AccountEvent::Account2faEnabled.as_str(), "account_2fa_enabled");
    assert_eq!(school::AccountEvent::Closed.as_str(), "account_closed");

    let json = serde_json::to_string(&*second).unwrap();
    let back: school::Message = serde_json::from_str(&json).unwrap();
    assert_eq!(back, *second);
    assert!(json.starts_with(r#"{"scope":"school","event":"pupil_joined_class""#), "{json}");
}
