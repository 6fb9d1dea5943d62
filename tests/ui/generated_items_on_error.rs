// A spec with an error still defines the items it generates, and the traits
// it derives for the payloads, as stubs, so that code using them elsewhere
// in the crate adds no error of its own: the only error is the spec's.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "orders", events(order_placed, order_shipped))]
    pub struct Order {
        pub uuid: Uuid,
        #[route(custmer)]
        pub customer_uuid: Option<Uuid>,
    }

    #[entity(collection = "customers", events(customer_created))]
    pub struct Customer {
        pub uuid: Uuid,
    }
}

async fn use_the_spec() -> Result<(), staff_pubsub::Error> {
    let id = staff_pubsub::Uuid::nil();
    let mut orders = shop::subscribe(shop::topic_orders())?;
    let _many = shop::subscribe_many([
        shop::topic_order(id),
        shop::topic_customers(),
        shop::topic_customer(id),
    ])?;
    let order = shop::Order {
        uuid: id,
        customer_uuid: None,
    };
    assert!(order.clone() == order, "{order:?}");
    let _ = serde_json::to_string(&order);
    let _: Result<shop::Customer, _> = serde_json::from_str("{}");
    shop::broadcast_order(shop::OrderEvent::Placed, order).await?;
    let customer = shop::Customer { uuid: id };
    shop::broadcast_customer_on(&shop::server(), shop::CustomerEvent::Created, customer).await?;
    match orders.recv().await.as_deref() {
        Ok(shop::Message::Order(shop::OrderEvent::Shipped, order)) => {
            let _ = order.uuid;
        }
        Ok(message) => {
            let _: &str = message.event_name();
            let _: staff_pubsub::Uuid = message.uuid();
        }
        Err(_) => {}
    }
    let _ = shop::parse_topic("shop:orders").map(|topic| topic.to_string());
    let _: &[&str] = shop::EVENTS;
    let _ = (
        shop::SCOPE,
        shop::ROUTES.len(),
        shop::SPEC,
        shop::TOPIC_KINDS,
    );
    let _: Vec<&str> = shop::OrderEvent::ALL.iter().map(|e| e.as_str()).collect();
    let _ = shop::install(shop::builder().build());
    shop::scope(shop::server(), async {}).await;
    Ok(())
}

fn main() {
    let _ = use_the_spec;
}
