//! The benchmark report: `staff-pubsub` against the hand-written baseline,
//! the floor of delivery and a published peer, on the workloads of issue 6.
//!
//! ```text
//! cargo run --release --example bench_report             # full run, Markdown
//! cargo run --release --example bench_report -- --quick  # under 60 s on 2 cores
//! cargo run --release --example bench_report -- --json   # one JSON object
//! ```
//!
//! Every workload runs each contender in this one process, in rounds; in
//! each round every contender runs once, and the order rotates from round to
//! round, so that a slow moment of the machine does not always fall on the
//! same contender. A ratio is the median over rounds of (ours / contender)
//! within the same round. One warm-up round per workload is discarded.
//!
//! Contenders, all on the same message type (`staff::Message`, shared as an
//! `Arc`) and the same subscriber model (one task per subscription draining
//! concurrently on a one-worker tokio runtime, the publisher on its own
//! thread):
//!
//! - `ours`: the generated stock functions (`staff::broadcast_*_on`) on the
//!   in-process `PubSub`.
//! - `naive`: what one writes by hand from the Elixir module: `String`
//!   topics formatted per broadcast, a `DashMap<String,
//!   tokio::sync::broadcast::Sender<Arc<Message>>>`, one send per topic.
//! - `floor`: the very queues our subscriptions use (the runtime's `Inbox`,
//!   compiled in from its source file), fed directly: no registry, no
//!   topic, no routing, no counters.
//! - `ractor_pg`: ractor's `pg` (the Rust port of Erlang's `pg`, on which
//!   Phoenix.PubSub itself is built): string group names, one actor per
//!   subscriber.
//!
//! `idle_subscription_bytes` is counted by a counting global allocator (off
//! during the throughput workloads), not read from RSS.

use std::future::{poll_fn, Future};
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{pg, Actor, ActorProcessingErr, ActorRef};
use staff_pubsub::staff::{
    self, Message, Person, PersonEvent, TeamMembership, TeamMembershipEvent,
};
use staff_pubsub::{PubSub, Subscription, Uuid};
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

// What the runtime's inbox module names as `crate::RecvError`.
use staff_pubsub::RecvError;

#[global_allocator]
static ALLOCATOR: staff_pubsub_count_alloc::Counting = staff_pubsub_count_alloc::Counting;

/// The runtime's own per-subscription queue, compiled from its source so
/// that the floor feeds exactly the queues our subscriptions use.
// Its unit tests are compiled out here: `cfg(test)` without the test harness.
#[allow(dead_code, unused_imports)]
#[path = "../staff-pubsub/src/inbox.rs"]
mod inbox;

use inbox::Inbox;

// ---------------------------------------------------------------- settings

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Measured rounds per workload (plus one warm-up round).
    rounds: usize,
    /// Broadcasts per round, membership workload.
    membership: usize,
    /// Broadcasts per publisher per round, two-publisher workload.
    two_publishers: usize,
    /// Broadcasts per round, cold-topic workload.
    cold: usize,
    /// Broadcasts per round, wide-topic workload (each reaches 10,000).
    wide: usize,
    /// Broadcasts per round, many-topics workload.
    many: usize,
    /// Subscriptions of the idle-memory figure.
    idle: usize,
}

const FULL: Plan = Plan {
    rounds: 15,
    membership: 200_000,
    two_publishers: 150_000,
    cold: 2_000_000,
    wide: 200,
    many: 300_000,
    idle: 1_000_000,
};

const QUICK: Plan = Plan {
    rounds: 5,
    membership: 100_000,
    two_publishers: 100_000,
    cold: 1_000_000,
    wide: 200,
    many: 200_000,
    idle: 1_000_000,
};

/// Queue capacity of every subscription in the wide workload, ours and the
/// contenders' alike: our default. A copy dropped for lack of room is
/// counted as lag (the tables show it; it should be 0).
const CAPACITY: usize = staff_pubsub::DEFAULT_CAPACITY;

/// Queue capacity for a round of `messages`: room for all of them, so that
/// no contender drops a copy when the publisher runs ahead of the drains
/// (a drop would make its round cheaper, not better).
fn room_for(messages: usize) -> usize {
    messages.next_power_of_two()
}
/// Subscribers of the one topic of the wide workload.
const WIDE_SUBSCRIBERS: usize = 10_000;
/// Per-person topics of the many-topics workload.
const MANY_TOPICS: usize = 100_000;
/// Queue capacity in the many-topics workload (tokio's broadcast channel
/// allocates its ring up front: 100,000 rings of 1024 slots would be 4 GB).
const MANY_CAPACITY: usize = 64;
/// Subscribed person topics present while the cold workload runs, so that
/// its lookups miss in a populated registry.
const COLD_BACKGROUND: usize = 10_000;

// ----------------------------------------------------------------- helpers

/// A deterministic generator (splitmix64): the same ids and choices for
/// every contender.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `n`th id of a family of ids.
fn id(family: u64, n: u64) -> Uuid {
    let high = mix(family.wrapping_mul(0x1_0000_0001) ^ n);
    let low = mix(high ^ n);
    Uuid::from_u64_pair(high, low)
}

