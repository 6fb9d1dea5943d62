//! Two nodes, A to B: a 4-topic membership broadcast
//! (`staff::broadcast_team_membership_on`) from node A, received by node B,
//! which subscribes to all four topics (one subscription per topic, each
//! drained by its own task). The same traffic through each engine's raw
//! client is the reference:
//!
//! - `redis`: our Redis transport (one `PUBLISH` per broadcast, awaited).
//! - `redis_raw`: redis-rs `PUBLISH` of the same envelope bytes on one
//!   multiplexed connection, awaited; B is a redis-rs pub/sub connection on
//!   the channel.
//! - `redis_raw_decoded`: `redis_raw` plus the receive work our nodes do:
//!   B decodes the envelope and the message (`wire::decode`, then
//!   `message::<staff::Message>()`), and a second pub/sub connection
//!   stands for A, which reads its own envelopes back and decodes their
//!   header (every node of ours subscribes to the channel). It tells the
//!   cost of that work apart from the rest of the transport.
//! - `nats`: our NATS transport (one envelope per topic, then a flush).
//! - `nats_raw`: async-nats `publish` of the same four per-topic
//!   envelopes on one client, no flush (the client writes its buffer by
//!   itself); B is another client with the four subscriptions.
//! - `nats_raw_flush`: the same plus `flush()` per broadcast, as ours does.
//! - `nats_raw_decoded`: `nats_raw_flush` plus our receive work: B decodes
//!   each of the four envelopes and its message.
//!
//! A broadcast counts as received when all four topics' copies have reached
//! B (for Redis one envelope carries the four; for NATS four envelopes);
//! its latency runs from just before the broadcast call to that moment.
//! At most [`IN_FLIGHT`] broadcasts are in flight end to end: 64 sender
//! tasks, and a broadcast starts only once one of the 64 before it has
//! been received by B. The raw receivers find the sequence number in the
//! bytes without decoding the envelope (a byte search and a UUID parse);
//! ours decode the envelope and the message, and dispatch.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use staff_pubsub::nats::NatsConfig;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff::{self, Message, TeamMembership, TeamMembershipEvent};
use staff_pubsub::transport::{Envelope, Mode};
use staff_pubsub::{wire, PubSub, RecvError, Topic, Uuid};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::cpu;
use crate::servers::Server;

/// Broadcasts in flight end to end (sent and not yet received by B).
pub const IN_FLIGHT: usize = 64;

const TEAM: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0002);
const PERSON: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0003);
const INSTANCE: u64 = 0x5f0c_3a9e_17d2_b846;
const REDIS_NS: &str = "bench-pair";
const REDIS_RAW_CHANNEL: &str = "bench-pair-raw";
const NATS_NS: &str = "bench-pair";
const NATS_RAW_NS: &str = "bench-pair-raw";

/// One way of carrying the broadcast from A to B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    /// Our Redis transport.
    Redis,
    /// redis-rs `PUBLISH`, the same bytes.
    RedisRaw,
    /// The same, with our nodes' receive work (decode on B, header on A).
    RedisRawDecoded,
    /// Our NATS transport.
    Nats,
    /// async-nats `publish` of the same four envelopes, no flush.
    NatsRaw,
    /// The same, with a flush per broadcast.
    NatsRawFlush,
    /// The same, with our node's receive work (decode on B).
    NatsRawDecoded,
}

impl Contender {
    /// Every contender, in the order of the report.
    pub const ALL: [Self; 7] = [
        Self::Redis,
        Self::RedisRaw,
        Self::RedisRawDecoded,
        Self::Nats,
        Self::NatsRaw,
        Self::NatsRawFlush,
        Self::NatsRawDecoded,
    ];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::RedisRaw => "redis_raw",
            Self::RedisRawDecoded => "redis_raw_decoded",
            Self::Nats => "nats",
            Self::NatsRaw => "nats_raw",
            Self::NatsRawFlush => "nats_raw_flush",
            Self::NatsRawDecoded => "nats_raw_decoded",
        }
    }

    fn is_redis(self) -> bool {
        matches!(self, Self::Redis | Self::RedisRaw | Self::RedisRawDecoded)
    }
}

/// What one run of one contender measured.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Which contender.
    pub contender: Contender,
    /// Broadcasts received by B per second (all four topics).
    pub per_sec: f64,
    /// Median latency, broadcast call to B's receipt of the last topic, µs.
    pub p50_us: f64,
    /// 99th percentile of the same, µs.
    pub p99_us: f64,
    /// CPU of this process (A, B, the clients) per broadcast, µs.
    pub cpu_us: f64,
    /// CPU of the engine's server per broadcast, µs.
    pub server_cpu_us: f64,
    /// Lagged, gaps, duplicates or unreadable messages (zero in a sound
    /// run).
    pub anomalies: u64,
}

