//! A counting global allocator for the benchmark report.
//!
//! [`Counting`] forwards every call to [`System`]. While counting is on it
//! keeps the net number of bytes allocated (allocated minus freed, as the
//! callers' layouts request them; the allocator's own rounding is not seen),
//! and the highest that net number reached.
//! Counting is off by default: then the only cost is one relaxed load of a
//! flag that nothing writes, so the throughput workloads of the report are
//! not disturbed by a shared counter bouncing between cores.
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOCATOR: staff_pubsub_count_alloc::Counting = staff_pubsub_count_alloc::Counting;
//!
//! let (bytes, kept) = staff_pubsub_count_alloc::net_bytes(|| vec![0_u8; 100]);
//! assert_eq!(bytes, 100);
//! # drop(kept);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// Whether counting is on; read on every allocation.
static ON: AtomicBool = AtomicBool::new(false);

/// Whether only the allocations of the thread that counts are counted
/// ([`peak_bytes_on_this_thread`]).
static ONE_THREAD: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Whether this thread is the one that counts. Const-initialised and
    /// without a destructor: reading it never allocates.
    static COUNTING_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Whether an allocation made now, on this thread, is counted.
#[inline]
fn counted() -> bool {
    ON.load(Ordering::Relaxed)
        && (!ONE_THREAD.load(Ordering::Relaxed)
            || COUNTING_HERE.try_with(Cell::get).unwrap_or(false))
}

/// Net bytes allocated while counting was on. On its own cache line, away
/// from the flag.
#[repr(align(128))]
struct Net(AtomicIsize);

static NET: Net = Net(AtomicIsize::new(0));

/// The highest value of [`NET`] while counting was on.
static PEAK: Net = Net(AtomicIsize::new(0));

/// The counting allocator: install it with `#[global_allocator]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counting;

#[inline]
fn add(bytes: usize) {
    if counted() {
        let net = NET.0.fetch_add(bytes as isize, Ordering::Relaxed) + bytes as isize;
        PEAK.0.fetch_max(net, Ordering::Relaxed);
    }
}

#[inline]
fn sub(bytes: usize) {
    if counted() {
        NET.0.fetch_sub(bytes as isize, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the `GlobalAlloc` contract, and returns `System`'s pointer
// unchanged. The bookkeeping touches only two statics and never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `layout` is passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            add(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            add(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this `layout` (every
        // allocation of this allocator is `System`'s).
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`; `new_size` is the caller's, passed on.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            sub(layout.size());
            add(new_size);
        }
        new
    }
}

/// Runs `f` with counting on and returns the net bytes it allocated (what it
/// allocated and did not free), with its result. Allocations on other
/// threads in the meantime are counted too: measure with nothing else
/// running.
pub fn net_bytes<T>(f: impl FnOnce() -> T) -> (isize, T) {
    let (net, _, result) = count(f);
    (net, result)
}

/// Runs `f` with counting on and returns the highest net number of bytes it
/// had allocated at any moment (its peak extra memory, whatever it freed
/// before returning), with its result. Same caveat as [`net_bytes`].
///
/// ```no_run
/// #[global_allocator]
/// static ALLOCATOR: staff_pubsub_count_alloc::Counting = staff_pubsub_count_alloc::Counting;
///
/// let (peak, ()) = staff_pubsub_count_alloc::peak_bytes(|| drop(vec![0_u8; 100]));
/// assert_eq!(peak, 100);
/// ```
pub fn peak_bytes<T>(f: impl FnOnce() -> T) -> (isize, T) {
    let (_, peak, result) = count(f);
    (peak, result)
}

/// As [`peak_bytes`], counting only what this thread allocates and frees:
/// for a single-threaded `f` measured while other threads may allocate
/// (the test harness's own thread, on a loaded machine).
pub fn peak_bytes_on_this_thread<T>(f: impl FnOnce() -> T) -> (isize, T) {
    COUNTING_HERE.with(|here| here.set(true));
    ONE_THREAD.store(true, Ordering::SeqCst);
    let (_, peak, result) = count(f);
    ONE_THREAD.store(false, Ordering::SeqCst);
    COUNTING_HERE.with(|here| here.set(false));
    (peak, result)
}

/// Net and peak bytes of `f`, with its result.
fn count<T>(f: impl FnOnce() -> T) -> (isize, isize, T) {
    NET.0.store(0, Ordering::Relaxed);
    PEAK.0.store(0, Ordering::Relaxed);
    ON.store(true, Ordering::SeqCst);
    let result = f();
    ON.store(false, Ordering::SeqCst);
    (
        NET.0.load(Ordering::Relaxed),
        PEAK.0.load(Ordering::Relaxed),
        result,
    )
}
