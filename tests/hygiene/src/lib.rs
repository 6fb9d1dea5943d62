//! Specs written where generated code is most likely to break: with the
//! runtime renamed, without the prelude, with std names shadowed, and under
//! `deny(warnings, missing_docs, unused_qualifications)` plus
//! `clippy::pedantic` (CI runs clippy with `-D warnings`). That this crate
//! compiles warning-free is the test; the unit tests check the specs run.
#![deny(warnings, missing_docs, unused_qualifications)]
#![warn(clippy::pedantic)]

/// A spec reaching the runtime by another name.
#[renamed_pubsub::staff_events(scope = "renamed", crate = "renamed_pubsub")]
pub mod renamed {
    use renamed_pubsub::Uuid;

    /// A room.
    #[entity(collection = "rooms", events(room_opened, room_closed))]
    pub struct Room {
        /// Its id.
        pub uuid: Uuid,
        /// Its floor.
        #[route(floor)]
        pub floor_uuid: Option<Uuid>,
    }

    /// A floor.
    #[entity(collection = "floors", events(floor_added))]
    pub struct Floor {
        /// Its id.
        pub uuid: Uuid,
    }
}

/// A spec in a module without the prelude.
#[renamed_pubsub::staff_events(scope = "bare", crate = "renamed_pubsub")]
pub mod bare {
    #![no_implicit_prelude]

    /// A desk.
    #[entity(collection = "desks", events(desk_booked))]
    pub struct Desk {
        /// Its id.
        pub uuid: ::renamed_pubsub::Uuid,
        /// Who booked it.
        pub booked_by: ::std::option::Option<::std::string::String>,
    }

    /// A desk booking.
    #[relation(events(desk_person_booked))]
    pub struct Booking {
        /// Its id.
        pub uuid: ::renamed_pubsub::Uuid,
        /// The desk.
        #[endpoint(desk)]
        pub desk_uuid: ::renamed_pubsub::Uuid,
    }
}

/// A spec whose module shadows the std names generated code might use.
#[renamed_pubsub::staff_events(scope = "shadowed", crate = "renamed_pubsub")]
pub mod shadowed {
    #![allow(clippy::struct_field_names)]

    /// Shadows `std::result::Result`.
    pub struct Result;
    /// Shadows `std::option::Option`.
    pub struct Option;
    /// Shadows `Ok`.
    pub struct Ok;
    /// Shadows `Some`.
    pub struct Some;
    /// Shadows `None`.
    pub struct None;
    /// Shadows `String`.
    pub struct String;
    /// Shadows `Vec`.
    pub struct Vec;
    /// Shadows `uuid::Uuid`.
    pub struct Uuid;
    /// Shadows `Default`.
    pub trait Default {}
    /// Shadows `Into`.
    pub trait Into {}

    /// A lamp.
    #[entity(collection = "lamps", events(lamp_lit))]
    pub struct Lamp {
        /// Its id.
        pub uuid: renamed_pubsub::Uuid,
        /// The lamp it hangs under.
        #[route(lamp_group)]
        pub group_uuid: core::option::Option<renamed_pubsub::Uuid>,
    }

    /// A group of lamps.
    #[entity(collection = "lamp_groups", events(lamp_group_formed))]
    pub struct LampGroup {
        /// Its id.
        pub uuid: renamed_pubsub::Uuid,
    }
}

#[cfg(test)]
mod tests {
    use renamed_pubsub::{PubSub, Uuid};

    use super::{bare, renamed, shadowed};

    #[tokio::test]
    async fn a_renamed_runtime_spec_fans_out() {
        let pubsub = PubSub::new();
        let floor = Uuid::from_u128(1);
        let mut floor_page = pubsub.subscribe(renamed::topic_floor(floor)).unwrap();
        let room = renamed::Room {
            uuid: Uuid::from_u128(2),
            floor_uuid: Some(floor),
        };
        renamed::broadcast_room_on(&pubsub, renamed::RoomEvent::Opened, room.clone())
            .await
            .unwrap();
        assert_eq!(
            *floor_page.try_recv().unwrap(),
            renamed::Message::Room(renamed::RoomEvent::Opened, room)
        );
    }

    #[tokio::test]
    async fn a_spec_without_prelude_fans_out_and_serializes() {
        let pubsub = PubSub::new();
        let desk = Uuid::from_u128(3);
        let mut desks = pubsub.subscribe(bare::topic_desks()).unwrap();
        let booking = bare::Booking {
            uuid: Uuid::from_u128(4),
            desk_uuid: desk,
        };
        bare::broadcast_booking_on(&pubsub, bare::BookingEvent::DeskPersonBooked, booking)
            .await
            .unwrap();
        let json = serde_json::to_string(&*desks.try_recv().unwrap()).unwrap();
        assert!(json.contains(r#""event":"desk_person_booked""#), "{json}");
    }

    #[tokio::test]
    async fn a_spec_with_shadowed_names_fans_out() {
        let pubsub = PubSub::new();
        let group = Uuid::from_u128(5);
        let mut group_page = pubsub.subscribe(shadowed::topic_lamp_group(group)).unwrap();
        let lamp = shadowed::Lamp {
            uuid: Uuid::from_u128(6),
            group_uuid: Some(group),
        };
        shadowed::broadcast_lamp_on(&pubsub, shadowed::LampEvent::Lit, lamp)
            .await
            .unwrap();
        assert_eq!(group_page.try_recv().unwrap().event_name(), "lamp_lit");
    }

    #[tokio::test]
    async fn independent_specs_side_by_side_keep_their_own_servers_and_topics() {
        let room = Uuid::from_u128(7);
        let mut rooms = renamed::subscribe(renamed::topic_rooms()).unwrap();
        let mut desks = bare::subscribe(bare::topic_desks()).unwrap();
        renamed::broadcast_room(
            renamed::RoomEvent::Closed,
            renamed::Room {
                uuid: room,
                floor_uuid: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(rooms.try_recv().unwrap().uuid(), room);
        assert!(
            desks.try_recv().is_err(),
            "a desk subscriber saw a room event"
        );
        assert_eq!(bare::server().stats().published, 0);
        assert_eq!(renamed::server().stats().published, 1);
        assert_ne!(renamed::topic_rooms(), bare::topic_desks());
        assert!(renamed::parse_topic("bare:desks").is_err());
    }
}