const TEAMS: u64 = 1;
const PEOPLE: u64 = 2;
const COLD: u64 = 3;
const MEMBERSHIPS: u64 = 4;

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Polls a future that is ready at once (our broadcasts without a
/// transport).
fn now<F: Future>(cx: &mut Context<'_>, future: F) -> F::Output {
    match pin!(future).poll(cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-process broadcast was not ready at once"),
    }
}

/// Counts tasks down to zero; `wait` blocks the calling thread until then.
struct Countdown {
    left: Mutex<usize>,
    zero: Condvar,
}

impl Countdown {
    fn new(count: usize) -> Arc<Self> {
        Arc::new(Self {
            left: Mutex::new(count),
            zero: Condvar::new(),
        })
    }

    fn done(&self) {
        let mut left = self.left.lock().unwrap();
        *left -= 1;
        if *left == 0 {
            self.zero.notify_all();
        }
    }

    fn wait(&self) {
        let mut left = self.left.lock().unwrap();
        while *left > 0 {
            left = self.zero.wait(left).unwrap();
        }
    }
}

/// What one contender did in one round.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Broadcasts or deliveries, as the workload counts them.
    items: f64,
    elapsed: Duration,
    /// Copies dropped from full queues (0 when the queues kept up).
    lagged: u64,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.items / self.elapsed.as_secs_f64()
    }
}

/// Drain tasks of one round: started (and polled once) before the clock
/// starts; `time` waits for all of them to have received everything.
struct Drains {
    ready: Arc<Countdown>,
    done: Arc<Countdown>,
    lagged: Arc<AtomicU64>,
    /// Where a drain leaves its subscription when it is done, to be dropped
    /// after the clock stops: leaving a topic is not what is measured (and
    /// the contenders leave at very different costs).
    finished: Arc<Mutex<Vec<Box<dyn Send>>>>,
}

impl Drains {
    fn new(count: usize) -> Self {
        Self {
            ready: Countdown::new(count),
            done: Countdown::new(count),
            lagged: Arc::new(AtomicU64::new(0)),
            finished: Arc::new(Mutex::new(Vec::with_capacity(count))),
        }
    }

    fn spawn<S: Drain>(&self, rt: &Runtime, mut subscription: S, expected: u64) {
        let (ready, done, lagged, finished) = (
            Arc::clone(&self.ready),
            Arc::clone(&self.done),
            Arc::clone(&self.lagged),
            Arc::clone(&self.finished),
        );
        rt.spawn(async move {
            ready.done();
            let mut got = 0;
            while got < expected {
                match subscription.next().await {
                    Got::Message => got += 1,
                    Got::Lagged(n) => {
                        got += n;
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Got::Closed => break,
                }
            }
            finished.lock().unwrap().push(Box::new(subscription));
            done.done();
        });
    }

    /// Runs `publish` on the clock once every drain is running; returns the
    /// time until every drain has everything.
    fn time(self, publish: impl FnOnce()) -> (Duration, u64) {
        self.ready.wait();
        let start = Instant::now();
        publish();
        self.done.wait();
        let elapsed = start.elapsed();
        drop(std::mem::take(&mut *self.finished.lock().unwrap()));
        (elapsed, self.lagged.load(Ordering::Relaxed))
    }
}

enum Got {
    Message,
    Lagged(u64),
    Closed,
}

/// One subscriber's receiving end, whatever the contender.
trait Drain: Send + 'static {
    fn next(&mut self) -> impl Future<Output = Got> + Send;
}

impl Drain for Subscription<Message> {
    async fn next(&mut self) -> Got {
        match self.recv().await {
            Ok(message) => {
                black_box(message);
                Got::Message
            }
            Err(RecvError::Lagged(n)) => Got::Lagged(n),
            Err(_) => Got::Closed,
        }
    }
}

impl Drain for broadcast::Receiver<Arc<Message>> {
    async fn next(&mut self) -> Got {
        match self.recv().await {
            Ok(message) => {
                black_box(message);
                Got::Message
            }
            Err(broadcast::error::RecvError::Lagged(n)) => Got::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => Got::Closed,
        }
    }
}

impl Drain for Arc<Inbox<Message>> {
    async fn next(&mut self) -> Got {
        match poll_fn(|cx| self.poll_take(cx)).await {
            Ok(message) => {
                black_box(message);
                Got::Message
            }
            Err(RecvError::Lagged(n)) => Got::Lagged(n),
            Err(_) => Got::Closed,
        }
    }
}

// ------------------------------------------------------------- contenders

/// The baseline: the Elixir module transcribed by hand.
mod naive {
    use super::{broadcast, Arc, DashMap, Message, Uuid};

    pub fn topic_teams() -> String {
        "staff:teams".to_owned()
    }
    pub fn topic_people() -> String {
        "staff:people".to_owned()
    }
    pub fn topic_team(id: Uuid) -> String {
        format!("staff:team:{id}")
    }
    pub fn topic_person(id: Uuid) -> String {
        format!("staff:person:{id}")
    }

    pub struct PubSub {
        topics: DashMap<String, broadcast::Sender<Arc<Message>>>,
        capacity: usize,
    }

    impl PubSub {
        pub fn new(capacity: usize) -> Self {
            Self {
                topics: DashMap::new(),
                capacity,
            }
        }

