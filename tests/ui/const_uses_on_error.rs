// A spec with an error defines its generated items as stubs that also work
// in `const` context: a `const` or `static` that calls a topic function or
// reads a constant of the spec adds no error of its own (a stub `const fn`
// returns a placeholder rather than panic in const evaluation), and neither
// do ordinary uses. The only error is the spec's, at its token.
use staff_pubsub::spec::Spec;
use staff_pubsub::{staff_events, Topic, Uuid};

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "orders", events(order_placed, order_shipped))]
    pub struct Order {
        pub uuid: Uuid,
    }

    #[relation(collection = "follows", events(order_followed))]
    pub struct Follow {
        pub uuid: Uuid,
        #[endpoint(order)]
        pub order_uuid: Uuid,
    }
}

const ORDERS: Topic = shop::topic_orders();
const ONE_ORDER: Topic = shop::topic_order(Uuid::nil());
static TOPICS: [Topic; 2] = [shop::topic_orders(), shop::topic_order(Uuid::nil())];
const NAME_LEN: usize = shop::topic_orders().name().len();
const SCOPE: &str = shop::SCOPE;
const COUNTS: [usize; 3] = [
    shop::TOPIC_KINDS.len(),
    shop::EVENTS.len(),
    shop::ROUTES.len(),
];
const SPEC: Spec = shop::SPEC;
const ATOM: &str = shop::OrderEvent::Placed.as_str();

async fn ordinary_uses() -> Result<(), staff_pubsub::Error> {
    let mut orders = shop::subscribe(shop::topic_orders())?;
    let _one = shop::subscribe(shop::topic_order(Uuid::nil()))?;
    let order = shop::Order { uuid: Uuid::nil() };
    shop::broadcast_order(shop::OrderEvent::Placed, order).await?;
    if let Ok(message) = orders.recv().await.as_deref() {
        let _: &str = message.event_name();
    }
    let _ = shop::parse_topic("shop:orders");
    Ok(())
}

fn main() {
    let buffer = [0u8; NAME_LEN];
    let per_event = [0u8; shop::OrderEvent::ALL.len()];
    let _ = (ORDERS, ONE_ORDER, &TOPICS, SCOPE, COUNTS, SPEC, ATOM);
    let _ = (buffer, per_event, ordinary_uses);
}
