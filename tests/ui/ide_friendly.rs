// A spec with an error still exposes the user's items, so the rest of the
// crate compiles against them: the only error is the spec's own.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "orders", events(order_placed))]
    pub struct Order {
        pub id: Uuid,
    }

    pub fn make_order() -> Order {
        Order { id: Uuid::nil() }
    }
}

fn main() {
    let order: shop::Order = shop::make_order();
    let _ = order.id;
}
