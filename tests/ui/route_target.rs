// A route names an entity of the spec that has topics (its own kind only
// through another field, such as a parent);
// a relation joins entities through `#[endpoint]` fields.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "customers", events(customer_created))]
    pub struct Customer {
        pub uuid: Uuid,
    }

    #[entity(collection = "orders", events(order_placed))]
    pub struct Order {
        #[route(order)]
        pub uuid: Uuid,
        #[route(custmer)]
        pub customer_uuid: Uuid,
        #[route(order)]
        pub parent_uuid: Option<Uuid>,
        #[route(order_line)]
        pub line_uuid: Uuid,
    }

    #[relation(events(order_line_added))]
    pub struct OrderLine {
        pub uuid: Uuid,
        pub order_uuid: Uuid,
    }
}

fn main() {}
