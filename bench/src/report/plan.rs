//! The sizes of a run (`--quick` or full) and the constants of the
//! workloads.

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Measured rounds per workload (plus one warm-up round).
    pub rounds: usize,
    /// Broadcasts per round, membership workload.
    pub membership: usize,
    /// Broadcasts per publisher per round, two-publisher workload.
    pub two_publishers: usize,
    /// Broadcasts per round, cold-topic workload.
    pub cold: usize,
    /// Broadcasts per round, wide-topic workload (each reaches 10,000).
    pub wide: usize,
    /// Broadcasts per round, many-topics workload.
    pub many: usize,
    /// Broadcasts per round, single-thread CPU workload (publish, then
    /// drain inline).
    pub membership_cpu: usize,
    /// Broadcasts per round of the latency workload, paced at
    /// [`LATENCY_RATE`].
    pub latency: usize,
    /// Subscriptions of the idle-memory figure.
    pub idle: usize,
    /// Track+untrack pairs per round of the presence workload.
    pub presence_pairs: usize,
}

/// The full run.
pub const FULL: Plan = Plan {
    rounds: 15,
    membership: 200_000,
    two_publishers: 150_000,
    cold: 2_000_000,
    wide: 200,
    many: 300_000,
    membership_cpu: 200_000,
    latency: 20_000,
    idle: 1_000_000,
    presence_pairs: 200_000,
};

/// `--quick`: under 60 s on 2 cores.
pub const QUICK: Plan = Plan {
    rounds: 5,
    membership: 100_000,
    two_publishers: 100_000,
    cold: 1_000_000,
    wide: 200,
    many: 200_000,
    membership_cpu: 100_000,
    latency: 10_000,
    idle: 1_000_000,
    presence_pairs: 100_000,
};

/// Queue capacity of every subscription in the wide workload, ours and the
/// contenders' alike: our default. A copy dropped for lack of room is
/// counted as lag (the tables show it; it should be 0).
pub const CAPACITY: usize = staff_pubsub::DEFAULT_CAPACITY;

/// Queue capacity for a round of `messages`: room for all of them, so that
/// no contender drops a copy when the publisher runs ahead of the drains
/// (a drop would make its round cheaper, not better).
pub fn room_for(messages: usize) -> usize {
    messages.next_power_of_two()
}

/// Subscribers of the one topic of the wide workload.
pub const WIDE_SUBSCRIBERS: usize = 10_000;
/// Per-person topics of the many-topics workload.
pub const MANY_TOPICS: usize = 100_000;
/// Queue capacity in the many-topics workload (tokio's broadcast channel
/// allocates its ring up front: 100,000 rings of 1024 slots would be 4 GB).
pub const MANY_CAPACITY: usize = 64;
/// Subscribed person topics present while the cold workload runs, so that
/// its lookups miss in a populated registry.
pub const COLD_BACKGROUND: usize = 10_000;

/// Broadcasts per second of the latency workload: one every 20 µs.
pub const LATENCY_RATE: u64 = 50_000;

/// Topics the presence workload's presences are spread over.
pub const PRESENCE_TOPICS: usize = 1_000;
/// Watchers of the one topic of the presence fan-out.
pub const PRESENCE_WATCHERS: usize = 1_000;
/// Track+untrack pairs per round of the presence fan-out: 1,000 diffs,
/// within a watcher's queue (`DIFF_QUEUE_CAPACITY`, 1024).
pub const PRESENCE_FANOUT_PAIRS: usize = 500;
/// Presences tracked at once for the heap figure (under the default limit
/// of 100,000).
pub const PRESENCE_HEAP: usize = 50_000;
