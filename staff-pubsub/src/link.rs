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

use std::task::{Context, Poll};

use crate::error::{Error, Outcome, TransportError};
use crate::extensions::Home;
use crate::loom::sync::{Arc, Weak};
use crate::position::{Gap, Position};
use crate::registry::Tally;
use crate::server::{ready, Core, Peer, PubSub, Upstream};
use crate::topic::{Topic, TopicKey};
use crate::transport::{BoxFuture, Connection, LogHead, Mode, Replay};

/// The link from a server of `M` to its peer, a server of `N`. The base's
/// link to its extension is weak; the extension's to its base keeps the
/// base alive (no cycle), so that an extension's server reused across
/// scopes finds its base again.
///
/// Installed as the server's [`Peer`] (what is dispatched here is mirrored
/// there) and, on the server without a transport, as its [`Upstream`]
/// (what it sends to other nodes goes through the peer's).
struct Link<M, N> {
    target: Weak<Core<N>>,
    _keep: Option<Arc<Core<N>>>,
    /// The target's node name: the carried server answers to it.
    node: Arc<str>,
    convert: fn(&M) -> Option<N>,
    /// The other way: the peer's messages (a replay from its log) in this
    /// server's form.
    back: fn(&N) -> Option<M>,
    /// Whether this server keeps its features' values (presence's
    /// trackers) in the target's: see [`link`].
    home: bool,
}

impl<M, N> Link<M, N> {
    fn new(
        target: &Arc<Core<N>>,
        keep: bool,
        convert: fn(&M) -> Option<N>,
        back: fn(&N) -> Option<M>,
    ) -> Self {
        Self {
            target: Arc::downgrade(target),
            _keep: keep.then(|| Arc::clone(target)),
            node: Arc::clone(&target.node),
            convert,
            back,
            home: false,
        }
    }

    /// The same, keeping this server's features' values in the target's.
    fn sharing_home(self) -> Self {
        Self { home: true, ..self }
    }
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

