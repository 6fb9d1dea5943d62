//! The contenders measured against `staff-pubsub` (`ours`, the generated
//! stock functions on the in-process `PubSub`). All share the message type
//! (`staff::Message`, as an `Arc`).

pub mod floor;
pub mod naive;
pub mod ractor_pg;
