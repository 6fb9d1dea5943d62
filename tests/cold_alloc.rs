//! A broadcast that reaches nobody allocates nothing: one million
//! cold broadcasts on an in-process server, through `PubSub::broadcast` and
//! through a generated `broadcast_*` function, with the counting allocator
//! installed. Its own test binary, with one test; only the test thread's
//! allocations are counted (the harness's own thread may allocate
//! meanwhile on a loaded machine).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use staff_pubsub::staff::{self, Team, TeamEvent};
use staff_pubsub::{PubSub, Uuid};
use staff_pubsub_count_alloc::{peak_bytes_on_this_thread, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const BROADCASTS: u64 = 1_000_000;

/// Polls a future that must be ready at once.
fn ready<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-process broadcast is ready at once"),
    }
}

#[test]
fn a_million_cold_broadcasts_allocate_nothing() {
    let pubsub: PubSub<staff::Message> = PubSub::new();
    // Someone listens, elsewhere: the registry is not empty.
    let _elsewhere = pubsub
        .subscribe(staff::topic_department(Uuid::from_u128(1)))
        .expect("subscribed");
    let topics = [staff::topic_teams(), staff::topic_team(Uuid::from_u128(2))];
    let team = Team {
        uuid: Uuid::from_u128(2),
        name: None,
        department_uuid: None,
    };
    // Warm up: lazily made statics (tracing's callsite registration) are
    // not the broadcast's.
    ready(pubsub.broadcast(
        topics,
        staff::Message::Team(TeamEvent::Created, team.clone()),
    ))
    .expect("sent");
    ready(staff::broadcast_team_on(
        &pubsub,
        TeamEvent::Created,
        team.clone(),
    ))
    .expect("sent");

    let (peak, ()) = peak_bytes_on_this_thread(|| {
        for _ in 0..BROADCASTS {
            let message = staff::Message::Team(TeamEvent::Created, team.clone());
            ready(pubsub.broadcast(topics, message)).expect("sent");
        }
    });
    assert_eq!(peak, 0, "PubSub::broadcast allocated");

    let (peak, ()) = peak_bytes_on_this_thread(|| {
        for _ in 0..BROADCASTS {
            ready(staff::broadcast_team_on(
                &pubsub,
                TeamEvent::Created,
                team.clone(),
            ))
            .expect("sent");
        }
    });
    assert_eq!(peak, 0, "a generated broadcast function allocated");
    assert_eq!(pubsub.stats().published, 2 * BROADCASTS + 2);
    assert_eq!(pubsub.stats().delivered, 0);

    // The same broadcast with a subscriber does allocate: the test can
    // fail.
    let _listener = pubsub.subscribe(staff::topic_teams()).expect("subscribed");
    let (peak, ()) = peak_bytes_on_this_thread(|| {
        ready(staff::broadcast_team_on(
            &pubsub,
            TeamEvent::Created,
            team.clone(),
        ))
        .expect("sent");
    });
    assert!(peak > 0, "a delivered broadcast allocates its message");
}
