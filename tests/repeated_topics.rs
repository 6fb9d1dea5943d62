//! A topic listed more than once is one topic: in every
//! mode, a broadcast to `[teams, teams, team, team, teams]` gives a
//! subscriber of `teams` one copy, and a subscription to `teams` and
//! `team` two (one per distinct reached topic), on the sending node and on
//! another node alike. Against real servers started on loopback.
//!
//! "No second copy" is proven by a marker broadcast after the repeated
//! one, to every topic of the subscription: each engine delivers one
//! topic's broadcasts from one node in order, so a second copy would come
//! before the marker's copy on that topic. A subscription reads until it
//! has every marker copy, counting the copies of the message before them.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use staff_pubsub::nats::NatsConfig;
use staff_pubsub::phoenix::PhoenixConfig;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::staff::{self, Team, TeamEvent};
use staff_pubsub::{PubSub, RecvError, Retention, Topic, Uuid};
use staff_pubsub_tests::nats_server::NatsServer;
use staff_pubsub_tests::redis_server::RedisServer;
use staff_pubsub_tests::within;

/// The application's spec, for the linked-server mode.
#[staff_pubsub::staff_events(extends = staff_pubsub::staff)]
pub mod app {
    use staff_pubsub::Uuid;

    /// A location.
    #[entity(collection = "locations", events(location_created))]
    pub struct Location {
        /// The location's id.
        pub uuid: Uuid,
    }
}

/// The number of the marker that follows the repeated broadcast.
const MARKER: u64 = 999;

/// The repeated broadcast's number.
const REPEATED: u64 = 1;

fn numbered(n: u64) -> staff::Message {
    staff::Message::Team(
        TeamEvent::Created,
        Team {
            uuid: Uuid::from_u128(u128::from(n)),
            name: Some(n.to_string()),
            department_uuid: None,
        },
    )
}

fn team_number(team: &Team) -> u64 {
    team.name
        .as_deref()
        .and_then(|name| name.parse().ok())
        .expect("a numbered team")
}

fn number(message: &staff::Message) -> u64 {
    match message {
        staff::Message::Team(_, team) => team_number(team),
        other => panic!("not a numbered message: {other:?}"),
    }
}

fn app_number(message: &app::Message) -> u64 {
    match message {
        app::Message::Team(_, team) => team_number(team),
        other => panic!("not a numbered message: {other:?}"),
    }
}

fn teams() -> Topic {
    staff::topic_teams()
}

fn team() -> Topic {
    staff::topic_team(Uuid::from_u128(7))
}

/// The repeated list: `teams` three times, `team` twice.
fn repeated() -> [Topic; 5] {
    [teams(), teams(), team(), team(), teams()]
}

/// A subscription's messages as their numbers, whatever its message type.
type Numbers = Pin<Box<dyn Stream<Item = Result<u64, RecvError>> + Send>>;

fn numbers(subscription: staff_pubsub::Subscription<staff::Message>) -> Numbers {
    Box::pin(subscription.map(|item| item.map(|message: Arc<staff::Message>| number(&message))))
}

fn app_numbers(subscription: staff_pubsub::Subscription<app::Message>) -> Numbers {
    Box::pin(subscription.map(|item| item.map(|message: Arc<app::Message>| app_number(&message))))
}

/// Reads `numbers` until `markers` copies of the marker came; an error
/// unless exactly `copies` copies of the repeated broadcast came before
/// them, and nothing else.
async fn copies(
    what: &str,
    numbers: &mut Numbers,
    copies: usize,
    markers: usize,
) -> Result<(), String> {
    let mut got = Vec::new();
    while got.iter().filter(|n| **n == MARKER).count() < markers {
        match within(what, numbers.next()).await {
            Some(Ok(n)) => got.push(n),
            other => panic!("{what}: {other:?} after {got:?}"),
        }
    }
    let repeated = got.iter().filter(|n| **n == REPEATED).count();
    if (repeated, got.len()) == (copies, copies + markers) {
        Ok(())
    } else {
        Err(format!(
            "{what}: {repeated} copies, not {copies} (read {got:?})"
        ))
    }
}

/// [`copies`], asserted.
async fn expect_copies(what: &str, numbers: &mut Numbers, n: usize, markers: usize) {
    if let Err(error) = copies(what, numbers, n, markers).await {
        panic!("{error}");
    }
}

/// The subscriptions of one node: one to `teams`, one to `teams` and
/// `team`.
struct Node {
    name: &'static str,
    teams: Numbers,
    both: Numbers,
}

