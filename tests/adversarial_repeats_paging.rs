//! Adversarial cases, written from the README and rustdoc alone: a topic listed twice is one
//! topic in every form a list can reach a node in (received envelopes and
//! log entries made by hand, wide topics, `add_topic`, generated
//! functions), and paged resumes at their edges (the replay limit,
//! capacity 1 with broadcasts going on, `try_recv` and the stream, a log
//! trimmed mid-replay, a server dropped mid-page). Against real servers
//! started on loopback.
//!
//! "No second copy" is proven by a marker sent after, to every topic of the
//! subscription, by the same sender: a second copy would come before the
//! marker's.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::MultiplexedConnection;
use serde_json::json;
use staff_pubsub::nats::NatsConfig;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::{
    Gap, Position, PubSub, RecvError, Retention, Subscription, Topic, TryRecvError, Uuid,
};
use staff_pubsub_tests::nats_server::NatsServer;
use staff_pubsub_tests::redis_server::{publish_raw, RedisServer};
use staff_pubsub_tests::within;

const A: Topic = Topic::new("adv:a");
const B: Topic = Topic::new("adv:b");
const NAMESPACE: &str = "adv3";
/// The marker's number: sent after the repeated message, to every topic.
const MARK: u64 = 999;
/// Subscribers on one topic from which it is a wide topic (a shared ring):
/// `Builder::capacity` docs say 32.
const WIDE: usize = 40;

/// Reads `subscription` until `markers` copies of [`MARK`] came: what came
/// before, in order (markers included).
async fn until_markers(
    what: &str,
    subscription: &mut Subscription<u64>,
    markers: usize,
) -> Vec<u64> {
    let mut got = Vec::new();
    while got.iter().filter(|n| **n == MARK).count() < markers {
        match within(what, subscription.recv()).await {
            Ok(n) => got.push(*n),
            Err(error) => panic!("{what}: {error:?} after {got:?}"),
        }
    }
    got
}

/// What is queued now, failing on anything but messages.
fn drained(subscription: &mut Subscription<u64>) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        match subscription.try_recv() {
            Ok(n) => got.push(*n),
            Err(TryRecvError::Empty) => return got,
            Err(other) => panic!("{other:?} after {got:?}"),
        }
    }
}

/// The envelope a non-node publisher writes, of `message` to `topics`.
fn envelope(topics: &[&str], message: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "v": 1, "origin": "tool", "mode": "all", "topics": topics, "message": message,
    }))
    .unwrap()
}

// ---------------------------------------------------------------------
// A topic listed twice is one topic.
// ---------------------------------------------------------------------

/// Subscriptions of one node: `WIDE` to `A` (a wide topic), one to `A`
/// added twice with `add_topic` (after `B`), one made with `A` listed
/// twice and `B`.
struct Subscribers {
    wide: Vec<Subscription<u64>>,
    added: Subscription<u64>,
    listed: Subscription<u64>,
}

impl Subscribers {
    fn of(pubsub: &PubSub<u64>) -> Self {
        let wide = (0..WIDE).map(|_| pubsub.subscribe(A).unwrap()).collect();
        let mut added = pubsub.subscribe(B).unwrap();
        assert!(added.add_topic(A).unwrap(), "A is new to the subscription");
        assert!(!added.add_topic(A).unwrap(), "A added twice is not new");
        assert_eq!(added.topics().len(), 2, "{:?}", added.topics());
        let listed = pubsub.subscribe_many([A, A, B, A]).unwrap();
        assert_eq!(listed.topics().len(), 2, "{:?}", listed.topics());
        Self {
            wide,
            added,
            listed,
        }
    }

    /// Each wide subscriber got `n` once then the marker; the two-topic
    /// ones got it twice (A and B) then the marker twice.
    async fn expect_once_per_distinct_topic(&mut self, what: &str, n: u64) {
        for (i, subscription) in self.wide.iter_mut().enumerate() {
            let got = until_markers(&format!("{what}: wide {i}"), subscription, 1).await;
            assert_eq!(got, [n, MARK], "{what}: wide subscriber {i}");
        }
        for (name, subscription) in [("added", &mut self.added), ("listed", &mut self.listed)] {
            let got = until_markers(&format!("{what}: {name}"), subscription, 2).await;
            assert_eq!(got, [n, n, MARK, MARK], "{what}: the {name} subscription");
        }
    }
}

