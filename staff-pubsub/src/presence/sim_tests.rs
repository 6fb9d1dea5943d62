//! Convergence on a simulated network: replicas ([`Shard`]s) that track,
//! update, untrack and restart at random while the network drops,
//! duplicates, delays (so reorders) and partitions their messages; then
//! the network heals (every message delivered, in order, quickly) and
//! every replica must list exactly what a sequential model says is
//! tracked, and its stream of diffs replayed from empty must give its
//! list. Deterministic: a seeded generator and simulated time.

use std::collections::{BTreeMap, BTreeSet};

use super::clock::Replica;
use super::shard::{Destination, Effects, Message, Shard, ShardConfig};
use super::state::{Diff, StateLimits};

type Name = &'static str;
type Pid = (u8, u32);
type Meta = u32;
type Msg = Message<Name, Pid, Meta>;
type Ident = (String, Pid, String);

const NAMES: [Name; 6] = ["n0", "n1", "n2", "n3", "n4", "n5"];
const TOPICS: [&str; 3] = ["t0", "t1", "t2"];
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
const STEP_MS: u64 = 10;

/// splitmix64: small, seeded, good enough to drive a simulation.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent` / 100.
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let index = usize::try_from(self.below(items.len() as u64)).unwrap();
        &items[index]
    }
}

/// The network's behaviour while chaos lasts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Chaos {
    pub(super) drop_percent: u64,
    pub(super) duplicate_percent: u64,
    pub(super) max_delay_ms: u64,
    pub(super) partition_percent: u64,
    pub(super) restart_percent: u64,
    pub(super) op_percent: u64,
}

impl Default for Chaos {
    fn default() -> Self {
        Self {
            drop_percent: 15,
            duplicate_percent: 10,
            max_delay_ms: 400,
            partition_percent: 1,
            restart_percent: 1,
            op_percent: 30,
        }
    }
}

struct Node {
    shard: Shard<Name, Pid, Meta>,
    /// What this incarnation tracks: the sequential model's part.
    local: BTreeMap<Ident, Meta>,
    /// The presences its diffs add up to, from empty.
    view: BTreeMap<Ident, Meta>,
    /// Offset of its ticks within the broadcast period (Phoenix staggers
    /// the first heartbeat by up to a quarter period).
    phase_ms: u64,
    group: u8,
}

struct InFlight {
    at_ms: u64,
    order: u64,
    to: usize,
    message: Msg,
}

pub(super) struct Sim {
    rng: Rng,
    config: ShardConfig,
    nodes: Vec<Node>,
    network: Vec<InFlight>,
    now_ms: u64,
    next_vsn: u64,
    next_pid: u32,
    next_meta: Meta,
    pub(super) stats: SimStats,
    trace: bool,
}

#[derive(Debug, Default)]
pub(super) struct SimStats {
    pub(super) sent: u64,
    pub(super) dropped: u64,
    pub(super) duplicated: u64,
    pub(super) restarts: u64,
    pub(super) partitions: u64,
    pub(super) ops: u64,
    pub(super) full_transfers: u64,
    pub(super) delta_transfers: u64,
}

fn apply(view: &mut BTreeMap<Ident, Meta>, diff: &Diff<Pid, Meta>) {
    for leave in &diff.leaves {
        view.remove(&(leave.topic.to_string(), leave.pid, leave.key.to_string()));
    }
    for join in &diff.joins {
        view.insert(
            (join.topic.to_string(), join.pid, join.key.to_string()),
            join.meta,
        );
    }
}

pub(super) fn sim_config() -> ShardConfig {
    ShardConfig {
        broadcast_period_ms: 100,
        max_silent_periods: 2,
        down_period_ms: 700,
        permdown_period_ms: 2_000,
        clock_sample_periods: 2,
        // Small generations: transfers answer with deltas and with full
        // states.
        max_delta_sizes: vec![4, 16, 64],
        limits: StateLimits::default(),
    }
}

