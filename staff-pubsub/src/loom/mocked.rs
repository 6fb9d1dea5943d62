//! The models' build (`--cfg loom`): loom's atomics, fences and locks, the
//! locks behind `parking_lot`'s API (a poisoned lock is taken as it is: a
//! model that panics fails anyway).

// Which primitives a build uses depends on its features.
#[allow(unused_imports)]
pub(crate) mod sync {
    pub(crate) use std::sync::{Arc, LazyLock, OnceLock, Weak};

    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{
            fence, AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering,
        };

        /// Atomics for process-wide `static` counters: `std`'s in every
        /// build (see the module's docs).
        pub(crate) mod process {
            pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize};
        }
    }

    use std::sync::PoisonError;

    /// loom's mutex with `parking_lot`'s API.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// loom's read-write lock with `parking_lot`'s API.
    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }

        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(PoisonError::into_inner)
        }
    }
}