        pub fn subscribe(&self, topic: String) -> broadcast::Receiver<Arc<Message>> {
            self.topics
                .entry(topic)
                .or_insert_with(|| broadcast::channel(self.capacity).0)
                .subscribe()
        }

        pub fn broadcast(&self, topics: &[String], message: Message) {
            let message = Arc::new(message);
            for topic in topics {
                if let Some(sender) = self.topics.get(topic) {
                    let _ = sender.send(Arc::clone(&message));
                }
            }
        }
    }

    pub fn broadcast_team_membership(
        pubsub: &PubSub,
        event: super::TeamMembershipEvent,
        payload: super::TeamMembership,
    ) {
        let topics = [
            topic_teams(),
            topic_team(payload.team_uuid),
            topic_people(),
            topic_person(payload.staff_person_uuid),
        ];
        pubsub.broadcast(&topics, Message::TeamMembership(event, payload));
    }

    pub fn broadcast_person(pubsub: &PubSub, event: super::PersonEvent, payload: super::Person) {
        let topics = [topic_people(), topic_person(payload.uuid)];
        pubsub.broadcast(&topics, Message::Person(event, payload));
    }
}

/// The peer: ractor's process groups, one actor per subscriber.
mod peer {
    use super::{pg, Actor, ActorProcessingErr, ActorRef, Arc, Countdown, Message};

    pub struct Counter;

    pub struct Count {
        pub got: u64,
        pub expected: u64,
        pub ready: Arc<Countdown>,
        pub done: Arc<Countdown>,
    }

    impl Actor for Counter {
        type Msg = Arc<Message>;
        type State = Count;
        type Arguments = Count;

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            count: Count,
        ) -> Result<Count, ActorProcessingErr> {
            count.ready.done();
            Ok(count)
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            message: Self::Msg,
            count: &mut Count,
        ) -> Result<(), ActorProcessingErr> {
            std::hint::black_box(message);
            count.got += 1;
            if count.got == count.expected {
                count.done.done();
            }
            Ok(())
        }
    }

    /// Sends `message` to every member of every group, as a ractor user
    /// fans out to process groups.
    pub fn broadcast(scope: &String, groups: &[String], message: Message) {
        let message = Arc::new(message);
        for group in groups {
            for member in pg::get_scoped_members(scope, group) {
                let _ = member.send_message(Arc::clone(&message));
            }
        }
    }
}

fn membership(team: Uuid, person: Uuid, n: usize) -> TeamMembership {
    TeamMembership {
        uuid: id(MEMBERSHIPS, n as u64),
        team_uuid: team,
        staff_person_uuid: person,
    }
}

// -------------------------------------------------------------- workloads

struct Env {
    rt: Runtime,
    waker: Waker,
}

/// The membership fan-out with `publishers` publisher threads, each on its
/// own team and person: every publisher's broadcasts reach the two shared
/// collection topics and its own two entity topics.
fn membership_ours(env: &Env, publishers: usize, per_publisher: usize) -> Sample {
    let total = (publishers * per_publisher) as u64;
    let pubsub = PubSub::<Message>::builder()
        .capacity(room_for(total as usize))
        .build();
    let drains = Drains::new(2 + 2 * publishers);
    drains.spawn(
        &env.rt,
        pubsub.subscribe(staff::topic_teams()).unwrap(),
        total,
    );
    drains.spawn(
        &env.rt,
        pubsub.subscribe(staff::topic_people()).unwrap(),
        total,
    );
    for p in 0..publishers as u64 {
        let (team, person) = (id(TEAMS, p), id(PEOPLE, p));
        let expected = per_publisher as u64;
        drains.spawn(
            &env.rt,
            pubsub.subscribe(staff::topic_team(team)).unwrap(),
            expected,
        );
        drains.spawn(
            &env.rt,
            pubsub.subscribe(staff::topic_person(person)).unwrap(),
            expected,
        );
    }
    let (elapsed, lagged) = drains.time(|| {
        std::thread::scope(|s| {
            for p in 0..publishers as u64 {
                let pubsub = &pubsub;
                let waker = &env.waker;
                s.spawn(move || {
                    let mut cx = Context::from_waker(waker);
                    let (team, person) = (id(TEAMS, p), id(PEOPLE, p));
                    for n in 0..per_publisher {
                        let payload = membership(team, person, n);
                        let sent = now(
                            &mut cx,
                            staff::broadcast_team_membership_on(
                                pubsub,
                                TeamMembershipEvent::TeamPersonAdded,
                                payload,
                            ),
                        );
                        sent.unwrap();
                    }
                });
            }
        });
    });
    Sample {
        items: total as f64,
        elapsed,
        lagged,
    }
}

