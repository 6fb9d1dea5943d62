//! Durable against live-only delivery, on each engine, in the
//! same run: `--only durable`.
//!
//! **Throughput and latency**: the two-node workload of [`crate::pair`]
//! (node A broadcasts the 4-topic membership, node B has one subscription
//! per topic, [`IN_FLIGHT`] broadcasts in flight end to end, latency from
//! the broadcast call to B's fourth copy), through our transports only, in
//! each mode:
//!
//! - `redis_live`: `RedisConfig::new`, one `PUBLISH` per broadcast.
//! - `redis_durable`: `RedisConfig::durable(Retention::entries(100_000))`
//!   on the same `redis-server` (no persistence): one script run per
//!   batch of a node's appends (one `XADD` per batch: one stream entry
//!   holding its messages), every node reads the stream with `XREAD BLOCK`.
//! - `redis_durable_aof`: the same on a second `redis-server` with
//!   `--appendonly yes --appendfsync everysec` (what a deployment that
//!   wants the log to outlive a Redis restart runs).
//! - `nats_live`: `NatsConfig::new` (one core NATS publish per topic).
//! - `nats_durable`: `NatsConfig::durable(Retention::entries(100_000))` on
//!   the same `nats-server` (JetStream on, file store): one JetStream
//!   publish per broadcast, acknowledged, read by every node's consumer.
//!
//! Node A also has a subscription of its own (the person topic): its
//! latency is how long the sender's own subscribers wait (at the call when
//! live; after the round trip through the log when durable). Each
//! subscription checks that its positions are consecutive when durable;
//! positions out of sequence, duplicates, errors from `recv`, copies that
//! never came, and the nodes' `lagged`, `gaps` and `rejected` counts are
//! reported as anomalies, by kind. Each
//! contender once per round, in rotating order, after one warm-up run;
//! ratios durable / live are paired within a round.
//!
//! **Catch-up**: node C (a subscription per topic, queues big enough for
//! the whole outage) is kept away from the server (Redis: C logs in as its
//! own ACL user, locked out with `ACL SETUSER <u> off` and `CLIENT KILL USER
//! <u>`; NATS: C connects through a loopback proxy that cuts and refuses
//! its connections), node A appends `n` broadcasts, then C is let back
//! in; the rate is `n` over the time from C's reconnect (its connection
//! state back to `Connected`) to its last copy.
//!
//! **Memory per retained entry**: the same `n` entries (the catch-up's own
//! namespace holds nothing else): Redis `MEMORY USAGE <log key> SAMPLES 0`
//! over the messages it holds (its last sequence number; a stream entry
//! holds a batch of them), and the growth of `INFO memory`'s `used_memory`; NATS the
//! stream's `state.bytes` over `state.messages` (`STREAM.INFO`); for both
//! the server's RSS growth.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use staff_pubsub::nats::NatsConfig;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff::{self, Message, TeamMembershipEvent};
use staff_pubsub::{Connection, PubSub, RecvError, Retention, Stats, Subscription};
use tokio::task::JoinHandle;

use crate::cpu;
use crate::pair::{self, Track, IN_FLIGHT};
use crate::proxy::Proxy;
use crate::servers::Server;

/// The entries the throughput runs' logs keep.
const RETAINED: u64 = 100_000;
const LIVE_NS: &str = "bench-live";
const DURABLE_NS: &str = "bench-durable";
const CATCH_UP_NS: &str = "bench-catchup";
/// The Redis user node C logs in as in the catch-up (locked out by ACL).
const CATCH_UP_USER: &str = "catchup";

/// One mode on one engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    /// Redis pub/sub.
    RedisLive,
    /// A Redis Stream, no persistence.
    RedisDurable,
    /// A Redis Stream on a Redis with an append-only file (fsync every s).
    RedisDurableAof,
    /// Core NATS.
    NatsLive,
    /// A JetStream stream (file store).
    NatsDurable,
}

impl Contender {
    /// Every contender, in the order of the report.
    pub const ALL: [Self; 5] = [
        Self::RedisLive,
        Self::RedisDurable,
        Self::RedisDurableAof,
        Self::NatsLive,
        Self::NatsDurable,
    ];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::RedisLive => "redis_live",
            Self::RedisDurable => "redis_durable",
            Self::RedisDurableAof => "redis_durable_aof",
            Self::NatsLive => "nats_live",
            Self::NatsDurable => "nats_durable",
        }
    }

    /// The live contender of the same engine, for a durable one.
    pub fn baseline(self) -> Option<Self> {
        match self {
            Self::RedisDurable | Self::RedisDurableAof => Some(Self::RedisLive),
            Self::NatsDurable => Some(Self::NatsLive),
            Self::RedisLive | Self::NatsLive => None,
        }
    }

    fn durable(self) -> bool {
        self.baseline().is_some()
    }
}