/// The nodes and clients of every contender, connected once.
pub struct Pair<'s> {
    redis_server: &'s Server,
    nats_server: &'s Server,
    redis_a: PubSub<Message>,
    redis_b: PubSub<Message>,
    redis_client: redis::Client,
    redis_raw: redis::aio::MultiplexedConnection,
    nats_a: PubSub<Message>,
    nats_b: PubSub<Message>,
    nats_raw_a: async_nats::Client,
    nats_raw_b: async_nats::Client,
    raw_subjects: Arc<[String; 4]>,
}

/// The four topics of the broadcast, in the order the generated function
/// lists them.
pub fn topics() -> [Topic; 4] {
    [
        staff::topic_teams(),
        staff::topic_team(TEAM),
        staff::topic_people(),
        staff::topic_person(PERSON),
    ]
}

fn message(seq: usize) -> Message {
    Message::TeamMembership(TeamMembershipEvent::TeamPersonAdded, membership(seq))
}

pub fn membership(seq: usize) -> TeamMembership {
    TeamMembership {
        uuid: Uuid::from_u128(seq as u128),
        team_uuid: TEAM,
        staff_person_uuid: PERSON,
    }
}

pub fn envelope_bytes(topics: &[Topic], message: &Message) -> Vec<u8> {
    wire::encode(
        &Envelope {
            origin: "a",
            instance: Some(INSTANCE),
            mode: Mode::ExceptOrigin,
            topics,
            message,
        },
        wire::DEFAULT_MAX_MESSAGE_SIZE,
    )
    .expect("the envelope encodes")
}

/// The broadcast's sequence number, found in an envelope's bytes: the
/// membership's `uuid`, the first field of the payload.
fn seq_in(bytes: &[u8]) -> Option<usize> {
    const KEY: &[u8] = br#""payload":{"uuid":""#;
    let at = bytes.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let text = std::str::from_utf8(bytes.get(at..at + 36)?).ok()?;
    usize::try_from(Uuid::parse_str(text).ok()?.as_u128()).ok()
}

/// What our receive side does with an envelope, as node `me`: decode the
/// envelope, and the message if it is for `me`.
fn decode(bytes: &[u8], me: &str) -> Option<usize> {
    let incoming = wire::decode(bytes, wire::DEFAULT_MAX_MESSAGE_SIZE).ok()?;
    if !incoming.is_for(me, INSTANCE) {
        return None;
    }
    seq_of(&incoming.message::<Message>().ok()?)
}

pub fn seq_of(message: &Message) -> Option<usize> {
    match message {
        Message::TeamMembership(_, membership) => usize::try_from(membership.uuid.as_u128()).ok(),
        _ => None,
    }
}

