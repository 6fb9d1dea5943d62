//! `wide_topic`: one topic (`staff:people`), 10,000 subscribers:
//! deliveries per second.

use std::sync::Arc;
use std::task::Context;

use staff_pubsub::staff::{self, Message, Person, PersonEvent};
use staff_pubsub::PubSub;
use staff_pubsub_bench::contenders::naive;
use staff_pubsub_bench::support::{id, now, COLD};

use super::Env;
use crate::drains::{floor_inboxes, Drains};
use crate::plan::{Plan, CAPACITY, WIDE_SUBSCRIBERS};
use crate::rounds::{Contender, Sample};

pub fn contenders(env: &Env, plan: Plan) -> Vec<Contender<'_>> {
    let n = plan.wide;
    vec![
        Contender::new("ours", move |_| ours(env, n)),
        Contender::new("naive", move |_| naive(env, n)),
        Contender::new("floor", move |_| floor(env, n)),
    ]
}

fn ours(env: &Env, n: usize) -> Sample {
    let pubsub = PubSub::<Message>::builder().capacity(CAPACITY).build();
    let drains = Drains::new(WIDE_SUBSCRIBERS);
    for _ in 0..WIDE_SUBSCRIBERS {
        drains.spawn(
            &env.rt,
            pubsub.subscribe(staff::topic_people()).unwrap(),
            n as u64,
        );
    }
    let (elapsed, lagged) = drains.time(|| {
        let mut cx = Context::from_waker(&env.waker);
        for i in 0..n as u64 {
            let person = Person { uuid: id(COLD, i) };
            let sent = now(
                &mut cx,
                staff::broadcast_person_on(&pubsub, PersonEvent::Updated, person),
            );
            sent.unwrap();
        }
    });
    Sample {
        items: (n * WIDE_SUBSCRIBERS) as f64,
        elapsed,
        lagged,
    }
}

fn naive(env: &Env, n: usize) -> Sample {
    let pubsub = naive::PubSub::new(CAPACITY);
    let drains = Drains::new(WIDE_SUBSCRIBERS);
    for _ in 0..WIDE_SUBSCRIBERS {
        drains.spawn(&env.rt, pubsub.subscribe(naive::topic_people()), n as u64);
    }
    let (elapsed, lagged) = drains.time(|| {
        for i in 0..n as u64 {
            let person = Person { uuid: id(COLD, i) };
            naive::broadcast_person(&pubsub, PersonEvent::Updated, person);
        }
    });
    Sample {
        items: (n * WIDE_SUBSCRIBERS) as f64,
        elapsed,
        lagged,
    }
}

fn floor(env: &Env, n: usize) -> Sample {
    let drains = Drains::new(WIDE_SUBSCRIBERS);
    let inboxes = floor_inboxes(&env.rt, &drains, &vec![n as u64; WIDE_SUBSCRIBERS]);
    let (elapsed, lagged) = drains.time(|| {
        for i in 0..n as u64 {
            let message = Arc::new(Message::Person(
                PersonEvent::Updated,
                Person { uuid: id(COLD, i) },
            ));
            for inbox in &inboxes {
                inbox.push(Arc::clone(&message), CAPACITY);
            }
        }
    });
    Sample {
        items: (n * WIDE_SUBSCRIBERS) as f64,
        elapsed,
        lagged,
    }
}