impl Node {
    fn of(name: &'static str, pubsub: &PubSub<staff::Message>) -> Self {
        Self {
            name,
            teams: numbers(pubsub.subscribe(teams()).unwrap()),
            both: numbers(pubsub.subscribe_many([teams(), team()]).unwrap()),
        }
    }

    fn of_app(name: &'static str, pubsub: &PubSub<app::Message>) -> Self {
        Self {
            name,
            teams: app_numbers(pubsub.subscribe(teams()).unwrap()),
            both: app_numbers(pubsub.subscribe_many([teams(), team()]).unwrap()),
        }
    }

    /// One copy on `teams`, two on `teams` + `team`: what differs.
    async fn one_per_distinct_topic(&mut self) -> Vec<String> {
        let teams = copies(&format!("{}: teams", self.name), &mut self.teams, 1, 1).await;
        let both = copies(
            &format!("{}: teams + team", self.name),
            &mut self.both,
            2,
            2,
        )
        .await;
        [teams, both].into_iter().filter_map(Result::err).collect()
    }

    async fn expect_one_per_distinct_topic(&mut self) {
        expect_each_once(std::slice::from_mut(self)).await;
    }
}

/// Every node's subscriptions got one copy per distinct topic: checks them
/// all, then fails naming each that did not.
async fn expect_each_once(nodes: &mut [Node]) {
    let mut wrong = Vec::new();
    for node in nodes {
        wrong.extend(node.one_per_distinct_topic().await);
    }
    assert!(
        wrong.is_empty(),
        "one copy per distinct reached topic:\n{}",
        wrong.join("\n")
    );
}

/// Broadcasts the repeated list from `here`, then the marker; every node's
/// subscriptions get one copy per distinct topic they have.
async fn broadcast_repeated(here: &PubSub<staff::Message>, nodes: &mut [Node]) {
    here.broadcast(repeated(), numbered(REPEATED))
        .await
        .expect("the repeated broadcast");
    here.broadcast([teams(), team()], numbered(MARKER))
        .await
        .expect("the marker");
    expect_each_once(nodes).await;
}

/// Two nodes on one engine: subscribes on both, waits until the
/// subscriptions reach the engine, and checks a repeated broadcast from
/// the first.
async fn two_nodes(here: PubSub<staff::Message>, there: PubSub<staff::Message>) {
    let mut nodes = [Node::of("here", &here), Node::of("there", &there)];
    within("here's sync", here.sync()).await.unwrap();
    within("there's sync", there.sync()).await.unwrap();
    broadcast_repeated(&here, &mut nodes).await;
    assert_eq!(here.stats().rejected + there.stats().rejected, 0);
}

#[tokio::test]
async fn in_process_a_repeated_topic_is_one_topic_in_every_broadcast_form() {
    let pubsub = PubSub::<staff::Message>::new();
    let mut node = Node::of("in process", &pubsub);
    broadcast_repeated(&pubsub, std::slice::from_mut(&mut node)).await;

    // local_broadcast and direct_broadcast to this node: the same rule.
    assert_eq!(pubsub.local_broadcast(&repeated(), numbered(REPEATED)), 3);
    pubsub.local_broadcast(&[teams(), team()], numbered(MARKER));
    node.expect_one_per_distinct_topic().await;
    pubsub
        .direct_broadcast(pubsub.node_name(), &repeated(), numbered(REPEATED))
        .await
        .unwrap();
    pubsub.local_broadcast(&[teams(), team()], numbered(MARKER));
    node.expect_one_per_distinct_topic().await;

    // broadcast_from skips the sender only, and still reaches each
    // distinct topic once.
    let sender = pubsub.subscribe(teams()).unwrap();
    pubsub
        .broadcast_from(&sender, repeated(), numbered(REPEATED))
        .await
        .unwrap();
    pubsub.local_broadcast(&[teams(), team()], numbered(MARKER));
    node.expect_one_per_distinct_topic().await;
    expect_copies("the sender", &mut numbers(sender), 0, 1).await;

    // A list longer than the probed one (more than eight topics), repeats
    // far apart.
    let mut long: Vec<Topic> = (0..20)
        .map(|n| staff::topic_person(Uuid::from_u128(n)))
        .collect();
    long.extend([teams(), team(), teams(), team()]);
    long.extend((0..20).map(|n| staff::topic_person(Uuid::from_u128(n))));
    long.push(teams());
    pubsub.broadcast(long, numbered(REPEATED)).await.unwrap();
    pubsub.local_broadcast(&[teams(), team()], numbered(MARKER));
    node.expect_one_per_distinct_topic().await;
}

