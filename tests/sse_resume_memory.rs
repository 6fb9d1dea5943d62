//! Browsers that resume from far back and do not read cost what stalled
//! live browsers cost: a resume holds at most its
//! subscription's capacity of replayed entries, fetching the next page of
//! the log only as its client reads, instead of its whole range. Over real
//! HTTP on loopback, against the in-memory log; its own binary, as it
//! installs the counting allocator.

mod web;

use axum::Router;
use staff_pubsub::sse::SseBridge;
use staff_pubsub::staff::{self, Message, Team, TeamEvent};
use staff_pubsub::{PubSub, Retention, Uuid};
use staff_pubsub_tests::memory_log::MemoryLog;
use staff_pubsub_tests::within;
use web::SseClient;

#[global_allocator]
static ALLOCATOR: staff_pubsub_count_alloc::Counting = staff_pubsub_count_alloc::Counting;

/// Entries in the log, each of about [`NAME`] bytes.
const ENTRIES: u64 = 300;
/// The size of each entry's team name: 30 MB of log in all.
const NAME: usize = 100 * 1024;
/// Browsers that resume from the first entry and do not read.
const CLIENTS: usize = 8;
/// The queue capacity of a subscription: a resume's page.
const CAPACITY: usize = 8;
/// The server's extra heap while the clients resume: their pages (8 x 8
/// entries of 100 KB, 6.4 MB) and what the streams have encoded, with
/// room to spare; their whole ranges would be 8 x 299 entries, 240 MB.
const BOUND: isize = 20 << 20;

fn team(n: u64) -> Team {
    let mut name = n.to_string();
    name.push(' ');
    name.push_str(&"n".repeat(NAME));
    Team {
        uuid: Uuid::from_u128(u128::from(n)),
        name: Some(name),
        department_uuid: None,
    }
}

#[test]
fn resumes_that_are_not_read_hold_their_capacity_not_their_range() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let log = MemoryLog::<Message>::new(Retention::entries(10_000));
    let (pubsub, addr) = runtime.block_on(async {
        let pubsub = PubSub::builder()
            .node_name("a")
            .capacity(CAPACITY)
            .build_with(log.connect())
            .await
            .expect("attach to the memory log");
        let bridge = SseBridge::new(pubsub.clone(), staff::parse_topic, Message::event_name);
        let addr = web::serve(Router::new().route("/events", bridge.route())).await;
        for n in 1..=ENTRIES {
            staff::broadcast_team_on(&pubsub, TeamEvent::Created, team(n))
                .await
                .unwrap();
        }
        let last = log.position(ENTRIES);
        within("the node to read the log", async {
            while pubsub.log_position() != last {
                tokio::task::yield_now().await;
            }
        })
        .await;
        (pubsub, addr)
    });
    let first = log.position(1).unwrap().to_string();

    let (peak, stalled) = staff_pubsub_count_alloc::peak_bytes(|| {
        runtime.block_on(async {
            let mut stalled = Vec::new();
            for _ in 0..CLIENTS {
                let headers = [("last-event-id", first.as_str())];
                stalled.push(
                    SseClient::stalled_with(addr, "/events?topic=staff:teams", &headers).await,
                );
            }
            // Every resume has read its first page (what a resume holds
            // at once after the change; its whole range before).
            within("every resume's first page", async {
                while pubsub.stats().subscriptions < CLIENTS
                    || log.replayed_entries() < (CLIENTS * CAPACITY) as u64
                {
                    tokio::task::yield_now().await;
                }
            })
            .await;
            stalled
        })
    });
    eprintln!(
        "peak extra heap: {} KiB; {} entries replayed in {} pages",
        peak / 1024,
        log.replayed_entries(),
        log.replays()
    );
    assert!(
        peak < BOUND,
        "the server's heap grew by {} MiB for {CLIENTS} resumes that do not read \
         ({ENTRIES} entries of {NAME} bytes in the log, capacity {CAPACITY})",
        peak >> 20
    );

    // A client that reads again gets the rest of its range, page by page,
    // in order, then live messages.
    runtime.block_on(async {
        let mut stalled = stalled.into_iter();
        let mut client = SseClient::from_stream(stalled.next().expect("a client")).await;
        assert_eq!(client.status, 200);
        let ready = client.expect().await;
        assert_eq!(ready.event, "ready", "{ready:.200?}");
        assert_eq!(ready.json()["resumed"], true);
        for n in 2..=ENTRIES {
            let event = client.expect().await;
            assert_eq!(event.event, "team_created", "entry {n}: {event:.200?}");
            assert_eq!(event.id, log.position(n).unwrap().to_string());
        }
        staff::broadcast_team_on(&pubsub, TeamEvent::Created, team(ENTRIES + 1))
            .await
            .unwrap();
        let live = client.expect().await;
        assert_eq!(live.id, log.position(ENTRIES + 1).unwrap().to_string());
    });
}
