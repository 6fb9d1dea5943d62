//! [`Stats`], the striped counters behind them, the connection state, node
//! names and ids.

use std::cell::Cell;
use std::task::{Context, Poll, Waker};

use crate::loom::sync::atomic::{process, AtomicU64, AtomicUsize, Ordering};
use crate::loom::sync::Mutex;
use crate::registry::Tally;
use crate::transport::Connection;

/// Counters of one server, as read by [`PubSub::stats`](crate::PubSub::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Broadcasts made on this node.
    pub published: u64,
    /// Copies queued for this node's subscribers.
    pub delivered: u64,
    /// Queued copies dropped because a subscriber's queue was full.
    pub lagged: u64,
    /// Live subscriptions.
    pub subscriptions: usize,
    /// Topics with at least one subscription.
    pub topics: usize,
    /// Broadcasts this server took from the engine and dispatched. Live:
    /// those of other nodes. Durable: every entry read from the log, this
    /// node's own broadcasts included. On a server without a transport
    /// linked to one that has it (see the README's "One bus per
    /// application"), 0: the linked server, which receives them, counts
    /// them.
    pub received: u64,
    /// Messages from the wire that were malformed or refused, and skipped.
    pub rejected: u64,
    /// Times subscribers were told of a gap: the transport lost its
    /// connection, restarted its receive task, or dropped messages (a slow
    /// consumer), or, durable, entries were trimmed or the log was lost. A
    /// gap signalled again before the subscribers read the
    /// previous one counts once.
    pub gaps: u64,
    /// Envelopes received from another live server that uses this node's
    /// name (each is also logged at ERROR level, and still delivered).
    pub name_conflicts: u64,
    /// The link to other nodes, as [`PubSub::connection`](crate::PubSub::connection).
    pub connection: Connection,
}

/// The connection state and the tasks waiting for a change of it. Changes
/// are rare (start-up, reconnects), so one lock is plenty.
pub(crate) struct ConnectionCell {
    state: Mutex<(Connection, Vec<Waker>)>,
}

impl ConnectionCell {
    pub(super) fn new(state: Connection) -> Self {
        Self {
            state: Mutex::new((state, Vec::new())),
        }
    }

    pub(crate) fn get(&self) -> Connection {
        self.state.lock().0
    }

    pub(crate) fn set(&self, connection: Connection) {
        let wakers = {
            let mut state = self.state.lock();
            if state.0 == connection {
                return;
            }
            state.0 = connection;
            std::mem::take(&mut state.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    pub(crate) fn poll_until(&self, wanted: Connection, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock();
        if state.0 == wanted {
            return Poll::Ready(());
        }
        if !state.1.iter().any(|waker| waker.will_wake(cx.waker())) {
            state.1.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A node name no other node has: host, process id and a random part.
pub(super) fn unique_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        random_u64() & 0xffff_ffff
    )
}

/// A random number: std's hasher keys are random per process, and the
/// counter and clock make each call differ.
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    static CALLS: process::AtomicU64 = process::AtomicU64::new(0);
    std::collections::hash_map::RandomState::new().hash_one((
        CALLS.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now(),
        std::process::id(),
    ))
}

/// The server's counters. Those that every broadcast moves are striped:
/// each thread adds to its own stripe (on its own cache line) and
/// [`PubSub::stats`](crate::PubSub::stats) sums the stripes, so that publishers on several cores do
/// not contend for one counter.
#[derive(Default)]
pub(crate) struct Counters {
    pub(super) stripes: [Stripe; STRIPES],
    pub(super) subscriptions: AtomicUsize,
    pub(super) received: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) gaps: AtomicU64,
    pub(super) name_conflicts: AtomicU64,
}

/// Stripes of the per-broadcast counters: a power of two.
const STRIPES: usize = 8;

/// Aligned to two cache lines, as the registry's shards.
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Stripe {
    pub(super) published: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) lagged: AtomicU64,
}

thread_local! {
    /// This thread's stripe, given out round-robin on first use.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The next stripe to give out.
static NEXT_STRIPE: process::AtomicUsize = process::AtomicUsize::new(0);

fn stripe_index() -> usize {
    STRIPE.with(|stripe| {
        let mut index = stripe.get();
        if index == usize::MAX {
            index = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
            stripe.set(index);
        }
        index
    })
}

impl Counters {
    fn stripe(&self) -> &Stripe {
        &self.stripes[stripe_index()]
    }

    /// One broadcast made on this node, and what its local dispatch did.
    pub(super) fn record_broadcast(&self, tally: Tally) {
        let stripe = self.stripe();
        stripe.published.fetch_add(1, Ordering::Relaxed);
        stripe.record(tally);
    }

    pub(crate) fn record_dispatch(&self, tally: Tally) {
        if tally != Tally::default() {
            self.stripe().record(tally);
        }
    }

    pub(crate) fn record_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_gap(&self) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_name_conflict(&self) {
        self.name_conflicts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Stripe {
    fn record(&self, tally: Tally) {
        if tally.delivered > 0 {
            self.delivered.fetch_add(tally.delivered, Ordering::Relaxed);
        }
        if tally.lagged > 0 {
            self.lagged.fetch_add(tally.lagged, Ordering::Relaxed);
        }
    }
}
