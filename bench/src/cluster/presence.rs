//! `--only presence`: presence across nodes, over a real engine, through
//! the public API (`PubSub::builder().presence_timing(..)`, `track`,
//! `presences`).
//!
//! - [`heartbeat`]: node A tracks `n` presences (on [`TOPICS`] topics,
//!   key `user-<i>`, metadata the 12-byte `String` "viewing page"), then
//!   node B starts: the time until B lists all `n` (the transfer), and
//!   the bytes each node publishes on the tracker's gossip channel in
//!   steady state, counted by a raw subscriber of the engine (a redis-rs
//!   `PSUBSCRIBE <namespace>:presence:*`, an async-nats subscription to
//!   `<namespace>._presence.>`), which reads the sender from each frame
//!   (`[len u16][from][len u16][to][payload]`). A node's rate runs from
//!   its first message in the window to its last: the bytes of every
//!   message but the last over that time, so that a window holding a
//!   heartbeat more or less does not move it.
//! - [`convergence`]: `nodes` nodes, each through its own loopback proxy
//!   ([`Proxy`]) and tracking `per_node` presences; once every node lists
//!   all of them, the proxies of `cut` nodes are blocked until each side
//!   has taken the other down (past the down period), then let through
//!   again: the time from then until every node lists the same full set.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use staff_pubsub::nats::NatsConfig;
use staff_pubsub::presence::PresenceTiming;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff;
use staff_pubsub::{PubSub, Topic, Uuid};

use crate::proxy::Proxy;
use crate::scale::Engine;
use crate::servers::Server;

/// Topics the heartbeat workload's presences are spread over.
pub const TOPICS: usize = 100;

/// The metadata of every presence.
fn meta() -> String {
    "viewing page".to_owned()
}

fn topic(i: usize) -> Topic {
    staff::topic_person(Uuid::from_u128(
        0x0193_0000_0000_7000_8000_0002_0000_0000 + i as u128,
    ))
}

/// Phoenix's timing with the broadcast period `broadcast` and (when
/// given) the down period `down`; the rest Phoenix's defaults (10 silent
/// periods: an idle node heartbeats every 11 broadcast periods).
pub fn timing(broadcast: Duration, down: Option<Duration>) -> PresenceTiming {
    let timing = PresenceTiming::default().broadcast_period(broadcast);
    match down {
        Some(down) => timing.down_period(down),
        None => timing,
    }
}

/// A node of `namespace` on `url` (a server's or a proxy's), its
/// `String` tracker's replica started.
async fn node(
    engine: Engine,
    url: String,
    namespace: &str,
    name: &str,
    timing: &PresenceTiming,
) -> PubSub<()> {
    let builder = PubSub::<()>::builder()
        .presence_timing(timing.clone())
        .expect("a valid timing")
        .node_name(name);
    let pubsub = match engine {
        Engine::Redis => {
            builder
                .redis(
                    RedisConfig::new(url)
                        .namespace(namespace)
                        .connect_timeout(Duration::from_secs(1))
                        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)),
                )
                .await
        }
        Engine::Nats => {
            builder
                .nats(
                    NatsConfig::new(url)
                        .namespace(namespace)
                        .connect_timeout(Duration::from_secs(1)),
                )
                .await
        }
    }
    .unwrap_or_else(|error| panic!("node {name}: {error}"));
    // The replica starts with the tracker.
    drop(pubsub.tracker::<String>());
    pubsub
}

/// What one sender published in a window: (time, bytes) per message.
type Sent = HashMap<String, Vec<(Instant, usize)>>;

/// A sender's steady rate: bytes/s, messages/s, bytes per message.
pub type Rate = (f64, f64, f64);

/// Reads the sender of a frame.
type Parse = fn(&[u8]) -> Option<String>;

/// A raw subscriber of a namespace's presence gossip, recording every
/// frame by its sender.
pub struct Tap {
    sent: Arc<Mutex<Sent>>,
    task: tokio::task::JoinHandle<()>,
}