/// What one run of one contender measured.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Which contender.
    pub contender: Contender,
    /// Broadcasts received by B per second (all four topics).
    pub per_sec: f64,
    /// Median latency, broadcast call to B's fourth copy, µs.
    pub p50_us: f64,
    /// 99th percentile of the same, µs.
    pub p99_us: f64,
    /// Median latency, broadcast call to A's own subscriber, µs.
    pub own_p50_us: f64,
    /// 99th percentile of the same, µs.
    pub own_p99_us: f64,
    /// CPU of this process per broadcast, µs.
    pub cpu_us: f64,
    /// CPU of the engine's server per broadcast, µs.
    pub server_cpu_us: f64,
    /// What went wrong, by kind (all zero in a sound run).
    pub anomalies: Anomalies,
}

/// The servers of this part, its own: a Redis without persistence, one
/// with an append-only file, a NATS with JetStream.
pub struct Servers {
    redis: Server,
    redis_aof: Server,
    nats: Server,
}

impl Servers {
    /// Starts them.
    pub async fn start() -> Self {
        Self {
            redis: Server::redis().await,
            redis_aof: Server::redis_with(&["--appendonly", "yes", "--appendfsync", "everysec"])
                .await,
            nats: Server::nats_with(true).await,
        }
    }

    fn of(&self, contender: Contender) -> &Server {
        match contender {
            Contender::RedisLive | Contender::RedisDurable => &self.redis,
            Contender::RedisDurableAof => &self.redis_aof,
            Contender::NatsLive | Contender::NatsDurable => &self.nats,
        }
    }
}

/// Nodes A and B of every contender, connected once.
pub struct Bench<'s> {
    servers: &'s Servers,
    nodes: Vec<(PubSub<Message>, PubSub<Message>)>,
}

async fn node(
    contender: Contender,
    url: String,
    name: &'static str,
    capacity: usize,
    namespace: &str,
    retention: Option<Retention>,
) -> PubSub<Message> {
    let builder = staff::builder().node_name(name).capacity(capacity);
    let built = if matches!(contender, Contender::NatsLive | Contender::NatsDurable) {
        let config = NatsConfig::new(url).namespace(namespace);
        builder
            .nats(match retention {
                Some(retention) => config.durable(retention),
                None => config,
            })
            .await
    } else {
        let config = RedisConfig::new(url)
            .namespace(namespace)
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100));
        builder
            .redis(match retention {
                Some(retention) => config.durable(retention),
                None => config,
            })
            .await
    };
    built.unwrap_or_else(|error| panic!("node {name} of {}: {error}", contender.name()))
}

impl<'s> Bench<'s> {
    /// Connects nodes A and B of every contender.
    pub async fn connect(servers: &'s Servers) -> Self {
        let mut nodes = Vec::new();
        for contender in Contender::ALL {
            let (namespace, retention) = if contender.durable() {
                (DURABLE_NS, Some(Retention::entries(RETAINED)))
            } else {
                (LIVE_NS, None)
            };
            let url = servers.of(contender).url();
            let mut pair = Vec::new();
            for name in ["a", "b"] {
                pair.push(
                    node(
                        contender,
                        url.clone(),
                        name,
                        staff_pubsub::DEFAULT_CAPACITY,
                        namespace,
                        retention.clone(),
                    )
                    .await,
                );
            }
            let b = pair.pop().expect("b");
            let a = pair.pop().expect("a");
            nodes.push((a, b));
        }
        Self { servers, nodes }
    }

