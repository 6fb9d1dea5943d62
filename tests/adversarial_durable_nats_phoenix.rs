//! Adversarial cases: the durable Redis log against other writers of its
//! keys, NATS slow consumers and credentials, Phoenix node names, UUID
//! fields and the rate-limited failure WARN. Written from the README and rustdoc alone,
//! against real servers started on loopback. A case that shows a known
//! limit is kept `#[ignore]`d, its reason naming the limit and where the
//! README states it.
//!
//! Every wait is bounded (a deadline or `within`); nothing sleeps and hopes.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use staff_pubsub::redis::RedisConfig;
use staff_pubsub::{Gap, Position, PubSub, RecvError, Retention, Subscription, Topic};
use staff_pubsub_tests::redis_server::RedisServer;
use staff_pubsub_tests::within;

const NAMESPACE: &str = "adv2";
const ROOMS: Topic = Topic::new("chat:rooms");

// ===================================================================
// Durable Redis log: other writers of its keys
// ===================================================================

fn durable_config(url: impl Into<String>, retention: Retention) -> RedisConfig {
    RedisConfig::new(url)
        .namespace(NAMESPACE)
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .health_check_interval(Duration::from_millis(500))
        .durable(retention)
}

async fn durable_node(url: String, name: &str, retention: Retention) -> PubSub<u64> {
    PubSub::builder()
        .node_name(name)
        .capacity(100_000)
        .redis(durable_config(url, retention))
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e}"))
}

/// The log's keys, as every node of [`NAMESPACE`] names them.
fn keys() -> RedisConfig {
    RedisConfig::new("").namespace(NAMESPACE)
}

/// What a subscriber read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Message(u64, Position),
    Gap(Gap),
}

/// Reads until `last` arrives, or until `silence` passes with nothing.
async fn read_until(
    subscription: &mut Subscription<u64>,
    last: u64,
    silence: Duration,
) -> Vec<Read> {
    let mut read = Vec::new();
    loop {
        match tokio::time::timeout(silence, subscription.recv_with_position()).await {
            Err(_) => return read,
            Ok(Ok((message, position))) => {
                let position = position.expect("a durable message has a position");
                read.push(Read::Message(*message, position));
                if *message == last {
                    return read;
                }
            }
            Ok(Err(RecvError::Gap(gap))) => read.push(Read::Gap(gap)),
            Ok(Err(other)) => panic!("{other:?} after {read:?}"),
        }
    }
}

/// The docs' promise, checked on what a subscriber read of `sent` (the
/// numbers whose broadcast returned `Ok`, in log order): each delivered
/// once, in that order, and every one not delivered is followed by a gap
/// before the next one delivered; the last one is delivered (the log
/// flows again after the disruption). Returns the gaps read.
fn assert_no_silent_loss(read: &[Read], sent: &[u64]) -> Vec<Gap> {
    let mut next = 0usize;
    let mut gap_since = false;
    let mut gaps = Vec::new();
    for item in read {
        match *item {
            Read::Gap(gap) => {
                gap_since = true;
                gaps.push(gap);
            }
            Read::Message(n, _) => {
                let Some(at) = sent.iter().position(|s| *s == n) else {
                    panic!("{n} was never sent: {read:?}");
                };
                assert!(at >= next, "{n} out of order or twice: {read:?}");
                assert!(
                    at == next || gap_since,
                    "{:?} lost without a gap before {n}: {read:?}",
                    &sent[next..at]
                );
                next = at + 1;
                gap_since = false;
            }
        }
    }
    assert_eq!(
        next,
        sent.len(),
        "the last Ok'ed broadcasts never arrived ({:?}): {read:?}",
        &sent[next..]
    );
    gaps
}

