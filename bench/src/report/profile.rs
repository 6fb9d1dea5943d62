//! `--profile membership|cold [N]`: single-threaded loops for an
//! instruction profiler: publish then drain on one thread, so that every
//! instruction of a broadcast is counted.
//!
//! ```text
//! cargo build --release -p staff-pubsub-bench
//! valgrind --tool=callgrind --toggle-collect='*membership_loop*' \
//!     target/release/bench_report --profile membership 100000
//! valgrind --tool=callgrind --toggle-collect='*cold_loop*' \
//!     target/release/bench_report --profile cold 100000 2>&1 | grep Collected
//! ```
//!
//! `cold_topic_instructions` is callgrind's `Collected` count of
//! the cold run divided by its `N` (the program prints `N`; valgrind
//! prints the count on stderr). It is not measured inside this program:
//! the count is valgrind's, and deterministic. `membership_loop` is also
//! the `ours` loop of the `membership_cpu` workload.

use std::task::{Context, Waker};

use staff_pubsub::staff::{self, Message, Person, PersonEvent, TeamMembershipEvent};
use staff_pubsub::{PubSub, Subscription, Uuid};
use staff_pubsub_bench::support::{id, membership, noop_waker, now, COLD, PEOPLE, TEAMS};

use crate::plan::COLD_BACKGROUND;

/// Runs the profile loop of `workload`, `n` broadcasts.
pub fn run(workload: &str, n: usize) {
    let waker = noop_waker();
    match workload {
        "membership" => profile_membership(&waker, n),
        "cold" => profile_cold(&waker, n),
        other => panic!("--profile membership|cold, not {other}"),
    }
}

fn profile_membership(waker: &Waker, n: usize) {
    let pubsub = PubSub::<Message>::new();
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let mut subscriptions = [
        pubsub.subscribe(staff::topic_teams()).unwrap(),
        pubsub.subscribe(staff::topic_team(team)).unwrap(),
        pubsub.subscribe(staff::topic_people()).unwrap(),
        pubsub.subscribe(staff::topic_person(person)).unwrap(),
    ];
    let got = membership_loop(waker, &pubsub, &mut subscriptions, n);
    assert_eq!(got, 4 * n);
    println!("membership: {n} broadcasts, {got} deliveries");
}

/// What the profiler counts: `n` membership broadcasts, each drained.
#[inline(never)]
pub(crate) fn membership_loop(
    waker: &Waker,
    pubsub: &PubSub<Message>,
    subscriptions: &mut [Subscription<Message>],
    n: usize,
) -> usize {
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let mut cx = Context::from_waker(waker);
    let mut got = 0;
    for i in 0..n {
        let payload = membership(team, person, i);
        now(
            &mut cx,
            staff::broadcast_team_membership_on(
                pubsub,
                TeamMembershipEvent::TeamPersonAdded,
                payload,
            ),
        )
        .unwrap();
        for subscription in subscriptions.iter_mut() {
            got += usize::from(subscription.try_recv().is_ok());
        }
    }
    got
}

fn profile_cold(waker: &Waker, n: usize) {
    let pubsub = PubSub::<Message>::new();
    let _background: Vec<_> = (0..COLD_BACKGROUND as u64)
        .map(|i| {
            pubsub
                .subscribe(staff::topic_person(id(PEOPLE, i)))
                .unwrap()
        })
        .collect();
    let ids: Vec<Uuid> = (0..4096).map(|i| id(COLD, i)).collect();
    cold_loop(waker, &pubsub, &ids, n);
    println!("cold: {n} broadcasts");
}

/// What the profiler counts: `n` person broadcasts to cold topics.
#[inline(never)]
fn cold_loop(waker: &Waker, pubsub: &PubSub<Message>, ids: &[Uuid], n: usize) {
    let mut cx = Context::from_waker(waker);
    for i in 0..n {
        let person = Person {
            uuid: ids[i % ids.len()],
        };
        now(
            &mut cx,
            staff::broadcast_person_on(pubsub, PersonEvent::Updated, person),
        )
        .unwrap();
    }
}