/// In process: every broadcast form, to a wide topic and to subscriptions
/// whose topics were added twice or listed twice.
#[tokio::test]
async fn in_process_repeats_are_one_topic_on_wide_topics_and_added_topics() {
    let pubsub: PubSub<u64> = PubSub::new();
    let mut subscribers = Subscribers::of(&pubsub);
    assert_eq!(pubsub.subscriber_count(&A), WIDE + 2);

    pubsub.broadcast([A, A, B, A], 1).await.unwrap();
    pubsub.broadcast([A, B], MARK).await.unwrap();
    subscribers
        .expect_once_per_distinct_topic("broadcast", 1)
        .await;

    // local_broadcast returns the copies queued: one per distinct topic
    // per subscription.
    let copies = pubsub.local_broadcast(&[A, B, A, A, B], 2);
    assert_eq!(copies, (WIDE + 2 * 2) as u64, "local_broadcast's copies");
    pubsub.local_broadcast(&[A, B], MARK);
    subscribers
        .expect_once_per_distinct_topic("local_broadcast", 2)
        .await;

    pubsub
        .direct_broadcast(pubsub.node_name(), &[B, A, B, A], 3)
        .await
        .unwrap();
    pubsub.local_broadcast(&[A, B], MARK);
    subscribers
        .expect_once_per_distinct_topic("direct_broadcast", 3)
        .await;

    // broadcast_from and local_broadcast_from skip one subscription only.
    let mut sender = pubsub.subscribe_many([A, B]).unwrap();
    pubsub.broadcast_from(&sender, [A, A, B], 4).await.unwrap();
    pubsub.local_broadcast_from(&sender, &[A, A], 5);
    pubsub.local_broadcast_from(&sender, &[A, B], MARK);
    assert_eq!(drained(&mut sender), Vec::<u64>::new(), "the sender");
    for (i, subscription) in subscribers.wide.iter_mut().enumerate() {
        assert_eq!(drained(subscription), [4, 5, MARK], "wide subscriber {i}");
    }
    assert_eq!(drained(&mut subscribers.added), [4, 4, 5, MARK, MARK]);
    assert_eq!(drained(&mut subscribers.listed), [4, 4, 5, MARK, MARK]);
}

/// A spec in which two fields lead to one topic: an order's parent route
/// (`order`) and a relation's two endpoints of one entity.
#[staff_pubsub::staff_events(scope = "adv3")]
pub mod spec {
    use staff_pubsub::Uuid;

    /// An order.
    #[entity(collection = "orders", events(order_placed))]
    pub struct Order {
        /// The order.
        pub uuid: Uuid,
        /// Its parent order: reaches `adv3:order:<parent_uuid>` too.
        #[route(order)]
        pub parent_uuid: Option<Uuid>,
    }

    /// A customer.
    #[entity(collection = "customers", events(customer_created))]
    pub struct Customer {
        /// The customer.
        pub uuid: Uuid,
    }

    /// A customer followed another.
    #[relation(events(customer_followed))]
    pub struct Follow {
        /// The relation.
        pub uuid: Uuid,
        /// The follower.
        #[endpoint(customer)]
        pub follower_uuid: Uuid,
        /// The followed.
        #[endpoint(customer)]
        pub followed_uuid: Uuid,
    }
}