/// The sending node a frame names; `None` if it is no frame.
fn sender(frame: &[u8]) -> Option<String> {
    let (len, rest) = frame.split_first_chunk::<2>()?;
    let name = rest.get(..usize::from(u16::from_be_bytes(*len)))?;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// Records a message of `bytes` from `from` (`"?"` if unknown).
fn record(sent: &Mutex<Sent>, from: Option<String>, bytes: usize) {
    sent.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(from.unwrap_or_else(|| "?".to_owned()))
        .or_default()
        .push((Instant::now(), bytes));
}

/// The node a `phoenix_pubsub_redis` frame names, an External Term Format
/// `{vsn, mode, node_name, topic, message, dispatcher}`: its sender for a
/// broadcast (`:except`), `to <node>` for a message to one node (`:only`);
/// `None` for anything else (a compressed frame, say).
fn phoenix_sender(frame: &[u8]) -> Option<String> {
    let rest = frame.strip_prefix(&[131, 104])?.get(1..)?;
    let rest = match rest.first()? {
        97 => rest.get(2..)?,
        98 => rest.get(5..)?,
        _ => return None,
    };
    let (mode, rest) = match rest.first()? {
        119 => {
            let len = usize::from(*rest.get(1)?);
            (rest.get(2..2 + len)?, rest.get(2 + len..)?)
        }
        100 | 118 => {
            let len = usize::from(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?]));
            (rest.get(3..3 + len)?, rest.get(3 + len..)?)
        }
        _ => return None,
    };
    let rest = rest.strip_prefix(&[109])?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let node = String::from_utf8_lossy(rest.get(4..4 + len)?);
    Some(if mode == b"except" {
        node.into_owned()
    } else {
        format!("to {node}")
    })
}

