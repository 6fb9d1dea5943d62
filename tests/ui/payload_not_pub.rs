// Payloads appear in the generated `Message` and `broadcast_*` functions,
// which are `pub`: a payload must be `pub` too.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "customers", events(customer_created))]
    struct Customer {
        pub uuid: Uuid,
    }

    #[entity(collection = "orders", events(order_placed))]
    pub(crate) struct Order {
        pub uuid: Uuid,
    }
}

fn main() {}