/// The generated functions reach a topic two fields lead to once: an
/// order that is its own parent, a customer who follows themself.
#[tokio::test]
async fn generated_functions_reach_a_topic_two_fields_lead_to_once() {
    let pubsub: PubSub<spec::Message> = PubSub::new();
    let id = Uuid::from_u128(42);
    let mut order = pubsub.subscribe(spec::topic_order(id)).unwrap();
    let mut orders = pubsub.subscribe(spec::topic_orders()).unwrap();
    let mut customer = pubsub.subscribe(spec::topic_customer(id)).unwrap();
    let mut customers = pubsub.subscribe(spec::topic_customers()).unwrap();
    let own_parent = spec::Order {
        uuid: id,
        parent_uuid: Some(id),
    };
    spec::broadcast_order_on(&pubsub, spec::OrderEvent::Placed, own_parent)
        .await
        .unwrap();
    let follow = spec::Follow {
        uuid: Uuid::from_u128(1),
        follower_uuid: id,
        followed_uuid: id,
    };
    spec::broadcast_follow_on(&pubsub, spec::FollowEvent::CustomerFollowed, follow)
        .await
        .unwrap();
    let count = |subscription: &mut Subscription<spec::Message>| {
        let mut n = 0;
        while subscription.try_recv().is_ok() {
            n += 1;
        }
        n
    };
    assert_eq!(count(&mut order), 1, "the order's own topic");
    assert_eq!(count(&mut orders), 1, "the orders topic");
    assert_eq!(count(&mut customer), 1, "the customer's topic");
    assert_eq!(count(&mut customers), 1, "the customers topic");
}

/// Redis live: a received envelope listing a topic twice (a publisher that
/// is not a node, PUBLISH by hand) is one topic, on a wide topic too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_live_a_received_envelope_listing_a_topic_twice_is_one_topic() {
    let server = RedisServer::start().await;
    let config = RedisConfig::new(server.url())
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2));
    let node: PubSub<u64> = PubSub::builder()
        .node_name("b")
        .redis(config)
        .await
        .unwrap();
    let mut subscribers = Subscribers::of(&node);
    within("sync", node.sync()).await.unwrap();
    let mut admin = server.connection().await;
    publish_raw(
        &mut admin,
        NAMESPACE,
        &envelope(&["adv:a", "adv:b", "adv:a", "adv:a", "adv:b"], 1),
    )
    .await;
    publish_raw(&mut admin, NAMESPACE, &envelope(&["adv:a", "adv:b"], MARK)).await;
    subscribers
        .expect_once_per_distinct_topic("a raw envelope", 1)
        .await;
    assert_eq!(node.stats().rejected, 0);
}

/// NATS live: an envelope on the direct subject listing a topic twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_live_a_direct_envelope_listing_a_topic_twice_is_one_topic() {
    let server = NatsServer::start().await;
    let config = NatsConfig::new(server.url())
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2));
    let node: PubSub<u64> = PubSub::builder().node_name("b").nats(config).await.unwrap();
    let mut subscribers = Subscribers::of(&node);
    within("sync", node.sync()).await.unwrap();
    let direct = |topics: &[&str], message: u64| {
        serde_json::to_vec(&json!({
            "v": 1, "origin": "tool", "mode": "only", "target": "b",
            "topics": topics, "message": message,
        }))
        .unwrap()
    };
    let subject = format!("{NAMESPACE}._direct");
    server
        .publish_raw(
            &subject,
            &direct(&["adv:a", "adv:a", "adv:b", "adv:b", "adv:a"], 1),
        )
        .await;
    server
        .publish_raw(&subject, &direct(&["adv:a", "adv:b"], MARK))
        .await;
    subscribers
        .expect_once_per_distinct_topic("a direct envelope", 1)
        .await;
    assert_eq!(node.stats().rejected, 0);
}

/// Appends an entry of the Redis log by hand, as the append script does
/// (the next sequence number, fields `log`, `n`, `t`, `m`, then the meta
/// hash's `seq`): an older node, or a tool, writing `bytes`.
async fn append_by_hand(admin: &mut MultiplexedConnection, bytes: &[u8]) -> u64 {
    const SCRIPT: &str = r"
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq')) + 1
local log = redis.call('HGET', KEYS[2], 'log')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], string.format('%d-0', seq), 'log', log, 'n', '77',
  't', string.format('%d', now), 'm', ARGV[1])