impl Sim {
    pub(super) fn new(seed: u64, replicas: usize) -> Self {
        let mut rng = Rng::new(seed);
        let config = sim_config();
        let nodes = (0..replicas)
            .map(|index| Node {
                shard: Shard::new(Replica::new(NAMES[index], index as u64 + 1), config.clone())
                    .unwrap(),
                local: BTreeMap::new(),
                view: BTreeMap::new(),
                phase_ms: rng.below(config.broadcast_period_ms / 4 / STEP_MS + 1) * STEP_MS,
                group: 0,
            })
            .collect();
        Self {
            rng,
            config,
            nodes,
            network: Vec::new(),
            now_ms: 0,
            next_vsn: 1_000,
            next_pid: 0,
            next_meta: 0,
            stats: SimStats::default(),
            trace: false,
        }
    }

    fn send(&mut self, from: usize, effects: Effects<Name, Pid, Meta>, chaos: Option<Chaos>) {
        let node = &mut self.nodes[from];
        for diff in &effects.diffs {
            apply(&mut node.view, diff);
        }
        for outgoing in effects.outgoing {
            if let Message::TransferAck { payload, .. } = &outgoing.message {
                match payload {
                    super::state::Transfer::Full(_) => self.stats.full_transfers += 1,
                    super::state::Transfer::Delta(_) => self.stats.delta_transfers += 1,
                }
            }
            let targets: Vec<usize> = match &outgoing.to {
                Destination::All => (0..self.nodes.len()).filter(|to| *to != from).collect(),
                Destination::Name(name) => NAMES
                    .iter()
                    .take(self.nodes.len())
                    .position(|candidate| candidate == name)
                    .into_iter()
                    .collect(),
            };
            for to in targets {
                self.stats.sent += 1;
                let copies = match chaos {
                    Some(chaos) if self.rng.chance(chaos.drop_percent) => {
                        self.stats.dropped += 1;
                        0
                    }
                    Some(chaos) if self.rng.chance(chaos.duplicate_percent) => {
                        self.stats.duplicated += 1;
                        2
                    }
                    _ => 1,
                };
                for _ in 0..copies {
                    let delay = match chaos {
                        Some(chaos) => self.rng.below(chaos.max_delay_ms + 1),
                        None => STEP_MS,
                    };
                    let order = self.rng.next();
                    self.network.push(InFlight {
                        at_ms: self.now_ms + delay,
                        // Healed: per-destination FIFO, as Redis delivers.
                        order: if chaos.is_some() { order } else { 0 },
                        to,
                        message: outgoing.message.clone(),
                    });
                }
            }
        }
    }

    fn deliver_due(&mut self, chaos: Option<Chaos>) {
        let now = self.now_ms;
        let mut due: Vec<InFlight> = Vec::new();
        let mut index = 0;
        while index < self.network.len() {
            if self.network[index].at_ms <= now {
                due.push(self.network.remove(index));
            } else {
                index += 1;
            }
        }
        due.sort_by_key(|flight| (flight.at_ms, flight.order));
        for flight in due {
            let sender = NAMES
                .iter()
                .position(|name| *name == flight.message.sender().name)
                .unwrap();
            // A partition separates groups: what crosses it is lost.
            if chaos.is_some() && self.nodes[sender].group != self.nodes[flight.to].group {
                self.stats.dropped += 1;
                continue;
            }
            if self.trace {
                eprintln!("{now} -> {}: {:?}", NAMES[flight.to], flight.message);
            }
            let effects = self.nodes[flight.to].shard.handle(&flight.message, now);
            if self.trace {
                eprintln!(
                    "{now}    {}: {:?} {:?}",
                    NAMES[flight.to], effects.diffs, effects.events
                );
            }
            self.send(flight.to, effects, chaos);
        }
    }

