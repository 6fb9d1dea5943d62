//! The synchronisation primitives of the runtime, in one place: every
//! atomic, fence, lock and shared pointer the crate uses is imported from
//! here (`crate::loom::sync`), never from `std::sync` or `parking_lot`
//! directly, so that the concurrency models can swap them all at once.
//!
//! In a normal build these are re-exports (`std`'s atomics and `Arc`,
//! `parking_lot`'s locks): no wrapper, nothing to pay. In a build with
//! `RUSTFLAGS="--cfg loom"` (the models only, see `tests/`) the atomics,
//! fences and locks are the [loom](https://docs.rs/loom) model checker's,
//! which tries every interleaving of the model's threads within a bound;
//! the locks keep `parking_lot`'s non-poisoning API there too.
//!
//! What stays `std`'s in both builds, because loom has no counterpart that
//! fits, and what that leaves unchecked:
//! - `Arc` and `Weak`: the runtime hands `Arc<M>` to its users (the public
//!   type must not change with the build), shares `dyn` values and
//!   slices, and keeps `Weak` references, none of which loom's `Arc` has.
//!   Reference counting is `std`'s own, not hand-placed ordering.
//! - `OnceLock` and `LazyLock`: the server's set-once cells (transport,
//!   linked server) and lazily built statics; no model reaches them.
//! - [`sync::atomic::process`]: the process-wide counters kept in
//!   `static`s (loom's atomics have no `const fn new`); no model reaches
//!   them.
//!
//! The models are in `tests/`, each declared (`#[path]`) inside the module
//! it checks (`registry.rs`, `ring.rs`, `inbox.rs`), whose private state it
//! reads; each test's name says the property it proves. Run them with
//! `CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom"
//! LOOM_MAX_PREEMPTIONS=3 cargo test --release -p staff-pubsub --lib loom`
//! (`.ci/run` does).
//!
//! The waker cell of an inbox (`inbox.rs`, its `State::waker`) and the
//! waiters of a ring (`ring.rs`) live under the locks from here, so the
//! models check the wake-ups through them.

#[cfg(not(loom))]
mod real;
#[cfg(not(loom))]
pub(crate) use real::sync;

#[cfg(loom)]
mod mocked;
#[cfg(loom)]
pub(crate) use mocked::sync;

/// Runs a loom model: every interleaving of its threads, up to
/// `LOOM_MAX_PREEMPTIONS` preemptions (3 unless set).
#[cfg(all(test, loom))]
pub(crate) fn model(body: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(3);
    builder.check(body);
}
