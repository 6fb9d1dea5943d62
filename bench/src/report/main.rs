//! The benchmark report: `staff-pubsub` against the hand-written baseline,
//! the floor of delivery and a published peer, on the workloads below.
//!
//! ```text
//! cargo run --release -p staff-pubsub-bench             # full run, Markdown
//! cargo run --release -p staff-pubsub-bench -- --quick  # under 60 s on 2 cores
//! cargo run --release -p staff-pubsub-bench -- --json   # one JSON object
//! ```
//!
//! Every workload runs each contender in this one process, in rounds; in
//! each round every contender runs once, and the order rotates from round to
//! round, so that a slow moment of the machine does not always fall on the
//! same contender. A ratio is the median over rounds of (ours / contender)
//! within the same round. One warm-up round per workload is discarded.
//!
//! Contenders (`staff_pubsub_bench::contenders`), all on the same message
//! type (`staff::Message`, shared as an `Arc`) and the same subscriber model
//! (one task per subscription draining concurrently on a one-worker tokio
//! runtime, the publisher on its own thread):
//!
//! - `ours`: the generated stock functions (`staff::broadcast_*_on`) on the
//!   in-process `PubSub`.
//! - `naive`: `String` topics formatted per broadcast in a `DashMap` of
//!   tokio broadcast channels, one send per topic.
//! - `floor`: the very queues our subscriptions use (the runtime's inbox,
//!   through the hidden feature `__bench`), fed directly.
//! - `ractor_pg`: ractor's `pg`, one actor per subscriber.
//!
//! The workloads ([`workloads::WORKLOADS`]) and the headline figures
//! ([`figures::FIGURES`]) are tables; `main` runs the one and reads the
//! other. `membership_cpu` is timed by the thread's CPU clock
//! ([`cpu::thread_cpu`]), not the wall clock. Apart from the table:
//! `latency_paced` (broadcast to receipt at 50,000 broadcasts/s, ours and
//! naive alternating by round; percentiles, not rates),
//! `idle_subscription_bytes`, counted by a counting global allocator (off
//! during the throughput workloads), and `idle_subscription_rss_bytes`,
//! the growth of `VmRSS` in a child process of this binary
//! (`--idle-rss N`); and `presence` (`workloads::presence`: track+untrack
//! pairs/s, diff fan-out to 1,000 watchers, heap bytes per presence; rows
//! of the throughput table, ours alone, `--only presence` for them alone).
//!
//! `cold_topic_instructions` is not measured here but by callgrind on
//! `--profile cold N` (see `profile.rs` and BENCHMARKS.md).

mod cpu;
mod drains;
mod figures;
mod plan;
mod profile;
mod rounds;
mod workloads;

use std::time::Instant;

use figures::{Apart, Figure, FIGURES};
use plan::{FULL, QUICK};
use rounds::{alternate, summarise};
use workloads::{Env, WORKLOADS};

#[global_allocator]
static ALLOCATOR: staff_pubsub_count_alloc::Counting = staff_pubsub_count_alloc::Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if let Some(at) = args.iter().position(|a| a == "--profile") {
        let workload = args.get(at + 1).map_or("membership", String::as_str);
        let n = args
            .get(at + 2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        profile::run(workload, n);
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--idle-rss") {
        let n = args
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        workloads::idle::print_rss(n);
        return;
    }
    let (plan, mode) = if has("--quick") {
        (QUICK, "--quick")
    } else {
        (FULL, "full")
    };
    let json = has("--json");
    // `--only WORKLOAD` runs one workload (its figures only; a diagnostic,
    // not a report).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|at| args.get(at + 1).cloned());
    let started = Instant::now();

    let env = Env::new();
    let mut rows = Vec::new();
    for workload in &WORKLOADS {
        if only.as_deref().is_some_and(|only| only != workload.name) {
            continue;
        }
        let mut contenders = (workload.contenders)(&env, plan);
        alternate(workload.name, plan.rounds, &mut contenders);
        rows.extend(summarise(workload.name, workload.unit, &contenders));
    }
    let latency = only
        .as_deref()
        .is_none_or(|only| only == workloads::latency::NAME)
        .then(|| workloads::latency::run(&env, plan));
    if let Some(latency) = &latency {
        rows.extend(latency.rows.iter().cloned());
    }
    if only
        .as_deref()
        .is_none_or(|only| only == workloads::presence::NAME)
    {
        rows.extend(workloads::presence::run(plan));
    }
    if only.is_some() {
        figures::print_rows(&rows, plan);
        return;
    }
    eprint!("idle_subscription_bytes: {} subscriptions ... ", plan.idle);
    let idle_bytes = workloads::idle::bytes_ours(plan.idle);
    let idle_rss = workloads::idle::rss_ours(plan.idle);
    eprintln!("done");
    let latency = latency.expect("the latency workload ran");
    let apart = Apart {
        idle_bytes,
        idle_rss,
        ours_latency: latency.ours,
        naive_latency: latency.naive,
    };

    let figures: Vec<Figure> = FIGURES.iter().map(|f| f.read(&rows, &apart)).collect();
    if json {
        figures::print_json(&figures);
    } else {
        figures::print_report(&figures, &rows, plan, mode, started, &apart);
    }
}