    fn local_op(&mut self, index: usize) {
        self.stats.ops += 1;
        let node = &mut self.nodes[index];
        let choice = self.rng.below(10);
        let existing: Vec<Ident> = node.local.keys().cloned().collect();
        if choice < 5 || existing.is_empty() {
            // Track: a new owner, or one of this node's owners.
            let pid = if existing.is_empty() || self.rng.chance(50) {
                self.next_pid += 1;
                (u8::try_from(index).unwrap(), self.next_pid)
            } else {
                self.rng.pick(&existing).1
            };
            let topic = *self.rng.pick(&TOPICS);
            let key = *self.rng.pick(&KEYS);
            self.next_meta += 1;
            let ident = (topic.to_owned(), pid, key.to_owned());
            if self.trace {
                eprintln!(
                    "{} {} track {ident:?} {}",
                    self.now_ms, NAMES[index], self.next_meta
                );
            }
            match node.shard.track(pid, topic, key, self.next_meta) {
                Ok(diff) => {
                    assert!(!node.local.contains_key(&ident), "tracked twice: {ident:?}");
                    node.local.insert(ident, self.next_meta);
                    apply(&mut node.view, &diff);
                }
                Err(error) => {
                    assert!(node.local.contains_key(&ident), "{error} for {ident:?}");
                }
            }
        } else if choice < 8 {
            let ident = self.rng.pick(&existing).clone();
            if self.trace {
                eprintln!("{} {} untrack {ident:?}", self.now_ms, NAMES[index]);
            }
            let diff = node.shard.untrack(&ident.1, &ident.0, &ident.2);
            assert_eq!(diff.leaves.len(), 1, "untrack of {ident:?}");
            node.local.remove(&ident);
            apply(&mut node.view, &diff);
        } else {
            let ident = self.rng.pick(&existing).clone();
            self.next_meta += 1;
            if self.trace {
                eprintln!(
                    "{} {} update {ident:?} {}",
                    self.now_ms,
                    NAMES[index],
                    self.next_meta + 1
                );
            }
            let diff = node
                .shard
                .update(&ident.1, &ident.0, &ident.2, self.next_meta)
                .unwrap();
            node.local.insert(ident, self.next_meta);
            apply(&mut node.view, &diff);
        }
    }

    fn restart(&mut self, index: usize, chaos: Chaos) {
        self.stats.restarts += 1;
        if self.trace {
            eprintln!("{} restart {}", self.now_ms, NAMES[index]);
        }
        if self.rng.chance(30) {
            let goodbye = self.nodes[index].shard.graceful_permdown();
            let effects = Effects {
                outgoing: vec![goodbye],
                ..Effects::default()
            };
            self.send(index, effects, Some(chaos));
        }
        self.next_vsn += 1;
        let node = &mut self.nodes[index];
        node.shard = Shard::new(
            Replica::new(NAMES[index], self.next_vsn),
            self.config.clone(),
        )
        .unwrap();
        node.local.clear();
        node.view.clear();
    }

    fn partition(&mut self) {
        self.stats.partitions += 1;
        let groups = 1 + self.rng.below(3);
        for node in &mut self.nodes {
            node.group = u8::try_from(self.rng.below(groups)).unwrap();
        }
        if self.trace {
            let groups: Vec<u8> = self.nodes.iter().map(|node| node.group).collect();
            eprintln!("{} partition {groups:?}", self.now_ms);
        }
    }

    fn step(&mut self, chaos: Option<Chaos>) {
        self.now_ms += STEP_MS;
        self.deliver_due(chaos);
        for index in 0..self.nodes.len() {
            let node = &self.nodes[index];
            if (self.now_ms + node.phase_ms).is_multiple_of(self.config.broadcast_period_ms) {
                let effects = self.nodes[index].shard.tick(self.now_ms);
                self.send(index, effects, chaos);
            }
        }
        if let Some(chaos) = chaos {
            for index in 0..self.nodes.len() {
                if self.rng.chance(chaos.op_percent) {
                    self.local_op(index);
                }
            }
            if self.rng.chance(chaos.restart_percent) {
                let index = usize::try_from(self.rng.below(self.nodes.len() as u64)).unwrap();
                self.restart(index, chaos);
            }
            if self.rng.chance(chaos.partition_percent) {
                self.partition();
            }
        }
    }