fn membership_naive(env: &Env, publishers: usize, per_publisher: usize) -> Sample {
    let total = (publishers * per_publisher) as u64;
    let pubsub = naive::PubSub::new(room_for(total as usize));
    let drains = Drains::new(2 + 2 * publishers);
    drains.spawn(&env.rt, pubsub.subscribe(naive::topic_teams()), total);
    drains.spawn(&env.rt, pubsub.subscribe(naive::topic_people()), total);
    for p in 0..publishers as u64 {
        let (team, person) = (id(TEAMS, p), id(PEOPLE, p));
        let expected = per_publisher as u64;
        drains.spawn(&env.rt, pubsub.subscribe(naive::topic_team(team)), expected);
        drains.spawn(
            &env.rt,
            pubsub.subscribe(naive::topic_person(person)),
            expected,
        );
    }
    let (elapsed, lagged) = drains.time(|| {
        std::thread::scope(|s| {
            for p in 0..publishers as u64 {
                let pubsub = &pubsub;
                s.spawn(move || {
                    let (team, person) = (id(TEAMS, p), id(PEOPLE, p));
                    for n in 0..per_publisher {
                        naive::broadcast_team_membership(
                            pubsub,
                            TeamMembershipEvent::TeamPersonAdded,
                            membership(team, person, n),
                        );
                    }
                });
            }
        });
    });
    Sample {
        items: total as f64,
        elapsed,
        lagged,
    }
}

/// The floor's queues, one per entry of `expected` (the messages it will
/// get), each with its drain task when it gets any: made in the same order
/// as subscriptions and their tasks are, so that they lie in memory alike.
fn floor_inboxes(env: &Env, drains: &Drains, expected: &[u64]) -> Vec<Arc<Inbox<Message>>> {
    expected
        .iter()
        .map(|&expected| {
            let inbox = Arc::new(Inbox::new());
            if expected > 0 {
                drains.spawn(&env.rt, Arc::clone(&inbox), expected);
            }
            inbox
        })
        .collect()
}

/// The floor of the membership fan-out: the four queues, fed directly.
fn membership_floor(env: &Env, n: usize) -> Sample {
    let capacity = room_for(n);
    let drains = Drains::new(4);
    let inboxes = floor_inboxes(env, &drains, &[n as u64; 4]);
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let (elapsed, lagged) = drains.time(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..n {
                    let message = Arc::new(Message::TeamMembership(
                        TeamMembershipEvent::TeamPersonAdded,
                        membership(team, person, i),
                    ));
                    for inbox in &inboxes {
                        inbox.push(Arc::clone(&message), capacity);
                    }
                }
            });
        });
    });
    Sample {
        items: n as f64,
        elapsed,
        lagged,
    }
}

fn membership_peer(env: &Env, n: usize, round: u64) -> Sample {
    let scope = format!("bench-membership-{round}");
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let groups = [
        naive::topic_teams(),
        naive::topic_team(team),
        naive::topic_people(),
        naive::topic_person(person),
    ];
    let ready = Countdown::new(groups.len());
    let done = Countdown::new(groups.len());
    let actors: Vec<_> = env.rt.block_on(async {
        let mut actors = Vec::new();
        for group in &groups {
            let count = peer::Count {
                got: 0,
                expected: n as u64,
                ready: Arc::clone(&ready),
                done: Arc::clone(&done),
            };
            let (actor, handle) = Actor::spawn(None, peer::Counter, count).await.unwrap();
            pg::join_scoped(scope.clone(), group.clone(), vec![actor.get_cell()]);
            actors.push((actor, handle));
        }
        actors
    });
    ready.wait();
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..n {
                let payload = membership(team, person, i);
                let groups = [
                    naive::topic_teams(),
                    naive::topic_team(payload.team_uuid),
                    naive::topic_people(),
                    naive::topic_person(payload.staff_person_uuid),
                ];
                peer::broadcast(
                    &scope,
                    &groups,
                    Message::TeamMembership(TeamMembershipEvent::TeamPersonAdded, payload),
                );
            }
        });
    });
    done.wait();
    let elapsed = start.elapsed();
    env.rt.block_on(async {
        for (actor, handle) in actors {
            actor.stop(None);
            let _ = handle.await;
        }
    });
    Sample {
        items: n as f64,
        elapsed,
        lagged: 0,
    }
}

