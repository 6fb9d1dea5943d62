//! Single-threaded micro-benchmarks of the hot path, with criterion:
//! one broadcast and the drain of every copy it queued, on one thread.
//!
//! ```text
//! cargo bench -p staff-pubsub-bench --bench fanout
//! cargo bench -p staff-pubsub-bench --bench fanout -- --save-baseline before   # then change, then
//! cargo bench -p staff-pubsub-bench --bench fanout -- --baseline before
//! ```
//!
//! These isolate the instructions of a broadcast (hashing, lookups, queue
//! pushes, counters) from the cross-core effects that the report program
//! (`cargo run --release -p staff-pubsub-bench`) measures with concurrent
//! subscribers. Contenders as in the report: `ours` (the generated stock
//! functions), `naive` (String topics in a `DashMap` of tokio broadcast
//! channels) and `floor` (the runtime's own queues fed directly).

use std::hint::black_box;
use std::sync::Arc;
use std::task::Context;

use criterion::{criterion_group, criterion_main, Criterion};
use staff_pubsub::staff::{
    self, Message, Person, PersonEvent, TeamMembership, TeamMembershipEvent,
};
use staff_pubsub::{PubSub, Subscription, Uuid};
use staff_pubsub_bench::contenders::{floor::Inbox, naive};
use staff_pubsub_bench::support::{noop_waker, now};

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

fn membership_fanout(c: &mut Criterion) {
    let waker = noop_waker();
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

    let hand = naive::PubSub::new(1024);
    let mut receivers: Vec<_> = [
        naive::topic_teams(),
        naive::topic_team(TEAM),
        naive::topic_people(),
        naive::topic_person(PERSON),
    ]
    .into_iter()
    .map(|topic| hand.subscribe(topic))
    .collect();
    group.bench_function("naive", |b| {
        b.iter(|| {
            n += 1;
            naive::broadcast_team_membership(
                &hand,
                TeamMembershipEvent::TeamPersonAdded,
                membership(n),
            );
            for receiver in &mut receivers {
                black_box(receiver.try_recv().unwrap());
            }
        });
    });

    let inboxes: Vec<Inbox<Message>> = (0..4).map(|_| Inbox::new()).collect();
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
    let waker = noop_waker();
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

    let hand = naive::PubSub::new(1024);
    let _receivers: Vec<_> = (0..10_000)
        .map(|n| hand.subscribe(naive::topic_person(background(n))))
        .collect();
    group.bench_function("naive", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let person = Person { uuid: ids[i] };
            naive::broadcast_person(&hand, PersonEvent::Updated, person);
        });
    });
    group.finish();
}

criterion_group!(benches, membership_fanout, cold_topic);
criterion_main!(benches);
