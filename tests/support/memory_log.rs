//! A durable transport in memory, for tests of durable delivery without an
//! engine: one shared [`MemoryLog`] (what a Redis stream or a JetStream
//! stream is to the real transports) that several servers attach to with
//! [`MemoryLog::connect`].
//!
//! Every broadcast is appended to the log; every attached node, the
//! sender included, reads the log in order in its own task and dispatches
//! each entry with [`LocalNode::dispatch_logged`]. A test controls what
//! the engine would do on its own: [`cut`](MemoryLog::cut) stops one
//! node's reading (its link is down; entries accumulate) and
//! [`restore`](MemoryLog::restore) lets it catch up from where it stopped,
//! with a [`Gap::Trimmed`] first if the retention trimmed entries it had
//! not read; [`lose`](MemoryLog::lose) starts a new log (another id),
//! as a Redis restarted without persistence does, and the nodes reading
//! it signal [`Gap::LogLost`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use staff_pubsub::{PubSub, Retention, Topic};
//! use staff_pubsub_tests::memory_log::MemoryLog;
//!
//! const T: Topic = Topic::new("chat:rooms");
//! let log = MemoryLog::<u32>::new(Retention::entries(100));
//! let pubsub = PubSub::builder().node_name("a").build_with(log.connect()).await.unwrap();
//! let mut subscription = pubsub.subscribe(T).unwrap();
//! pubsub.broadcast([T], 7).await.unwrap();
//! let (message, position) = subscription.recv_with_position().await.unwrap();
//! assert_eq!((*message, position), (7, log.position(1)));
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use staff_pubsub::transport::{
    BoxFuture, DurableLog, Envelope, LocalNode, LogCursor, LogHead, LogRead, Mode, Replay,
    Transport,
};
use staff_pubsub::{Connection, Gap, Position, Retention, Topic, TransportError};
use tokio::sync::watch;

/// A log shared by the servers attached to it. Cheap to clone: every
/// clone is the same log.
pub struct MemoryLog<M> {
    shared: Arc<Shared<M>>,
}

impl<M> Clone for MemoryLog<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<M> {
    state: Mutex<State<M>>,
    /// Bumped on every change a reader may act on (an append, a restore,
    /// a lost log): each node's reader waits on it.
    changed: watch::Sender<u64>,
    replays: AtomicU64,
    /// The entries all replays returned.
    replayed_entries: AtomicU64,
    /// Replays fail (the engine does not answer) while set.
    failing: AtomicBool,
    retention: Retention,
    /// Whether the transport says it is durable: a live-only variant
    /// serves the tests of what a non-durable server refuses.
    durable: bool,
}

struct State<M> {
    /// The log's id: changes when the log is lost.
    id: u16,
    /// The sequence number of `entries[0]` (the next entry's when empty).
    first: u64,
    entries: VecDeque<Stored<M>>,
    /// Nodes whose reading is cut, by node name.
    cut: HashMap<String, bool>,
}

struct Stored<M> {
    at: Instant,
    origin: String,
    mode: OwnedMode,
    topics: Vec<Topic>,
    message: M,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum OwnedMode {
    All,
    ExceptOrigin,
    Only(String),
}

impl OwnedMode {
    fn new(mode: Mode<'_>) -> Self {
        match mode {
            Mode::All => Self::All,
            Mode::ExceptOrigin => Self::ExceptOrigin,
            Mode::Only(node) => Self::Only(node.to_owned()),
        }
    }

    fn as_mode(&self) -> Mode<'_> {
        match self {
            Self::All => Mode::All,
            Self::ExceptOrigin => Mode::ExceptOrigin,
            Self::Only(node) => Mode::Only(node),
        }
    }
}

impl<M> State<M> {
    /// The sequence number of the last entry (0: none yet).
    fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }

    fn trim(&mut self, retention: &Retention) {
        if let Some(max) = retention.entries_limit() {
            while self.entries.len() as u64 > max {
                self.entries.pop_front();
                self.first += 1;
            }
        }
        if let Some(age) = retention.age_limit() {
            while self.entries.front().is_some_and(|e| e.at.elapsed() > age) {
                self.entries.pop_front();
                self.first += 1;
            }
        }
    }
}

