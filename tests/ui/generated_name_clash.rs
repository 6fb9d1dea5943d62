// The macro adds items to the module; a user item of the same name is refused.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "orders", events(order_placed))]
    pub struct Order {
        pub uuid: Uuid,
    }

    pub struct Message;

    pub fn topic_orders() {}
}

fn main() {}