    /// One run of `contender`: `n` broadcasts, A to B.
    pub async fn run(&self, contender: Contender, n: usize) -> Run {
        let at = Contender::ALL
            .iter()
            .position(|c| *c == contender)
            .expect("a contender");
        let (a, b) = &self.nodes[at];
        let server = self.servers.of(contender);
        let track = Track::new(n);
        let own = Arc::new(Own::new(n));
        let faults = Arc::new(Faults::default());
        let (a_before, b_before) = (a.stats(), b.stats());
        let mut tasks: Vec<JoinHandle<()>> = pair::topics()
            .into_iter()
            .map(|topic| {
                let subscription = b.subscribe(topic).expect("subscribed");
                let track = Arc::clone(&track);
                tokio::spawn(drain(
                    subscription,
                    contender.durable(),
                    Arc::clone(&faults),
                    move |seq| {
                        track.arrived(seq, 1);
                    },
                ))
            })
            .collect();
        let own_subscription = a
            .subscribe(staff::topic_person(pair::membership(0).staff_person_uuid))
            .expect("subscribed");
        {
            let (own, track) = (Arc::clone(&own), Arc::clone(&track));
            tasks.push(tokio::spawn(drain(
                own_subscription,
                contender.durable(),
                Arc::clone(&faults),
                move |seq| own.arrived(seq, &track),
            )));
        }
        b.sync().await.expect("B's interest registered");
        a.sync().await.expect("A's interest registered");
        let (cpu_before, server_before) = (cpu::process(), server.cpu());
        let sender = a.clone();
        let elapsed = pair::drive(&track, move |seq| {
            let a = sender.clone();
            async move { pair::broadcast(&a, seq).await }
        })
        .await;
        let cpu_used = cpu::process().saturating_sub(cpu_before);
        let server_used = server.cpu().saturating_sub(server_before);
        // A's own copies: they may trail B's when durable.
        let deadline = Instant::now() + Duration::from_secs(60);
        while own.count.load(Ordering::Acquire) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for task in tasks {
            task.abort();
        }
        let mut anomalies = Anomalies {
            unexpected: track.anomalies() + own.anomalies.load(Ordering::Relaxed),
            missing: (n - own.count.load(Ordering::Acquire).min(n)) as u64,
            ..Anomalies::default()
        };
        anomalies.add_faults(&faults);
        anomalies.add_stats(&a_before, &a.stats());
        anomalies.add_stats(&b_before, &b.stats());
        let latencies = track.sorted_latencies();
        let own_latencies = own.sorted_latencies();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        let micros = |l: &[u64], q: usize| l[(n * q / 100).min(n - 1)] as f64 / 1e3;
        Run {
            contender,
            per_sec: n as f64 / elapsed.as_secs_f64(),
            p50_us: micros(&latencies, 50),
            p99_us: micros(&latencies, 99),
            own_p50_us: micros(&own_latencies, 50),
            own_p99_us: micros(&own_latencies, 99),
            cpu_us: per(cpu_used),
            server_cpu_us: per(server_used),
            anomalies,
        }
    }
}

/// A's own subscriber: when each broadcast reached it.
struct Own {
    latency: Vec<AtomicU64>,
    count: AtomicUsize,
    anomalies: AtomicU64,
}

impl Own {
    fn new(n: usize) -> Self {
        Self {
            latency: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(0),
            anomalies: AtomicU64::new(0),
        }
    }

