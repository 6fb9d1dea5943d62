//! `presence`: the cost of presence tracking in one process (the
//! server's [`Tracker`](staff_pubsub::presence::Tracker), no engine), run
//! apart from the contenders' rounds (there is no other Rust contender;
//! Phoenix.Presence has no counterpart in `phx_bench.exs`):
//!
//! - `track+untrack`: a presence tracked and its guard dropped, on one of
//!   [`PRESENCE_TOPICS`] topics, no watcher: pairs per second.
//! - `diff fan-out`: [`PRESENCE_FANOUT_PAIRS`] track+untrack pairs on one
//!   topic with [`PRESENCE_WATCHERS`] watchers (`Tracker::diffs`), then
//!   every watcher drained (`try_recv`): diffs delivered and read per
//!   second, both sides on this thread.
//! - `heap per presence`: net heap bytes per tracked presence (its
//!   `Tracked` guard included) over [`PRESENCE_HEAP`] presences, by the
//!   counting allocator; one reading, the same each round.
//!
//! The metadata is a `String` of 12 bytes, the key `user-<n>`.

use std::time::Instant;

use staff_pubsub::staff::{self, Message};
use staff_pubsub::{PubSub, Topic};
use staff_pubsub_bench::support::{id, PEOPLE};

use crate::plan::{Plan, PRESENCE_FANOUT_PAIRS, PRESENCE_HEAP, PRESENCE_TOPICS, PRESENCE_WATCHERS};
use crate::rounds::Row;

/// The workload's name in the tables, and for `--only`.
pub const NAME: &str = "presence";

fn topics() -> Vec<Topic> {
    (0..PRESENCE_TOPICS as u64)
        .map(|i| staff::topic_person(id(PEOPLE, i)))
        .collect()
}

fn meta() -> String {
    "viewing page".to_owned()
}

/// One round of `pairs` track+untrack pairs: pairs per second.
fn track_untrack(pubsub: &PubSub<Message>, topics: &[Topic], pairs: usize) -> f64 {
    let tracker = pubsub.tracker::<String>();
    let start = Instant::now();
    for i in 0..pairs {
        let tracked = tracker
            .track(topics[i % topics.len()], format!("user-{i}"), meta())
            .expect("under the limits");
        drop(tracked);
    }
    pairs as f64 / start.elapsed().as_secs_f64()
}

/// One round of the fan-out: diffs delivered and read per second.
fn fan_out(pubsub: &PubSub<Message>, topic: Topic) -> f64 {
    let tracker = pubsub.tracker::<String>();
    let mut watchers: Vec<_> = (0..PRESENCE_WATCHERS)
        .map(|_| tracker.diffs(topic))
        .collect();
    let start = Instant::now();
    for i in 0..PRESENCE_FANOUT_PAIRS {
        drop(
            tracker
                .track(topic, format!("user-{i}"), meta())
                .expect("under the limits"),
        );
    }
    let mut read = 0_usize;
    for watcher in &mut watchers {
        while let Some(diff) = watcher.try_recv() {
            diff.expect("no lag: the queues have room for the round");
            read += 1;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(read, PRESENCE_FANOUT_PAIRS * 2 * PRESENCE_WATCHERS);
    read as f64 / elapsed.as_secs_f64()
}

/// Net heap bytes per tracked presence, its guard included.
fn heap_per_presence(topics: &[Topic]) -> f64 {
    let pubsub = PubSub::<Message>::new();
    let tracker = pubsub.tracker::<String>();
    // The tracker's first allocations are not a presence's.
    drop(
        tracker
            .track(topics[0], "warm-up", meta())
            .expect("tracked"),
    );
    let (bytes, guards) = staff_pubsub_count_alloc::net_bytes(|| {
        let mut guards = Vec::with_capacity(PRESENCE_HEAP);
        for i in 0..PRESENCE_HEAP {
            guards.push(
                tracker
                    .track(topics[i % topics.len()], format!("user-{i}"), meta())
                    .expect("under the limits"),
            );
        }
        guards
    });
    assert_eq!(tracker.len(), PRESENCE_HEAP);
    drop(guards);
    bytes as f64 / PRESENCE_HEAP as f64
}

fn row(contender: &'static str, unit: &'static str, values: &[f64]) -> Row {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    Row {
        workload: NAME,
        contender,
        unit,
        rate: median,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        ratio: None,
        lagged: 0,
    }
}

/// Runs the workload: one warm-up round and `plan.rounds` measured ones.
pub fn run(plan: Plan) -> Vec<Row> {
    let topics = topics();
    let pubsub = PubSub::<Message>::new();
    let (mut pairs, mut fanout) = (Vec::new(), Vec::new());
    for round in 0..=plan.rounds {
        let p = track_untrack(&pubsub, &topics, plan.presence_pairs);
        let f = fan_out(&pubsub, topics[0]);
        if round > 0 {
            pairs.push(p);
            fanout.push(f);
        }
        eprint!("\r{NAME}: round {round}/{}   ", plan.rounds);
    }
    eprintln!();
    let heap = heap_per_presence(&topics);
    vec![
        row("track+untrack", "pairs/s", &pairs),
        row("diff fan-out, 1,000 watchers", "diffs read/s", &fanout),
        row("heap per presence", "bytes", &[heap]),
    ]
}