fn redis_config(server: &RedisServer, namespace: &str) -> RedisConfig {
    RedisConfig::new(server.url())
        .namespace(namespace)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
}

fn nats_config(server: &NatsServer, namespace: &str) -> NatsConfig {
    NatsConfig::new(server.url())
        .namespace(namespace)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_live_a_repeated_topic_is_one_topic_here_and_there() {
    let server = RedisServer::start().await;
    let node = |name| {
        staff::builder()
            .node_name(name)
            .redis(redis_config(&server, "live"))
    };
    let (here, there) = (node("here").await.unwrap(), node("there").await.unwrap());
    two_nodes(here.clone(), there.clone()).await;

    // direct_broadcast to the other node: each distinct topic once there.
    let mut direct = Node::of("there, direct", &there);
    here.direct_broadcast("there", &repeated(), numbered(REPEATED))
        .await
        .unwrap();
    here.direct_broadcast("there", &[teams(), team()], numbered(MARKER))
        .await
        .unwrap();
    direct.expect_one_per_distinct_topic().await;

    // local_broadcast on a node with a transport: this node only, each
    // distinct topic once.
    let mut local = Node::of("here, local", &here);
    assert_eq!(here.local_broadcast(&repeated(), numbered(REPEATED)), 3);
    here.local_broadcast(&[teams(), team()], numbered(MARKER));
    local.expect_one_per_distinct_topic().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_durable_a_repeated_topic_is_one_topic_here_and_there() {
    let server = RedisServer::start().await;
    let node = |name| {
        staff::builder()
            .node_name(name)
            .redis(redis_config(&server, "durable").durable(Retention::entries(1000)))
    };
    two_nodes(node("here").await.unwrap(), node("there").await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_live_a_repeated_topic_is_one_topic_here_and_there() {
    let server = NatsServer::start().await;
    let node = |name| {
        staff::builder()
            .node_name(name)
            .nats(nats_config(&server, "live"))
    };
    two_nodes(node("here").await.unwrap(), node("there").await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_durable_a_repeated_topic_is_one_topic_here_and_there() {
    let server = NatsServer::start_jetstream().await;
    let node = |name| {
        staff::builder()
            .node_name(name)
            .nats(nats_config(&server, "durable").durable(Retention::entries(1000)))
    };
    two_nodes(node("here").await.unwrap(), node("there").await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_wire_a_repeated_topic_is_one_topic_here_and_there() {
    let server = RedisServer::start().await;
    let node = |name| {
        let config = PhoenixConfig::new(server.url(), "MyApp.PubSub")
            .connect_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2));
        staff::builder().node_name(name).phoenix(config)
    };
    two_nodes(node("here").await.unwrap(), node("there").await.unwrap()).await;
}

/// An extension's server carries the transport (NATS live, which sends a
/// message per topic); the stock server linked to it has none. A repeated
/// broadcast from either side reaches each side's subscribers here, and
/// the other node's, once per distinct topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_extension_server_a_repeated_topic_is_one_topic_here_and_there() {
    let server = NatsServer::start().await;
    let here: PubSub<app::Message> = app::builder()
        .node_name("here")
        .nats(nats_config(&server, "linked"))
        .await
        .unwrap();
    let there: PubSub<app::Message> = app::builder()
        .node_name("there")
        .nats(nats_config(&server, "linked"))
        .await
        .unwrap();
    app::scope(here.clone(), async {
        let stock = staff::server();
        let mut nodes = [
            Node::of("here, stock side", &stock),
            Node::of_app("here, extension side", &here),
            Node::of_app("there", &there),
        ];
        within("here's sync", here.sync()).await.unwrap();
        within("there's sync", there.sync()).await.unwrap();

        // From the stock side, which publishes through the extension's
        // transport.
        broadcast_repeated(&stock, &mut nodes).await;

        // From the extension's side.
        let app_message = |n| app::Message::from(numbered(n));
        here.broadcast(repeated(), app_message(REPEATED))
            .await
            .unwrap();
        here.broadcast([teams(), team()], app_message(MARKER))
            .await
            .unwrap();
        expect_each_once(&mut nodes).await;
        assert_eq!(here.stats().rejected + there.stats().rejected, 0);
    })
    .await;
}
