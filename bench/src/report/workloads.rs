//! The workloads, one module each, and [`WORKLOADS`], the table that
//! `main` runs in order. A workload's `contenders` builds its data once
//! and hands back one [`Contender`] per contender, ours first. Two more
//! run apart, since their figures are not rates: `latency` (percentiles)
//! and `idle` (bytes); so does `presence` (rates and bytes of ours alone).

pub mod cold;
pub mod idle;
pub mod latency;
pub mod many;
pub mod membership;
pub mod membership_cpu;
pub mod presence;
pub mod two_publishers;
pub mod wide;

use std::task::Waker;

use staff_pubsub_bench::support::noop_waker;
use tokio::runtime::Runtime;

use crate::plan::Plan;
use crate::rounds::Contender;

/// What every workload runs on: the drains' one-worker runtime, and a
/// waker for broadcasts that are ready at once.
pub struct Env {
    pub rt: Runtime,
    pub waker: Waker,
}

impl Env {
    pub fn new() -> Self {
        Self {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .unwrap(),
            waker: noop_waker(),
        }
    }
}

/// One row of [`WORKLOADS`].
pub struct Workload {
    /// The name in the tables, and for `--only`.
    pub name: &'static str,
    /// What a rate counts.
    pub unit: &'static str,
    /// The contenders, ours first (the ratios are ours / each).
    pub contenders: for<'a> fn(&'a Env, Plan) -> Vec<Contender<'a>>,
}

/// Every throughput workload, in report order.
pub const WORKLOADS: [Workload; 6] = [
    Workload {
        name: "membership_fanout",
        unit: "broadcasts/s",
        contenders: membership::contenders,
    },
    Workload {
        name: "membership_cpu",
        unit: "broadcasts/CPU-s",
        contenders: membership_cpu::contenders,
    },
    Workload {
        name: "cold_topic",
        unit: "broadcasts/s",
        contenders: cold::contenders,
    },
    Workload {
        name: "wide_topic",
        unit: "deliveries/s",
        contenders: wide::contenders,
    },
    Workload {
        name: "many_topics",
        unit: "broadcasts/s",
        contenders: many::contenders,
    },
    Workload {
        name: "two_publishers",
        unit: "broadcasts/s",
        contenders: two_publishers::contenders,
    },
];
