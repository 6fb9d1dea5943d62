//! The test kit: `scope` gives a test its own default server while the code
//! under test calls the generated functions, and `assert_receive!` /
//! `refute_receive!` check what arrives. The tests of this binary run in
//! parallel, all on the stock spec's default server, and never see each
//! other's messages.

use std::time::Duration;

use staff_pubsub::staff::{self, Department, DepartmentEvent, Message};
use staff_pubsub::{assert_receive, refute_receive, PubSub, Uuid};

/// The code under test: it broadcasts on the default server.
async fn rename(name: &str) -> Department {
    let department = Department {
        uuid: Uuid::from_u128(7),
        name: Some(name.to_owned()),
    };
    staff::broadcast_department(DepartmentEvent::Updated, department.clone())
        .await
        .unwrap();
    department
}

/// Every test broadcasts to the same topics: only its scope keeps it apart.
async fn isolated(name: &'static str) {
    let pubsub = PubSub::new();
    staff::scope(pubsub.clone(), async move {
        let mut departments = staff::subscribe(staff::topic_departments()).unwrap();
        for _ in 0..20 {
            rename(name).await;
            let got = assert_receive!(departments, Message::Department(_, d) => d.name.clone());
            assert_eq!(got.as_deref(), Some(name), "only this test's own messages");
            tokio::task::yield_now().await;
        }
        refute_receive!(departments, _, Duration::from_millis(20));
    })
    .await;
    assert_eq!(pubsub.stats().published, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_test_one() {
    isolated("one").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_test_two() {
    isolated("two").await;
}

#[tokio::test]
async fn parallel_test_three() {
    isolated("three").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_scoped_task_keeps_its_scope_on_any_worker_thread() {
    let pubsub = PubSub::new();
    let mut watcher = pubsub.subscribe(staff::topic_departments()).unwrap();
    let task = tokio::spawn(staff::scope(pubsub.clone(), async {
        for n in 0..50 {
            rename(&n.to_string()).await;
            tokio::task::yield_now().await;
        }
        staff::server().stats().published
    }));
    assert_eq!(task.await.unwrap(), 50);
    for n in 0..50 {
        let expected = n.to_string();
        assert_receive!(watcher, Message::Department(_, d) if d.name.as_deref() == Some(expected.as_str()));
    }
}

#[tokio::test]
async fn a_task_spawned_inside_a_scope_is_not_in_it() {
    let pubsub = PubSub::new();
    staff::scope(pubsub.clone(), async {
        tokio::spawn(async { rename("outside").await })
            .await
            .unwrap();
    })
    .await;
    assert_eq!(pubsub.stats().published, 0);
}

#[tokio::test]
async fn assert_receive_gives_back_the_message_or_a_value_and_skips_others() {
    let pubsub = PubSub::<Message>::new();
    let mut departments = pubsub.subscribe(staff::topic_departments()).unwrap();
    for name in ["a", "b"] {
        staff::broadcast_department_on(
            &pubsub,
            DepartmentEvent::Created,
            Department {
                uuid: Uuid::nil(),
                name: Some(name.into()),
            },
        )
        .await
        .unwrap();
    }
    // "a" does not match: consumed; "b" does.
    let message =
        assert_receive!(departments, Message::Department(_, d) if d.name.as_deref() == Some("b"));
    assert_eq!(message.event_name(), "department_created");
    assert!(departments.is_empty());
}

#[tokio::test]
#[should_panic(
    expected = "assert_receive!: no message matching `Message::Department(DepartmentEvent::Deleted, _)` within 50ms; arrived instead: [Lagged(1), Department(Updated, Department { uuid: 00000000-0000-0000-0000-000000000007, name: Some(\"x\") })]"
)]
async fn assert_receive_fails_listing_what_arrived() {
    let pubsub = PubSub::<Message>::builder().capacity(1).build();
    let mut departments = pubsub.subscribe(staff::topic_departments()).unwrap();
    staff::scope(pubsub.clone(), async {
        rename("lost").await;
        rename("x").await;
    })
    .await;
    assert_receive!(
        departments,
        Message::Department(DepartmentEvent::Deleted, _),
        Duration::from_millis(50)
    );
}

#[tokio::test]
#[should_panic(expected = "refute_receive!: received a message matching `Message::Department(..)`")]
async fn refute_receive_fails_on_a_match() {
    let pubsub = PubSub::new();
    let mut departments = pubsub.subscribe(staff::topic_departments()).unwrap();
    staff::scope(pubsub, rename("unwanted")).await;
    refute_receive!(departments, Message::Department(..));
}

#[tokio::test]
async fn refute_receive_consumes_other_messages_lags_and_gaps() {
    let pubsub = PubSub::<Message>::builder().capacity(1).build();
    let mut departments = pubsub.subscribe(staff::topic_departments()).unwrap();
    staff::scope(pubsub.clone(), async {
        rename("first").await;
        rename("second").await;
    })
    .await;
    refute_receive!(
        departments,
        Message::Department(DepartmentEvent::Deleted, _)
    );
    assert!(departments.is_empty());
    assert_eq!(
        departments.try_recv(),
        Err(staff_pubsub::TryRecvError::Empty)
    );
}

#[tokio::test]
async fn refute_receive_waits_the_whole_timeout_even_on_a_closed_subscription() {
    let pubsub = PubSub::<Message>::new();
    let mut departments = pubsub.subscribe(staff::topic_departments()).unwrap();
    drop(pubsub);
    let started = std::time::Instant::now();
    refute_receive!(departments, _, Duration::from_millis(80));
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "{:?}",
        started.elapsed()
    );
}