impl<'s> Pair<'s> {
    /// Connects nodes A and B of each transport and the raw clients.
    pub async fn connect(redis_server: &'s Server, nats_server: &'s Server) -> Self {
        let redis_node = |name: &'static str| {
            staff::builder()
                .node_name(name)
                .redis(RedisConfig::new(redis_server.url()).namespace(REDIS_NS))
        };
        let nats_node = |name: &'static str| {
            staff::builder()
                .node_name(name)
                .nats(NatsConfig::new(nats_server.url()).namespace(NATS_NS))
        };
        let redis_client = redis::Client::open(redis_server.url()).expect("a Redis URL");
        let redis_raw = redis_client
            .get_multiplexed_async_connection()
            .await
            .expect("redis-rs connects");
        let raw_config = NatsConfig::new(nats_server.url()).namespace(NATS_RAW_NS);
        let raw_subjects = topics().map(|topic| raw_config.subject(&topic).expect("a subject"));
        Self {
            redis_server,
            nats_server,
            redis_a: redis_node("a").await.expect("node a on Redis"),
            redis_b: redis_node("b").await.expect("node b on Redis"),
            redis_client,
            redis_raw,
            nats_a: nats_node("a").await.expect("node a on NATS"),
            nats_b: nats_node("b").await.expect("node b on NATS"),
            nats_raw_a: async_nats::connect(nats_server.url())
                .await
                .expect("async-nats connects"),
            nats_raw_b: async_nats::connect(nats_server.url())
                .await
                .expect("async-nats connects"),
            raw_subjects: Arc::new(raw_subjects),
        }
    }

    /// One run of `contender`: `n` broadcasts, A to B.
    pub async fn run(&self, contender: Contender, n: usize) -> Run {
        let track = Track::new(n);
        let receivers = self.receive(contender, &track).await;
        let server = if contender.is_redis() {
            self.redis_server
        } else {
            self.nats_server
        };
        let (cpu_before, server_before) = (cpu::process(), server.cpu());
        let elapsed = match contender {
            Contender::Redis => {
                let a = self.redis_a.clone();
                drive(&track, move |seq| {
                    let a = a.clone();
                    async move { broadcast(&a, seq).await }
                })
                .await
            }
            Contender::Nats => {
                let a = self.nats_a.clone();
                drive(&track, move |seq| {
                    let a = a.clone();
                    async move { broadcast(&a, seq).await }
                })
                .await
            }
            Contender::RedisRaw | Contender::RedisRawDecoded => {
                let connection = self.redis_raw.clone();
                drive(&track, move |seq| {
                    let mut connection = connection.clone();
                    async move {
                        let bytes = envelope_bytes(&topics(), &message(seq));
                        let _receivers: i64 = redis::cmd("PUBLISH")
                            .arg(REDIS_RAW_CHANNEL)
                            .arg(bytes)
                            .query_async(&mut connection)
                            .await
                            .expect("PUBLISH");
                    }
                })
                .await
            }
            Contender::NatsRaw | Contender::NatsRawFlush | Contender::NatsRawDecoded => {
                let client = self.nats_raw_a.clone();
                let subjects = Arc::clone(&self.raw_subjects);
                let flush = contender != Contender::NatsRaw;
                drive(&track, move |seq| {
                    let client = client.clone();
                    let subjects = Arc::clone(&subjects);
                    async move {
                        let message = message(seq);
                        for (topic, subject) in topics().iter().zip(subjects.iter()) {
                            let bytes = envelope_bytes(std::slice::from_ref(topic), &message);
                            client
                                .publish(subject.clone(), bytes.into())
                                .await
                                .expect("publish");
                        }
                        if flush {
                            client.flush().await.expect("flush");
                        }
                    }
                })
                .await
            }
        };
        let cpu_used = cpu::process().saturating_sub(cpu_before);
        let server_used = server.cpu().saturating_sub(server_before);
        for receiver in receivers {
            receiver.abort();
        }
        let latencies = track.sorted_latencies();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        let micros = |q: usize| latencies[(n * q / 100).min(n - 1)] as f64 / 1e3;
        Run {
            contender,
            per_sec: n as f64 / elapsed.as_secs_f64(),
            p50_us: micros(50),
            p99_us: micros(99),
            cpu_us: per(cpu_used),
            server_cpu_us: per(server_used),
            anomalies: track.anomalies(),
        }
    }

    /// Starts B's side for one run, ready before it returns: ours subscribe
    /// (and `sync`), the raw ones subscribe and make a round trip.
    async fn receive(&self, contender: Contender, track: &Arc<Track>) -> Vec<JoinHandle<()>> {
        match contender {
            Contender::Redis | Contender::Nats => {
                let b = if contender == Contender::Redis {
                    &self.redis_b
                } else {
                    &self.nats_b
                };
                let tasks = topics()
                    .into_iter()
                    .map(|topic| {
                        let mut subscription = b.subscribe(topic).expect("subscribed");
                        let track = Arc::clone(track);
                        tokio::spawn(async move {
                            loop {
                                match subscription.recv().await {
                                    Ok(message) => match seq_of(&message) {
                                        Some(seq) => track.arrived(seq, 1),
                                        None => track.anomaly(),
                                    },
                                    Err(RecvError::Closed) => break,
                                    Err(_) => track.anomaly(),
                                }
                            }
                        })
                    })
                    .collect();
                b.sync().await.expect("B's interest registered");
                tasks
            }
            Contender::RedisRaw | Contender::RedisRawDecoded => {
                let decoded = contender == Contender::RedisRawDecoded;
                let mut tasks = Vec::new();
                for node in if decoded {
                    ["b", "a"].as_slice()
                } else {
                    &["b"]
                } {
                    let mut pubsub = self
                        .redis_client
                        .get_async_pubsub()
                        .await
                        .expect("a pub/sub connection");
                    pubsub
                        .subscribe(REDIS_RAW_CHANNEL)
                        .await
                        .expect("SUBSCRIBE");
                    let mut stream = pubsub.into_on_message();
                    let track = Arc::clone(track);
                    let node = *node;
                    tasks.push(tokio::spawn(async move {
                        while let Some(message) = stream.next().await {
                            let bytes = message.get_payload_bytes();
                            let seq = if decoded {
                                decode(bytes, node)
                            } else {
                                seq_in(bytes)
                            };
                            match (seq, node) {
                                (Some(seq), "b") => track.arrived(seq, 4),
                                (None, "b") => track.anomaly(),
                                _ => {}
                            }
                        }
                    }));
                }
                tasks
            }
            Contender::NatsRaw | Contender::NatsRawFlush | Contender::NatsRawDecoded => {
                let decoded = contender == Contender::NatsRawDecoded;
                let client = &self.nats_raw_b;
                let mut tasks = Vec::new();
                for subject in self.raw_subjects.iter() {
                    let mut subscriber = client.subscribe(subject.clone()).await.expect("SUB");
                    let track = Arc::clone(track);
                    tasks.push(tokio::spawn(async move {
                        while let Some(message) = subscriber.next().await {
                            let seq = if decoded {
                                decode(&message.payload, "b")
                            } else {
                                seq_in(&message.payload)
                            };
                            match seq {
                                Some(seq) => track.arrived(seq, 1),
                                None => track.anomaly(),
                            }
                        }
                    }));
                }
                // A round trip on B's connection: the server has taken the
                // SUBs before it routes this message back.
                let fence = format!("{NATS_RAW_NS}._fence");
                let mut fenced = client.subscribe(fence.clone()).await.expect("SUB");
                client.publish(fence, "x".into()).await.expect("PUB");
                tokio::time::timeout(Duration::from_secs(10), fenced.next())
                    .await
                    .expect("the fence comes back");
                tasks
            }
        }
    }
}