redis.call('HSET', KEYS[2], 'seq', string.format('%d', seq))
return seq";
    let keys = RedisConfig::new("").namespace(NAMESPACE);
    redis::cmd("EVAL")
        .arg(SCRIPT)
        .arg(2)
        .arg(keys.log_key())
        .arg(keys.log_meta_key())
        .arg(bytes)
        .query_async(admin)
        .await
        .expect("EVAL")
}

/// Durable: a log entry listing a topic twice (written by hand) is one
/// topic live, and again when a resume replays it.
async fn a_log_entry_listing_a_topic_twice(
    node: &PubSub<u64>,
    write: impl std::future::Future<Output = ()>,
) {
    // Entry 1 is dispatched (the probe has it) before the subscribers
    // below exist: the log's head moves before its entry is dispatched, so
    // `log_position` alone does not say that.
    let mut probe = node.subscribe(A).unwrap();
    node.broadcast([A], 1).await.unwrap();
    assert_eq!(*within("the first entry", probe.recv()).await.unwrap(), 1);
    let first = node.log_position().expect("entry 1 was read from the log");
    let mut subscribers = Subscribers::of(node);
    write.await;
    node.broadcast([A, B], MARK).await.unwrap();
    subscribers
        .expect_once_per_distinct_topic("a hand-made entry, live", 2)
        .await;

    // Replayed: the same.
    let mut wide: Vec<_> = Vec::new();
    for _ in 0..WIDE {
        wide.push(node.subscribe_since([A], first).await.unwrap());
    }
    let mut both = node.subscribe_since([A, B, A], first).await.unwrap();
    for (i, subscription) in wide.iter_mut().enumerate() {
        let got = until_markers("a replay", subscription, 1).await;
        assert_eq!(got, [2, MARK], "replayed to wide subscriber {i}");
    }
    let got = until_markers("a replay", &mut both, 2).await;
    assert_eq!(got, [2, 2, MARK, MARK], "replayed to [A, B]");
    assert_eq!(node.stats().rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_durable_a_log_entry_listing_a_topic_twice_is_one_topic_live_and_replayed() {
    let server = RedisServer::start().await;
    let config = RedisConfig::new(server.url())
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2))
        .durable(Retention::entries(10_000));
    let node: PubSub<u64> = PubSub::builder().redis(config).await.unwrap();
    let mut admin = server.connection().await;
    a_log_entry_listing_a_topic_twice(&node, async {
        let seq = append_by_hand(
            &mut admin,
            &envelope(&["adv:a", "adv:b", "adv:a", "adv:b"], 2),
        )
        .await;
        assert_eq!(seq, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_durable_a_log_entry_listing_a_topic_twice_is_one_topic_live_and_replayed() {
    let server = NatsServer::start_jetstream().await;
    let config = NatsConfig::new(server.url())
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2))
        .durable(Retention::entries(10_000));
    let node: PubSub<u64> = PubSub::builder().nats(config).await.unwrap();
    a_log_entry_listing_a_topic_twice(&node, async {
        server
            .publish_raw(
                &format!("{NAMESPACE}._log"),
                &envelope(&["adv:a", "adv:b", "adv:a", "adv:b"], 2),
            )
            .await;
    })
    .await;
}

// ---------------------------------------------------------------------
// Paged resumes.
// ---------------------------------------------------------------------

async fn redis_node(server: &RedisServer, capacity: usize, retention: Retention) -> PubSub<u64> {
    let config = RedisConfig::new(server.url())
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2))
        .durable(retention);
    PubSub::builder()
        .capacity(capacity)
        .redis(config)
        .await
        .unwrap()
}

async fn nats_node(server: &NatsServer, capacity: usize, retention: Retention) -> PubSub<u64> {
    let config = NatsConfig::new(server.url())
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(2))
        .durable(retention);
    PubSub::builder()
        .capacity(capacity)
        .nats(config)
        .await
        .unwrap()
}

