// A routed field holds the target's id: `Uuid` or `Option<Uuid>`; an
// endpoint is never optional. (A route
// cannot name a missing field: it is written on the field itself.)
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
        pub uuid: Uuid,
        #[route(customer)]
        pub customer_uuid: String,
        #[endpoint(customer)]
        pub payer_uuid: Vec<Uuid>,
    }

    #[relation(events(customer_referred))]
    pub struct Referral {
        pub uuid: Uuid,
        #[endpoint(customer)]
        pub referrer_uuid: Option<Uuid>,
    }

    pub struct NotAPayload {
        #[route(customer)]
        pub customer_uuid: Uuid,
    }
}

fn main() {}
