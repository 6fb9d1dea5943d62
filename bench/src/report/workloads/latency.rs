//! `latency_paced`: broadcast to receipt at a steady 50,000 membership
//! broadcasts/s (4 topics, one subscriber each, each drained by its own
//! task on the one-worker runtime), ours and naive alternating by round.
//!
//! The publisher (this thread) sends broadcast `k` at `k` x 20 µs after the
//! round's start, spinning until then (open loop: a late broadcast is sent
//! at once, the schedule does not move); it notes the time just before the
//! call. A drain notes the time it takes a copy; the queues are FIFO and
//! have room for the whole round, so its `k`th copy is broadcast `k`. A
//! latency is one copy's (4 per broadcast), and the percentiles are over
//! every copy of the measured rounds of a contender. Both clocks are one
//! `Instant` of the round.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::{Duration, Instant};

use staff_pubsub::staff::{self, Message, TeamMembershipEvent};
use staff_pubsub::PubSub;
use staff_pubsub_bench::contenders::naive;
use staff_pubsub_bench::support::{id, membership, now, Countdown, PEOPLE, TEAMS};

use super::Env;
use crate::drains::{Drain, Got};
use crate::plan::{room_for, Plan, LATENCY_RATE};
use crate::rounds::{alternate, summarise, Contender, Row, Sample};

/// The workload's name in the tables.
pub const NAME: &str = "latency_paced";

/// Percentiles of one contender, over every copy of its measured rounds.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Copies measured.
    pub copies: usize,
}

/// What the workload hands back: ours' and naive's percentiles, and one
/// row per contender with the achieved rate (a check that the pacing held:
/// it should read 50.0 k).
pub struct Latencies {
    pub ours: Percentiles,
    pub naive: Percentiles,
    pub rows: Vec<Row>,
}

/// Runs the workload: one warm-up round and `plan.rounds` measured rounds.
pub fn run(env: &Env, plan: Plan) -> Latencies {
    let n = plan.latency;
    let ours_copies = Rc::new(RefCell::new(Vec::new()));
    let naive_copies = Rc::new(RefCell::new(Vec::new()));
    let (ours_into, naive_into) = (Rc::clone(&ours_copies), Rc::clone(&naive_copies));
    let mut contenders = vec![
        Contender::new("ours", move |round| {
            let (sample, copies) = ours(env, n);
            keep(&ours_into, round, copies);
            sample
        }),
        Contender::new("naive", move |round| {
            let (sample, copies) = naive(env, n);
            keep(&naive_into, round, copies);
            sample
        }),
    ];
    alternate(NAME, plan.rounds, &mut contenders);
    let rows = summarise(NAME, "broadcasts/s", &contenders);
    let ours = percentiles(&mut ours_copies.borrow_mut());
    let naive = percentiles(&mut naive_copies.borrow_mut());
    Latencies { ours, naive, rows }
}

/// Keeps a measured round's latencies (round 0 is the warm-up).
fn keep(into: &RefCell<Vec<u64>>, round: u64, copies: Vec<u64>) {
    if round > 0 {
        into.borrow_mut().extend(copies);
    }
}

fn percentiles(copies: &mut [u64]) -> Percentiles {
    copies.sort_unstable();
    let at = |p: f64| {
        let index = ((copies.len() - 1) as f64 * p).round() as usize;
        copies[index] as f64 / 1e3
    };
    Percentiles {
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: at(1.0),
        copies: copies.len(),
    }
}

/// One round's clock and records: when each broadcast was sent (ns since
/// `base`), and every copy's latency (ns).
struct Round {
    base: Instant,
    sent: Arc<[AtomicU64]>,
    latencies: Arc<Mutex<Vec<u64>>>,
    ready: Arc<Countdown>,
    done: Arc<Countdown>,
}

impl Round {
    fn new(n: usize, drains: usize) -> Self {
        Self {
            base: Instant::now(),
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            latencies: Arc::new(Mutex::new(Vec::with_capacity(n * drains))),
            ready: Countdown::new(drains),
            done: Countdown::new(drains),
        }
    }

    /// A drain task: takes `expected` copies, noting each one's latency.
    fn spawn<S: Drain>(&self, env: &Env, mut subscription: S, expected: usize) {
        let (base, sent, latencies, ready, done) = (
            self.base,
            Arc::clone(&self.sent),
            Arc::clone(&self.latencies),
            Arc::clone(&self.ready),
            Arc::clone(&self.done),
        );
        env.rt.spawn(async move {
            ready.done();
            let mut mine = Vec::with_capacity(expected);
            for k in 0..expected {
                match subscription.next().await {
                    Got::Message => {
                        let at = base.elapsed().as_nanos() as u64;
                        mine.push(at.saturating_sub(sent[k].load(Ordering::Acquire)));
                    }
                    Got::Lagged(n) => panic!("{NAME}: {n} copies lagged (the queues have room)"),
                    Got::Closed => panic!("{NAME}: closed early"),
                }
            }
            latencies.lock().unwrap().extend(mine);
            drop(subscription);
            done.done();
        });
    }

    /// Paces `n` calls of `broadcast(k)` at [`LATENCY_RATE`], noting each
    /// one's time; returns the sample (the achieved rate) and the
    /// latencies once every drain has everything.
    fn publish(self, n: usize, mut broadcast: impl FnMut(usize)) -> (Sample, Vec<u64>) {
        self.ready.wait();
        let interval = Duration::from_nanos(1_000_000_000 / LATENCY_RATE);
        let start = Instant::now();
        let mut due = start;
        for k in 0..n {
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            let at = self.base.elapsed().as_nanos() as u64;
            self.sent[k].store(at, Ordering::Release);
            broadcast(k);
            due += interval;
        }
        let elapsed = start.elapsed();
        self.done.wait();
        let latencies = std::mem::take(&mut *self.latencies.lock().unwrap());
        assert_eq!(latencies.len(), 4 * n);
        let sample = Sample {
            items: n as f64,
            elapsed,
            lagged: 0,
        };
        (sample, latencies)
    }
}

fn ours(env: &Env, n: usize) -> (Sample, Vec<u64>) {
    let pubsub = PubSub::<Message>::builder().capacity(room_for(n)).build();
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let round = Round::new(n, 4);
    for topic in [
        staff::topic_teams(),
        staff::topic_team(team),
        staff::topic_people(),
        staff::topic_person(person),
    ] {
        round.spawn(env, pubsub.subscribe(topic).unwrap(), n);
    }
    let mut cx = Context::from_waker(&env.waker);
    round.publish(n, |k| {
        now(
            &mut cx,
            staff::broadcast_team_membership_on(
                &pubsub,
                TeamMembershipEvent::TeamPersonAdded,
                membership(team, person, k),
            ),
        )
        .unwrap();
    })
}

fn naive(env: &Env, n: usize) -> (Sample, Vec<u64>) {
    let pubsub = naive::PubSub::new(room_for(n));
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let round = Round::new(n, 4);
    for topic in [
        naive::topic_teams(),
        naive::topic_team(team),
        naive::topic_people(),
        naive::topic_person(person),
    ] {
        round.spawn(env, pubsub.subscribe(topic), n);
    }
    round.publish(n, |k| {
        naive::broadcast_team_membership(
            &pubsub,
            TeamMembershipEvent::TeamPersonAdded,
            membership(team, person, k),
        );
    })
}
