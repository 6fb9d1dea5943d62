//! `membership_fanout`: team membership broadcasts, each reaching the two
//! shared collection topics and its team's and person's topics.

use std::sync::Arc;
use std::task::Context;
use std::time::Instant;

use ractor::Actor;
use staff_pubsub::staff::{self, Message, TeamMembershipEvent};
use staff_pubsub::PubSub;
use staff_pubsub_bench::contenders::{naive, ractor_pg};
use staff_pubsub_bench::support::{id, membership, now, Countdown, PEOPLE, TEAMS};

use super::Env;
use crate::drains::{floor_inboxes, Drains};
use crate::plan::{room_for, Plan};
use crate::rounds::{Contender, Sample};

pub fn contenders(env: &Env, plan: Plan) -> Vec<Contender<'_>> {
    let n = plan.membership;
    vec![
        Contender::new("ours", move |_| ours(env, 1, n)),
        Contender::new("naive", move |_| naive(env, 1, n)),
        Contender::new("floor", move |_| floor(env, n)),
        Contender::new("ractor_pg", move |round| ractor_pg(env, n, round)),
    ]
}

/// The membership fan-out with `publishers` publisher threads, each on its
/// own team and person: every publisher's broadcasts reach the two shared
/// collection topics and its own two entity topics.
pub fn ours(env: &Env, publishers: usize, per_publisher: usize) -> Sample {
    let total = (publishers * per_publisher) as u64;
    let pubsub = PubSub::<Message>::builder()
        .capacity(room_for(total as usize))
        .build();
    let drains = Drains::new(2 + 2 * publishers);
    drains.spawn(
        &env.rt,
        pubsub.subscribe(staff::topic_teams()).unwrap(),
        total,
    );
    drains.spawn(
        &env.rt,
        pubsub.subscribe(staff::topic_people()).unwrap(),
        total,
    );
    for p in 0..publishers as u64 {
        let (team, person) = (id(TEAMS, p), id(PEOPLE, p));
        let expected = per_publisher as u64;
        drains.spawn(
            &env.rt,
            pubsub.subscribe(staff::topic_team(team)).unwrap(),
            expected,
        );
        drains.spawn(
            &env.rt,
            pubsub.subscribe(staff::topic_person(person)).unwrap(),
            expected,
        );
    }
    let (elapsed, lagged) = drains.time(|| {
        std::thread::scope(|s| {
            for p in 0..publishers as u64 {
                let pubsub = &pubsub;
                let waker = &env.waker;
                s.spawn(move || {
                    let mut cx = Context::from_waker(waker);
                    let (team, person) = (id(TEAMS, p), id(PEOPLE, p));
                    for n in 0..per_publisher {
                        let payload = membership(team, person, n);
                        let sent = now(
                            &mut cx,
                            staff::broadcast_team_membership_on(
                                pubsub,
                                TeamMembershipEvent::TeamPersonAdded,
                                payload,
                            ),
                        );
                        sent.unwrap();
                    }
                });
            }
        });
    });
    Sample {
        items: total as f64,
        elapsed,
        lagged,
    }
}

pub fn naive(env: &Env, publishers: usize, per_publisher: usize) -> Sample {
    let total = (publishers * per_publisher) as u64;
    let pubsub = naive::PubSub::new(room_for(total as usize));
    let drains = Drains::new(2 + 2 * publishers);
    drains.spawn(&env.rt, pubsub.subscribe(naive::topic_teams()), total);
    drains.spawn(&env.rt, pubsub.subscribe(naive::topic_people()), total);
    for p in 0..publishers as u64 {
        let (team, person) = (id(TEAMS, p), id(PEOPLE, p));
        let expected = per_publisher as u64;
        drains.spawn(&env.rt, pubsub.subscribe(naive::topic_team(team)), expected);
        drains.spawn(
            &env.rt,
            pubsub.subscribe(naive::topic_person(person)),
            expected,
        );
    }
    let (elapsed, lagged) = drains.time(|| {
        std::thread::scope(|s| {
            for p in 0..publishers as u64 {
                let pubsub = &pubsub;
                s.spawn(move || {
                    let (team, person) = (id(TEAMS, p), id(PEOPLE, p));
                    for n in 0..per_publisher {
                        naive::broadcast_team_membership(
                            pubsub,
                            TeamMembershipEvent::TeamPersonAdded,
                            membership(team, person, n),
                        );
                    }
                });
            }
        });
    });
    Sample {
        items: total as f64,
        elapsed,
        lagged,
    }
}

/// The floor of the membership fan-out: the four queues, fed directly.
fn floor(env: &Env, n: usize) -> Sample {
    let capacity = room_for(n);
    let drains = Drains::new(4);
    let inboxes = floor_inboxes(&env.rt, &drains, &[n as u64; 4]);
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let (elapsed, lagged) = drains.time(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..n {
                    let message = Arc::new(Message::TeamMembership(
                        TeamMembershipEvent::TeamPersonAdded,
                        membership(team, person, i),
                    ));
                    for inbox in &inboxes {
                        inbox.push(Arc::clone(&message), capacity);
                    }
                }
            });
        });
    });
    Sample {
        items: n as f64,
        elapsed,
        lagged,
    }
}

/// One actor per topic, in a process-group scope of its own per round.
fn ractor_pg(env: &Env, n: usize, round: u64) -> Sample {
    let scope = format!("bench-membership-{round}");
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let groups = [
        naive::topic_teams(),
        naive::topic_team(team),
        naive::topic_people(),
        naive::topic_person(person),
    ];
    let ready = Countdown::new(groups.len());
    let done = Countdown::new(groups.len());
    let actors: Vec<_> = env.rt.block_on(async {
        let mut actors = Vec::new();
        for group in &groups {
            let count = ractor_pg::Count {
                got: 0,
                expected: n as u64,
                ready: Arc::clone(&ready),
                done: Arc::clone(&done),
            };
            let (actor, handle) = Actor::spawn(None, ractor_pg::Counter, count).await.unwrap();
            ractor::pg::join_scoped(scope.clone(), group.clone(), vec![actor.get_cell()]);
            actors.push((actor, handle));
        }
        actors
    });
    ready.wait();
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..n {
                let payload = membership(team, person, i);
                let groups = [
                    naive::topic_teams(),
                    naive::topic_team(payload.team_uuid),
                    naive::topic_people(),
                    naive::topic_person(payload.staff_person_uuid),
                ];
                ractor_pg::broadcast(
                    &scope,
                    &groups,
                    Message::TeamMembership(TeamMembershipEvent::TeamPersonAdded, payload),
                );
            }
        });
    });
    done.wait();
    let elapsed = start.elapsed();
    env.rt.block_on(async {
        for (actor, handle) in actors {
            actor.stop(None);
            let _ = handle.await;
        }
    });
    Sample {
        items: n as f64,
        elapsed,
        lagged: 0,
    }
}
