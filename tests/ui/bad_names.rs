// Scope, entity and collection names become topic segments and function
// names: not empty, no `:`, no white space, lower snake_case.
use staff_pubsub::staff_events;

#[staff_events(scope = "st aff")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "", events(order_placed))]
    pub struct Order {
        pub uuid: Uuid,
    }

    #[entity(collection = "carts:all", events(cart_created))]
    pub struct Cart {
        pub uuid: Uuid,
    }

    #[entity(name = "Basket", collection = "baskets", events(basket_created))]
    pub struct Basket {
        pub uuid: Uuid,
    }

    #[entity(events(parcel_sent))]
    pub struct Parcel {
        pub uuid: Uuid,
    }
}

#[staff_events(scope = "")]
pub mod other {
    #[entity(collection = "things", events(thing_made))]
    pub struct Thing {
        pub uuid: staff_pubsub::Uuid,
    }
}

#[staff_events]
pub mod unscoped {
    #[entity(collection = "things", events(thing_made))]
    pub struct Thing {
        pub uuid: staff_pubsub::Uuid,
    }
}

fn main() {}
