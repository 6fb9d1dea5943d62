//! Scale by simulation: `nodes` nodes ([`NODES`] by default) in this
//! process, each its own `PubSub` with its own connection(s) to the
//! engine; [`PEOPLE`] person topics (`staff::topic_person`), node `k`
//! subscribing to those whose index is `k` modulo `nodes` (one
//! subscription per node holding its 625 topics with 16 nodes, drained by
//! one task); `n` person broadcasts (`staff::broadcast_person_on`, which
//! reaches `staff:people` and the person's topic) from node `i % nodes`
//! for broadcast `i`, to a person
//! picked pseudo-randomly. At most [`IN_FLIGHT`]
//! broadcasts are in flight (sent and not yet delivered to the person's
//! subscriber). A run ends when every broadcast was delivered and every
//! node has received (decoded and dispatched) all it will receive:
//! with Redis every broadcast of another node, with NATS only those to its
//! own topics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use staff_pubsub::nats::NatsConfig;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff::{self, Message, Person, PersonEvent};
use staff_pubsub::{PubSub, RecvError, Uuid};
use tokio::sync::Semaphore;

use crate::cpu;
use crate::pair::IN_FLIGHT;
use crate::servers::Server;

/// Simulated nodes, by default.
pub const NODES: usize = 16;
/// Person topics.
pub const PEOPLE: usize = 10_000;

/// Which engine carries the broadcasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Our Redis transport.
    Redis,
    /// Our NATS transport.
    Nats,
}

impl Engine {
    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Nats => "nats",
        }
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct ScaleRun {
    /// The engine.
    pub engine: Engine,
    /// Broadcasts made.
    pub n: usize,
    /// Broadcasts per second, until the last node had received all.
    pub per_sec: f64,
    /// Wall time, s.
    pub secs: f64,
    /// `stats().received` of each node (this run's).
    pub received: Vec<u64>,
    /// `stats().rejected`, summed over nodes.
    pub rejected: u64,
    /// Copies delivered to the person subscribers (`n` in a sound run).
    pub delivered: u64,
    /// Copies lost to lag, and gaps, summed over nodes.
    pub lagged: u64,
    /// `stats().gaps`, summed over nodes.
    pub gaps: u64,
    /// CPU time of this process (all nodes), s.
    pub cpu_s: f64,
    /// CPU time of the engine's server, s.
    pub server_cpu_s: f64,
    /// Whether every node reached its expected `received` count in time.
    pub complete: bool,
}

fn person(i: usize) -> Uuid {
    Uuid::from_u128(0x0193_0000_0000_7000_8000_0001_0000_0000 + i as u128)
}

/// The person broadcast `seq` goes to: splitmix64 of `seq`.
fn pick(seq: usize) -> usize {
    let mut z = (seq as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % PEOPLE as u64) as usize
}

/// One run: fresh nodes on a fresh namespace, `n` broadcasts.
pub async fn run(
    engine: Engine,
    server: &Server,
    nodes: usize,
    n: usize,
    run_id: usize,
) -> ScaleRun {
    let count = nodes;
    let namespace = format!("bench-scale-{run_id}");
    let mut nodes: Vec<PubSub<Message>> = Vec::with_capacity(count);
    for k in 0..count {
        let builder = staff::builder().node_name(format!("n{k}"));
        let node = match engine {
            Engine::Redis => {
                builder
                    .redis(RedisConfig::new(server.url()).namespace(namespace.as_str()))
                    .await
            }
            Engine::Nats => {
                builder
                    .nats(NatsConfig::new(server.url()).namespace(namespace.as_str()))
                    .await
            }
        };
        nodes.push(node.expect("a node connects"));
    }
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let delivered = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    let mut drains = Vec::new();
    for (k, node) in nodes.iter().enumerate() {
        let topics = (k..PEOPLE)
            .step_by(count)
            .map(|i| staff::topic_person(person(i)));
        let mut subscription = node.subscribe_many(topics).expect("subscribed");
        let (permits, delivered, lagged) = (
            Arc::clone(&permits),
            Arc::clone(&delivered),
            Arc::clone(&lagged),
        );
        drains.push(tokio::spawn(async move {
            loop {
                match subscription.recv().await {
                    Ok(_) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        permits.add_permits(1);
                    }
                    Err(RecvError::Lagged(missed)) => {
                        lagged.fetch_add(missed, Ordering::Relaxed);
                        permits.add_permits(usize::try_from(missed).unwrap_or(usize::MAX));
                    }
                    Err(RecvError::Closed) => break,
                    Err(_) => {}
                }
            }
        }));
    }
    for node in &nodes {
        node.sync().await.expect("interest registered");
    }
    // What each node will receive from the wire.
    let mut expected = vec![0_u64; count];
    for seq in 0..n {
        let origin = seq % count;
        match engine {
            Engine::Redis => (0..count)
                .filter(|k| *k != origin)
                .for_each(|k| expected[k] += 1),
            Engine::Nats => {
                let owner = pick(seq) % count;
                if owner != origin {
                    expected[owner] += 1;
                }
            }
        }
    }
    let base: Vec<u64> = nodes.iter().map(|node| node.stats().received).collect();

    let nodes = Arc::new(nodes);
    let next = Arc::new(AtomicU64::new(0));
    let (cpu_before, server_before) = (cpu::process(), server.cpu());
    let started = Instant::now();
    let senders: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (nodes, next, permits) =
                (Arc::clone(&nodes), Arc::clone(&next), Arc::clone(&permits));
            tokio::spawn(async move {
                loop {
                    let seq = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(n);
                    if seq >= n {
                        break;
                    }
                    permits.acquire().await.expect("open").forget();
                    let uuid = person(pick(seq));
                    staff::broadcast_person_on(
                        &nodes[seq % count],
                        PersonEvent::Updated,
                        Person { uuid },
                    )
                    .await
                    .expect("broadcast");
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("a sender task");
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let received = |nodes: &[PubSub<Message>]| -> Vec<u64> {
        nodes
            .iter()
            .zip(&base)
            .map(|(node, base)| node.stats().received - base)
            .collect()
    };
    let mut complete = false;
    while Instant::now() < deadline {
        let done = delivered.load(Ordering::Relaxed) + lagged.load(Ordering::Relaxed) >= n as u64;
        if done
            && received(&nodes)
                .iter()
                .zip(&expected)
                .all(|(got, want)| got >= want)
        {
            complete = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_s = cpu::process().saturating_sub(cpu_before).as_secs_f64();
    let server_cpu_s = server.cpu().saturating_sub(server_before).as_secs_f64();
    let stats: Vec<_> = nodes.iter().map(PubSub::stats).collect();
    for drain in drains {
        drain.abort();
    }
    ScaleRun {
        engine,
        n,
        per_sec: n as f64 / secs,
        secs,
        received: received(&nodes),
        rejected: stats.iter().map(|s| s.rejected).sum(),
        delivered: delivered.load(Ordering::Relaxed),
        lagged: lagged.load(Ordering::Relaxed),
        gaps: stats.iter().map(|s| s.gaps).sum(),
        cpu_s,
        server_cpu_s,
        complete,
    }
}
