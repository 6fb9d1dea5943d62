//! A browser that stops reading never holds up the server or the other
//! clients, and the server's memory stays bounded: its subscription's
//! queue drops the oldest messages, and it is told with `resync`.

mod web;

use axum::Router;
use staff_pubsub::sse::SseBridge;
use staff_pubsub::staff::{self, Message, Team, TeamEvent};
use staff_pubsub::{PubSub, Uuid};
use staff_pubsub_tests::within;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use web::SseClient;

#[global_allocator]
static ALLOCATOR: staff_pubsub_count_alloc::Counting = staff_pubsub_count_alloc::Counting;

/// Messages broadcast while one client is stalled.
const MESSAGES: usize = 3_000;
/// Each carries a name of this many bytes: 12 MB in all, far more than the
/// kernel's socket buffers of the stalled connection can absorb.
const NAME: usize = 4_096;
/// The queue capacity of a subscription.
const CAPACITY: usize = 64;
/// The server's extra heap may not exceed this while the stalled client's
/// share grows to 12 MB.
const BOUND: isize = 4 << 20;

#[test]
fn a_stalled_client_holds_up_nobody_and_costs_bounded_memory() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (peak, (stalled, lagged, _server)) =
        staff_pubsub_count_alloc::peak_bytes(|| runtime.block_on(stall()));
    eprintln!("peak extra heap: {} KiB", peak / 1024);
    assert!(
        peak < BOUND,
        "the server's heap grew by {peak} bytes while a stalled client was sent {} bytes",
        MESSAGES * NAME
    );
    assert!(
        lagged > 0,
        "the stalled client's queue never overflowed: the test proves nothing"
    );
    runtime.block_on(resync(stalled));
}

/// Serves a stalled client and a reading one while broadcasting; returns
/// the stalled connection, how many messages the server dropped from full
/// queues, and the server (alive until the end).
async fn stall() -> (TcpStream, u64, PubSub<Message>) {
    let pubsub = PubSub::<Message>::builder().capacity(CAPACITY).build();
    let bridge = SseBridge::new(pubsub.clone(), staff::parse_topic, Message::event_name);
    let addr = web::serve(Router::new().route("/events", bridge.route())).await;
    let path = "/events?topic=staff:teams";

    let stalled = SseClient::stalled(addr, path).await;
    let mut reader = SseClient::open(addr, path, &[]).await;
    assert_eq!(reader.expect().await.event, "ready");
    within("both subscribed", async {
        while pubsub.stats().subscriptions < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    // Each broadcast returns at once, and the reading client receives each
    // one before the next is sent: nothing waits for the stalled one.
    let name = "n".repeat(NAME);
    for i in 0..MESSAGES {
        let team = Team {
            uuid: Uuid::from_u128(i as u128),
            name: Some(name.clone()),
            department_uuid: None,
        };
        within(
            "a broadcast",
            staff::broadcast_team_on(&pubsub, TeamEvent::Created, team),
        )
        .await
        .unwrap();
        let event = reader.expect().await;
        assert_eq!(event.event, "team_created", "message {i}: {event:.200?}");
        assert_eq!(
            event.json()["payload"]["uuid"],
            Uuid::from_u128(i as u128).to_string()
        );
    }
    let lagged = pubsub.stats().lagged;
    (stalled, lagged, pubsub)
}

/// The stalled client reads again: it is told that it missed messages.
async fn resync(mut stalled: TcpStream) {
    // The stalled client reads again: it is told that it missed messages.
    let mut seen = Vec::new();
    within("a resync on the stalled connection", async {
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let n = stalled.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the stalled stream ended");
            seen.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&seen);
            if text.contains("event: resync\n") && text.contains(r#""reason":"lagged""#) {
                break;
            }
            // Keep only the tail, where a split line may be.
            if seen.len() > 256 * 1024 {
                seen.drain(..seen.len() - 1024);
            }
        }
    })
    .await;
}