/// Cold topics: person broadcasts to ids nobody subscribes to (neither the
/// person's topic nor `staff:people` has a subscriber), in a registry that
/// holds 10,000 other person topics.
fn cold_ours(env: &Env, n: usize, ids: &[Uuid]) -> Sample {
    let pubsub = PubSub::<Message>::new();
    let background: Vec<_> = (0..COLD_BACKGROUND as u64)
        .map(|i| {
            pubsub
                .subscribe(staff::topic_person(id(PEOPLE, i)))
                .unwrap()
        })
        .collect();
    let mut cx = Context::from_waker(&env.waker);
    let mask = ids.len() - 1;
    let start = Instant::now();
    for i in 0..n {
        let person = Person {
            uuid: ids[i & mask],
        };
        let sent = now(
            &mut cx,
            staff::broadcast_person_on(&pubsub, PersonEvent::Updated, person),
        );
        sent.unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(pubsub.stats().delivered, 0);
    drop(background);
    Sample {
        items: n as f64,
        elapsed,
        lagged: 0,
    }
}

fn cold_naive(n: usize, ids: &[Uuid]) -> Sample {
    let pubsub = naive::PubSub::new(CAPACITY);
    let background: Vec<_> = (0..COLD_BACKGROUND as u64)
        .map(|i| pubsub.subscribe(naive::topic_person(id(PEOPLE, i))))
        .collect();
    let mask = ids.len() - 1;
    let start = Instant::now();
    for i in 0..n {
        let person = Person {
            uuid: ids[i & mask],
        };
        naive::broadcast_person(&pubsub, PersonEvent::Updated, person);
    }
    let elapsed = start.elapsed();
    drop(background);
    Sample {
        items: n as f64,
        elapsed,
        lagged: 0,
    }
}

/// One topic (`staff:people`), 10,000 subscribers: deliveries per second.
fn wide_ours(env: &Env, n: usize) -> Sample {
    let pubsub = PubSub::<Message>::builder().capacity(CAPACITY).build();
    let drains = Drains::new(WIDE_SUBSCRIBERS);
    for _ in 0..WIDE_SUBSCRIBERS {
        drains.spawn(
            &env.rt,
            pubsub.subscribe(staff::topic_people()).unwrap(),
            n as u64,
        );
    }
    let (elapsed, lagged) = drains.time(|| {
        let mut cx = Context::from_waker(&env.waker);
        for i in 0..n as u64 {
            let person = Person { uuid: id(COLD, i) };
            let sent = now(
                &mut cx,
                staff::broadcast_person_on(&pubsub, PersonEvent::Updated, person),
            );
            sent.unwrap();
        }
    });
    Sample {
        items: (n * WIDE_SUBSCRIBERS) as f64,
        elapsed,
        lagged,
    }
}

fn wide_naive(env: &Env, n: usize) -> Sample {
    let pubsub = naive::PubSub::new(CAPACITY);
    let drains = Drains::new(WIDE_SUBSCRIBERS);
    for _ in 0..WIDE_SUBSCRIBERS {
        drains.spawn(&env.rt, pubsub.subscribe(naive::topic_people()), n as u64);
    }
    let (elapsed, lagged) = drains.time(|| {
        for i in 0..n as u64 {
            let person = Person { uuid: id(COLD, i) };
            naive::broadcast_person(&pubsub, PersonEvent::Updated, person);
        }
    });
    Sample {
        items: (n * WIDE_SUBSCRIBERS) as f64,
        elapsed,
        lagged,
    }
}

fn wide_floor(env: &Env, n: usize) -> Sample {
    let drains = Drains::new(WIDE_SUBSCRIBERS);
    let inboxes = floor_inboxes(env, &drains, &vec![n as u64; WIDE_SUBSCRIBERS]);
    let (elapsed, lagged) = drains.time(|| {
        for i in 0..n as u64 {
            let message = Arc::new(Message::Person(
                PersonEvent::Updated,
                Person { uuid: id(COLD, i) },
            ));
            for inbox in &inboxes {
                inbox.push(Arc::clone(&message), CAPACITY);
            }
        }
    });
    Sample {
        items: (n * WIDE_SUBSCRIBERS) as f64,
        elapsed,
        lagged,
    }
}

/// 100,000 person topics, one subscriber each; person broadcasts to random
/// persons (`staff:people` has no subscriber).
struct Many {
    people: Vec<Uuid>,
    /// The person of each broadcast, as an index into `people`.
    targets: Vec<u32>,
    /// Broadcasts each person receives.
    expected: Vec<u64>,
}

impl Many {
    fn new(broadcasts: usize) -> Self {
        let people: Vec<Uuid> = (0..MANY_TOPICS as u64).map(|i| id(PEOPLE, i)).collect();
        let targets: Vec<u32> = (0..broadcasts as u64)
            .map(|i| (mix(i ^ 0x5eed) % MANY_TOPICS as u64) as u32)
            .collect();
        let mut expected = vec![0; MANY_TOPICS];
        for &t in &targets {
            expected[t as usize] += 1;
        }
        Self {
            people,
            targets,
            expected,
        }
    }

    fn receivers(&self) -> usize {
        self.expected.iter().filter(|&&e| e > 0).count()
    }
}

fn many_ours(env: &Env, many: &Many) -> Sample {
    let pubsub = PubSub::<Message>::builder().capacity(MANY_CAPACITY).build();
    let drains = Drains::new(many.receivers());
    let mut idle = Vec::new();
    for (person, &expected) in many.people.iter().zip(&many.expected) {
        let subscription = pubsub.subscribe(staff::topic_person(*person)).unwrap();
        if expected > 0 {
            drains.spawn(&env.rt, subscription, expected);
        } else {
            idle.push(subscription);
        }
    }
    let (elapsed, lagged) = drains.time(|| {
        let mut cx = Context::from_waker(&env.waker);
        for &t in &many.targets {
            let person = Person {
                uuid: many.people[t as usize],
            };
            let sent = now(
                &mut cx,
                staff::broadcast_person_on(&pubsub, PersonEvent::Updated, person),
            );
            sent.unwrap();
        }
    });
    drop(idle);
    Sample {
        items: many.targets.len() as f64,
        elapsed,
        lagged,
    }
}

fn many_naive(env: &Env, many: &Many) -> Sample {
    let pubsub = naive::PubSub::new(MANY_CAPACITY);
    let drains = Drains::new(many.receivers());
    let mut idle = Vec::new();
    for (person, &expected) in many.people.iter().zip(&many.expected) {
        let receiver = pubsub.subscribe(naive::topic_person(*person));
        if expected > 0 {
            drains.spawn(&env.rt, receiver, expected);
        } else {
            idle.push(receiver);
        }
    }
    let (elapsed, lagged) = drains.time(|| {
        for &t in &many.targets {
            let person = Person {
                uuid: many.people[t as usize],
            };
            naive::broadcast_person(&pubsub, PersonEvent::Updated, person);
        }
    });
    drop(idle);
    Sample {
        items: many.targets.len() as f64,
        elapsed,
        lagged,
    }
}

/// The floor routes by array index: a person's queue is `inboxes[index]`.
fn many_floor(env: &Env, many: &Many) -> Sample {
    let drains = Drains::new(many.receivers());
    let inboxes = floor_inboxes(env, &drains, &many.expected);
    let (elapsed, lagged) = drains.time(|| {
        for &t in &many.targets {
            let person = Person {
                uuid: many.people[t as usize],
            };
            let message = Arc::new(Message::Person(PersonEvent::Updated, person));
            inboxes[t as usize].push(message, MANY_CAPACITY);
        }
    });
    Sample {
        items: many.targets.len() as f64,
        elapsed,
        lagged,
    }
}

/// Net heap bytes per idle subscription, each on its own person topic.
fn idle_bytes_ours(count: usize) -> f64 {
    let pubsub = PubSub::<Message>::new();
    let (bytes, subscriptions) = staff_pubsub_count_alloc::net_bytes(|| {
        let mut subscriptions = Vec::with_capacity(count);
        for i in 0..count as u64 {
            subscriptions.push(
                pubsub
                    .subscribe(staff::topic_person(id(PEOPLE, i)))
                    .unwrap(),
            );
        }
        subscriptions
    });
    assert_eq!(pubsub.stats().topics, count);
    drop(subscriptions);
    bytes as f64 / count as f64
}

// ------------------------------------------------------------------ rounds

/// One contender of a workload.
struct Contender<'a> {
    name: &'static str,
    run: Box<dyn FnMut(u64) -> Sample + 'a>,
    samples: Vec<Sample>,
}