    fn arrived(&self, seq: usize, track: &Track) {
        match self.latency.get(seq) {
            Some(slot) if slot.load(Ordering::Relaxed) == 0 => {
                // At least 1 ns: 0 marks "not yet".
                slot.store(track.since_start(seq).max(1), Ordering::Release);
                self.count.fetch_add(1, Ordering::AcqRel);
            }
            _ => {
                self.anomalies.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn sorted_latencies(&self) -> Vec<u64> {
        let mut latencies: Vec<u64> = self
            .latency
            .iter()
            .map(|l| l.load(Ordering::Acquire))
            .collect();
        latencies.sort_unstable();
        latencies
    }
}

/// What the drains of one run saw go wrong, by kind (all zero in a sound
/// run).
#[derive(Default)]
pub struct Faults {
    /// A durable subscription's position that did not follow the one
    /// before (or a message without a position).
    out_of_sequence: AtomicU64,
    /// `recv` failed: a gap or lag told to the subscriber.
    recv_errors: AtomicU64,
    /// A message that is not one of this run's broadcasts, a duplicate
    /// copy, or more than four copies (counted by the tracker).
    unexpected: AtomicU64,
}

impl Faults {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The anomalies of a run or a catch-up, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Anomalies {
    /// Positions out of sequence.
    pub out_of_sequence: u64,
    /// Errors from `recv` (gaps, lag).
    pub recv_errors: u64,
    /// Duplicates and messages not of the run.
    pub unexpected: u64,
    /// Broadcasts a subscriber never received (A's own subscriber, within
    /// 60 s of B's last).
    pub missing: u64,
    /// `stats()` deltas over the nodes: `lagged`, `gaps`, `rejected`.
    pub lagged: u64,
    /// See `lagged`.
    pub gaps: u64,
    /// See `lagged`.
    pub rejected: u64,
}

impl Anomalies {
    /// Their sum.
    pub fn total(&self) -> u64 {
        self.out_of_sequence
            + self.recv_errors
            + self.unexpected
            + self.missing
            + self.lagged
            + self.gaps
            + self.rejected
    }

    /// The non-zero kinds, `none` if all are zero.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("out of sequence", self.out_of_sequence),
            ("recv errors", self.recv_errors),
            ("unexpected", self.unexpected),
            ("missing", self.missing),
            ("lagged", self.lagged),
            ("gaps", self.gaps),
            ("rejected", self.rejected),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// Adds the `stats()` deltas of a node.
    fn add_stats(&mut self, before: &Stats, after: &Stats) {
        self.lagged += after.lagged - before.lagged;
        self.gaps += after.gaps - before.gaps;
        self.rejected += after.rejected - before.rejected;
    }

    fn add_faults(&mut self, faults: &Faults) {
        self.out_of_sequence += faults.out_of_sequence.load(Ordering::Relaxed);
        self.recv_errors += faults.recv_errors.load(Ordering::Relaxed);
        self.unexpected += faults.unexpected.load(Ordering::Relaxed);
    }
}

/// Drains one subscription, calling `arrived` with each broadcast's
/// number; when `durable`, checks that positions are consecutive. What
/// goes wrong is counted in `faults`.
async fn drain(
    mut subscription: Subscription<Message>,
    durable: bool,
    faults: Arc<Faults>,
    arrived: impl Fn(usize) + Send + 'static,
) {
    let mut last: Option<u64> = None;
    loop {
        match subscription.recv_with_position().await {
            Ok((message, position)) => {
                if durable {
                    match position {
                        Some(position) if last.is_none_or(|last| position.seq() == last + 1) => {}
                        _ => Faults::add(&faults.out_of_sequence),
                    }
                    last = position.map(|position| position.seq());
                }
                match pair::seq_of(&message) {
                    Some(seq) => arrived(seq),
                    None => Faults::add(&faults.unexpected),
                }
            }
            Err(RecvError::Closed) => break,
            Err(_) => Faults::add(&faults.recv_errors),
        }
    }
}

/// What one catch-up measured, on one engine.
#[derive(Clone, Debug)]
pub struct CatchUp {
    /// `redis` or `nats`.
    pub engine: &'static str,
    /// Broadcasts appended while C was away.
    pub n: usize,
    /// Their append rate (A, 64 in flight, C away), broadcasts/s.
    pub append_per_sec: f64,
    /// From letting C back in to C's `Connected`, ms.
    pub reconnect_ms: f64,
    /// From C's `Connected` to its last copy, s.
    pub replay_s: f64,
    /// `n` over `replay_s`.
    pub per_sec: f64,
    /// From C's `Connected` to its first copy, ms.
    pub first_copy_ms: f64,
    /// `n - 1` over the time from C's first copy to its last.
    pub streaming_per_sec: f64,
    /// Broadcasts C had all four copies of.
    pub complete: usize,
    /// What went wrong, by kind (all zero in a sound catch-up).
    pub anomalies: Anomalies,
    /// C was still away when A had appended them all (if not, the rate is
    /// not a catch-up's).
    pub stayed_away: bool,
    /// The server's own figure for the log, bytes per entry (Redis
    /// `MEMORY USAGE` / the messages it holds, its last sequence number;
    /// NATS stream bytes / messages).
    pub log_bytes_per_entry: f64,
    /// Entries in the log when measured.
    pub log_entries: u64,
    /// Redis `used_memory` growth per entry (NATS: none).
    pub used_memory_per_entry: Option<f64>,
    /// The server's RSS growth per entry, bytes.
    pub rss_per_entry: f64,
    /// The envelope's size, bytes (one per entry; the payload the log
    /// keeps).
    pub envelope_bytes: usize,
}

/// How node C is kept away.
enum Outage {
    Redis(redis::aio::MultiplexedConnection),
    Nats(Proxy),
}

impl Outage {
    async fn lock_out(&mut self) {
        match self {
            Self::Redis(admin) => {
                let _: () = redis::cmd("ACL")
                    .arg(&["SETUSER", CATCH_UP_USER, "off"])
                    .query_async(admin)
                    .await
                    .expect("ACL SETUSER off");
                let _: redis::Value = redis::cmd("CLIENT")
                    .arg(&["KILL", "USER", CATCH_UP_USER])
                    .query_async(admin)
                    .await
                    .expect("CLIENT KILL USER");
            }
            Self::Nats(proxy) => proxy.block(),
        }
    }

    async fn let_in(&mut self) {
        match self {
            Self::Redis(admin) => {
                let _: () = redis::cmd("ACL")
                    .arg(&["SETUSER", CATCH_UP_USER, "on"])
                    .query_async(admin)
                    .await
                    .expect("ACL SETUSER on");
            }
            Self::Nats(proxy) => proxy.unblock(),
        }
    }
}

/// The log's own measure: (bytes, entries).
async fn log_size(servers: &Servers, engine: &'static str) -> (u64, u64) {
    if engine == "redis" {
        let mut admin = redis_admin(&servers.redis).await;
        let key = RedisConfig::new("").namespace(CATCH_UP_NS).log_key();
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut admin)
            .await
            .expect("MEMORY USAGE");
        // Messages, not stream entries (one per batch of appends): the
        // log's last sequence number, since this log keeps them all.
        let meta = RedisConfig::new("").namespace(CATCH_UP_NS).log_meta_key();
        let entries: u64 = redis::cmd("HGET")
            .arg(&meta)
            .arg("seq")
            .query_async(&mut admin)
            .await
            .expect("HGET seq");
        (bytes.unwrap_or(0), entries)
    } else {
        let client = async_nats::connect(servers.nats.url())
            .await
            .expect("async-nats connects");
        let reply = client
            .request(
                format!("$JS.API.STREAM.INFO.{}", nats_stream(CATCH_UP_NS)),
                "".into(),
            )
            .await
            .expect("STREAM.INFO");
        let info: serde_json::Value =
            serde_json::from_slice(&reply.payload).expect("a JSON stream info");
        let state = &info["state"];
        (
            state["bytes"].as_u64().unwrap_or(0),
            state["messages"].as_u64().unwrap_or(0),
        )
    }
}

/// The JetStream stream of a namespace, as the transport names it
/// (`staff-pubsub-<namespace>`, for a namespace of letters, digits and `-`).
fn nats_stream(namespace: &str) -> String {
    format!("staff-pubsub-{namespace}")
}

async fn redis_admin(server: &Server) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis-rs connects")
}

async fn used_memory(admin: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(admin)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The catch-up of `engine` (`redis` or `nats`) after `n` broadcasts
/// appended while node C was away, and the memory they take.
pub async fn catch_up(servers: &Servers, engine: &'static str, n: usize) -> CatchUp {
    let retention = Retention::entries(2 * n as u64);
    let capacity = n + 1_024;
    let (server, contender) = if engine == "redis" {
        (&servers.redis, Contender::RedisDurable)
    } else {
        (&servers.nats, Contender::NatsDurable)
    };
    let (mut outage, c_url) = if engine == "redis" {
        let mut admin = redis_admin(server).await;
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", CATCH_UP_USER, "on", ">pw", "~*", "&*", "+@all"])
            .query_async(&mut admin)
            .await
            .expect("ACL SETUSER");
        let url = format!("redis://{CATCH_UP_USER}:pw@127.0.0.1:{}", server.port());
        (Outage::Redis(admin), url)
    } else {
        let proxy = Proxy::start(server.port()).await;
        let url = proxy.url("nats");
        (Outage::Nats(proxy), url)
    };
    let a = node(
        contender,
        server.url(),
        "a",
        staff_pubsub::DEFAULT_CAPACITY,
        CATCH_UP_NS,
        Some(retention.clone()),
    )
    .await;
    let c = node(
        contender,
        c_url,
        "c",
        capacity,
        CATCH_UP_NS,
        Some(retention),
    )
    .await;
    let track = Track::new(n);
    // Broadcast `n` is a fence: once C has it, C's reader is reading (a
    // node reports `Connected` as soon as it is built, before its reader's
    // own connection is made).
    let fence = Arc::new(tokio::sync::Notify::new());
    let faults = Arc::new(Faults::default());
    let base = Instant::now();
    // When C got its first copy after the outage (ns after `base`).
    let first = Arc::new(AtomicU64::new(0));
    let tasks: Vec<JoinHandle<()>> = pair::topics()
        .into_iter()
        .map(|topic| {
            let subscription = c.subscribe(topic).expect("subscribed");
            let (track, fence, first) =
                (Arc::clone(&track), Arc::clone(&fence), Arc::clone(&first));
            tokio::spawn(drain(subscription, true, Arc::clone(&faults), move |seq| {
                if seq == n {
                    fence.notify_one();
                } else {
                    let now = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let _ = first.compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed);
                    track.arrived(seq, 1);
                }
            }))
        })
        .collect();
    c.sync().await.expect("C's interest registered");
    pair::broadcast(&a, n).await;
    tokio::time::timeout(Duration::from_secs(30), fence.notified())
        .await
        .expect("C reads the log");
    let c_before = c.stats();

    outage.lock_out().await;
    tokio::time::timeout(
        Duration::from_secs(30),
        c.wait_for_connection(Connection::Disconnected),
    )
    .await
    .expect("C notices the outage");
    let mut admin = if engine == "redis" {
        Some(redis_admin(server).await)
    } else {
        None
    };
    let used_before = match &mut admin {
        Some(admin) => used_memory(admin).await,
        None => 0,
    };
    let rss_before = server.rss_kib();

    // A appends n broadcasts, 64 in flight.
    let next = Arc::new(AtomicUsize::new(0));
    let appending = Instant::now();
    let senders: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (a, next) = (a.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= n {
                        break;
                    }
                    pair::broadcast(&a, seq).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("a sender task");
    }
    let append_per_sec = n as f64 / appending.elapsed().as_secs_f64();
    let stayed_away = c.connection() == Connection::Disconnected;
    let used_after = match &mut admin {
        Some(admin) => used_memory(admin).await,
        None => 0,
    };
    let rss_after = server.rss_kib();
    let (log_bytes, log_entries) = log_size(servers, engine).await;

    // C comes back.
    let connected = {
        let c = c.clone();
        tokio::spawn(async move {
            c.wait_for_connection(Connection::Connected).await;
            Instant::now()
        })
    };
    let let_in = Instant::now();
    outage.let_in().await;
    let connected = tokio::time::timeout(Duration::from_secs(60), connected)
        .await
        .expect("C reconnects within 60 s")
        .expect("the waiting task");
    let all = tokio::time::timeout(Duration::from_secs(300), track.all_received()).await;
    let done = Instant::now();
    if all.is_err() {
        eprintln!(
            "catch-up on {engine}: C received {} of {n} within 300 s",
            track.received()
        );
    }
    // A moment for duplicates to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for task in tasks {
        task.abort();
    }
    let c_after = c.stats();
    let replay_s = done.duration_since(connected).as_secs_f64();
    let mut anomalies = Anomalies {
        unexpected: track.anomalies(),
        missing: (n - track.received().min(n)) as u64,
        ..Anomalies::default()
    };
    anomalies.add_faults(&faults);
    anomalies.add_stats(&c_before, &c_after);
    let first_copy = base + Duration::from_nanos(first.load(Ordering::Acquire));
    let streaming_s = done.saturating_duration_since(first_copy).as_secs_f64();
    let per_entry = |bytes: f64| bytes / n as f64;
    CatchUp {
        engine,
        n,
        append_per_sec,
        reconnect_ms: connected.duration_since(let_in).as_secs_f64() * 1e3,
        replay_s,
        per_sec: n as f64 / replay_s,
        first_copy_ms: first_copy
            .saturating_duration_since(connected)
            .as_secs_f64()
            * 1e3,
        streaming_per_sec: (n - 1) as f64 / streaming_s,
        complete: track.received(),
        stayed_away,
        anomalies,
        log_bytes_per_entry: log_bytes as f64 / log_entries.max(1) as f64,
        log_entries,
        used_memory_per_entry: admin
            .is_some()
            .then(|| per_entry((used_after - used_before) as f64)),
        rss_per_entry: per_entry(((rss_after - rss_before) * 1024) as f64),
        envelope_bytes: pair::envelope_bytes(
            &pair::topics(),
            &Message::TeamMembership(TeamMembershipEvent::TeamPersonAdded, pair::membership(0)),
        )
        .len(),
    }
}
