//! `floor`: the very queues our subscriptions use (the runtime's inbox,
//! through the hidden `__bench` feature of `staff-pubsub`), fed directly:
//! no registry, no topic, no routing, no counters.

pub use staff_pubsub::__bench::Inbox;
