// An extension of the stock spec cannot redeclare a stock entity, event,
// topic or payload type, nor change the scope; an extension is not
// extensible, and its base must be in another crate.
use staff_pubsub::staff_events;

#[staff_events(extends = staff_pubsub::staff)]
pub mod app {
    use staff_pubsub::Uuid;

    #[entity(collection = "teams", events(squad_created))]
    pub struct Squad {
        pub uuid: Uuid,
    }

    #[entity(collection = "locations", events(location_created, team_created))]
    pub struct Location {
        pub uuid: Uuid,
    }

    #[entity(name = "person", collection = "humans", events(human_created))]
    pub struct Human {
        pub uuid: Uuid,
    }

    #[entity(name = "dept", collection = "depts", events(dept_created))]
    pub struct Department {
        pub uuid: Uuid,
    }
}

#[staff_events(extends = staff_pubsub::staff, scope = "shop")]
pub mod shop {
    #[entity(collection = "orders", events(order_placed))]
    pub struct Order {
        pub uuid: staff_pubsub::Uuid,
    }
}

#[staff_events(extends = staff_pubsub::staff, extensible)]
pub mod chain {
    #[entity(collection = "rooms", events(room_booked))]
    pub struct Room {
        pub uuid: staff_pubsub::Uuid,
    }
}

#[staff_events(extends = crate::chain)]
pub mod same_crate {
    #[entity(collection = "desks", events(desk_booked))]
    pub struct Desk {
        pub uuid: staff_pubsub::Uuid,
    }
}

fn main() {}