/// Broadcasts `1..=n` to `A` (entry `k` holds `k`: a fresh log) and waits
/// for the node to have read them; the log's id.
async fn fill(node: &PubSub<u64>, n: u64) -> u16 {
    for k in 1..=n {
        node.broadcast([A], k).await.unwrap();
    }
    within("the node to read the log", async {
        while node.log_position().map(Position::seq) != Some(n) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    node.log_position().unwrap().log()
}

fn at(log: u16, seq: u64) -> Position {
    Position::new(log, seq).unwrap()
}

/// The replay limit, exactly: a range of `max_replay` entries is replayed
/// (paged, capacity 3), one more is `Gap::ReplayLimit` with `missing` the
/// range's entries, then live messages.
async fn replay_limit_boundary(node: PubSub<u64>) {
    let log = fill(&node, 21).await;
    // 10 entries after 11: exactly the limit.
    let mut exact = node.subscribe_since([A], at(log, 11)).await.unwrap();
    for k in 12..=21 {
        let (n, position) = within("a replayed entry", exact.recv_with_position())
            .await
            .unwrap();
        assert_eq!((*n, position), (k, Some(at(log, k))));
    }
    // 11 entries after 10: one past it.
    let mut past = node.subscribe_since([A], at(log, 10)).await.unwrap();
    assert_eq!(
        within("the gap", past.recv()).await,
        Err(RecvError::Gap(Gap::ReplayLimit { missing: 11 }))
    );
    node.broadcast([A], 22).await.unwrap();
    let (n, position) = within("live", exact.recv_with_position()).await.unwrap();
    assert_eq!((*n, position), (22, Some(at(log, 22))));
    let (n, position) = within("live after the gap", past.recv_with_position())
        .await
        .unwrap();
    assert_eq!((*n, position), (22, Some(at(log, 22))));
    assert!(exact.is_empty() && past.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_durable_the_replay_limit_exactly_and_one_past_it() {
    let server = RedisServer::start().await;
    let node = redis_node(&server, 3, Retention::entries(10_000).max_replay(10)).await;
    replay_limit_boundary(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_durable_the_replay_limit_exactly_and_one_past_it() {
    let server = NatsServer::start_jetstream().await;
    let node = nats_node(&server, 3, Retention::entries(10_000).max_replay(10)).await;
    replay_limit_boundary(node).await;
}

/// Capacity 1, a resume from the first of 60 entries while another task
/// goes on broadcasting 61..=200: every entry comes in log order, each at
/// most once, and what does not come is exactly what `Lagged` counted
/// (the queue of one overflows while the replay is read).
async fn capacity_one_under_load(node: PubSub<u64>) {
    const FILLED: u64 = 60;
    const LAST: u64 = 200;
    let log = fill(&node, FILLED).await;
    let broadcaster = {
        let node = node.clone();
        tokio::spawn(async move {
            for k in FILLED + 1..=LAST {
                node.broadcast([A], k).await.unwrap();
                if k % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut resumed = node.subscribe_since([A], at(log, 1)).await.unwrap();
    let mut expected = 2;
    let mut lagged = 0;
    let mut trace = Vec::new();
    while expected <= LAST {
        match within("the resume", resumed.recv_with_position()).await {
            Ok((n, position)) => {
                trace.push(format!("{n}"));
                assert_eq!(position, Some(at(log, *n)), "{trace:?}");
                assert_eq!(
                    *n, expected,
                    "out of order, twice, or lost without being counted: {trace:?}"
                );
                expected = *n + 1;
            }
            Err(RecvError::Lagged(k)) => {
                trace.push(format!("lagged {k}"));
                assert!(expected > FILLED, "a replayed entry lagged: {trace:?}");
                lagged += k;
                expected += k;
            }
            Err(other) => panic!("{other:?} after {trace:?}"),
        }
        assert!(resumed.len() <= 2, "{} held", resumed.len());
    }
    broadcaster.await.unwrap();
    assert_eq!(expected, LAST + 1, "{trace:?}");
    // A drop the replay covered, counted as lagged, would leave the last
    // entries here.
    if !resumed.is_empty() {
        let left = resumed.try_recv_with_position();
        panic!("{left:?} left after {trace:?}");
    }
    let _ = lagged;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_durable_capacity_one_resume_under_load_is_in_order_and_counted() {
    let server = RedisServer::start().await;
    let node = redis_node(&server, 1, Retention::entries(10_000)).await;
    capacity_one_under_load(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_durable_capacity_one_resume_under_load_is_in_order_and_counted() {
    let server = NatsServer::start_jetstream().await;
    let node = nats_node(&server, 1, Retention::entries(10_000)).await;
    capacity_one_under_load(node).await;
}

/// A consumer that only calls `try_recv` (polling with a pause), and one
/// that reads the stream, each get the whole paged range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_durable_try_recv_and_the_stream_read_every_page() {
    let server = RedisServer::start().await;
    let node = redis_node(&server, 4, Retention::entries(10_000)).await;
    let log = fill(&node, 40).await;

    let mut polled = node.subscribe_since([A], at(log, 1)).await.unwrap();
    let mut got = Vec::new();
    within("try_recv to read the range", async {
        while got.len() < 39 {
            match polled.try_recv_with_position() {
                Ok((n, position)) => {
                    assert_eq!(position, Some(at(log, *n)));
                    got.push(*n);
                }
                Err(TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(other) => panic!("{other:?} after {got:?}"),
            }
            assert!(polled.len() <= 5, "{} held", polled.len());
        }
    })
    .await;
    assert_eq!(got, (2..=40).collect::<Vec<_>>());

    let streamed = node.subscribe_since([A], at(log, 1)).await.unwrap();
    let got: Vec<u64> = within(
        "the stream to read the range",
        streamed
            .take(39)
            .map(|item| *item.unwrap())
            .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(got, (2..=40).collect::<Vec<_>>());

    // try_recv on the last page, then live.
    assert_eq!(polled.try_recv(), Err(TryRecvError::Empty));
    node.broadcast([A], 41).await.unwrap();
    let n = within("live", polled.recv()).await.unwrap();
    assert_eq!(*n, 41);
}

/// Entries trimmed from the log between two pages (XTRIM by hand, as the
/// retention does): one `Gap::Trimmed` where they were, naming the first
/// lost position and how many, then the rest of the range, then live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_durable_a_trim_between_pages_is_one_gap_where_it_was() {
    let server = RedisServer::start().await;
    let node = redis_node(&server, 4, Retention::entries(10_000)).await;
    let log = fill(&node, 40).await;
    let mut resumed = node.subscribe_since([A], at(log, 1)).await.unwrap();
    for k in 2..=5 {
        assert_eq!(*within("page 1", resumed.recv()).await.unwrap(), k);
    }
    let mut admin = server.connection().await;
    let keys = RedisConfig::new("").namespace(NAMESPACE);
    let _: i64 = redis::cmd("XTRIM")
        .arg(keys.log_key())
        .arg("MINID")
        .arg("20-0")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        within("the gap", resumed.recv()).await,
        Err(RecvError::Gap(Gap::Trimmed {
            first: at(log, 6),
            missing: 14
        }))
    );
    for k in 20..=40 {
        let (n, position) = within("after the gap", resumed.recv_with_position())
            .await
            .unwrap();
        assert_eq!((*n, position), (k, Some(at(log, k))));
    }
    node.broadcast([A], 41).await.unwrap();
    assert_eq!(*within("live", resumed.recv()).await.unwrap(), 41);
}

/// Clients connected to `server` but `admin`.
async fn other_clients(admin: &mut MultiplexedConnection) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .unwrap();
    list.lines().filter(|line| !line.is_empty()).count() - 1
}

async fn wait_for_clients(admin: &mut MultiplexedConnection, n: usize, what: &str) {
    within(what, async {
        while other_clients(admin).await != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A `recv` cancelled while its page is in flight (a `select!` or a
/// timeout around it) loses nothing: every entry of the range comes once,
/// in order, whatever the number of cancellations.
// One thread: the connection's task cannot answer during a poll, so
// a page polled once is in flight.
#[tokio::test]
async fn redis_durable_a_cancelled_recv_mid_page_loses_nothing() {
    let server = RedisServer::start().await;
    let node = redis_node(&server, 2, Retention::entries(10_000)).await;
    let log = fill(&node, 40).await;
    let mut resumed = node.subscribe_since([A], at(log, 1)).await.unwrap();
    let mut got = Vec::new();
    let mut cancelled = 0;
    within("the range, with cancelled receives", async {
        while got.len() < 39 {
            // Polled once, then dropped: a receive cancelled mid-fetch.
            match resumed.recv().now_or_never() {
                Some(item) => got.push(*item.unwrap()),
                None => {
                    cancelled += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    })
    .await;
    assert_eq!(
        got,
        (2..=40).collect::<Vec<_>>(),
        "{cancelled} receives cancelled"
    );
    assert!(
        cancelled > 0,
        "no receive was cancelled: the attack did not run"
    );
}

/// A subscription dropped with a page in flight leaks nothing: once the
/// server is dropped too, its connections to Redis close.
// One thread: the connection's task cannot answer during a poll, so
// a page polled once is in flight.
#[tokio::test]
async fn redis_durable_a_resume_dropped_mid_page_lets_the_server_shut_down() {
    let server = RedisServer::start().await;
    let mut admin = server.connection().await;
    let baseline = other_clients(&mut admin).await;
    let node = redis_node(&server, 2, Retention::entries(10_000)).await;
    let log = fill(&node, 40).await;
    let mut resumed = node.subscribe_since([A], at(log, 1)).await.unwrap();
    for k in 2..=5 {
        assert_eq!(*within("two pages", resumed.recv()).await.unwrap(), k);
    }
    // Polled once: the next page's fetch starts, and is left in flight.
    assert!(
        resumed.recv().now_or_never().is_none(),
        "the page is in flight"
    );
    drop(resumed);
    drop(node);
    wait_for_clients(&mut admin, baseline, "the server's connections to close").await;
}

/// The server dropped while a resumed subscription has a page in flight:
/// the subscription gets the page being fetched, then one
/// `Gap::Disconnected` for the rest of its range, then `RecvError::Closed`
/// (README, `server_gone`, durable), delivers nothing twice or out of
/// order, and the server's connections close.
// One thread: the connection's task cannot answer during a poll, so
// a page polled once is in flight.
#[tokio::test]
async fn redis_durable_a_server_dropped_mid_page_closes_its_resume() {
    let server = RedisServer::start().await;
    let mut admin = server.connection().await;
    let baseline = other_clients(&mut admin).await;
    let node = redis_node(&server, 2, Retention::entries(10_000)).await;
    let log = fill(&node, 40).await;
    let mut resumed = node.subscribe_since([A], at(log, 1)).await.unwrap();
    for k in 2..=5 {
        assert_eq!(*within("two pages", resumed.recv()).await.unwrap(), k);
    }
    let mut trace = Vec::new();
    let mut last = 5;
    assert!(
        resumed.recv().now_or_never().is_none(),
        "the page is in flight"
    );
    drop(node);
    loop {
        match within("the end of the resume", resumed.recv()).await {
            Ok(n) => {
                assert!(*n > last, "{n} after {last}: {trace:?}");
                last = *n;
                trace.push(format!("{n}"));
            }
            Err(RecvError::Closed) => break,
            Err(other) => trace.push(format!("{other:?}")),
        }
    }
    wait_for_clients(&mut admin, baseline, "the server's connections to close").await;
    // README, server_gone, durable: the page being fetched, then
    // `Gap::Disconnected` for the rest of the range, then `Closed`.
    let gaps: Vec<&String> = trace
        .iter()
        .filter(|item| item.starts_with("Gap"))
        .collect();
    assert_eq!(gaps, ["Gap(Disconnected)"], "{trace:?}");
    assert_eq!(
        trace.last().map(String::as_str),
        Some("Gap(Disconnected)"),
        "{trace:?}"
    );
}
