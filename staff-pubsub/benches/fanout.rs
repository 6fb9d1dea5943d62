//! Single-threaded micro-benchmarks of the hot path, with criterion:
//! one broadcast and the drain of every copy it queued, on one thread.
//!
//! ```text
//! cargo bench -p staff-pubsub --bench fanout
//! cargo bench -p staff-pubsub --bench fanout -- --save-baseline before   # then change, then
//! cargo bench -p staff-pubsub --bench fanout -- --baseline before
//! ```
//!
//! These isolate the instructions of a broadcast (hashing, lookups, queue
//! pushes, counters) from the cross-core effects that the report program
//! (`cargo run --release --example bench_report`) measures with concurrent
//! subscribers. Contenders as in the report: `ours` (the generated stock
//! functions), `naive` (String topics in a `DashMap` of tokio broadcast
//! channels) and `floor` (the runtime's own queues fed directly).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use dashmap::DashMap;
use staff_pubsub::staff::{
    self, Message, Person, PersonEvent, TeamMembership, TeamMembershipEvent,
};
use staff_pubsub::{PubSub, Subscription, Uuid};
use tokio::sync::broadcast;

// What the runtime's inbox module names as `crate::RecvError`.
use staff_pubsub::RecvError;

/// The runtime's own per-subscription queue, compiled from its source.
// Its unit tests are compiled out here: `cfg(test)` without the test harness.
#[allow(dead_code, unused_imports)]
#[path = "../src/inbox.rs"]
mod inbox;

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn now<F: Future>(cx: &mut Context<'_>, future: F) -> F::Output {
    match pin!(future).poll(cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-process broadcast was not ready at once"),
    }
}

const TEAM: Uuid = Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0001);
const PERSON: Uuid = Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0002);

fn membership(n: u64) -> TeamMembership {
    TeamMembership {
        uuid: Uuid::from_u64_pair(0x0192_0000_0000_7000, n),
        team_uuid: TEAM,
        staff_person_uuid: PERSON,
    }
}

/// Person ids nobody subscribes to, and 10,000 that somebody does.
fn cold_ids() -> Vec<Uuid> {
    (0..4096_u64)
        .map(|n| Uuid::from_u64_pair(0xc01d, n))
        .collect()
}

fn background(n: u64) -> Uuid {
    Uuid::from_u64_pair(0xbac0, n)
}

fn naive_topics_membership(payload: &TeamMembership) -> [String; 4] {
    [
        "staff:teams".to_owned(),
        format!("staff:team:{}", payload.team_uuid),
        "staff:people".to_owned(),
        format!("staff:person:{}", payload.staff_person_uuid),
    ]
}

type Naive = DashMap<String, broadcast::Sender<Arc<Message>>>;

fn naive_broadcast(naive: &Naive, topics: &[String], message: Message) {
    let message = Arc::new(message);
    for topic in topics {
        if let Some(sender) = naive.get(topic) {
            let _ = sender.send(Arc::clone(&message));
        }
    }
}

fn naive_subscribe(naive: &Naive, topic: String) -> broadcast::Receiver<Arc<Message>> {
    naive
        .entry(topic)
        .or_insert_with(|| broadcast::channel(1024).0)
        .subscribe()
}

fn membership_fanout(c: &mut Criterion) {
    let waker = Waker::from(Arc::new(Noop));
    let mut group = c.benchmark_group("membership_fanout");

    let pubsub = PubSub::<Message>::new();
    let mut subscriptions: Vec<Subscription<Message>> = [
        staff::topic_teams(),
        staff::topic_team(TEAM),
        staff::topic_people(),
        staff::topic_person(PERSON),
    ]
    .into_iter()
    .map(|topic| pubsub.subscribe(topic).unwrap())
    .collect();
    let mut n = 0;
    group.bench_function("ours", |b| {
        let mut cx = Context::from_waker(&waker);
        b.iter(|| {
            n += 1;
            now(
                &mut cx,
                staff::broadcast_team_membership_on(
                    &pubsub,
                    TeamMembershipEvent::TeamPersonAdded,
                    membership(n),
                ),
            )
            .unwrap();
            for subscription in &mut subscriptions {
                black_box(subscription.try_recv().unwrap());
            }
        });
    });

    let naive = Naive::new();
    let mut receivers: Vec<_> = naive_topics_membership(&membership(0))
        .into_iter()
        .map(|topic| naive_subscribe(&naive, topic))
        .collect();
    group.bench_function("naive", |b| {
        b.iter(|| {
            n += 1;
            let payload = membership(n);
            let topics = naive_topics_membership(&payload);
            naive_broadcast(
                &naive,
                &topics,
                Message::TeamMembership(TeamMembershipEvent::TeamPersonAdded, payload),
            );
            for receiver in &mut receivers {
                black_box(receiver.try_recv().unwrap());
            }
        });
    });

    let inboxes: Vec<inbox::Inbox<Message>> = (0..4).map(|_| inbox::Inbox::new()).collect();
    group.bench_function("floor", |b| {
        b.iter(|| {
            n += 1;
            let message = Arc::new(Message::TeamMembership(
                TeamMembershipEvent::TeamPersonAdded,
                membership(n),
            ));
            for inbox in &inboxes {
                inbox.push(Arc::clone(&message), 1024);
            }
            for inbox in &inboxes {
                black_box(inbox.try_take().unwrap().unwrap());
            }
        });
    });
    group.finish();
}

fn cold_topic(c: &mut Criterion) {
    let waker = Waker::from(Arc::new(Noop));
    let ids = cold_ids();
    let mut group = c.benchmark_group("cold_topic");

    let pubsub = PubSub::<Message>::new();
    let _background: Vec<_> = (0..10_000)
        .map(|n| {
            pubsub
                .subscribe(staff::topic_person(background(n)))
                .unwrap()
        })
        .collect();
    let mut i = 0;
    group.bench_function("ours", |b| {
        let mut cx = Context::from_waker(&waker);
        b.iter(|| {
            i = (i + 1) & 4095;
            let person = Person { uuid: ids[i] };
            now(
                &mut cx,
                staff::broadcast_person_on(&pubsub, PersonEvent::Updated, person),
            )
            .unwrap();
        });
    });

    // The runtime's synchronous path with the same topics: what the
    // generated async wrapper adds on top of the registry.
    group.bench_function("ours_local_broadcast", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let person = Person { uuid: ids[i] };
            let topics = [staff::topic_people(), staff::topic_person(person.uuid)];
            pubsub.local_broadcast(&topics, Message::Person(PersonEvent::Updated, person))
        });
    });

    let naive = Naive::new();
    let _receivers: Vec<_> = (0..10_000)
        .map(|n| naive_subscribe(&naive, format!("staff:person:{}", background(n))))
        .collect();
    group.bench_function("naive", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let person = Person { uuid: ids[i] };
            let topics = [
                "staff:people".to_owned(),
                format!("staff:person:{}", person.uuid),
            ];
            naive_broadcast(
                &naive,
                &topics,
                Message::Person(PersonEvent::Updated, person),
            );
        });
    });
    group.finish();
}

criterion_group!(benches, membership_fanout, cold_topic);
criterion_main!(benches);