async fn cmd<T: redis::FromRedisValue>(admin: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command
        .query_async(admin)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// A (publisher), B (subscriber of ROOMS) on one durable log; B has read
/// A's broadcasts 0..20.
async fn two_nodes(
    server: &RedisServer,
    retention: Retention,
) -> (PubSub<u64>, PubSub<u64>, Subscription<u64>) {
    let a = durable_node(server.url(), "a", retention.clone()).await;
    let b = durable_node(server.url(), "b", retention).await;
    let mut on_b = b.subscribe(ROOMS).unwrap();
    for n in 0..20 {
        a.broadcast([ROOMS], n).await.expect("sent");
    }
    let read = read_until(&mut on_b, 19, Duration::from_secs(5)).await;
    assert_no_silent_loss(&read, &(0..20).collect::<Vec<_>>());
    assert!(
        read.iter().all(|r| matches!(r, Read::Message(..))),
        "{read:?}"
    );
    (a, b, on_b)
}

/// After a stray write, `count` broadcasts from A (numbered from 100),
/// each `Ok`: B receives each, after at most one gap. Returns the gaps.
async fn broadcasts_after_stray_write_reach_b(
    a: &PubSub<u64>,
    on_b: &mut Subscription<u64>,
    count: u64,
) -> Vec<Gap> {
    let sent: Vec<u64> = (100..100 + count).collect();
    for n in &sent {
        a.broadcast([ROOMS], *n)
            .await
            .unwrap_or_else(|e| panic!("broadcast {n} after the stray write: {e}"));
    }
    let read = read_until(on_b, *sent.last().unwrap(), Duration::from_secs(5)).await;
    assert_no_silent_loss(&read, &sent)
}

/// Fields the log does not use, added to the meta hash: nothing changes.
/// No gap, nothing rejected, positions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_meta_hash_with_extra_fields_changes_nothing() {
    let server = RedisServer::start().await;
    let (a, b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
    let meta = keys().log_meta_key();
    let mut admin = server.connection().await;
    let _: i64 = cmd(
        &mut admin,
        &[
            "HSET",
            &meta,
            "owner",
            "migration-42",
            "seqx",
            "abc",
            "LOG",
            "70000",
        ],
    )
    .await;
    let gaps = broadcasts_after_stray_write_reach_b(&a, &mut on_b, 10).await;
    assert!(gaps.is_empty(), "{gaps:?}");
    assert_eq!(a.stats().rejected + b.stats().rejected, 0);
}

/// `seq` negative, `seq` with a sign or blanks, `log` empty, `log`
/// negative: not the log's own values. Ten broadcasts each `Ok`, B gets
/// them after one `Gap::LogLost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_meta_values_negative_signed_or_empty_are_a_lost_log_not_a_loss() {
    for (field, value) in [
        ("seq", "-5"),
        ("seq", "+21"),
        ("seq", " 21"),
        ("seq", "021"),
        ("seq", "21.0"),
        ("seq", ""),
        ("log", ""),
        ("log", "-1"),
        ("log", "0x10"),
    ] {
        let server = RedisServer::start().await;
        let (a, _b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
        let meta = keys().log_meta_key();
        let _: i64 = cmd(
            &mut server.connection().await,
            &["HSET", &meta, field, value],
        )
        .await;
        let gaps = broadcasts_after_stray_write_reach_b(&a, &mut on_b, 10).await;
        assert_eq!(gaps, vec![Gap::LogLost], "{field}={value:?}");
    }
}

/// `seq` set to a huge sequence number that is still in range (the log's
/// own form): every later `Ok`'ed broadcast reaches B (a gap may say
/// entries are missing), also across the end of the sequence range,
/// where the log must start again (2 entries before `MAX_SEQ`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_meta_seq_near_the_end_of_the_range_loses_nothing_silently() {
    let server = RedisServer::start().await;
    let (a, b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
    let meta = keys().log_meta_key();
    let near = (Position::MAX_SEQ - 2).to_string();
    let _: i64 = cmd(
        &mut server.connection().await,
        &["HSET", &meta, "seq", &near],
    )
    .await;
    let gaps = broadcasts_after_stray_write_reach_b(&a, &mut on_b, 10).await;
    assert!(!gaps.is_empty(), "numbers jumped: B is told");
    assert!(b.stats().connection == staff_pubsub::Connection::Connected);
}

/// `seq` bumped to a larger number in the log's own form: no entry was
/// trimmed, yet the docs say a `Gap::Trimmed` means "entries the node had
/// not read are gone", naming how many. What does B get?
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known limit, stated in README Durable delivery: a stray HSET of `seq` (own form) makes B report Gap::Trimmed of ~2.8e14 entries that never existed; docs say Trimmed means entries were trimmed"]
async fn redis_meta_seq_bumped_is_not_reported_as_trimmed_entries() {
    let server = RedisServer::start().await;
    let (a, _b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
    let meta = keys().log_meta_key();
    let _: i64 = cmd(
        &mut server.connection().await,
        &["HSET", &meta, "seq", "281474976710000"],
    )
    .await;
    let gaps = broadcasts_after_stray_write_reach_b(&a, &mut on_b, 10).await;
    for gap in &gaps {
        assert!(
            !matches!(gap, Gap::Trimmed { .. }),
            "nothing was trimmed, yet B was told {gap:?}"
        );
    }
}

/// Stream entries with missing fields or another log's id, written where
/// the log's next entry is due: each `Ok`'ed broadcast after them reaches
/// B after a gap; the stray entries are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stray_entries_missing_fields_or_of_another_log_lose_nothing_silently() {
    type Fields = &'static [&'static str];
    let cases: [(&str, Fields); 5] = [
        ("no m", &["log", "LOG", "n", "1", "t", "1"]),
        ("no log", &["n", "1", "t", "1", "m", "{}"]),
        ("no t, no n", &["log", "LOG", "m", "{}"]),
        (
            "another log's id",
            &["log", "OTHER", "n", "1", "t", "1", "m", "{}"],
        ),
        ("a field of another stream", &["x", "y"]),
    ];
    for (what, fields) in cases {
        let server = RedisServer::start().await;
        let (a, b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
        let mut admin = server.connection().await;
        let meta = keys().log_meta_key();
        let log: u16 = cmd(&mut admin, &["HGET", &meta, "log"]).await;
        let seq: u64 = cmd(&mut admin, &["HGET", &meta, "seq"]).await;
        let other = log.wrapping_add(1).to_string();
        let id = format!("{}-0", seq + 1);
        let stream = keys().log_key();
        let mut args: Vec<String> = vec!["XADD".into(), stream, id];
        args.extend(fields.iter().map(|f| match *f {
            "LOG" => log.to_string(),
            "OTHER" => other.clone(),
            f => f.to_owned(),
        }));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _: String = cmd(&mut admin, &args).await;
        let gaps = broadcasts_after_stray_write_reach_b(&a, &mut on_b, 10).await;
        assert!(!gaps.is_empty(), "{what}: B is told the log was replaced");
        assert!(b.stats().rejected >= 1, "{what}: the stray entry counted");
        drop((a, b));
    }
}

/// A meta hash written back with a log id the nodes left before (an
/// operator restoring the meta hash from a backup, a migration script
/// replaying it): a value of the log's own form. The log moved to a new
/// id after a stray `log` value; then `log` is set back to the first id.
/// Every `Ok`'ed broadcast after it must reach B (after a gap), each
/// once, and no message B already had may come again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known limit, stated in README Durable delivery: HSET of the meta hash's log back to an id B left earlier: B rejects the new entries as 'a log replaced since', then re-reads the old log from its start (duplicates of 0..19) and reports a false Gap::Trimmed"]
async fn redis_meta_log_set_back_to_an_id_left_before_loses_nothing_and_repeats_nothing() {
    let server = RedisServer::start().await;
    let (a, b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
    let mut admin = server.connection().await;
    let meta = keys().log_meta_key();
    let first: u16 = cmd(&mut admin, &["HGET", &meta, "log"]).await;
    let _: i64 = cmd(&mut admin, &["HSET", &meta, "log", "70000"]).await;
    let gaps = broadcasts_after_stray_write_reach_b(&a, &mut on_b, 10).await;
    assert_eq!(gaps, vec![Gap::LogLost]);
    let second: u16 = cmd(&mut admin, &["HGET", &meta, "log"]).await;
    assert_ne!(first, second);
    // Set back to the first log's id: the log's own form.
    let _: i64 = cmd(&mut admin, &["HSET", &meta, "log", &first.to_string()]).await;
    let sent: Vec<u64> = (200..210).collect();
    for n in &sent {
        a.broadcast([ROOMS], *n).await.expect("sent");
    }
    let read = read_until(&mut on_b, 209, Duration::from_secs(5)).await;
    let rejected = b.stats().rejected;
    let gaps = assert_no_silent_loss(&read, &sent);
    assert!(!gaps.is_empty(), "the log changed under B: {read:?}");
    assert_eq!(rejected, 0, "B rejected {rejected} entries: {read:?}");
}

/// An entry added by an operator with an automatic id (`XADD key * ..`,
/// a millisecond time as id, in the sequence range): the next `Ok`'ed
/// broadcasts reach B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_operators_xadd_star_loses_nothing_silently() {
    let server = RedisServer::start().await;
    let (a, b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
    let _: String = cmd(
        &mut server.connection().await,
        &["XADD", &keys().log_key(), "*", "note", "hello"],
    )
    .await;
    let gaps = broadcasts_after_stray_write_reach_b(&a, &mut on_b, 10).await;
    assert!(!gaps.is_empty());
    assert!(b.stats().rejected >= 1);
}

/// The stream turned into a string while B is blocked reading it and A
/// is idle, then A broadcasts: every `Ok`'ed broadcast reaches B after a
/// gap, and B stays (or comes back) connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stream_turned_into_another_type_mid_run_loses_nothing_silently() {
    let server = RedisServer::start().await;
    let (a, b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
    let mut admin = server.connection().await;
    let stream = keys().log_key();
    let _: i64 = cmd(&mut admin, &["DEL", &stream]).await;
    let _: () = cmd(&mut admin, &["SET", &stream, "not a stream"]).await;
    // B's reader meets it (XREAD, head check) before A broadcasts again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let gaps = broadcasts_after_stray_write_reach_b(&a, &mut on_b, 10).await;
    assert!(!gaps.is_empty());
    within(
        "B connected",
        b.wait_for_connection(staff_pubsub::Connection::Connected),
    )
    .await;
}

/// An operator trims the whole stream (`XTRIM MAXLEN 0`) after B read
/// every entry: the log goes on under its id, no gap, positions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_operators_xtrim_of_read_entries_is_no_gap() {
    let server = RedisServer::start().await;
    let (a, b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
    let _: i64 = cmd(
        &mut server.connection().await,
        &["XTRIM", &keys().log_key(), "MAXLEN", "0"],
    )
    .await;
    let gaps = broadcasts_after_stray_write_reach_b(&a, &mut on_b, 10).await;
    assert!(gaps.is_empty(), "{gaps:?}");
    assert_eq!(b.stats().gaps, 0);
}

/// Two nodes appending concurrently right after a stray `log` value (the
/// repair races): every `Ok`'ed broadcast of either reaches B once, and
/// the foreign value is counted once in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_appends_from_two_nodes_during_a_repair_lose_nothing() {
    let server = RedisServer::start().await;
    let (a, b, mut on_b) = two_nodes(&server, Retention::entries(10_000)).await;
    let c = durable_node(server.url(), "c", Retention::entries(10_000)).await;
    let _: i64 = cmd(
        &mut server.connection().await,
        &["HSET", &keys().log_meta_key(), "log", "70000"],
    )
    .await;
    let from_a = async {
        for n in 1_000..1_200u64 {
            a.broadcast([ROOMS], n).await.expect("a sent");
        }
    };
    let from_c = async {
        for n in 2_000..2_200u64 {
            c.broadcast([ROOMS], n).await.expect("c sent");
        }
    };
    tokio::join!(from_a, from_c);
    // The log's order, read from the stream itself.
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while read
        .iter()
        .filter(|r| matches!(r, Read::Message(..)))
        .count()
        < 400
    {
        assert!(tokio::time::Instant::now() < deadline, "B read {read:?}");
        match tokio::time::timeout(Duration::from_secs(3), on_b.recv_with_position()).await {
            Ok(Ok((n, p))) => read.push(Read::Message(*n, p.unwrap())),
            Ok(Err(RecvError::Gap(g))) => read.push(Read::Gap(g)),
            Ok(Err(e)) => panic!("{e:?}"),
            Err(_) => break,
        }
    }
    let got: Vec<u64> = read
        .iter()
        .filter_map(|r| match r {
            Read::Message(n, _) => Some(*n),
            Read::Gap(_) => None,
        })
        .collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    let expected: Vec<u64> = (1_000..1_200).chain(2_000..2_200).collect();
    assert_eq!(sorted, expected, "each Ok'ed broadcast once: {read:?}");
    let a_order: Vec<u64> = got.iter().copied().filter(|n| *n < 2_000).collect();
    assert_eq!(a_order, (1_000..1_200).collect::<Vec<_>>(), "A's in order");
    assert_eq!(
        read.iter().filter(|r| matches!(r, Read::Gap(_))).count(),
        1,
        "{read:?}"
    );
    assert_eq!(
        a.stats().rejected + b.stats().rejected + c.stats().rejected,
        1
    );
}

/// `DEL` of both keys between every two broadcasts, racing B's reader:
/// each `Ok`'ed broadcast is delivered or followed by a gap before the
/// next one delivered, and the last ones (after the last `DEL`) flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_del_between_every_two_broadcasts_loses_nothing_silently() {
    let server = RedisServer::start().await;
    let (a, _b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
    let mut admin = server.connection().await;
    let (stream, meta) = (keys().log_key(), keys().log_meta_key());
    let mut sent = Vec::new();
    for n in 100..160u64 {
        a.broadcast([ROOMS], n).await.expect("sent");
        sent.push(n);
        if n.is_multiple_of(3) {
            // Let B sometimes read, sometimes not.
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
        let _: i64 = cmd(&mut admin, &["DEL", &stream, &meta]).await;
    }
    for n in 160..170u64 {
        a.broadcast([ROOMS], n).await.expect("sent");
        sent.push(n);
    }
    let read = read_until(&mut on_b, 169, Duration::from_secs(5)).await;
    let gaps = assert_no_silent_loss(&read, &sent);
    assert!(!gaps.is_empty());
}

/// The stream alone deleted between every two broadcasts (the meta hash
/// kept), B reading as it comes: the log goes on under its id; whatever
/// B did not read before a `DEL` is told by a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stream_del_between_every_two_broadcasts_loses_nothing_silently() {
    let server = RedisServer::start().await;
    let (a, _b, mut on_b) = two_nodes(&server, Retention::entries(1_000)).await;
    let mut admin = server.connection().await;
    let stream = keys().log_key();
    let mut sent = Vec::new();
    for n in 100..160u64 {
        a.broadcast([ROOMS], n).await.expect("sent");
        sent.push(n);
        let _: i64 = cmd(&mut admin, &["DEL", &stream]).await;
    }
    for n in 160..170u64 {
        a.broadcast([ROOMS], n).await.expect("sent");
        sent.push(n);
    }
    let read = read_until(&mut on_b, 169, Duration::from_secs(5)).await;
    assert_no_silent_loss(&read, &sent);
}

/// Several stray entries dated just inside the allowance (`now + age`)
/// and far in the future, spread over the run: the log keeps at most
/// about twice the age of entries (the docs' bound), and does not grow
/// with the number of stray entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_age_trimming_stays_bounded_with_several_future_entries() {
    let server = RedisServer::start().await;
    let age = Duration::from_millis(300);
    let pubsub = durable_node(server.url(), "alone", Retention::age(age)).await;
    let mut admin = server.connection().await;
    let (stream, meta) = (keys().log_key(), keys().log_meta_key());
    let mut max_len = 0u64;
    let started = tokio::time::Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(4) {
        pubsub.broadcast([ROOMS], n).await.expect("sent");
        n += 1;
        if n.is_multiple_of(15) && started.elapsed() < Duration::from_secs(3) {
            // A stray entry where the next is due, of the log's form,
            // dated at the very end of the allowance or far ahead.
            let (secs, micros): (String, String) = cmd(&mut admin, &["TIME"]).await;
            let now = secs.parse::<u64>().unwrap() * 1000 + micros.parse::<u64>().unwrap() / 1000;
            let t = if n.is_multiple_of(30) {
                now + 300 - 5
            } else {
                99_999_999_999_999
            };
            let log: u16 = cmd(&mut admin, &["HGET", &meta, "log"]).await;
            let seq: u64 = cmd(&mut admin, &["HGET", &meta, "seq"]).await;
            let id = format!("{}-0", seq + 1);
            let (log, t) = (log.to_string(), t.to_string());
            let _: String = cmd(
                &mut admin,
                &[
                    "XADD", &stream, &id, "log", &log, "n", "1", "t", &t, "m", "{}",
                ],
            )
            .await;
        }
        let len: u64 = cmd(&mut admin, &["XLEN", &stream]).await;
        if started.elapsed() > Duration::from_millis(800) {
            max_len = max_len.max(len);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // About 70 broadcasts a second (10 ms pause plus the round trips):
    // twice the age is ~45 entries; allow slack for the 8-entry window.
    assert!(max_len <= 80, "{max_len} entries kept with a 300 ms age");
}

// ===================================================================
// NATS: slow consumers under repeated losses, credentials
// ===================================================================

mod nats {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize};
    use staff_pubsub::nats::NatsConfig;
    use staff_pubsub::staff::{self, Team, TeamEvent};
    use staff_pubsub::{PubSub, RecvError, Topic, Uuid};
    use staff_pubsub_tests::nats_server::NatsServer;
    use staff_pubsub_tests::{logs, within};

    fn config(server: &NatsServer) -> NatsConfig {
        NatsConfig::new(server.url())
            .namespace("adv2")
            .connect_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
    }

    /// A number whose decoding takes 600 ms when it ends in 10 (mod 1000).
    #[derive(Debug, Serialize)]
    struct Numbered(u32);

    impl<'de> Deserialize<'de> for Numbered {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let n = u32::deserialize(deserializer)?;
            if n % 1000 == 10 {
                std::thread::sleep(Duration::from_millis(600));
            }
            Ok(Numbered(n))
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Read {
        Message(u32),
        Gap,
    }

    /// Three bursts, each with a stall early on: three losses, apart.
    /// Every gap stands exactly where messages were lost, never before an
    /// older message, never where nothing was lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_repeated_slow_consumer_losses_are_each_told_exactly_where_they_happened() {
        const ROOMS: Topic = Topic::new("chat:rooms");
        const LAST: u32 = 3_010;
        let server = NatsServer::start().await;
        let a: PubSub<Numbered> = PubSub::builder()
            .node_name("a")
            .nats(config(&server))
            .await
            .unwrap();
        let b: PubSub<Numbered> = PubSub::builder()
            .node_name("b")
            .capacity(8192)
            .nats(config(&server).subscription_capacity(16))
            .await
            .unwrap();
        let mut on_b = b.subscribe(ROOMS).unwrap();
        b.sync().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut read = Vec::new();
            while let Ok(got) = tokio::time::timeout(Duration::from_secs(4), on_b.recv()).await {
                match got {
                    Ok(m) => {
                        read.push(Read::Message(m.0));
                        if m.0 == LAST {
                            break;
                        }
                    }
                    Err(RecvError::Gap(_)) => read.push(Read::Gap),
                    Err(other) => panic!("{other:?}"),
                }
            }
            read
        });
        for round in 0..3u32 {
            let gaps = b.stats().gaps;
            for n in round * 1000..round * 1000 + 400 {
                a.broadcast([ROOMS], Numbered(n)).await.unwrap();
            }
            let deadline = tokio::time::Instant::now() + staff_pubsub_tests::WAIT;
            while b.stats().gaps == gaps {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: no gap"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for n in 3_000..=LAST {
            a.broadcast([ROOMS], Numbered(n)).await.unwrap();
        }
        let read = within("the reader", reader).await.unwrap();
        let mut last: Option<u32> = None;
        let mut gaps_since = 0;
        for item in &read {
            match *item {
                Read::Gap => gaps_since += 1,
                Read::Message(n) => {
                    let expected = last.map_or(0, |l| l + 1);
                    // Numbers not sent (the rounds skip 400..1000) are no loss.
                    let lost = (expected..n).any(|m| m % 1000 < 400 || m >= 3_000);
                    assert!(n >= expected, "{n} after {last:?}: {read:?}");
                    if lost {
                        assert_eq!(
                            gaps_since, 1,
                            "loss before {n} told {gaps_since} times: {read:?}"
                        );
                    } else {
                        assert_eq!(gaps_since, 0, "a gap before {n}, nothing lost: {read:?}");
                    }
                    gaps_since = 0;
                    last = Some(n);
                }
            }
        }
        assert_eq!(read.last(), Some(&Read::Message(LAST)), "{read:?}");
        assert_eq!(
            read.iter().filter(|r| **r == Read::Gap).count(),
            3,
            "{read:?}"
        );
    }

    fn team() -> staff::Message {
        staff::Message::Team(
            TeamEvent::Created,
            Team {
                uuid: Uuid::now_v7(),
                name: None,
                department_uuid: None,
            },
        )
    }

    /// Credential forms not tried by the first tests: percent-encoded
    /// user and password, a user with no password (a token), a token with
    /// a configured user and password, `tls://`, `ws://` and IPv6 `[::1]`
    /// (no server there: the errors must not show them either), secret
    /// query pairs, and URLs that do not parse. Nothing shows "Zq9" in
    /// Debug, errors, their sources, or any log line at TRACE.
    #[tokio::test(flavor = "current_thread")]
    async fn nats_more_credential_forms_never_show_at_any_level() {
        let (_guard, logs) = logs::capture_at(tracing::Level::TRACE);
        let users = NatsServer::start_with(&["--user", "a:p@p", "--pass", "Zq9P:w,d"]).await;
        let tokens = NatsServer::start_with(&["--auth", "Zq9Tk"]).await;
        let up = users.port();
        let tp = tokens.port();
        let connecting = [
            // User and password percent-encoded, `:` `@` `,` inside.
            NatsConfig::new(format!("nats://a%3Ap%40p:Zq9P%3Aw%2Cd@127.0.0.1:{up}")),
            // A user name without a password: a token.
            NatsConfig::new(format!("nats://Zq9Tk@127.0.0.1:{tp}")),
            // Credentials in the URL and in the options: the options win.
            NatsConfig::new(format!("nats://Zq9Wrong@127.0.0.1:{up}"))
                .user_and_password("a:p@p", "Zq9P:w,d"),
            NatsConfig::new(format!("nats://x:Zq9Wrong@127.0.0.1:{tp}")).token("Zq9Tk"),
            NatsConfig::new(format!("nats://127.0.0.1:{tp}?auth_token=Zq9Q&token=Zq9R"))
                .token("Zq9Tk"),
        ];
        for (n, form) in connecting.into_iter().enumerate() {
            let shown = format!("{form:?}");
            let pubsub: PubSub<staff::Message> = staff::builder()
                .node_name("a")
                .nats(form.namespace("adv2"))
                .await
                .unwrap_or_else(|e| panic!("form {n} ({shown}): {e}"));
            let mut on = pubsub.subscribe(staff::topic_teams()).unwrap();
            pubsub.sync().await.unwrap();
            pubsub
                .broadcast([staff::topic_teams()], team())
                .await
                .unwrap();
            within("the echo", on.recv()).await.unwrap();
            let debug = format!("{pubsub:?}");
            assert!(
                !shown.contains("Zq9") && !debug.contains("Zq9"),
                "form {n}: {shown} {debug}"
            );
        }
        let failing = [
            format!("tls://app:Zq9Tls@127.0.0.1:{up}"),
            format!("ws://app:Zq9Ws@127.0.0.1:{up}"),
            "nats://app:Zq9V6@[::1]:1".to_owned(),
            "app:Zq9V6b@[::1]:1".to_owned(),
            "nats://Zq9V6tok@[::1]:1".to_owned(),
            // Do not parse.
            "nats://app:Zq9Bad@[::1:1".to_owned(),
            "nats://app:Zq9Port@127.0.0.1:99999".to_owned(),
            "app:Zq9Raw/slash@127.0.0.1:1".to_owned(),
            format!("nats://app:Zq9One@127.0.0.1:{up},nats://app:Zq9Two@127.0.0.1:{up}"),
            "nats://app:Zq9%zz@127.0.0.1:1".to_owned(),
        ];
        for url in failing {
            let config = NatsConfig::new(url.clone()).connect_timeout(Duration::from_millis(500));
            let shown = format!("{config:?}");
            let error = staff::builder()
                .nats(config.namespace("adv2"))
                .await
                .expect_err("no server, or refused");
            let mut text = format!("{shown} {error} {error:?}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                text.push_str(&format!(" {cause} {cause:?}"));
                source = cause.source();
            }
            assert!(!text.contains("Zq9"), "{url}: a secret shows: {text}");
        }
        for line in logs.lines() {
            assert!(
                !line.contains("Zq9"),
                "a secret shows in a log line: {line}"
            );
        }
        assert!(
            logs.has_line_with(&["TRACE", "async_nats"]),
            "TRACE captured"
        );
    }
}

