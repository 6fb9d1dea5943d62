//! One bus for a spec and its extension.
//!
//! An extension's messages (`app::Message`) and its base's
//! (`staff::Message`) are different types, so each has its own server. A
//! link makes the two servers one bus: what is dispatched on either is also
//! dispatched to the other's subscribers of the same topics (converted; a
//! message the other spec has no form for is not), and a server without a
//! transport publishes through the other's.
//!
//! At most one of the two has a transport: [`link`] refuses to link two
//! servers that both have one (each would receive the other's envelopes and
//! mirror them back, delivering twice). The one with the transport carries
//! both: its gaps reach the other's subscribers too, and the other reports
//! its connection state and node name.
//!
//! Invariant: a broadcast is dispatched once on each of the two servers of
//! the node that makes it, and published once; a node that receives it
//! dispatches it once on the receiving server, which mirrors it once to its
//! peer. Mirroring never mirrors back, and publishing through the peer uses
//! the peer's own transport only, so neither can loop.

use std::any::Any;
use std::future::ready;
use std::task::{Context, Poll};

use crate::error::{Error, Outcome, TransportError};
use crate::loom::sync::{Arc, Weak};
use crate::position::{Gap, Position};
use crate::registry::Tally;
use crate::server::{Core, Peer, PubSub};
use crate::topic::{Topic, TopicKey};
use crate::transport::{BoxFuture, Connection, LogHead, Mode, Replay};

/// The link from a server of `M` to its peer, a server of `N`. The base's
/// link to its extension is weak; the extension's to its base keeps the
/// base alive (no cycle), so that an extension's server reused across
/// scopes finds its base again.
struct Link<M, N> {
    target: Weak<Core<N>>,
    _keep: Option<Arc<Core<N>>>,
    convert: fn(&M) -> Option<N>,
    /// The other way: the peer's messages (a replay from its log) in this
    /// server's form.
    back: fn(&N) -> Option<M>,
}

impl<M, N> Peer<M> for Link<M, N>
where
    M: Send + Sync + 'static,
    N: Send + Sync + 'static,
{
    fn mirror(
        &self,
        topics: &mut dyn Iterator<Item = TopicKey<'_>>,
        message: &M,
        position: Option<Position>,
    ) {
        let Some(core) = self.target.upgrade() else {
            return;
        };
        // Converted (a clone of the payload) only once a topic has a
        // subscriber on the peer: a broadcast nobody there wants costs the
        // lookups alone.
        let mut converted: Option<Option<Arc<N>>> = None;
        let mut tally = Tally::default();
        for key in topics {
            if !core.registry.contains(key) {
                continue;
            }
            let Some(message) =
                converted.get_or_insert_with(|| (self.convert)(message).map(Arc::new))
            else {
                return;
            };
            core.registry
                .deliver(key, || Arc::clone(message), position, None, &mut tally);
        }
        core.counters.record_dispatch(tally);
    }

    fn publish<'a>(
        &'a self,
        mode: Mode<'a>,
        topics: &'a [Topic],
        message: &'a M,
    ) -> Option<BoxFuture<'a, Result<(), Error>>> {
        let core = self.target.upgrade()?;
        if !core.has_transport() {
            return None;
        }
        let peer = PubSub::from_core(core);
        Some(match (self.convert)(message) {
            Some(converted) => {
                Box::pin(async move { peer.publish_own(mode, topics, &converted).await })
            }
            None => Box::pin(ready(Err(Error::Transport(
                TransportError::msg(
                    "broadcast not sent to other nodes: the transport is installed on the \
                     base spec's server, which has no form for this extension's message \
                     (install the transport on the extension's server)",
                )
                .with_outcome(Outcome::NotSent),
            )))),
        })
    }

    fn signal_gap(&self, gap: &Arc<Gap>) {
        if let Some(core) = self.target.upgrade() {
            core.signal_gap_here(gap);
        }
    }

    fn connection(&self) -> Option<Connection> {
        let core = self.target.upgrade()?;
        core.has_transport().then(|| core.connection.get())
    }

    fn poll_connection(&self, wanted: Connection, cx: &mut Context<'_>) -> Option<Poll<()>> {
        let core = self.target.upgrade()?;
        core.has_transport()
            .then(|| core.connection.poll_until(wanted, cx))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn has_subscribers_here(&self, key: TopicKey<'_>) -> bool {
        self.target
            .upgrade()
            .is_some_and(|core| core.registry.contains(key))
    }

    fn topics_here(&self) -> Vec<Topic> {
        self.target
            .upgrade()
            .map_or_else(Vec::new, |core| core.registry.topics())
    }

    fn log_read_head(&self) -> Option<(u16, u64)> {
        let core = self.target.upgrade()?;
        if !core
            .transport()
            .is_some_and(|transport| transport.durable())
        {
            return None;
        }
        core.head()
    }

    fn log_head(&self) -> BoxFuture<'_, Result<LogHead, TransportError>> {
        let Some(core) = self.target.upgrade() else {
            return Box::pin(ready(Ok(LogHead::Unknown)));
        };
        Box::pin(async move {
            match core.transport() {
                Some(transport) => transport.log_head().await,
                None => Ok(LogHead::Unknown),
            }
        })
    }

    fn replay<'a>(
        &'a self,
        after: Position,
        through: Position,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Replay<M>, TransportError>> {
        let Some(core) = self.target.upgrade() else {
            return Box::pin(ready(Err(TransportError::msg(
                "the linked server that holds the log is gone",
            ))));
        };
        Box::pin(async move {
            let Some(transport) = core.transport() else {
                return Err(TransportError::msg(
                    "the linked server has no transport: it keeps no log",
                ));
            };
            let replay = transport.replay(after, through, topics).await?;
            Ok(replay.convert(self.back))
        })
    }

    fn replay_limit(&self) -> Option<u64> {
        self.target
            .upgrade()?
            .transport()
            .and_then(|transport| transport.replay_limit())
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), Error>> {
        let Some(core) = self.target.upgrade() else {
            return Box::pin(ready(Ok(())));
        };
        Box::pin(async move {
            match core.transport() {
                Some(transport) => transport.sync().await.map_err(Error::Sync),
                None => Ok(()),
            }
        })
    }
}

