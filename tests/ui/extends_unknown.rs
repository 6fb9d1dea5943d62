// `extends` names a spec marked `extensible` in another crate: a path that
// names no such spec is reported at the path.
use staff_pubsub::staff_events;

#[staff_events(extends = staff_pubsub::stuff)]
pub mod typo {
    #[entity(collection = "rooms", events(room_booked))]
    pub struct Room {
        pub uuid: staff_pubsub::Uuid,
    }
}

#[staff_events(extends = staff_pubsub::spec)]
pub mod not_a_spec {
    #[entity(collection = "desks", events(desk_booked))]
    pub struct Desk {
        pub uuid: staff_pubsub::Uuid,
    }
}

fn main() {}