pub async fn broadcast(a: &PubSub<Message>, seq: usize) {
    staff::broadcast_team_membership_on(a, TeamMembershipEvent::TeamPersonAdded, membership(seq))
        .await
        .expect("broadcast");
}

/// Per-broadcast bookkeeping of one run.
pub struct Track {
    n: usize,
    base: Instant,
    start: Vec<AtomicU64>,
    latency: Vec<AtomicU64>,
    copies: Vec<AtomicU8>,
    permits: Semaphore,
    received: AtomicUsize,
    finished: Notify,
    anomalies: AtomicU64,
}

impl Track {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            n,
            base: Instant::now(),
            start: (0..n).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..n).map(|_| AtomicU64::new(0)).collect(),
            copies: (0..n).map(|_| AtomicU8::new(0)).collect(),
            permits: Semaphore::new(IN_FLIGHT),
            received: AtomicUsize::new(0),
            finished: Notify::new(),
            anomalies: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn started(&self, seq: usize) {
        self.start[seq].store(self.now(), Ordering::Release);
    }

    /// Nanoseconds from the start of broadcast `seq` to now.
    pub fn since_start(&self, seq: usize) -> u64 {
        self.now()
            .saturating_sub(self.start[seq].load(Ordering::Acquire))
    }

    /// `copies` of broadcast `seq` reached B; the fourth completes it, a
    /// copy past the fourth is a duplicate (an anomaly).
    pub fn arrived(&self, seq: usize, copies: u8) {
        let Some(slot) = self.copies.get(seq) else {
            self.anomaly();
            return;
        };
        let now = u16::from(slot.fetch_add(copies, Ordering::AcqRel)) + u16::from(copies);
        if now > 4 {
            self.anomaly();
        } else if now == 4 {
            let latency = self.since_start(seq);
            self.latency[seq].store(latency, Ordering::Release);
            self.permits.add_permits(1);
            if self.received.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
                self.finished.notify_one();
            }
        }
    }

    /// Each broadcast's latency (ns), ascending.
    pub fn sorted_latencies(&self) -> Vec<u64> {
        let mut latencies: Vec<u64> = self
            .latency
            .iter()
            .map(|l| l.load(Ordering::Acquire))
            .collect();
        latencies.sort_unstable();
        latencies
    }

    /// Broadcasts received (all four copies) so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::Acquire)
    }

    /// Returns once all `n` broadcasts were received.
    pub async fn all_received(&self) {
        if self.received() < self.n {
            self.finished.notified().await;
        }
    }

    /// The anomalies counted so far.
    pub fn anomalies(&self) -> u64 {
        self.anomalies.load(Ordering::Relaxed)
    }

    /// Something went wrong: counted, reported with the run.
    pub fn anomaly(&self) {
        self.anomalies.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `send` for broadcasts `0..n` from [`IN_FLIGHT`] tasks, each
/// waiting for a permit (one of the in-flight broadcasts received) before
/// it sends; returns the time until B received the last one.
pub async fn drive<S, F>(track: &Arc<Track>, send: S) -> Duration
where
    S: Fn(usize) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send,
{
    let send = Arc::new(send);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (send, next, track) = (Arc::clone(&send), Arc::clone(&next), Arc::clone(track));
            tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= track.n {
                        break;
                    }
                    track.permits.acquire().await.expect("open").forget();
                    track.started(seq);
                    send(seq).await;
                }
            })
        })
        .collect();
    if tokio::time::timeout(Duration::from_secs(300), track.finished.notified())
        .await
        .is_err()
    {
        panic!(
            "B received {} of {} broadcasts within 300 s ({} anomalies)",
            track.received.load(Ordering::Relaxed),
            track.n,
            track.anomalies.load(Ordering::Relaxed)
        );
    }
    let elapsed = started.elapsed();
    for task in tasks {
        task.await.expect("a sender task");
    }
    elapsed
}
