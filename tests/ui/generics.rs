// Payloads are concrete types, with named fields.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "orders", events(order_placed))]
    pub struct Order<T> {
        pub uuid: Uuid,
        pub extra: T,
    }

    #[entity(collection = "carts", events(cart_created))]
    pub struct Cart(pub Uuid);

    #[entity(collection = "customers", events(customer_created))]
    pub enum Customer {
        Known { uuid: Uuid },
    }
}

fn main() {}
