//! What a server keeps for the features built on it (presence's trackers,
//! and the settings its builder was given for them), one value per type:
//! the server holds them without naming them, so that nothing below a
//! feature depends on it.

use std::any::{Any, TypeId};
use std::collections::HashMap;

use crate::gossip::GossipHandle;
use crate::loom::sync::{Arc, Mutex, Weak};

type Values = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

/// Settings for the features, one per type, gathered by a server's
/// builder before the server exists (presence's timing): the server starts
/// its [`Extensions`] with them.
#[derive(Clone, Default)]
pub(crate) struct Preset {
    by_type: Values,
}

impl Preset {
    /// Sets the value of type `T`, replacing the one set before.
    pub(crate) fn set<T: Send + Sync + 'static>(&mut self, value: T) {
        self.by_type.insert(TypeId::of::<T>(), Arc::new(value));
    }
}

/// Values kept by a server, one per type, and a token alive as long as the
/// server.
#[derive(Default)]
pub(crate) struct Extensions {
    by_type: Mutex<Values>,
    alive: Arc<()>,
}

impl Extensions {
    /// Starts with the values `preset` holds.
    pub(crate) fn new(preset: Preset) -> Self {
        Self {
            by_type: Mutex::new(preset.by_type),
            alive: Arc::new(()),
        }
    }

    /// The value of type `T`, if there is one.
    pub(crate) fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        // Entries are kept under their own type's id (see `get_or_insert_with`).
        self.by_type
            .lock()
            .get(&TypeId::of::<T>())
            .and_then(|value| value.downcast_ref::<T>())
            .cloned()
    }

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

/// A server as its features see it: where they keep their values, the
/// node name they go by, its engine's gossip and its count of rejected
/// input. A server is its own home, except a linked server that shares
/// its peer's (see [`crate::link`]): the node then has one value per type
/// for both servers, one presence replica per tracker.
pub(crate) trait Home: Send + Sync {
    /// Where the features' values are kept.
    fn extensions(&self) -> &Extensions;
    /// The node name this server answers to.
    fn node_name(&self) -> &str;
    /// The engine's gossip, if the server's upstream gives one.
    fn gossip(&self) -> Option<GossipHandle>;
    /// Counts one input from the network that was skipped, in
    /// [`Stats::rejected`](crate::Stats::rejected).
    #[cfg_attr(not(any(test, feature = "redis", feature = "nats")), allow(dead_code))] // no network without an engine
    fn record_rejected(&self);
}