impl<'a> Contender<'a> {
    fn new(name: &'static str, run: impl FnMut(u64) -> Sample + 'a) -> Self {
        Self {
            name,
            run: Box::new(run),
            samples: Vec::new(),
        }
    }
}

/// Runs one warm-up round and `rounds` measured rounds; in round `r` the
/// contenders start at `r % len` and go round.
fn alternate(workload: &str, rounds: usize, contenders: &mut [Contender<'_>]) {
    let len = contenders.len();
    for round in 0..=rounds {
        for k in 0..len {
            let contender = &mut contenders[(round + k) % len];
            let sample = (contender.run)(round as u64);
            if round > 0 {
                contender.samples.push(sample);
            }
        }
        eprint!("\r{workload}: round {round}/{rounds}   ");
    }
    eprintln!();
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() % 2 {
        0 => (values[mid - 1] + values[mid]) / 2.0,
        _ => values[mid],
    }
}

/// The summary of one contender on one workload.
#[derive(Clone, Debug)]
struct Row {
    workload: &'static str,
    contender: &'static str,
    unit: &'static str,
    /// Median rate (items per second).
    rate: f64,
    min: f64,
    max: f64,
    /// Median over rounds of ours / this contender, paired by round.
    ratio: Option<f64>,
    lagged: u64,
}

fn summarise(workload: &'static str, unit: &'static str, contenders: &[Contender<'_>]) -> Vec<Row> {
    let ours = &contenders[0].samples;
    contenders
        .iter()
        .map(|c| {
            let rates: Vec<f64> = c.samples.iter().map(Sample::rate).collect();
            let ratios: Vec<f64> = ours
                .iter()
                .zip(&c.samples)
                .map(|(o, s)| o.rate() / s.rate())
                .collect();
            Row {
                workload,
                contender: c.name,
                unit,
                rate: median(rates.clone()),
                min: rates.iter().copied().fold(f64::INFINITY, f64::min),
                max: rates.iter().copied().fold(0.0, f64::max),
                ratio: (!std::ptr::eq(c, &contenders[0])).then(|| median(ratios)),
                lagged: c.samples.iter().map(|s| s.lagged).sum(),
            }
        })
        .collect()
}

// ------------------------------------------------------------------ report

/// One headline figure with its goal.
struct Figure {
    name: &'static str,
    value: f64,
    goal: Goal,
}

#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(goal) => value >= goal,
            Goal::AtMost(goal) => value <= goal,
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::AtLeast(goal) => write!(f, ">= {goal}"),
            Goal::AtMost(goal) => write!(f, "<= {goal}"),
        }
    }
}

