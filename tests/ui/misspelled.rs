// Misspelled helper attributes and keys get a "did you mean"; so does
// `#[link]`, the former name of `#[relation]` (and rustc's own attribute).
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

    #[relation(collection = "lines", events(line_added))]
    pub struct Line {
        pub uuid: Uuid,
        #[endpoint(customer)]
        pub customer_uuid: Uuid,
    }

    #[link(events(customer_followed))]
    pub struct Follow {
        pub uuid: Uuid,
        #[endpoint(customer)]
        pub follower_uuid: Uuid,
    }
}

fn main() {}
