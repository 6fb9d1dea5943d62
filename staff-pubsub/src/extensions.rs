//! What a server keeps for the features built on it (presence's trackers),
//! one value per type: the server holds them without naming them, so that
//! nothing below a feature depends on it.

use std::any::{Any, TypeId};
use std::collections::HashMap;

use crate::loom::sync::{Arc, Mutex, Weak};

/// Values kept by a server, one per type, and a token alive as long as the
/// server.
#[derive(Default)]
pub(crate) struct Extensions {
    by_type: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    alive: Arc<()>,
}

impl Extensions {
    /// The value of type `T`, made by `make` on first use (under the lock:
    /// made once); the same value, cloned, for every later call.
    pub(crate) fn get_or_insert_with<T: Clone + Send + Sync + 'static>(
        &self,
        make: impl FnOnce(Weak<()>) -> T,
    ) -> T {
        let mut by_type = self.by_type.lock();
        // Entries are kept under their own type's id: the downcast of the
        // one found is to its own type.
        if let Some(value) = by_type
            .get(&TypeId::of::<T>())
            .and_then(|value| value.downcast_ref::<T>())
        {
            return value.clone();
        }
        let value = make(Arc::downgrade(&self.alive));
        by_type.insert(TypeId::of::<T>(), Arc::new(value.clone()));
        value
    }
}