/// Links `base` and `extension` into one bus (see the module docs):
/// `to_extension` and `to_base` convert a message of one into the other's
/// type, `None` when it has no form there. Returns false, changing nothing,
/// if either server is linked already.
pub fn link<B, E>(
    base: &PubSub<B>,
    extension: &PubSub<E>,
    to_extension: fn(&B) -> Option<E>,
    to_base: fn(&E) -> Option<B>,
) -> bool
where
    B: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    let (base_core, extension_core) = (base.core(), extension.core());
    if base_core.peer().is_some() || extension_core.peer().is_some() {
        tracing::error!(
            base = base.node_name(),
            extension = extension.node_name(),
            "a server is linked already (one extension per spec in a process): \
             the extension's broadcasts of stock events do not reach the stock \
             spec's subscribers, nor the other way round"
        );
        return false;
    }
    if base_core.has_transport() && extension_core.has_transport() {
        tracing::error!(
            base = base.node_name(),
            extension = extension.node_name(),
            "the stock spec's server and its extension's both have a transport: \
             they are not linked (each would deliver the other's broadcasts twice); \
             install the transport on the extension's server only"
        );
        return false;
    }
    let forward: Box<dyn Peer<B>> = Box::new(Link {
        target: Arc::downgrade(extension_core),
        _keep: None,
        convert: to_extension,
        back: to_base,
    });
    let back: Box<dyn Peer<E>> = Box::new(Link {
        target: Arc::downgrade(base_core),
        _keep: Some(Arc::clone(base_core)),
        convert: to_base,
        back: to_extension,
    });
    // Both cells were empty just above; a concurrent link of the same
    // servers (generated code links once per slot) loses harmlessly.
    let linked = base_core.set_peer(forward) && extension_core.set_peer(back);
    // The server without a transport answers to the name of the one with,
    // and its topics are the other transport's interest too.
    // A durable transport delivers both servers' broadcasts from its log.
    let durable = base_core.is_durable() || extension_core.is_durable();
    base_core.set_durable(durable);
    extension_core.set_durable(durable);
    if extension_core.has_transport() {
        base_core.carried_by(extension_core);
    } else if base_core.has_transport() {
        extension_core.carried_by(base_core);
    }
    linked
}

/// The base server linked to `extension`, or a new in-process one linked
/// to it now: what an extension's `scope` gives the base spec, so that a
/// server reused across scopes (or the process-wide one) keeps its one
/// bus.
pub fn linked_base<B, E>(
    extension: &PubSub<E>,
    to_extension: fn(&B) -> Option<E>,
    to_base: fn(&E) -> Option<B>,
) -> PubSub<B>
where
    B: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    let existing = extension.core().peer().and_then(|peer| {
        let link = peer.as_any().downcast_ref::<Link<E, B>>()?;
        link.target.upgrade().map(PubSub::from_core)
    });
    if let Some(base) = existing {
        return base;
    }
    let base = PubSub::new();
    link(&base, extension, to_extension, to_base);
    base
}