// ===================================================================
// Phoenix: odd node names, many names, strict uuids, the WARN
// ===================================================================

mod phoenix {
    use std::time::Duration;

    use futures_util::StreamExt;
    use staff_pubsub::phoenix::{
        decode_frame, FrameMode, NameForm, NodeName, PhoenixConfig, DEFAULT_MAX_FRAME_SIZE,
    };
    use staff_pubsub::staff::{self, Message, Team, TeamEvent};
    use staff_pubsub::{PubSub, Topic, Uuid};
    use staff_pubsub_tests::phoenix::{fence_frame, team, until_fence, CHANNEL};
    use staff_pubsub_tests::redis_server::{publish_raw, raw_subscriber, RedisServer};
    use staff_pubsub_tests::{logs, within};

    const PUBSUB: &str = "MyApp.PubSub";
    const TEAM: &str = "019ab6a3-c1c6-748b-9697-6c080717373b";

    fn config(server: &RedisServer) -> PhoenixConfig {
        PhoenixConfig::new(server.url(), PUBSUB)
            .connect_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_millis(500))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
    }

    async fn node(name: &str, server: &RedisServer) -> PubSub<Message> {
        staff::builder()
            .node_name(name)
            .phoenix(config(server))
            .await
            .unwrap_or_else(|e| panic!("node {name}: {e}"))
    }

    // ---- hand-built terms

    const ATOM_EXT: u8 = 100;
    const SMALL_ATOM_UTF8_EXT: u8 = 119;
    const ATOM_UTF8_EXT: u8 = 118;

    fn atom_ext(bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![ATOM_EXT];
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
        out
    }

    fn atom_utf8(text: &str) -> Vec<u8> {
        let mut out = if text.len() <= 255 {
            vec![SMALL_ATOM_UTF8_EXT, text.len() as u8]
        } else {
            let mut out = vec![ATOM_UTF8_EXT];
            out.extend_from_slice(&(text.len() as u16).to_be_bytes());
            out
        };
        out.extend_from_slice(text.as_bytes());
        out
    }

    fn latin1(text: &str) -> Vec<u8> {
        text.chars()
            .map(|c| u8::try_from(u32::from(c)).expect("Latin-1"))
            .collect()
    }

    fn atom(name: &str) -> Vec<u8> {
        atom_ext(name.as_bytes())
    }

    fn binary(bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![109];
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
        out
    }

    /// `{3, mode, <node>, "staff:teams", <message>, Phoenix.PubSub}`.
    fn frame(mode: &str, node: &[u8], message: &[u8]) -> Vec<u8> {
        let mut frame = vec![131, 104, 6, 97, 3];
        frame.extend(atom(mode));
        frame.extend_from_slice(node);
        frame.extend(binary(b"staff:teams"));
        frame.extend_from_slice(message);
        frame.extend(atom("Elixir.Phoenix.PubSub"));
        frame
    }

    /// `{:staff, :team_created, %{<key> => <value>, ..}}`.
    fn created_with(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![104, 3];
        out.extend(atom("staff"));
        out.extend(atom("team_created"));
        out.push(116);
        out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
        for (key, value) in pairs {
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
        out
    }

    fn created_uuid(value: Vec<u8>) -> Vec<u8> {
        created_with(&[(atom("uuid"), value)])
    }

    fn created(uuid: Uuid) -> Message {
        Message::Team(
            TeamEvent::Created,
            Team {
                uuid,
                name: None,
                department_uuid: None,
            },
        )
    }

    /// Rust nodes named with Latin-1 and other UTF-8 characters, and with
    /// 255 characters: an `:only` frame naming them as an atom in every
    /// encoding Erlang writes (OTP 25 `ATOM_EXT` Latin-1, OTP 26 UTF-8) or
    /// as a binary reaches them.
    #[tokio::test]
    async fn phoenix_odd_node_names_are_taken_in_every_atom_encoding() {
        let server = RedisServer::start().await;
        let long: String = "é".repeat(255);
        let long_cyrillic: String = "ж".repeat(255);
        let names = [
            "nöde-é",
            "узел-1",
            long.as_str(),
            long_cyrillic.as_str(),
            &"n".repeat(255),
        ];
        let mut publisher = server.connection().await;
        for name in names {
            let rust = node(name, &server).await;
            let mut on = rust.subscribe(staff::topic_teams()).unwrap();
            let id: Uuid = TEAM.parse().unwrap();
            let message = created_uuid(binary(TEAM.as_bytes()));
            let mut forms = vec![atom_utf8(name), binary(name.as_bytes())];
            if name.chars().all(|c| u32::from(c) <= 0xff) {
                forms.push(atom_ext(&latin1(name)));
            }
            for form in &forms {
                publish_raw(&mut publisher, CHANNEL, &frame("only", form, &message)).await;
            }
            publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
            let got = until_fence(&mut on).await;
            assert_eq!(got, vec![created(id); forms.len()], "{name}");
            assert_eq!(rust.stats().rejected, 0, "{name}");
        }
    }

    /// An atom of more than 255 characters (Erlang writes none): the frame
    /// is skipped and counted, no panic, the node goes on. A Rust
    /// `direct_broadcast` to such a name writes it as a binary, the only
    /// form that can hold it; learned as a binary it is sent as one.
    #[tokio::test]
    async fn phoenix_names_over_255_characters_are_typed_errors_not_panics() {
        let server = RedisServer::start().await;
        let rust = node("rust-1", &server).await;
        let mut on = rust.subscribe(staff::topic_teams()).unwrap();
        let mut publisher = server.connection().await;
        let message = created_uuid(binary(TEAM.as_bytes()));
        let long = "x".repeat(256);
        publish_raw(
            &mut publisher,
            CHANNEL,
            &frame("only", &atom_ext(long.as_bytes()), &message),
        )
        .await;
        publish_raw(
            &mut publisher,
            CHANNEL,
            &frame("except", &atom_utf8(&"ж".repeat(256)), &message),
        )
        .await;
        publish_raw(
            &mut publisher,
            CHANNEL,
            &frame("except", &atom_ext(&[b'y'; 65_535]), &message),
        )
        .await;
        publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
        assert!(until_fence(&mut on).await.is_empty());
        assert_eq!(rust.stats().rejected, 3);

        // A name no atom can hold is written as a binary: sent.
        rust.direct_broadcast(&long, &[staff::topic_teams()], team("x"))
            .await
            .expect("a 256-character name is sent as a binary");
        // Heard as a binary: sent as one.
        let mut raw = raw_subscriber(&server, CHANNEL).await;
        let learned = "z".repeat(300);
        publish_raw(
            &mut publisher,
            CHANNEL,
            &frame("except", &binary(learned.as_bytes()), &atom("hello")),
        )
        .await;
        publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
        let _ = until_fence(&mut on).await;
        rust.direct_broadcast(&learned, &[staff::topic_teams()], team("y"))
            .await
            .expect("sent as a binary");
        loop {
            let message = within("a frame", raw.next()).await.unwrap();
            let Ok(frame) =
                decode_frame::<Message>(message.get_payload_bytes(), DEFAULT_MAX_FRAME_SIZE)
            else {
                continue;
            };
            if frame.mode == FrameMode::Only {
                assert_eq!(frame.node, NodeName::Binary(learned.clone()));
                break;
            }
        }
    }

    /// A name heard as a Latin-1 atom (OTP 25's `ATOM_EXT`) is addressed
    /// as an atom of the same text.
    #[tokio::test]
    async fn phoenix_a_latin1_atom_name_is_learned_and_addressed_as_an_atom() {
        let server = RedisServer::start().await;
        // The default form is binary: only a learned atom makes it one.
        let config = config(&server).default_name_form(NameForm::Binary);
        let rust = staff::builder()
            .node_name("rust-1")
            .phoenix(config)
            .await
            .unwrap();
        let mut on = rust.subscribe(staff::topic_teams()).unwrap();
        let mut publisher = server.connection().await;
        let name = "phx-ä@höst";
        publish_raw(
            &mut publisher,
            CHANNEL,
            &frame("except", &atom_ext(&latin1(name)), &atom("hello")),
        )
        .await;
        publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
        let _ = until_fence(&mut on).await;
        let mut raw = raw_subscriber(&server, CHANNEL).await;
        rust.direct_broadcast(name, &[staff::topic_teams()], team("to ä"))
            .await
            .unwrap();
        let message = within("a frame", raw.next()).await.unwrap();
        let frame =
            decode_frame::<Message>(message.get_payload_bytes(), DEFAULT_MAX_FRAME_SIZE).unwrap();
        assert_eq!(frame.node, NodeName::Atom(name.to_owned()));
    }

    /// A flood of 5,000 distinct node names (frames not even of the spec):
    /// each counted; the oldest forgotten (addressed in the default form
    /// again), the newest remembered.
    #[tokio::test]
    async fn phoenix_a_flood_of_node_names_keeps_the_newest_and_counts_every_frame() {
        let server = RedisServer::start().await;
        let rust = node("rust-1", &server).await;
        let mut on = rust.subscribe(staff::topic_teams()).unwrap();
        let mut publisher = server.connection().await;
        for n in 0..5_000 {
            let name = format!("flood-{n}");
            publish_raw(
                &mut publisher,
                CHANNEL,
                &frame("except", &binary(name.as_bytes()), &atom("hello")),
            )
            .await;
        }
        publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
        let _ = until_fence(&mut on).await;
        assert_eq!(rust.stats().rejected, 5_000);
        let mut raw = raw_subscriber(&server, CHANNEL).await;
        for (name, form) in [
            ("flood-0", NameForm::Atom),
            ("flood-4999", NameForm::Binary),
        ] {
            rust.direct_broadcast(name, &[staff::topic_teams()], team(name))
                .await
                .unwrap();
            let message = within("a frame", raw.next()).await.unwrap();
            let frame =
                decode_frame::<Message>(message.get_payload_bytes(), DEFAULT_MAX_FRAME_SIZE)
                    .unwrap();
            assert_eq!(frame.node.form(), form, "{name}");
        }
    }

    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// Memory for the names remembered: 1,100 `:except` frames, each from
    /// a distinct node whose (binary) name is 256 KiB. Erlang node names
    /// are at most 255 characters; a name kept whole costs its size, so
    /// 1,024 of them hold 256 MiB (1 GiB at the default max frame size).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn phoenix_node_names_remembered_cost_bounded_memory() {
        let server =
            RedisServer::start_with(&["--client-output-buffer-limit", "pubsub 0 0 0"]).await;
        let rust = node("rust-1", &server).await;
        let mut on = rust.subscribe(staff::topic_teams()).unwrap();
        let mut publisher = server.connection().await;
        publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
        let _ = until_fence(&mut on).await;
        // Control: the same frames `:only` another node (not learned):
        // received and dropped, they leave no trace.
        let before = resident_bytes();
        for n in 0..1_100u32 {
            let mut name = vec![b'o'; 256 * 1024];
            name[..4].copy_from_slice(&n.to_be_bytes());
            publish_raw(
                &mut publisher,
                CHANNEL,
                &frame("only", &binary(&name), &atom("hello")),
            )
            .await;
        }
        publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
        let _ = until_fence(&mut on).await;
        let control = resident_bytes().saturating_sub(before);
        assert!(
            control < 64 << 20,
            "the control grew by {} MiB",
            control >> 20
        );
        let before = resident_bytes();
        for n in 0..1_100u32 {
            let mut name = vec![b'n'; 256 * 1024];
            name[..4].copy_from_slice(&n.to_be_bytes());
            publish_raw(
                &mut publisher,
                CHANNEL,
                &frame("except", &binary(&name), &atom("hello")),
            )
            .await;
        }
        publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
        let _ = until_fence(&mut on).await;
        assert_eq!(
            rust.stats().rejected,
            1_100,
            "the `:only` frames are not this node's: not counted"
        );
        let grown = resident_bytes().saturating_sub(before);
        assert!(
            grown < 64 << 20,
            "resident memory grew by {} MiB",
            grown >> 20
        );
    }

    /// UUID fields as other Elixir terms: a bitstring holding a UUID's
    /// text, an improper list, `nil` for the required `uuid`, a 36-char
    /// string with a non-hex character, a charlist for the optional
    /// `department_uuid`, an atom `:nil`-like `:null`, a map: each skipped
    /// and counted; the forms the docs accept (braced, `urn:uuid:`) and a
    /// `nil` optional field taken.
    #[tokio::test]
    async fn phoenix_uuid_fields_as_other_terms_are_skipped_and_counted() {
        let server = RedisServer::start().await;
        let rust = node("rust-1", &server).await;
        let mut on = rust.subscribe(staff::topic_teams()).unwrap();
        let mut publisher = server.connection().await;
        let id: Uuid = TEAM.parse().unwrap();
        let bitstring = {
            let mut out = vec![77];
            out.extend_from_slice(&(36u32).to_be_bytes());
            out.push(7);
            out.extend_from_slice(TEAM.as_bytes());
            out
        };
        let improper = {
            let mut out = vec![108, 0, 0, 0, 16];
            for byte in id.as_bytes() {
                out.extend_from_slice(&[97, *byte]);
            }
            out.extend_from_slice(&[97, 0]);
            out
        };
        let charlist36 = {
            let mut out = vec![107, 0, 36];
            out.extend_from_slice(TEAM.as_bytes());
            out
        };
        let refused = [
            created_uuid(bitstring),
            created_uuid(improper),
            created_uuid(atom("nil")),
            created_uuid(binary(b"019ab6a3-c1c6-748b-9697-6c080717373g")),
            created_uuid(binary(b"019ab6a3-c1c6-748b-9697-6c080717373b\0")),
            created_uuid(charlist36),
            created_uuid(atom("null")),
            created_uuid(vec![116, 0, 0, 0, 0]),
            created_with(&[
                (atom("uuid"), binary(TEAM.as_bytes())),
                (atom("department_uuid"), {
                    let mut out = vec![107, 0, 16];
                    out.extend_from_slice(b"abcdefghijklmnop");
                    out
                }),
            ]),
        ];
        let accepted = [
            created_uuid(binary(format!("{{{TEAM}}}").as_bytes())),
            created_uuid(binary(format!("urn:uuid:{TEAM}").as_bytes())),
            created_with(&[
                (atom("uuid"), binary(TEAM.as_bytes())),
                (atom("department_uuid"), atom("nil")),
            ]),
        ];
        for message in refused.iter().chain(&accepted) {
            publish_raw(
                &mut publisher,
                CHANNEL,
                &frame("except", &binary(b"phx-x"), message),
            )
            .await;
        }
        publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
        assert_eq!(
            until_fence(&mut on).await,
            vec![created(id); accepted.len()]
        );
        assert_eq!(rust.stats().rejected, refused.len() as u64);
    }

    /// The docs: "Payload fields are the map's atom keys; ... other keys
    /// ... are ignored". A map whose keys are binaries (`%{"uuid" => ..}`,
    /// what JSON-decoded params give) has no atom key `uuid`: skipped.
    #[tokio::test]
    async fn phoenix_binary_keys_are_not_payload_fields() {
        let server = RedisServer::start().await;
        let rust = node("rust-1", &server).await;
        let mut on = rust.subscribe(staff::topic_teams()).unwrap();
        let mut publisher = server.connection().await;
        let message = created_with(&[(binary(b"uuid"), binary(TEAM.as_bytes()))]);
        publish_raw(
            &mut publisher,
            CHANNEL,
            &frame("except", &binary(b"phx-x"), &message),
        )
        .await;
        publish_raw(&mut publisher, CHANNEL, &fence_frame()).await;
        assert_eq!(until_fence(&mut on).await, vec![], "taken as a uuid field");
        assert_eq!(rust.stats().rejected, 1);
    }

    fn warn_lines(logs: &staff_pubsub_tests::logs::Logs) -> usize {
        logs.lines()
            .iter()
            .filter(|l| l.contains("WARN") && l.contains("broadcast not sent to other nodes"))
            .count()
    }

    /// A real outage (Redis killed), broadcasts from 8 tasks at once, 10
    /// rounds: "an outage makes a few lines, not one per call".
    #[tokio::test(flavor = "current_thread")]
    async fn phoenix_concurrent_failures_in_an_outage_make_a_few_warn_lines() {
        let (_guard, logs) = logs::capture();
        let mut server = RedisServer::start().await;
        let rust = node("rust-1", &server).await;
        server.kill();
        for round in 0..10 {
            let calls = (0..8)
                .map(|n| rust.broadcast([staff::topic_teams()], team(&format!("{round}-{n}"))));
            let results = futures_util::future::join_all(calls).await;
            assert!(results.iter().all(Result::is_err));
        }
        let warn = warn_lines(&logs);
        assert!((1..=4).contains(&warn), "{warn} WARN lines for 80 failures");
    }

    /// Redis frozen (SIGSTOP): broadcasts fail, to one or several topics
    /// alternately (a cause text that could name how many frames failed,
    /// "2 of 2", "3 of 3"). Per the docs, "an outage makes a few lines,
    /// not one per call". (Held: after the first timeout the publisher's
    /// connection is dropped, later calls fail with one stable cause.)
    #[tokio::test(flavor = "current_thread")]
    async fn phoenix_a_frozen_redis_with_varying_topic_counts_makes_a_few_warn_lines() {
        let (_guard, logs) = logs::capture();
        let server = RedisServer::start().await;
        let rust = node("rust-1", &server).await;
        server.pause();
        let topics: Vec<Topic> = (0..4)
            .map(|n| Topic::new(["staff:a", "staff:b", "staff:c", "staff:d"][n]))
            .collect();
        let mut failed = 0;
        for n in 0..12 {
            let count = 1 + n % 3;
            let result = rust.broadcast(&topics[..=count], team("frozen")).await;
            failed += u32::from(result.is_err());
        }
        server.resume();
        assert_eq!(failed, 12);
        let warn = warn_lines(&logs);
        assert!(
            warn <= 4,
            "{warn} WARN lines for 12 failures of one outage: {:#?}",
            logs.lines()
        );
    }

    /// Documented rule, literally: a failure whose cause differs from the
    /// previous failure's is a WARN. Causes alternating call by call (too
    /// large, then Redis down) give one WARN per call: the rule permits
    /// a flood when causes alternate.
    #[tokio::test(flavor = "current_thread")]
    async fn phoenix_alternating_causes_are_one_warn_per_call_as_the_rule_says() {
        let (_guard, logs) = logs::capture();
        let mut server = RedisServer::start().await;
        let rust = staff::builder()
            .node_name("rust-1")
            .phoenix(config(&server).max_frame_size(300))
            .await
            .unwrap();
        server.kill();
        for n in 0..10 {
            let big = team(&"x".repeat(1_000));
            assert!(rust.broadcast([staff::topic_teams()], big).await.is_err());
            assert!(rust
                .broadcast([staff::topic_teams()], team(&n.to_string()))
                .await
                .is_err());
        }
        assert_eq!(warn_lines(&logs), 20, "{:#?}", logs.lines());
    }
}
