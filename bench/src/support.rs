//! Helpers of the benchmark loops: a no-op waker for futures that are
//! ready at once, deterministic ids, and a countdown to wait for tasks.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use staff_pubsub::staff::TeamMembership;
use staff_pubsub::Uuid;

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// A waker that does nothing: for polling futures that are ready at once.
pub fn noop_waker() -> Waker {
    Waker::from(Arc::new(Noop))
}

/// Polls a future that is ready at once (our broadcasts without a
/// transport).
///
/// # Panics
///
/// If the future is pending.
pub fn now<F: Future>(cx: &mut Context<'_>, future: F) -> F::Output {
    match pin!(future).poll(cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-process broadcast was not ready at once"),
    }
}

/// A deterministic generator (splitmix64): the same ids and choices for
/// every contender.
pub fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `n`th id of a family of ids.
pub fn id(family: u64, n: u64) -> Uuid {
    let high = mix(family.wrapping_mul(0x1_0000_0001) ^ n);
    let low = mix(high ^ n);
    Uuid::from_u64_pair(high, low)
}

/// The family of team ids.
pub const TEAMS: u64 = 1;
/// The family of person ids.
pub const PEOPLE: u64 = 2;
/// The family of ids nobody subscribes to.
pub const COLD: u64 = 3;
/// The family of membership ids.
pub const MEMBERSHIPS: u64 = 4;

/// The `n`th membership of `person` in `team`.
pub fn membership(team: Uuid, person: Uuid, n: usize) -> TeamMembership {
    TeamMembership {
        uuid: id(MEMBERSHIPS, n as u64),
        team_uuid: team,
        staff_person_uuid: person,
    }
}

/// Counts tasks down to zero; `wait` blocks the calling thread until then.
pub struct Countdown {
    left: Mutex<usize>,
    zero: Condvar,
}

impl Countdown {
    /// A countdown from `count`.
    pub fn new(count: usize) -> Arc<Self> {
        Arc::new(Self {
            left: Mutex::new(count),
            zero: Condvar::new(),
        })
    }

    /// Counts one down.
    pub fn done(&self) {
        let mut left = self.left.lock().unwrap();
        *left -= 1;
        if *left == 0 {
            self.zero.notify_all();
        }
    }

    /// Blocks until the count is zero.
    pub fn wait(&self) {
        let mut left = self.left.lock().unwrap();
        while *left > 0 {
            left = self.zero.wait(left).unwrap();
        }
    }
}
