// The macro adds items to the module; a user item (a payload included) of the
// same name is refused, and so are two entities that would generate one name.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "orders", events(order_placed))]
    pub struct Order {
        pub uuid: Uuid,
    }

    #[entity(collection = "messages", events(message_sent))]
    pub struct Message {
        pub uuid: Uuid,
    }

    #[entity(collection = "adds", events(add_made))]
    pub struct Add {
        pub uuid: Uuid,
    }

    #[entity(name = "add_on", collection = "add_ons", events(add_on_made))]
    pub struct AddOn {
        pub uuid: Uuid,
    }

    pub fn topic_orders() {}
}

fn main() {}
