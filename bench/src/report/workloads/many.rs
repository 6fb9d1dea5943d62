//! `many_topics`: 100,000 person topics, one subscriber each; person
//! broadcasts to random persons (`staff:people` has no subscriber).

use std::rc::Rc;
use std::sync::Arc;
use std::task::Context;

use staff_pubsub::staff::{self, Message, Person, PersonEvent};
use staff_pubsub::{PubSub, Uuid};
use staff_pubsub_bench::contenders::naive;
use staff_pubsub_bench::support::{id, mix, now, PEOPLE};

use super::Env;
use crate::drains::{floor_inboxes, Drains};
use crate::plan::{Plan, MANY_CAPACITY, MANY_TOPICS};
use crate::rounds::{Contender, Sample};

pub fn contenders(env: &Env, plan: Plan) -> Vec<Contender<'_>> {
    let many = Rc::new(Many::new(plan.many));
    let (for_naive, for_floor) = (Rc::clone(&many), Rc::clone(&many));
    vec![
        Contender::new("ours", move |_| ours(env, &many)),
        Contender::new("naive", move |_| naive(env, &for_naive)),
        Contender::new("floor", move |_| floor(env, &for_floor)),
    ]
}

/// The topics and the broadcasts of the workload, the same for every
/// contender.
struct Many {
    people: Vec<Uuid>,
    /// The person of each broadcast, as an index into `people`.
    targets: Vec<u32>,
    /// Broadcasts each person receives.
    expected: Vec<u64>,
}

impl Many {
    fn new(broadcasts: usize) -> Self {
        let people: Vec<Uuid> = (0..MANY_TOPICS as u64).map(|i| id(PEOPLE, i)).collect();
        let targets: Vec<u32> = (0..broadcasts as u64)
            .map(|i| (mix(i ^ 0x5eed) % MANY_TOPICS as u64) as u32)
            .collect();
        let mut expected = vec![0; MANY_TOPICS];
        for &t in &targets {
            expected[t as usize] += 1;
        }
        Self {
            people,
            targets,
            expected,
        }
    }

    fn receivers(&self) -> usize {
        self.expected.iter().filter(|&&e| e > 0).count()
    }
}

fn ours(env: &Env, many: &Many) -> Sample {
    let pubsub = PubSub::<Message>::builder().capacity(MANY_CAPACITY).build();
    let drains = Drains::new(many.receivers());
    let mut idle = Vec::new();
    for (person, &expected) in many.people.iter().zip(&many.expected) {
        let subscription = pubsub.subscribe(staff::topic_person(*person)).unwrap();
        if expected > 0 {
            drains.spawn(&env.rt, subscription, expected);
        } else {
            idle.push(subscription);
        }
    }
    let (elapsed, lagged) = drains.time(|| {
        let mut cx = Context::from_waker(&env.waker);
        for &t in &many.targets {
            let person = Person {
                uuid: many.people[t as usize],
            };
            let sent = now(
                &mut cx,
                staff::broadcast_person_on(&pubsub, PersonEvent::Updated, person),
            );
            sent.unwrap();
        }
    });
    drop(idle);
    Sample {
        items: many.targets.len() as f64,
        elapsed,
        lagged,
    }
}

fn naive(env: &Env, many: &Many) -> Sample {
    let pubsub = naive::PubSub::new(MANY_CAPACITY);
    let drains = Drains::new(many.receivers());
    let mut idle = Vec::new();
    for (person, &expected) in many.people.iter().zip(&many.expected) {
        let receiver = pubsub.subscribe(naive::topic_person(*person));
        if expected > 0 {
            drains.spawn(&env.rt, receiver, expected);
        } else {
            idle.push(receiver);
        }
    }
    let (elapsed, lagged) = drains.time(|| {
        for &t in &many.targets {
            let person = Person {
                uuid: many.people[t as usize],
            };
            naive::broadcast_person(&pubsub, PersonEvent::Updated, person);
        }
    });
    drop(idle);
    Sample {
        items: many.targets.len() as f64,
        elapsed,
        lagged,
    }
}

/// The floor routes by array index: a person's queue is `inboxes[index]`.
fn floor(env: &Env, many: &Many) -> Sample {
    let drains = Drains::new(many.receivers());
    let inboxes = floor_inboxes(&env.rt, &drains, &many.expected);
    let (elapsed, lagged) = drains.time(|| {
        for &t in &many.targets {
            let person = Person {
                uuid: many.people[t as usize],
            };
            let message = Arc::new(Message::Person(PersonEvent::Updated, person));
            inboxes[t as usize].push(message, MANY_CAPACITY);
        }
    });
    Sample {
        items: many.targets.len() as f64,
        elapsed,
        lagged,
    }
}
