// Misspelled helper attributes and keys get a "did you mean".
use staff_pubsub::staff_events;

#[staff_events(scop = "shop")]
pub mod one {}

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entiy(collection = "orders", events(order_placed))]
    pub struct Order {
        pub uuid: Uuid,
    }

    #[entity(colection = "carts", events(cart_created))]
    pub struct Cart {
        pub uuid: Uuid,
    }

    #[entity(collection = "customers", events(customer_created))]
    pub struct Customer {
        pub uuid: Uuid,
        #[rout(customer)]
        pub referrer_uuid: Uuid,
    }

    #[link(collection = "lines", events(line_added))]
    pub struct Line {
        pub uuid: Uuid,
        #[endpoint(customer)]
        pub customer_uuid: Uuid,
    }
}

fn main() {}