fn find<'a>(rows: &'a [Row], workload: &str, contender: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.workload == workload && r.contender == contender)
        .unwrap()
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if let Some(at) = args.iter().position(|a| a == "--profile") {
        let workload = args.get(at + 1).map_or("membership", String::as_str);
        let n = args
            .get(at + 2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        profile(workload, n);
        return;
    }
    let (plan, mode) = if has("--quick") {
        (QUICK, "--quick")
    } else {
        (FULL, "full")
    };
    let json = has("--json");
    // `--only WORKLOAD` runs one workload (its figures only; a diagnostic,
    // not a report).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|at| args.get(at + 1).cloned());
    let selected = |workload: &str| match only.as_deref() {
        Some(only) => only == workload,
        None => true,
    };
    let started = Instant::now();

    let env = Env {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap(),
        waker: Waker::from(Arc::new(Noop)),
    };
    let mut rows = Vec::new();

    // membership_fanout
    if selected("membership_fanout") {
        let mut contenders = [
            Contender::new("ours", |_| membership_ours(&env, 1, plan.membership)),
            Contender::new("naive", |_| membership_naive(&env, 1, plan.membership)),
            Contender::new("floor", |_| membership_floor(&env, plan.membership)),
            Contender::new("ractor_pg", |round| {
                membership_peer(&env, plan.membership, round)
            }),
        ];
        alternate("membership_fanout", plan.rounds, &mut contenders);
        rows.extend(summarise("membership_fanout", "broadcasts/s", &contenders));
    }
    // cold_topic
    if selected("cold_topic") {
        let ids: Vec<Uuid> = (0..4096).map(|i| id(COLD, i)).collect();
        let mut contenders = [
            Contender::new("ours", |_| cold_ours(&env, plan.cold, &ids)),
            Contender::new("naive", |_| cold_naive(plan.cold, &ids)),
        ];
        alternate("cold_topic", plan.rounds, &mut contenders);
        rows.extend(summarise("cold_topic", "broadcasts/s", &contenders));
    }
    // wide_topic
    if selected("wide_topic") {
        let mut contenders = [
            Contender::new("ours", |_| wide_ours(&env, plan.wide)),
            Contender::new("naive", |_| wide_naive(&env, plan.wide)),
            Contender::new("floor", |_| wide_floor(&env, plan.wide)),
        ];
        alternate("wide_topic", plan.rounds, &mut contenders);
        rows.extend(summarise("wide_topic", "deliveries/s", &contenders));
    }
    // many_topics
    if selected("many_topics") {
        let many = Many::new(plan.many);
        let mut contenders = [
            Contender::new("ours", |_| many_ours(&env, &many)),
            Contender::new("naive", |_| many_naive(&env, &many)),
            Contender::new("floor", |_| many_floor(&env, &many)),
        ];
        alternate("many_topics", plan.rounds, &mut contenders);
        rows.extend(summarise("many_topics", "broadcasts/s", &contenders));
    }
    // two_publishers
    if selected("two_publishers") {
        let n = plan.two_publishers;
        let mut contenders = [
            Contender::new("ours, 2 publishers", |_| membership_ours(&env, 2, n)),
            Contender::new("ours, 1 publisher", |_| membership_ours(&env, 1, n)),
            Contender::new("naive, 2 publishers", |_| membership_naive(&env, 2, n)),
            Contender::new("naive, 1 publisher", |_| membership_naive(&env, 1, n)),
        ];
        alternate("two_publishers", plan.rounds, &mut contenders);
        rows.extend(summarise("two_publishers", "broadcasts/s", &contenders));
    }
    if only.is_some() {
        print_rows(&rows, plan);
        return;
    }
    eprint!("idle_subscription_bytes: {} subscriptions ... ", plan.idle);
    let idle = idle_bytes_ours(plan.idle);
    eprintln!("done");

    let ratio = |workload: &str, contender: &str| find(&rows, workload, contender).ratio.unwrap();
    let rate = |workload: &str, contender: &str| find(&rows, workload, contender).rate;
    // The two-publisher scaling is paired by round too: ours-2 / ours-1.
    let scaling = ratio("two_publishers", "ours, 1 publisher");
    let figures = [
        Figure {
            name: "membership_vs_naive_ratio",
            value: ratio("membership_fanout", "naive"),
            goal: Goal::AtLeast(1.5),
        },
        Figure {
            name: "membership_vs_floor_ratio",
            value: ratio("membership_fanout", "floor"),
            goal: Goal::AtLeast(0.8),
        },
        Figure {
            name: "membership_vs_peer_ratio",
            value: ratio("membership_fanout", "ractor_pg"),
            goal: Goal::AtLeast(1.5),
        },
        Figure {
            name: "cold_topic_ns",
            value: 1e9 / rate("cold_topic", "ours"),
            goal: Goal::AtMost(40.0),
        },
        Figure {
            name: "cold_topic_vs_naive_ratio",
            value: ratio("cold_topic", "naive"),
            goal: Goal::AtLeast(5.0),
        },
        Figure {
            name: "wide_vs_naive_ratio",
            value: ratio("wide_topic", "naive"),
            goal: Goal::AtLeast(1.0),
        },
        Figure {
            name: "many_topics_vs_naive_ratio",
            value: ratio("many_topics", "naive"),
            goal: Goal::AtLeast(1.5),
        },
        Figure {
            name: "two_publishers_scaling",
            value: scaling,
            goal: Goal::AtLeast(1.3),
        },
        Figure {
            name: "idle_subscription_bytes",
            value: idle,
            goal: Goal::AtMost(256.0),
        },
    ];

    if json {
        let object: serde_json::Map<String, serde_json::Value> = figures
            .iter()
            .map(|f| {
                (
                    f.name.to_owned(),
                    serde_json::json!((f.value * 1000.0).round() / 1000.0),
                )
            })
            .collect();
        println!("{}", serde_json::Value::Object(object));
        return;
    }

    println!(
        "## Figures ({mode} run, {} s)\n",
        started.elapsed().as_secs()
    );
    println!("| figure | value | goal | met |");
    println!("| --- | ---: | --- | --- |");
    for f in &figures {
        let met = if f.goal.met(f.value) { "yes" } else { "**no**" };
        println!("| `{}` | {:.2} | {} | {met} |", f.name, f.value, f.goal);
    }
    print_rows(&rows, plan);
    println!(
        "\ncold_topic per broadcast: ours {:.1} ns, naive {:.1} ns. \
         idle subscriptions: {} over as many topics, {:.1} bytes each.",
        1e9 / rate("cold_topic", "ours"),
        1e9 / rate("cold_topic", "naive"),
        plan.idle,
        idle
    );
    println!(
        "Sizes: membership {} broadcasts/round, two_publishers {} per publisher, cold {}, \
         wide {} x {} subscribers, many_topics {} broadcasts over {} topics; \
         queue capacity: room for the whole round in membership_fanout and two_publishers, \
         {} in wide_topic, {} in many_topics.",
        plan.membership,
        plan.two_publishers,
        plan.cold,
        plan.wide,
        WIDE_SUBSCRIBERS,
        plan.many,
        MANY_TOPICS,
        CAPACITY,
        MANY_CAPACITY
    );
}

