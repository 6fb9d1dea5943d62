//! The normal build: re-exports, no wrapper.

// Which primitives a build uses depends on its features.
#[allow(unused_imports)]
pub(crate) mod sync {
    pub(crate) use parking_lot::{Mutex, RwLock};
    pub(crate) use std::sync::{Arc, LazyLock, OnceLock, Weak};

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{
            fence, AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering,
        };

        /// Atomics for process-wide `static` counters: `std`'s in every
        /// build (see the module's docs).
        pub(crate) mod process {
            pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize};
        }
    }
}
