//! Each spec's default server, and running code against another one.
//!
//! A spec's generated functions (`staff::broadcast_team`, `staff::subscribe`,
//! ...) use the spec's default server: a process-wide server, created in
//! process on first use unless one was installed, or, for code running
//! inside [`Scoped`] (made by the generated `scope` function), the server of
//! that scope. A scope lets each test run against its own isolated server
//! while the code under test calls the generated functions.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::LocalKey;

use crate::loom::sync::atomic::{process::AtomicUsize, Ordering};
use crate::loom::sync::OnceLock;
use crate::PubSub;

/// `install` came too late: the spec's default server was already
/// installed or used. Holds the server that was not installed.
#[derive(thiserror::Error)]
#[error("the default server was already installed or in use")]
pub struct AlreadyInstalled<M>(pub PubSub<M>);

impl<M> fmt::Debug for AlreadyInstalled<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AlreadyInstalled(..)")
    }
}

/// Where the generated code keeps a spec's scoped server: a `thread_local!`
/// that [`Scoped`] fills while it polls its future.
pub type ScopedSlot<M> = LocalKey<RefCell<Option<PubSub<M>>>>;

/// How many [`Scoped`] futures exist in the process. While there are none,
/// finding a spec's current server reads no thread-local.
static SCOPES: AtomicUsize = AtomicUsize::new(0);

/// The per-spec default server: created in process on first use, unless one
/// was installed before; replaced inside a [`Scoped`] future.
pub struct DefaultServer<M: 'static> {
    cell: OnceLock<PubSub<M>>,
    scoped: &'static ScopedSlot<M>,
}

impl<M: 'static> DefaultServer<M> {
    /// An empty slot (a `static` initialiser), with the spec's scoped slot.
    #[must_use]
    pub const fn new(scoped: &'static ScopedSlot<M>) -> Self {
        Self {
            cell: OnceLock::new(),
            scoped,
        }
    }
}

impl<M: Send + Sync + 'static> DefaultServer<M> {
    /// The process-wide server, made by `init` if none was installed or
    /// made before.
    pub fn global(&'static self, init: impl FnOnce() -> PubSub<M>) -> &'static PubSub<M> {
        self.cell.get_or_init(init)
    }

    /// Installs `pubsub` as the process-wide server, unless one was
    /// installed or created already.
    ///
    /// # Errors
    ///
    /// [`AlreadyInstalled`] with `pubsub` given back.
    pub fn install(&self, pubsub: PubSub<M>) -> Result<(), AlreadyInstalled<M>> {
        self.cell.set(pubsub).map_err(AlreadyInstalled)
    }

    /// The server of the [`Scoped`] future being polled on this thread, if
    /// it has one for this spec.
    #[inline]
    pub fn scoped(&'static self) -> Option<PubSub<M>> {
        if SCOPES.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.scoped
            .try_with(|slot| slot.borrow().clone())
            .ok()
            .flatten()
    }

    /// The current server: the scoped one, else the process-wide one that
    /// `global` returns.
    pub fn current(&'static self, global: impl FnOnce() -> &'static PubSub<M>) -> PubSub<M> {
        self.scoped().unwrap_or_else(|| global().clone())
    }

    /// What makes `pubsub` this spec's server inside a [`Scoped`] future.
    #[must_use]
    pub fn scope_entry(&'static self, pubsub: PubSub<M>) -> ScopeEntry {
        ScopeEntry(Box::new(Entry {
            slot: self.scoped,
            value: Some(pubsub),
        }))
    }
}

/// One spec's server for a [`Scoped`] future: made by
/// [`DefaultServer::scope_entry`].
pub struct ScopeEntry(Box<dyn Swap>);

impl fmt::Debug for ScopeEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScopeEntry(..)")
    }
}

trait Swap: Send {
    /// Exchanges the held server with the thread's slot: in before a poll,
    /// out after it.
    fn swap(&mut self);
}

struct Entry<M: 'static> {
    slot: &'static ScopedSlot<M>,
    value: Option<PubSub<M>>,
}

impl<M: Send + Sync + 'static> Swap for Entry<M> {
    fn swap(&mut self) {
        // The slot is only borrowed here and in `scoped`, never across a
        // call into other code, so the borrow cannot fail; if the thread is
        // being torn down, there is nothing to swap with.
        let _ = self.slot.try_with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                std::mem::swap(&mut *slot, &mut self.value);
            }
        });
    }
}

/// A future that runs with its own default servers: made by a spec's
/// generated `scope(pubsub, future)`.
///
/// Whenever it is polled, the generated functions of its specs
/// (`broadcast_*`, `subscribe`, `server`) called by the future use the
/// scope's servers instead of the process-wide ones, on whatever thread
/// polls it. Tasks the future spawns are not in the scope (wrap them in
/// `scope` too). Scopes nest: the innermost wins.
#[must_use = "a future does nothing unless polled"]
pub struct Scoped<F> {
    entries: Vec<ScopeEntry>,
    future: Pin<Box<F>>,
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("specs", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Scoped<F> {
    /// `future`, with no server of its own yet.
    pub fn new(future: F) -> Self {
        SCOPES.fetch_add(1, Ordering::Relaxed);
        Self {
            entries: Vec::new(),
            future: Box::pin(future),
        }
    }

    /// Adds one spec's server.
    pub fn with(mut self, entry: ScopeEntry) -> Self {
        self.entries.push(entry);
        self
    }
}

impl<F> Drop for Scoped<F> {
    fn drop(&mut self) {
        SCOPES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Swaps the servers back out when dropped: also when the future panics.
struct Installed<'a>(&'a mut [ScopeEntry]);

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        for entry in self.0.iter_mut().rev() {
            entry.0.swap();
        }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // `Scoped` is `Unpin`: its future is boxed.
        let this = self.get_mut();
        for entry in &mut this.entries {
            entry.0.swap();
        }
        let _installed = Installed(&mut this.entries);
        this.future.as_mut().poll(cx)
    }
}
