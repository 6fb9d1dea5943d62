// A spec must be written inline, and must declare at least one entity.
use staff_pubsub::staff_events;

#[staff_events(scope = "shop")]
pub mod empty {
    pub fn helper() {}
}

fn main() {}
