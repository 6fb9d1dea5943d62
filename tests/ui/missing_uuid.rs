// Every payload carries its `uuid: Uuid`.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "orders", events(order_placed))]
    pub struct Order {
        pub id: Uuid,
    }

    #[entity(collection = "carts", events(cart_created))]
    pub struct Cart {
        pub uuid: String,
    }

    #[entity(collection = "baskets", events(basket_created))]
    pub struct Basket {
        pub uuid: Option<Uuid>,
    }
}

fn main() {}