fn print_rows(rows: &[Row], plan: Plan) {
    println!("\n## Throughput per workload\n");
    println!(
        "Median of {} rounds (min .. max); `ours / this` is the median of the per-round ratios.\n",
        plan.rounds
    );
    println!("| workload | contender | median | min .. max | unit | ours / this | lagged |");
    println!("| --- | --- | ---: | ---: | --- | ---: | ---: |");
    for r in rows {
        let ratio = r
            .ratio
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "| {} | {} | {} | {} .. {} | {} | {ratio} | {} |",
            r.workload,
            r.contender,
            human(r.rate),
            human(r.min),
            human(r.max),
            r.unit,
            r.lagged
        );
    }
}

// ----------------------------------------------------------------- profile

/// Single-threaded loops for an instruction profiler: publish then drain on
/// one thread, so that every instruction of a broadcast is counted.
///
/// ```text
/// valgrind --tool=callgrind --toggle-collect='*membership_loop*' \
///     target/release/examples/bench_report --profile membership 100000
/// ```
fn profile(workload: &str, n: usize) {
    let waker = Waker::from(Arc::new(Noop));
    match workload {
        "membership" => profile_membership(&waker, n),
        "cold" => profile_cold(&waker, n),
        other => panic!("--profile membership|cold, not {other}"),
    }
}

fn profile_membership(waker: &Waker, n: usize) {
    let pubsub = PubSub::<Message>::new();
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let mut subscriptions = [
        pubsub.subscribe(staff::topic_teams()).unwrap(),
        pubsub.subscribe(staff::topic_team(team)).unwrap(),
        pubsub.subscribe(staff::topic_people()).unwrap(),
        pubsub.subscribe(staff::topic_person(person)).unwrap(),
    ];
    let got = membership_loop(waker, &pubsub, &mut subscriptions, n);
    assert_eq!(got, 4 * n);
    println!("membership: {n} broadcasts, {got} deliveries");
}

/// What the profiler counts: `n` membership broadcasts, each drained.
#[inline(never)]
fn membership_loop(
    waker: &Waker,
    pubsub: &PubSub<Message>,
    subscriptions: &mut [Subscription<Message>],
    n: usize,
) -> usize {
    let (team, person) = (id(TEAMS, 0), id(PEOPLE, 0));
    let mut cx = Context::from_waker(waker);
    let mut got = 0;
    for i in 0..n {
        let payload = membership(team, person, i);
        now(
            &mut cx,
            staff::broadcast_team_membership_on(
                pubsub,
                TeamMembershipEvent::TeamPersonAdded,
                payload,
            ),
        )
        .unwrap();
        for subscription in subscriptions.iter_mut() {
            got += usize::from(subscription.try_recv().is_ok());
        }
    }
    got
}

fn profile_cold(waker: &Waker, n: usize) {
    let pubsub = PubSub::<Message>::new();
    let _background: Vec<_> = (0..COLD_BACKGROUND as u64)
        .map(|i| {
            pubsub
                .subscribe(staff::topic_person(id(PEOPLE, i)))
                .unwrap()
        })
        .collect();
    let ids: Vec<Uuid> = (0..4096).map(|i| id(COLD, i)).collect();
    cold_loop(waker, &pubsub, &ids, n);
    println!("cold: {n} broadcasts");
}

/// What the profiler counts: `n` person broadcasts to cold topics.
#[inline(never)]
fn cold_loop(waker: &Waker, pubsub: &PubSub<Message>, ids: &[Uuid], n: usize) {
    let mut cx = Context::from_waker(waker);
    for i in 0..n {
        let person = Person {
            uuid: ids[i % ids.len()],
        };
        now(
            &mut cx,
            staff::broadcast_person_on(pubsub, PersonEvent::Updated, person),
        )
        .unwrap();
    }
}
