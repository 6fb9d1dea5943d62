// Two entities of one name, or two entities sharing a topic, are refused at
// the second declaration.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "orders", events(order_placed))]
    pub struct Order {
        pub uuid: Uuid,
    }

    #[entity(name = "order", collection = "purchases", events(purchase_made))]
    pub struct Purchase {
        pub uuid: Uuid,
    }

    #[entity(collection = "orders", events(sale_made))]
    pub struct Sale {
        pub uuid: Uuid,
    }

    #[entity(collection = "item", events(item_added))]
    pub struct Item {
        pub uuid: Uuid,
    }
}

fn main() {}
