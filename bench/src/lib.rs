//! What the benchmark report (`bench_report`) and the criterion benches
//! (`benches/fanout.rs`, `benches/wire.rs`) share: the contenders that are
//! not `staff-pubsub` itself, and the helpers of a synchronous benchmark
//! loop.
//!
//! ```text
//! cargo run --release -p staff-pubsub-bench -- --quick --json
//! cargo bench -p staff-pubsub-bench --bench fanout
//! cargo bench -p staff-pubsub-bench --bench wire
//! ```
//!
//! This crate is not published; it keeps ractor, dashmap, criterion and
//! rmp-serde out of `staff-pubsub`'s dependencies.

pub mod contenders;
pub mod support;