    /// Runs `chaos_ms` of chaos, then heals for `heal_ms`.
    pub(super) fn run(&mut self, chaos: Chaos, chaos_ms: u64, heal_ms: u64) {
        while self.now_ms < chaos_ms {
            self.step(Some(chaos));
        }
        for node in &mut self.nodes {
            node.group = 0;
        }
        let end = self.now_ms + heal_ms;
        while self.now_ms < end {
            self.step(None);
        }
    }

    /// The sequential model: every presence the current incarnations track.
    pub(super) fn model(&self) -> BTreeMap<Ident, Meta> {
        self.nodes
            .iter()
            .flat_map(|node| {
                node.local
                    .iter()
                    .map(|(ident, meta)| (ident.clone(), *meta))
            })
            .collect()
    }

    fn listed(node: &Node) -> BTreeMap<Ident, Meta> {
        TOPICS
            .iter()
            .flat_map(|topic| node.shard.list(topic))
            .map(|value| {
                (
                    (value.topic.to_string(), value.pid, value.key.to_string()),
                    value.meta,
                )
            })
            .collect()
    }

    /// Every way the replicas may fail to agree, as messages; empty when
    /// they converged.
    pub(super) fn divergences(&self) -> Vec<String> {
        let model = self.model();
        let mut problems = Vec::new();
        let live: BTreeSet<Replica<Name>> = self
            .nodes
            .iter()
            .map(|node| node.shard.replica().clone())
            .collect();
        let reference = self.nodes[0].shard.state().online();
        for node in &self.nodes {
            let name = node.shard.replica().name;
            let listed = Self::listed(node);
            if listed != model {
                let missing: Vec<_> = model
                    .iter()
                    .filter(|(k, v)| listed.get(*k) != Some(v))
                    .collect();
                let extra: Vec<_> = listed
                    .iter()
                    .filter(|(k, v)| model.get(*k) != Some(v))
                    .collect();
                problems.push(format!(
                    "{name} lists other than the model: missing {missing:?}, extra {extra:?}"
                ));
            }
            if node.view != listed {
                let missing: Vec<_> = listed
                    .iter()
                    .filter(|(k, v)| node.view.get(*k) != Some(v))
                    .collect();
                let extra: Vec<_> = node
                    .view
                    .iter()
                    .filter(|(k, v)| listed.get(*k) != Some(v))
                    .collect();
                problems.push(format!(
                    "{name}: its diffs lack {missing:?} and add {extra:?} to what it lists"
                ));
            }
            if node.shard.state().online() != reference {
                problems.push(format!("{name}: values or tags differ from n0's"));
            }
            let context: BTreeMap<_, _> = node
                .shard
                .context()
                .iter()
                .filter(|(replica, _)| live.contains(*replica))
                .collect();
            let first: BTreeMap<_, _> = self.nodes[0]
                .shard
                .context()
                .iter()
                .filter(|(replica, _)| live.contains(*replica))
                .collect();
            if context != first {
                problems.push(format!("{name}: context {context:?}, n0's {first:?}"));
            }
            let down: Vec<_> = node.shard.peers().filter(|(_, up)| !up).collect();
            if !down.is_empty() {
                problems.push(format!("{name}: still sees down {down:?}"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::state::fault::Fault;

    const CHAOS_MS: u64 = 8_000;
    const HEAL_MS: u64 = 4_000;

    fn run(seed: u64, replicas: usize) -> Sim {
        let mut sim = Sim::new(seed, replicas);
        sim.run(Chaos::default(), CHAOS_MS, HEAL_MS);
        sim
    }

    #[test]
    fn replicas_converge_to_the_model_after_chaos() {
        let mut totals = SimStats::default();
        // PRESENCE_SIM_SEEDS=n runs more seeds (a longer search).
        let seeds: u64 = std::env::var("PRESENCE_SIM_SEEDS")
            .ok()
            .and_then(|seeds| seeds.parse().ok())
            .unwrap_or(40);
        for seed in 0..seeds {
            let replicas = 2 + usize::try_from(seed % 5).unwrap();
            let sim = run(seed, replicas);
            let problems = sim.divergences();
            assert!(
                problems.is_empty(),
                "seed {seed}, {replicas} replicas: {problems:#?}"
            );
            let s = &sim.stats;
            totals.sent += s.sent;
            totals.dropped += s.dropped;
            totals.duplicated += s.duplicated;
            totals.restarts += s.restarts;
            totals.partitions += s.partitions;
            totals.ops += s.ops;
            totals.full_transfers += s.full_transfers;
            totals.delta_transfers += s.delta_transfers;
        }
        // The chaos happened: each kind of fault and both transfer forms.
        assert!(totals.dropped > 1000, "{totals:?}");
        assert!(totals.duplicated > 100, "{totals:?}");
        assert!(totals.restarts > 20, "{totals:?}");
        assert!(totals.partitions > 20, "{totals:?}");
        assert!(totals.full_transfers > 20, "{totals:?}");
        assert!(totals.delta_transfers > 20, "{totals:?}");
    }

    /// The first seed of `0..100` whose run diverges under `fault`.
    fn first_divergence(fault: Fault) -> Option<(u64, Vec<String>)> {
        let _fault = crate::presence::state::fault::set(fault);
        (0..100).find_map(|seed| {
            let problems = run(seed, 2 + usize::try_from(seed % 5).unwrap()).divergences();
            (!problems.is_empty()).then_some((seed, problems))
        })
    }

    #[test]
    fn a_merge_that_joins_seen_dots_diverges() {
        let found = first_divergence(Fault::JoinSeenDots);
        assert!(found.is_some(), "no run caught the broken merge");
    }

    #[test]
    fn a_merge_that_ignores_the_remote_context_diverges() {
        let found = first_divergence(Fault::IgnoreRemoteContext);
        assert!(found.is_some(), "no run caught the broken merge");
    }

    #[test]
    fn phoenix_merge_as_it_is_diverges() {
        // Phoenix's merge deletes a removed value's dot from the clouds and
        // stores a join over the value of its identity whatever their dots:
        // a full state overtaken by a newer delta then brings back an old
        // value over the new one, whose dot is seen, so the new one is lost
        // for good (this state keeps the dot and keeps the newer value).
        let found = first_divergence(Fault::Phoenix);
        assert!(found.is_some(), "no run caught Phoenix's merge");
    }

    #[test]
    fn phoenix_overwriting_a_newer_value_alone_diverges() {
        let found = first_divergence(Fault::OverwriteNewer);
        assert!(found.is_some(), "no run caught the Phoenix step");
    }

    #[test]
    fn the_model_is_not_trivially_empty() {
        let sims: Vec<Sim> = (0..10).map(|seed| run(seed, 4)).collect();
        let tracked: usize = sims.iter().map(|sim| sim.model().len()).sum();
        assert!(tracked > 40, "{tracked} presences at the end of 10 runs");
    }

    #[test]
    fn a_partition_without_healing_is_seen_as_divergence() {
        // The check itself can fail: two groups that never hear each
        // other again do not converge.
        let mut sim = Sim::new(7, 4);
        sim.nodes[0].group = 0;
        sim.nodes[1].group = 0;
        sim.nodes[2].group = 1;
        sim.nodes[3].group = 1;
        let quiet = Chaos {
            drop_percent: 0,
            duplicate_percent: 0,
            max_delay_ms: 0,
            partition_percent: 0,
            restart_percent: 0,
            op_percent: 30,
        };
        while sim.now_ms < 3_000 {
            sim.step(Some(quiet));
        }
        assert!(!sim.divergences().is_empty());
    }
}

#[cfg(test)]
mod debug {
    use super::*;

    #[test]
    #[ignore = "a debugging aid"]
    fn trace_seed() {
        let seed: u64 = std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2);
        let replicas: usize = std::env::var("REPLICAS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4);
        let mut sim = Sim::new(seed, replicas);
        sim.trace = true;
        sim.run(Chaos::default(), 8_000, 4_000);
        for problem in sim.divergences() {
            eprintln!("{problem}");
        }
        for node in &sim.nodes {
            eprintln!(
                "{:?} ctx {:?} clouds {:?}",
                node.shard.replica(),
                node.shard.context(),
                node.shard.state().clouds()
            );
        }
    }
}
