//! `cold_topic`: person broadcasts to ids nobody subscribes to (neither
//! the person's topic nor `staff:people` has a subscriber), in a registry
//! that holds 10,000 other person topics.

use std::rc::Rc;
use std::task::Context;
use std::time::Instant;

use staff_pubsub::staff::{self, Message, Person, PersonEvent};
use staff_pubsub::{PubSub, Uuid};
use staff_pubsub_bench::contenders::naive;
use staff_pubsub_bench::support::{id, now, COLD, PEOPLE};

use super::Env;
use crate::plan::{Plan, CAPACITY, COLD_BACKGROUND};
use crate::rounds::{Contender, Sample};

pub fn contenders(env: &Env, plan: Plan) -> Vec<Contender<'_>> {
    let n = plan.cold;
    let ids: Rc<[Uuid]> = (0..4096).map(|i| id(COLD, i)).collect();
    let naive_ids = Rc::clone(&ids);
    vec![
        Contender::new("ours", move |_| ours(env, n, &ids)),
        Contender::new("naive", move |_| naive(n, &naive_ids)),
    ]
}

fn ours(env: &Env, n: usize, ids: &[Uuid]) -> Sample {
    let pubsub = PubSub::<Message>::new();
    let background: Vec<_> = (0..COLD_BACKGROUND as u64)
        .map(|i| {
            pubsub
                .subscribe(staff::topic_person(id(PEOPLE, i)))
                .unwrap()
        })
        .collect();
    let mut cx = Context::from_waker(&env.waker);
    let mask = ids.len() - 1;
    let start = Instant::now();
    for i in 0..n {
        let person = Person {
            uuid: ids[i & mask],
        };
        let sent = now(
            &mut cx,
            staff::broadcast_person_on(&pubsub, PersonEvent::Updated, person),
        );
        sent.unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(pubsub.stats().delivered, 0);
    drop(background);
    Sample {
        items: n as f64,
        elapsed,
        lagged: 0,
    }
}

fn naive(n: usize, ids: &[Uuid]) -> Sample {
    let pubsub = naive::PubSub::new(CAPACITY);
    let background: Vec<_> = (0..COLD_BACKGROUND as u64)
        .map(|i| pubsub.subscribe(naive::topic_person(id(PEOPLE, i))))
        .collect();
    let mask = ids.len() - 1;
    let start = Instant::now();
    for i in 0..n {
        let person = Person {
            uuid: ids[i & mask],
        };
        naive::broadcast_person(&pubsub, PersonEvent::Updated, person);
    }
    let elapsed = start.elapsed();
    drop(background);
    Sample {
        items: n as f64,
        elapsed,
        lagged: 0,
    }
}