    fn signal_gap(&self, gap: &Arc<Gap>) {
        if let Some(core) = self.target.upgrade() {
            core.signal_gap_here(gap);
        }
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

    fn home(&self) -> Option<Arc<dyn Home>> {
        if !self.home {
            return None;
        }
        self.target.upgrade().map(|core| core as Arc<dyn Home>)
    }
}

/// The carried server's way to other nodes: the target's upstream (its
/// own transport), with messages converted to the target's form.
impl<M, N> Upstream<M> for Link<M, N>
where
    M: Send + Sync + 'static,
    N: Send + Sync + 'static,
{
    fn publish<'a>(
        &'a self,
        _here: &'a Core<M>,
        mode: Mode<'a>,
        topics: &'a [Topic],
        message: &'a M,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let Some(core) = self.target.upgrade() else {
            // The carrier is gone: nothing carries this server's traffic.
            // A broadcast reached this node; a direct one names a node
            // that cannot be reached, as without a transport.
            return ready(match mode {
                Mode::Only(node) => Err(Error::UnknownNode {
                    node: node.to_owned(),
                }),
                _ => Ok(()),
            });
        };
        let Some(converted) = (self.convert)(message) else {
            return ready(Err(Error::Transport(
                TransportError::msg(
                    "broadcast not sent to other nodes: the transport is installed on the \
                     base spec's server, which has no form for this extension's message \
                     (install the transport on the extension's server)",
                )
                .with_outcome(Outcome::NotSent),
            )));
        };
        Box::pin(async move {
            match core.upstream() {
                Some(upstream) => upstream.publish(&core, mode, topics, &converted).await,
                None => Ok(()),
            }
        })
    }

    fn node_name<'a>(&'a self, _here: &'a Core<M>) -> &'a str {
        &self.node
    }

    fn connection(&self, here: &Core<M>) -> Connection {
        match self.target.upgrade() {
            Some(core) => PubSub::from_core(core).connection(),
            None => here.connection.get(),
        }
    }

    fn poll_connection(
        &self,
        here: &Core<M>,
        wanted: Connection,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        match self.target.upgrade() {
            Some(core) => match core.upstream() {
                Some(upstream) => upstream.poll_connection(&core, wanted, cx),
                None => core.connection.poll_until(wanted, cx),
            },
            None => here.connection.poll_until(wanted, cx),
        }
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), Error>> {
        let Some(core) = self.target.upgrade() else {
            return ready(Ok(()));
        };
        Box::pin(async move { PubSub::from_core(core).sync().await })
    }

    fn interest_changed(&self, topic: Topic) {
        if let Some(upstream) = self.target.upgrade().as_deref().and_then(Core::upstream) {
            upstream.interest_changed(topic);
        }
    }

    fn durable(&self) -> bool {
        self.target
            .upgrade()
            .as_deref()
            .and_then(Core::upstream)
            .is_some_and(|upstream| upstream.durable())
    }

    fn read_head(&self, _here: &Core<M>) -> Option<(u16, u64)> {
        let core = self.target.upgrade()?;
        core.upstream()?.read_head(&core)
    }

    fn log_head(&self) -> BoxFuture<'_, Result<LogHead, TransportError>> {
        let Some(core) = self.target.upgrade() else {
            return ready(Ok(LogHead::Unknown));
        };
        Box::pin(async move {
            match core.upstream() {
                Some(upstream) => upstream.log_head().await,
                None => Ok(LogHead::Unknown),
            }
        })
    }

    fn replay_limit(&self) -> Option<u64> {
        self.target.upgrade()?.upstream()?.replay_limit()
    }

    fn replay<'a>(
        &'a self,
        after: Position,
        through: Position,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Replay<M>, TransportError>> {
        let Some(core) = self.target.upgrade() else {
            return ready(Err(TransportError::msg(
                "the linked server that holds the log is gone",
            )));
        };
        Box::pin(async move {
            let Some(upstream) = core.upstream() else {
                return Err(TransportError::msg(
                    "the linked server has no transport: it keeps no log",
                ));
            };
            let replay = upstream.replay(after, through, topics).await?;
            Ok(replay.convert(self.back))
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
    // One link at a time in the process: two links of one server racing
    // would otherwise both pass the checks below, and leave one server
    // linked to a peer that is not linked back. Poisoning is passed over:
    // the lock guards no data.
    static LINKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _linking = LINKING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    let (base_carries, extension_carries) = (
        base_core.upstream().is_some(),
        extension_core.upstream().is_some(),
    );
    if base_carries && extension_carries {
        tracing::error!(
            base = base.node_name(),
            extension = extension.node_name(),
            "the stock spec's server and its extension's both have a transport: \
             they are not linked (each would deliver the other's broadcasts twice); \
             install the transport on the extension's server only"
        );
        return false;
    }
    // The node keeps one value per type for both servers (one presence
    // replica per tracker): in the server with the transport, or in the
    // extension's when neither has one.
    let mut to_extension_link = Link::new(extension_core, false, to_extension, to_base);
    let mut to_base_link = Link::new(base_core, true, to_base, to_extension);
    if base_carries {
        to_base_link = to_base_link.sharing_home();
    } else {
        to_extension_link = to_extension_link.sharing_home();
    }
    // Both cells were empty just above, and no other link runs.
    let linked = base_core.set_peer(Box::new(to_extension_link))
        && extension_core.set_peer(Box::new(to_base_link));
    // The server without a transport sends through the other's: it
    // answers to the other's node name, its topics are that transport's
    // interest too, and it is durable when that transport is.
    if linked && extension_carries {
        base_core.set_upstream(Box::new(Link::new(
            extension_core,
            false,
            to_extension,
            to_base,
        )));
    } else if linked && base_carries {
        extension_core.set_upstream(Box::new(Link::new(base_core, true, to_base, to_extension)));
    }
    linked
}

/// Which base server each server of an extension spec is linked to, in
/// the process: one per extension spec, a `static` of its generated code
/// (so that it is typed by both specs' messages, and a server is never
/// found back by its type at run time). An extension's server reused
/// across scopes, or the process-wide one, finds its base here and keeps
/// its one bus.
///
/// Holds both servers weakly: an extension's server keeps its base alive
/// through its link, and an entry whose extension server is gone is
/// forgotten at the next lookup.
pub struct LinkedBases<B, E> {
    // A std mutex: a `static` needs a `const` constructor. Poisoning is
    // passed over: the list is valid after any panic (entries are pushed
    // and retained whole).
    links: std::sync::Mutex<Vec<Linked<B, E>>>,
}

/// An extension's server and the base server linked to it.
type Linked<B, E> = (Weak<Core<E>>, Weak<Core<B>>);

impl<B, E> LinkedBases<B, E>
where
    B: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// No link yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            links: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Vec<Linked<B, E>>> {
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`link`]s `base` and `extension`, and remembers it.
    pub fn link(
        &self,
        base: &PubSub<B>,
        extension: &PubSub<E>,
        to_extension: fn(&B) -> Option<E>,
        to_base: fn(&E) -> Option<B>,
    ) -> bool {
        let linked = link(base, extension, to_extension, to_base);
        if linked {
            let mut links = self.links();
            links.retain(|(extension, _)| extension.strong_count() > 0);
            links.push((
                Arc::downgrade(extension.core()),
                Arc::downgrade(base.core()),
            ));
        }
        linked
    }

    /// The base server linked to `extension`, or a new in-process one
    /// linked to it now: what an extension's `scope` gives the base spec.
    pub fn base_of(
        &self,
        extension: &PubSub<E>,
        to_extension: fn(&B) -> Option<E>,
        to_base: fn(&E) -> Option<B>,
    ) -> PubSub<B> {
        // Looked up and linked under one lock: two scopes starting at once
        // on one extension server get one base.
        let mut links = self.links();
        links.retain(|(extension, _)| extension.strong_count() > 0);
        let known = links
            .iter()
            .find(|(linked, _)| std::ptr::eq(linked.as_ptr(), Arc::as_ptr(extension.core())))
            .and_then(|(_, base)| base.upgrade());
        if let Some(base) = known {
            return PubSub::from_core(base);
        }
        let base = PubSub::new();
        if link(&base, extension, to_extension, to_base) {
            links.push((
                Arc::downgrade(extension.core()),
                Arc::downgrade(base.core()),
            ));
        }
        base
    }
}

impl<B, E> Default for LinkedBases<B, E>
where
    B: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}