impl Tap {
    /// Subscribes to every presence channel of `namespace`, confirmed
    /// before this returns.
    pub async fn start(engine: Engine, server: &Server, namespace: &str) -> Self {
        let sent = Arc::new(Mutex::new(Sent::new()));
        let recording = Arc::clone(&sent);
        let task = match engine {
            Engine::Redis => {
                let client = redis::Client::open(server.url()).expect("a Redis URL");
                let mut pubsub = client.get_async_pubsub().await.expect("a connection");
                // Ours: `<namespace>:presence:<tracker>`; Phoenix's:
                // `phx:<adapter>` (the namespace is then `phx`).
                let (pattern, parse): (String, Parse) = if namespace == "phx" {
                    ("phx:*".to_owned(), phoenix_sender)
                } else {
                    (format!("{namespace}:presence:*"), sender)
                };
                pubsub.psubscribe(pattern).await.expect("PSUBSCRIBE");
                let mut stream = pubsub.into_on_message();
                tokio::spawn(async move {
                    while let Some(message) = stream.next().await {
                        let bytes = message.get_payload_bytes();
                        record(&recording, parse(bytes), bytes.len());
                    }
                })
            }
            Engine::Nats => {
                let client = async_nats::connect(server.url()).await.expect("a client");
                let mut subscriber = client
                    .subscribe(format!("{namespace}._presence.>"))
                    .await
                    .expect("SUB");
                client.flush().await.expect("the SUB sent");
                tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        record(&recording, sender(&message.payload), message.payload.len());
                    }
                    drop(client);
                })
            }
        };
        Self { sent, task }
    }

    /// What was recorded since the last `take`, and a fresh start.
    pub fn take(&self) -> Sent {
        std::mem::take(
            &mut *self
                .sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A sender's steady rate over `messages` (in order): bytes/s and
/// messages/s from its first message to its last, and bytes per message;
/// `None` with fewer than two messages.
pub fn rate(messages: &[(Instant, usize)]) -> Option<Rate> {
    let (first, last) = (messages.first()?, messages.last()?);
    let secs = last.0.duration_since(first.0).as_secs_f64();
    if messages.len() < 2 || secs <= 0.0 {
        return None;
    }
    let bytes: usize = messages[..messages.len() - 1].iter().map(|m| m.1).sum();
    let count = (messages.len() - 1) as f64;
    Some((bytes as f64 / secs, count / secs, bytes as f64 / count))
}

/// The rates of `a`, `b` and any other sender seen (`?`: not a frame;
/// `to <node>`: Phoenix's messages to one node).
fn steady(sent: &Sent) -> Vec<(String, Option<Rate>)> {
    let mut steady: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| ((*name).to_owned(), sent.get(*name).and_then(|m| rate(m))))
        .collect();
    for (other, messages) in sent.iter().filter(|(k, _)| *k != "a" && *k != "b") {
        steady.push((other.clone(), rate(messages)));
    }
    steady
}

/// How many presences `node` lists over `topics`.
fn listed(node: &PubSub<()>, topics: &[Topic]) -> usize {
    let tracker = node.tracker::<String>();
    topics.iter().map(|t| tracker.presences(*t).len()).sum()
}

/// The keys `node` lists over `topics`.
fn keys(node: &PubSub<()>, topics: &[Topic]) -> BTreeSet<Arc<str>> {
    let tracker = node.tracker::<String>();
    topics
        .iter()
        .flat_map(|t| tracker.presences(*t))
        .map(|p| p.key)
        .collect()
}

/// Polls `done` every 10 ms until it holds or `limit` passes: the time it
/// took, `None` on the limit.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What [`heartbeat`] measured.
pub struct Heartbeat {
    /// Presences tracked on A.
    pub n: usize,
    /// From B's start to B listing all `n`; `None` if not within 30 s.
    pub transfer: Option<Duration>,
    /// Bytes published on the gossip channel from B's start to then.
    pub transfer_bytes: usize,
    /// The largest message among them (the state, sent whole).
    pub largest: usize,
    /// From the raw subscriber having that message to B listing all: what
    /// the transfer takes once the state is sent (the rest of `transfer`
    /// is mostly waiting for A's next heartbeat).
    pub after_state: Option<Duration>,
    /// Per node (`a`, `b`, then any other sender): bytes/s, messages/s,
    /// bytes per message in the steady window.
    pub steady: Vec<(String, Option<Rate>)>,
}

/// One heartbeat run: fresh nodes on the namespace `namespace`.
pub async fn heartbeat(
    engine: Engine,
    server: &Server,
    n: usize,
    period: Duration,
    window: Duration,
    namespace: &str,
) -> Heartbeat {
    let timing = &timing(period, None);
    let tap = Tap::start(engine, server, namespace).await;
    let a = node(engine, server.url(), namespace, "a", timing).await;
    let topics: Vec<Topic> = (0..TOPICS).map(topic).collect();
    let tracker = a.tracker::<String>();
    let tracked: Vec<_> = (0..n)
        .map(|i| {
            tracker
                .track(topics[i % TOPICS], format!("user-{i}"), meta())
                .expect("under the limits")
        })
        .collect();
    // A's own deltas out of the way: it goes quiet before B comes.
    tokio::time::sleep(period * 3).await;
    tap.take();
    let b = node(engine, server.url(), namespace, "b", timing).await;
    let transfer = until(Duration::from_secs(30), || listed(&b, &topics) == n).await;
    let listed_at = Instant::now();
    let during = tap.take();
    let transfer_bytes = during.values().flatten().map(|(_, bytes)| bytes).sum();
    let state = during.values().flatten().max_by_key(|(_, bytes)| *bytes);
    let largest = state.map_or(0, |(_, bytes)| *bytes);
    let after_state = transfer
        .and(state)
        .map(|(at, _)| listed_at.saturating_duration_since(*at));
    // Settled: past B's own deltas and the clock samples.
    tokio::time::sleep(period * 12).await;
    tap.take();
    tokio::time::sleep(window).await;
    let sent = tap.take();
    let steady = steady(&sent);
    drop(tracked);
    drop((a, b));
    Heartbeat {
        n,
        transfer,
        transfer_bytes,
        largest,
        after_state,
        steady,
    }
}

/// What [`convergence`] measured.
pub struct Convergence {
    /// Nodes, of which `cut` were cut off.
    pub nodes: usize,
    /// Nodes cut off.
    pub cut: usize,
    /// Presences in all.
    pub total: usize,
    /// From the last node's start to every node listing all.
    pub initial: Option<Duration>,
    /// From the cut to both sides having taken the other down.
    pub taken_down: Option<Duration>,
    /// From healing to every node listing the same full set.
    pub healed: Option<Duration>,
}

/// One partition run: fresh nodes on the namespace `namespace`.
pub async fn convergence(
    engine: Engine,
    server: &Server,
    nodes: usize,
    cut: usize,
    per_node: usize,
    (period, down): (Duration, Duration),
    namespace: &str,
) -> Convergence {
    let timing = &timing(period, Some(down));
    let scheme = engine.name();
    let topics: Vec<Topic> = (0..10).map(topic).collect();
    let mut proxies = Vec::with_capacity(nodes);
    let mut pubsubs = Vec::with_capacity(nodes);
    let mut tracked = Vec::with_capacity(nodes * per_node);
    for k in 0..nodes {
        let proxy = Proxy::start(server.port()).await;
        let pubsub = node(
            engine,
            proxy.url(scheme),
            namespace,
            &format!("n{k}"),
            timing,
        )
        .await;
        let tracker = pubsub.tracker::<String>();
        for i in 0..per_node {
            tracked.push(
                tracker
                    .track(topics[i % topics.len()], format!("n{k}-{i}"), meta())
                    .expect("under the limits"),
            );
        }
        proxies.push(proxy);
        pubsubs.push(pubsub);
    }
    let total = nodes * per_node;
    let limit = Duration::from_secs(60);
    let initial = until(limit, || {
        pubsubs.iter().all(|node| listed(node, &topics) == total)
    })
    .await;
    for proxy in &proxies[..cut] {
        proxy.block();
    }
    // Each side holds its own only: the cut nodes their own presences,
    // the others every presence but the cut nodes'.
    let taken_down = until(limit, || {
        pubsubs.iter().enumerate().all(|(k, node)| {
            let want = if k < cut {
                per_node
            } else {
                total - cut * per_node
            };
            listed(node, &topics) == want
        })
    })
    .await;
    for proxy in &proxies[..cut] {
        proxy.unblock();
    }
    let everyone: BTreeSet<Arc<str>> = tracked.iter().map(|t| Arc::from(t.key())).collect();
    let healed = until(limit, || {
        pubsubs
            .iter()
            .all(|node| listed(node, &topics) == total && keys(node, &topics) == everyone)
    })
    .await;
    drop(tracked);
    drop(pubsubs);
    drop(proxies);
    Convergence {
        nodes,
        cut,
        total,
        initial,
        taken_down,
        healed,
    }
}

/// An Elixir node running `bench/presence_elixir/node.exs`; killed on drop.
struct Elixir {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Elixir {
    fn start(
        root: &str,
        redis_port: u16,
        name: &str,
        n: usize,
        expect: usize,
        period: Duration,
    ) -> Self {
        use std::io::BufRead;
        let mut command = std::process::Command::new("elixir");
        for dir in std::fs::read_dir(root).expect("PHX_EBIN_ROOT is a directory") {
            command.arg("-pa").arg(dir.expect("an entry").path());
        }
        let mut child = command
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("presence_elixir/node.exs"))
            .env("REDIS_PORT", redis_port.to_string())
            .env("NODE", name)
            .env("N", n.to_string())
            .env("EXPECT", expect.to_string())
            .env("BROADCAST_MS", period.as_millis().to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("elixir runs");
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a line starting with `prefix`; `None` after `limit`.
    async fn until(&mut self, prefix: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            let line =
                tokio::time::timeout(limit.saturating_sub(start.elapsed()), self.lines.recv())
                    .await
                    .ok()??;
            if line.starts_with(prefix) {
                return Some(start.elapsed());
            }
        }
    }
}

impl Drop for Elixir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`heartbeat`] against two Elixir `Phoenix.Tracker` nodes on the Redis
/// adapter (`bench/presence_elixir/node.exs`): A tracks `n`, then B
/// starts; the transfer runs from B's tracker running to B listing all.
pub async fn heartbeat_elixir(
    root: &str,
    server: &Server,
    n: usize,
    period: Duration,
    window: Duration,
) -> Heartbeat {
    let tap = Tap::start(Engine::Redis, server, "phx").await;
    let limit = Duration::from_secs(180);
    let mut a = Elixir::start(root, server.port(), "a", n, n, period);
    a.until("TRACKED", limit)
        .await
        .expect("A tracks its presences");
    tokio::time::sleep(period * 3).await;
    tap.take();
    let mut b = Elixir::start(root, server.port(), "b", 0, n, period);
    b.until("STARTED", limit).await.expect("B starts");
    let transfer = b.until("LISTED", limit).await;
    let listed_at = Instant::now();
    let during = tap.take();
    let transfer_bytes = during.values().flatten().map(|(_, bytes)| bytes).sum();
    let state = during.values().flatten().max_by_key(|(_, bytes)| *bytes);
    let largest = state.map_or(0, |(_, bytes)| *bytes);
    let after_state = transfer
        .and(state)
        .map(|(at, _)| listed_at.saturating_duration_since(*at));
    tokio::time::sleep(period * 12).await;
    tap.take();
    tokio::time::sleep(window).await;
    let sent = tap.take();
    let steady = steady(&sent);
    drop((a, b));
    Heartbeat {
        n,
        transfer,
        transfer_bytes,
        largest,
        after_state,
        steady,
    }
}