fn lock<M>(shared: &Shared<M>) -> MutexGuard<'_, State<M>> {
    // A test that panicked holding the lock left a consistent state: every
    // change is made in one step.
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<M> MemoryLog<M>
where
    M: Clone + Send + Sync + 'static,
{
    /// An empty durable log that keeps what `retention` says and replays
    /// at most its [`replay_limit`](Retention::replay_limit) entries per
    /// resume.
    #[must_use]
    pub fn new(retention: Retention) -> Self {
        Self::with(retention, true)
    }

    /// The same log machinery, but the transport says it is not durable:
    /// a live-only server (its broadcasts dispatch at the call and again
    /// from the log on the other nodes only).
    #[must_use]
    pub fn live_only() -> Self {
        Self::with(Retention::entries(1024), false)
    }

    fn with(retention: Retention, durable: bool) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    id: 0x2a,
                    first: 1,
                    entries: VecDeque::new(),
                    cut: HashMap::new(),
                }),
                changed: watch::Sender::new(0),
                replays: AtomicU64::new(0),
                replayed_entries: AtomicU64::new(0),
                failing: AtomicBool::new(false),
                retention,
                durable,
            }),
        }
    }

    /// What [`Builder::build_with`](staff_pubsub::Builder::build_with)
    /// takes: attaches the server to this log. The node starts reading at
    /// the log's end (it does not deliver what was appended before).
    pub fn connect(
        &self,
    ) -> impl FnOnce(LocalNode<M>) -> BoxFuture<'static, Result<MemoryTransport<M>, TransportError>>
    {
        let log = self.clone();
        move |node| Box::pin(async move { Ok(log.attach(node)) })
    }

    fn attach(&self, node: LocalNode<M>) -> MemoryTransport<M> {
        let (id, last) = {
            let state = lock(&self.shared);
            (state.id, state.last())
        };
        node.set_log_head(id, last);
        node.set_connection(Connection::Connected);
        let reader = tokio::spawn(read(
            Arc::clone(&self.shared),
            node.clone(),
            self.shared.changed.subscribe(),
            id,
            last,
        ));
        MemoryTransport {
            shared: Arc::clone(&self.shared),
            node: node.node_name().to_owned(),
            reader: reader.abort_handle(),
        }
    }

    /// The position of entry `seq` of the current log.
    #[must_use]
    pub fn position(&self, seq: u64) -> Option<Position> {
        Position::new(lock(&self.shared).id, seq)
    }

    /// The current log's id.
    #[must_use]
    pub fn id(&self) -> u16 {
        lock(&self.shared).id
    }

    /// The sequence number of the last entry appended (0: none).
    #[must_use]
    pub fn last(&self) -> u64 {
        lock(&self.shared).last()
    }

    /// The sequence number of the oldest entry still kept.
    #[must_use]
    pub fn first_kept(&self) -> u64 {
        lock(&self.shared).first
    }

    /// How many times a server asked this log for a replay.
    #[must_use]
    pub fn replays(&self) -> u64 {
        self.shared.replays.load(Ordering::Relaxed)
    }

    /// How many entries all replays returned (a paged resume's pages
    /// added up).
    #[must_use]
    pub fn replayed_entries(&self) -> u64 {
        self.shared.replayed_entries.load(Ordering::Relaxed)
    }

    /// Makes every replay fail (`true`), as an engine that does not
    /// answer, or answer again (`false`).
    pub fn fail_replays(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::Relaxed);
    }

    /// Stops node `node`'s reading, as a lost connection would: what is
    /// appended meanwhile waits in the log (and may be trimmed).
    pub fn cut(&self, node: &str) {
        lock(&self.shared).cut.insert(node.to_owned(), true);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Lets node `node` read again, from where it stopped.
    pub fn restore(&self, node: &str) {
        lock(&self.shared).cut.remove(node);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Loses the log: its entries are gone and a new log (another id)
    /// starts at sequence number 1. Readers signal [`Gap::LogLost`].
    pub fn lose(&self) {
        {
            let mut state = lock(&self.shared);
            state.id = state.id.wrapping_add(1);
            state.first = 1;
            state.entries.clear();
        }
        self.shared.changed.send_modify(|n| *n += 1);
    }
}

/// One server's attachment to a [`MemoryLog`]: its [`Transport`].
pub struct MemoryTransport<M> {
    shared: Arc<Shared<M>>,
    node: String,
    reader: tokio::task::AbortHandle,
}

impl<M> Drop for MemoryTransport<M> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl<M> Transport<M> for MemoryTransport<M>
where
    M: Clone + Send + Sync + 'static,
{
    fn publish<'a>(
        &'a self,
        envelope: Envelope<'a, M>,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        {
            let mut state = lock(&self.shared);
            state.entries.push_back(Stored {
                at: Instant::now(),
                origin: envelope.origin.to_owned(),
                mode: OwnedMode::new(envelope.mode),
                topics: envelope.topics.to_vec(),
                message: envelope.message.clone(),
            });
            state.trim(&self.shared.retention);
        }
        self.shared.changed.send_modify(|n| *n += 1);
        Box::pin(std::future::ready(Ok(())))
    }

    fn durable_log(&self) -> Option<&dyn DurableLog<M>> {
        self.shared.durable.then_some(self as &dyn DurableLog<M>)
    }
}

