// The macro goes on a module; on anything else it says so at the item's keyword.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub struct Order {
    pub uuid: staff_pubsub::Uuid,
}

#[staff_events(scope = "shop")]
pub fn order() {}

fn main() {}
