//! Helpers shared by the integration tests.
#![allow(clippy::missing_panics_doc, clippy::expect_used)]

/// The README's examples, compiled and run as doctests of this crate, which
/// enables the features they use (`redis`, `testing`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub mod child;
pub mod conformance;
pub mod logs;
pub mod memory_log;
pub mod modes;
pub mod nats_server;
pub mod proxy;
pub mod redis_server;

use std::future::Future;
use std::time::Duration;

/// How long a test waits for an event that should come at once. Generous,
/// because CI machines are shared; a passing test never waits this long.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
///
/// # Panics
///
/// When the future does not finish in time: the event never came.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A keyed chat topic for runtime tests: `chat:room:<n as uuid>`.
#[must_use]
pub fn room(n: u128) -> staff_pubsub::Topic {
    staff_pubsub::Topic::keyed("chat:room", staff_pubsub::Uuid::from_u128(n))
}

/// Drains what is queued now: (messages, misses reported).
///
/// # Panics
///
/// On a gap, which these in-process tests never expect.
pub fn drain<M>(subscription: &mut staff_pubsub::Subscription<M>) -> (Vec<std::sync::Arc<M>>, u64) {
    use staff_pubsub::TryRecvError;
    let mut messages = Vec::new();
    let mut missed = 0;
    loop {
        match subscription.try_recv() {
            Ok(message) => messages.push(message),
            Err(TryRecvError::Lagged(n)) => missed += n,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return (messages, missed),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}