impl<M> DurableLog<M> for MemoryTransport<M>
where
    M: Clone + Send + Sync + 'static,
{
    /// The log is in this process: the position is trusted.
    fn log_head(&self) -> BoxFuture<'_, Result<LogHead, TransportError>> {
        Box::pin(std::future::ready(Ok(LogHead::Unknown)))
    }

    /// The retention's: a resume pages its replay.
    fn replay_limit(&self) -> Option<u64> {
        Some(self.shared.retention.replay_limit())
    }

    fn replay<'a>(
        &'a self,
        after: Position,
        through: Position,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Replay<M>, TransportError>>
    where
        M: Send + 'a,
    {
        self.shared.replays.fetch_add(1, Ordering::Relaxed);
        if self.shared.failing.load(Ordering::Relaxed) {
            return Box::pin(std::future::ready(Err(TransportError::msg(
                "the memory log does not answer (fail_replays)",
            ))));
        }
        let state = lock(&self.shared);
        let replay = if after.log() != state.id || through.log() != state.id {
            Replay::new(Some(Gap::LogLost), Vec::new())
        } else {
            let count = through.seq().saturating_sub(after.seq());
            if count > self.shared.retention.replay_limit() {
                Replay::new(Some(Gap::ReplayLimit { missing: count }), Vec::new())
            } else {
                let from = after.seq() + 1;
                // The gap rule: the library's `LogCursor`.
                let gap = LogCursor::after(after).skip_to(state.first.min(through.seq() + 1));
                let entries = (from.max(state.first)..=through.seq().min(state.last()))
                    .filter_map(|seq| {
                        let entry = &state.entries[(seq - state.first) as usize];
                        // An entry for one other node is not this node's;
                        // the sender's own entries (ExceptOrigin) are: a
                        // resumed subscription did not get them at the call.
                        if matches!(&entry.mode, OwnedMode::Only(node) if *node != self.node) {
                            return None;
                        }
                        let copies = topics.iter().filter(|t| entry.topics.contains(t)).count();
                        let position = Position::new(state.id, seq)?;
                        (copies > 0).then(|| (position, entry.message.clone(), copies))
                    })
                    .collect::<Vec<_>>();
                self.shared
                    .replayed_entries
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                Replay::with_copies(gap, entries)
            }
        };
        Box::pin(std::future::ready(Ok(replay)))
    }
}

/// One node's reader: dispatches every entry after `seq` of log `id`, in
/// order, while the node is not cut; signals what it finds lost.
async fn read<M>(
    shared: Arc<Shared<M>>,
    node: LocalNode<M>,
    mut changed: watch::Receiver<u64>,
    mut id: u16,
    mut seq: u64,
) where
    M: Clone + Send + Sync + 'static,
{
    loop {
        let _ = changed.borrow_and_update();
        if !node.is_alive() {
            return;
        }
        let (gap, batch) = {
            let state = lock(&shared);
            if state.cut.get(node.node_name()).copied().unwrap_or(false) {
                (None, Vec::new())
            } else {
                // The gap rule: the library's `LogCursor`, at the oldest
                // entry the log holds.
                let mut gap = None;
                let mut cursor = LogCursor::new(id, seq + 1);
                match cursor.read(state.id, state.first) {
                    LogRead::After(Gap::LogLost) => {
                        gap = Some(Gap::LogLost);
                        id = state.id;
                        seq = 0;
                    }
                    LogRead::After(trimmed) => gap = Some(trimmed),
                    _ => {}
                }
                let from = (seq + 1).max(state.first);
                let batch: Vec<_> = (from..=state.last())
                    .map(|at| {
                        let entry = &state.entries[(at - state.first) as usize];
                        let mine = entry
                            .mode
                            .as_mode()
                            .accepts(&entry.origin, node.node_name());
                        let topics: Vec<String> = if mine {
                            entry.topics.iter().map(ToString::to_string).collect()
                        } else {
                            Vec::new()
                        };
                        (at, topics, entry.message.clone())
                    })
                    .collect();
                if gap.is_some() && batch.is_empty() {
                    // Everything after `seq` is gone: read up to the end.
                    seq = state.last();
                }
                (gap, batch)
            }
        };
        if let Some(gap) = gap {
            node.set_log_head(id, seq);
            node.signal_gap_with(gap);
        }
        for (at, topics, message) in batch {
            let position = Position::new(id, at).expect("a sequence number from 1");
            node.dispatch_logged(position, topics.iter().map(String::as_str), message);
            seq = at;
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}
