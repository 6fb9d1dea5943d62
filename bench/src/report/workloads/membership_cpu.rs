//! `membership_cpu`: the membership fan-out on one thread, publish then
//! drain inline (each broadcast followed by taking its four copies), timed
//! by the thread's CPU clock ([`crate::cpu::thread_cpu`]) rather than the
//! wall clock: the CPU cost of a broadcast and its drain, without the
//! cross-thread wake-ups that the threaded `membership_fanout` also
//! measures. `membership_cpu_vs_floor_ratio` is ours / floor here.

use std::hint::black_box;
use std::sync::Arc;

use staff_pubsub::staff::{self, Message, TeamMembershipEvent};
use staff_pubsub::PubSub;
use staff_pubsub_bench::contenders::floor::Inbox;
use staff_pubsub_bench::contenders::naive;
use staff_pubsub_bench::support::{id, membership, PEOPLE, TEAMS};

use super::Env;
use crate::cpu::thread_cpu;
use crate::plan::{Plan, CAPACITY};
use crate::profile::membership_loop;
use crate::rounds::{Contender, Sample};

pub fn contenders(env: &Env, plan: Plan) -> Vec<Contender<'_>> {
    let n = plan.membership_cpu;
    vec![
        Contender::new("ours", move |_| ours(env, n)),
        Contender::new("naive", move |_| naive(n)),
        Contender::new("floor", move |_| floor(n)),
    ]
}

/// `n` broadcasts and their `4 n` copies, on the CPU clock.
fn sample(n: usize, run: impl FnOnce()) -> Sample {
    let start = thread_cpu();
    run();
    Sample {
        items: n as f64,
        elapsed: thread_cpu() - start,
        lagged: 0,
    }
}

/// The profile's loop (`--profile membership`, the one callgrind counts).
fn ours(env: &Env, n: usize) -> Sample {
    let pubsub = PubSub::<Message>::new();
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let mut subscriptions = [
        pubsub.subscribe(staff::topic_teams()).unwrap(),
        pubsub.subscribe(staff::topic_team(team)).unwrap(),
        pubsub.subscribe(staff::topic_people()).unwrap(),
        pubsub.subscribe(staff::topic_person(person)).unwrap(),
    ];
    let mut got = 0;
    let sampled = sample(n, || {
        got = membership_loop(&env.waker, &pubsub, &mut subscriptions, n);
    });
    assert_eq!(got, 4 * n);
    sampled
}

fn naive(n: usize) -> Sample {
    let pubsub = naive::PubSub::new(CAPACITY);
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let mut receivers = [
        pubsub.subscribe(naive::topic_teams()),
        pubsub.subscribe(naive::topic_team(team)),
        pubsub.subscribe(naive::topic_people()),
        pubsub.subscribe(naive::topic_person(person)),
    ];
    let mut got = 0;
    let sampled = sample(n, || {
        for i in 0..n {
            naive::broadcast_team_membership(
                &pubsub,
                TeamMembershipEvent::TeamPersonAdded,
                membership(team, person, i),
            );
            for receiver in &mut receivers {
                got += usize::from(black_box(receiver.try_recv()).is_ok());
            }
        }
    });
    assert_eq!(got, 4 * n);
    sampled
}

/// The four queues fed directly: one `Arc` and four pushes per broadcast,
/// then four takes.
fn floor(n: usize) -> Sample {
    let inboxes: [Inbox<Message>; 4] = std::array::from_fn(|_| Inbox::new());
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let mut got = 0;
    let sampled = sample(n, || {
        for i in 0..n {
            let message = Arc::new(Message::TeamMembership(
                TeamMembershipEvent::TeamPersonAdded,
                membership(team, person, i),
            ));
            for inbox in &inboxes {
                inbox.push(Arc::clone(&message), CAPACITY);
            }
            for inbox in &inboxes {
                got += usize::from(matches!(black_box(inbox.try_take()), Some(Ok(_))));
            }
        }
    });
    assert_eq!(got, 4 * n);
    sampled
}
