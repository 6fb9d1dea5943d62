// Event names are atoms: unique within an entity and across the spec.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "orders", events(order_placed, order_shipped, order_placed))]
    pub struct Order {
        pub uuid: Uuid,
    }

    #[entity(collection = "parcels", events(parcel_sent, order_shipped))]
    pub struct Parcel {
        pub uuid: Uuid,
    }

    #[entity(collection = "carts", events())]
    pub struct Cart {
        pub uuid: Uuid,
    }

    #[entity(collection = "items", events(item_added, added, ItemRemoved))]
    pub struct Item {
        pub uuid: Uuid,
    }
}

fn main() {}
