//! Assertions for tests of code that broadcasts, in the style of ExUnit's
//! `assert_receive` and `refute_receive` (feature `testing`).
//!
//! Pair them with a spec's generated `scope` function, which runs a test
//! against its own isolated server while the code under test calls the
//! generated `broadcast_*` functions:
//!
//! ```
//! use staff_pubsub::staff::{self, Message, Team, TeamEvent};
//! use staff_pubsub::{assert_receive, refute_receive, PubSub, Uuid};
//!
//! /// The code under test: it knows nothing of the test's server.
//! async fn create_team(name: &str) -> Team {
//!     let team = Team { uuid: Uuid::now_v7(), name: Some(name.into()), department_uuid: None };
//!     staff::broadcast_team(TeamEvent::Created, team.clone()).await.unwrap();
//!     team
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! staff::scope(PubSub::new(), async {
//!     let mut teams = staff::subscribe(staff::topic_teams()).unwrap();
//!     let created = create_team("Squad A").await;
//!
//!     // Waits up to DEFAULT_RECEIVE_TIMEOUT; gives the bound values back.
//!     let team = assert_receive!(teams, Message::Team(TeamEvent::Created, team) => team.clone());
//!     assert_eq!(team, created);
//!     // Nothing else comes within DEFAULT_REFUTE_TIMEOUT.
//!     refute_receive!(teams, Message::Team(..));
//! })
//! .await;
//! # }
//! ```

use std::fmt::Debug;
use std::time::Duration;

use crate::loom::sync::Arc;
use crate::{RecvError, Subscription};

/// How long [`assert_receive!`](crate::assert_receive) waits unless told:
/// generous, as it returns as soon as the message comes.
pub const DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long [`refute_receive!`](crate::refute_receive) waits unless told:
/// every passing refutation waits this long.
pub const DEFAULT_REFUTE_TIMEOUT: Duration = Duration::from_millis(100);

/// Receives until `matcher` accepts a message or `timeout` passes. What
/// arrived meanwhile (messages that did not match, lag, gaps) is consumed,
/// and listed in the panic message. What `assert_receive!` expands to.
///
/// # Panics
///
/// When no matching message arrives within `timeout`.
pub async fn assert_receive<M: Debug, T>(
    subscription: &mut Subscription<M>,
    timeout: Duration,
    pattern: &str,
    mut matcher: impl FnMut(&Arc<M>) -> Option<T>,
) -> T {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, subscription.recv()).await {
            Ok(Ok(message)) => match matcher(&message) {
                Some(value) => return value,
                None => seen.push(format!("{message:?}")),
            },
            Ok(Err(RecvError::Closed)) => {
                seen.push(format!("{:?}", RecvError::Closed));
                break;
            }
            Ok(Err(error)) => seen.push(format!("{error:?}")),
            Err(_elapsed) => break,
        }
    }
    panic!(
        "assert_receive!: no message matching `{pattern}` within {timeout:?}; {}",
        describe(&seen)
    );
}

/// Receives for `timeout` and fails if a message accepted by `matcher`
/// arrives. Other messages are consumed. What `refute_receive!` expands to.
///
/// # Panics
///
/// When a matching message arrives within `timeout`.
pub async fn refute_receive<M: Debug>(
    subscription: &mut Subscription<M>,
    timeout: Duration,
    pattern: &str,
    mut matcher: impl FnMut(&Arc<M>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while let Ok(received) = tokio::time::timeout_at(deadline, subscription.recv()).await {
        match received {
            Ok(message) if matcher(&message) => panic!(
                "refute_receive!: received a message matching `{pattern}` within {timeout:?}: {message:?}"
            ),
            Ok(_) | Err(RecvError::Lagged(_) | RecvError::Gap(_)) => {}
            // Nothing more can come: the wait still lasts the whole
            // timeout, as documented.
            Err(_closed) => {
                tokio::time::sleep_until(deadline).await;
                return;
            }
        }
    }
}

fn describe(seen: &[String]) -> String {
    if seen.is_empty() {
        return "nothing arrived".to_owned();
    }
    format!("arrived instead: [{}]", seen.join(", "))
}

/// Asserts that a message matching a pattern arrives on a subscription
/// within a timeout (default
/// [`DEFAULT_RECEIVE_TIMEOUT`](crate::testing::DEFAULT_RECEIVE_TIMEOUT)),
/// as ExUnit's `assert_receive`. Used in async code: it awaits.
///
/// ```text
/// assert_receive!(subscription, pattern)                      -> Arc<M>, the message
/// assert_receive!(subscription, pattern if guard)             -> Arc<M>
/// assert_receive!(subscription, pattern => value)             -> value (owned)
/// assert_receive!(subscription, pattern [if guard] [=> value], timeout)
/// ```
///
/// The pattern matches the message (`M`, through the `Arc`), so bindings
/// are references; `=> value` may use them to build an owned value.
/// Messages that do not match are consumed; if none matches in time, the
/// test panics with what did arrive. Feature `testing`; see
/// [`testing`](crate::testing).
#[macro_export]
macro_rules! assert_receive {
    ($subscription:expr, $pattern:pat $(if $guard:expr)? => $value:expr, $timeout:expr $(,)?) => {
        $crate::testing::assert_receive(
            &mut $subscription,
            $timeout,
            ::core::stringify!($pattern $(if $guard)?),
            |message| match &**message {
                #[allow(unused_variables)]
                $pattern $(if $guard)? => ::core::option::Option::Some($value),
                _ => ::core::option::Option::None,
            },
        )
        .await
    };
    ($subscription:expr, $pattern:pat $(if $guard:expr)? => $value:expr $(,)?) => {
        $crate::assert_receive!($subscription, $pattern $(if $guard)? => $value, $crate::testing::DEFAULT_RECEIVE_TIMEOUT)
    };
    ($subscription:expr, $pattern:pat $(if $guard:expr)?, $timeout:expr $(,)?) => {
        $crate::testing::assert_receive(
            &mut $subscription,
            $timeout,
            ::core::stringify!($pattern $(if $guard)?),
            |message| match &**message {
                #[allow(unused_variables)]
                $pattern $(if $guard)? => ::core::option::Option::Some(::std::sync::Arc::clone(message)),
                _ => ::core::option::Option::None,
            },
        )
        .await
    };
    ($subscription:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {
        $crate::assert_receive!($subscription, $pattern $(if $guard)?, $crate::testing::DEFAULT_RECEIVE_TIMEOUT)
    };
}

/// Asserts that no message matching a pattern arrives on a subscription
/// within a timeout (default
/// [`DEFAULT_REFUTE_TIMEOUT`](crate::testing::DEFAULT_REFUTE_TIMEOUT)), as
/// ExUnit's `refute_receive`: it waits the whole timeout. Messages that do
/// not match are consumed. Feature `testing`.
///
/// ```text
/// refute_receive!(subscription, pattern [if guard])
/// refute_receive!(subscription, pattern [if guard], timeout)
/// ```
#[macro_export]
macro_rules! refute_receive {
    ($subscription:expr, $pattern:pat $(if $guard:expr)?, $timeout:expr $(,)?) => {
        $crate::testing::refute_receive(
            &mut $subscription,
            $timeout,
            ::core::stringify!($pattern $(if $guard)?),
            |message| match &**message {
                #[allow(unused_variables)]
                $pattern $(if $guard)? => true,
                _ => false,
            },
        )
        .await
    };
    ($subscription:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {
        $crate::refute_receive!($subscription, $pattern $(if $guard)?, $crate::testing::DEFAULT_REFUTE_TIMEOUT)
    };
}
