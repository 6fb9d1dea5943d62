//! Shard topics and `:erlang.phash2/2`, which places a topic in a shard.

use std::num::NonZeroU32;

/// The prefix of every shard topic (`Phoenix.Tracker.Shard.namespaced_topic/1`).
pub const SHARD_TOPIC_PREFIX: &str = "phx_presence:";

/// The topic shard `shard` of the tracker `tracker` subscribes to and
/// publishes on: `"phx_presence:Elixir.<tracker>_shard<shard>"`, for a
/// tracker module named with or without `Elixir.` (a `Phoenix.Presence`
/// module is a tracker named after the module).
///
/// ```
/// use staff_pubsub::phoenix::tracker::shard_topic;
/// assert_eq!(shard_topic("MyApp.Tracker", 0), "phx_presence:Elixir.MyApp.Tracker_shard0");
/// assert_eq!(
///     shard_topic("Elixir.MyAppWeb.Presence", 3),
///     "phx_presence:Elixir.MyAppWeb.Presence_shard3"
/// );
/// ```
#[must_use]
pub fn shard_topic(tracker: &str, shard: u32) -> String {
    let tracker = tracker.strip_prefix("Elixir.").unwrap_or(tracker);
    format!("{SHARD_TOPIC_PREFIX}Elixir.{tracker}_shard{shard}")
}

/// The tracker (without `Elixir.`) and shard number of a shard topic, or
/// `None` for any other topic. The inverse of [`shard_topic`] for every
/// name it writes: the shard number is the decimal digits after the last
/// `_shard` (no sign, no leading `+`, fits a `u32`), and the tracker name
/// is not empty.
///
/// ```
/// use staff_pubsub::phoenix::tracker::parse_shard_topic;
/// assert_eq!(
///     parse_shard_topic("phx_presence:Elixir.MyApp.Tracker_shard2"),
///     Some(("MyApp.Tracker", 2))
/// );
/// assert_eq!(parse_shard_topic("staff:teams"), None);
/// ```
#[must_use]
pub fn parse_shard_topic(topic: &str) -> Option<(&str, u32)> {
    let name = topic.strip_prefix(SHARD_TOPIC_PREFIX)?;
    let name = name.strip_prefix("Elixir.").unwrap_or(name);
    let (tracker, shard) = name.rsplit_once("_shard")?;
    if tracker.is_empty() || shard.is_empty() || !shard.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((tracker, shard.parse().ok()?))
}

/// The shard a topic's presences live in, among `pool_size` shards:
/// `:erlang.phash2(topic, pool_size)`, as
/// `Phoenix.Tracker.Shard.name_for_topic/3` computes it. Every node of a
/// tracker must use the same `pool_size`.
///
/// ```
/// use std::num::NonZeroU32;
/// use staff_pubsub::phoenix::tracker::shard_for_topic;
/// let four = NonZeroU32::new(4).unwrap();
/// assert_eq!(shard_for_topic("room:3", four), 2);
/// ```
#[must_use]
pub fn shard_for_topic(topic: &str, pool_size: NonZeroU32) -> u32 {
    phash2_hash(topic.as_bytes()) % pool_size.get()
}

/// `:erlang.phash2(binary)`: the 27-bit hash of a binary (a topic), as
/// OTP computes it (`make_hash2` in `erts/emulator/beam/utils.c`).
#[must_use]
pub fn phash2(binary: &[u8]) -> u32 {
    phash2_hash(binary) & ((1 << 27) - 1)
}

/// `:erlang.phash2(binary, range)` for `range` in `1..=2^32`: the 32-bit
/// hash modulo `range`. `None` for a range Erlang refuses (0, or above
/// 2^32), where `phash2/2` raises `badarg`.
#[must_use]
pub fn phash2_range(binary: &[u8], range: u64) -> Option<u32> {
    match range {
        0 => None,
        // 2^32: the whole hash (OTP's 32-bit range wraps to 0, "no range").
        RANGE_ALL => Some(phash2_hash(binary)),
        // Below 2^32: fits a u32.
        r if r < RANGE_ALL => Some(phash2_hash(binary) % r as u32),
        _ => None,
    }
}

const RANGE_ALL: u64 = 1 << 32;

/// The golden ratio, lookup2's initial value (`HCONST`).
const HCONST: u32 = 0x9e37_79b9;
/// `HCONST * 13`: the constant `make_hash2` adds for a binary.
const HCONST_13: u32 = HCONST.wrapping_mul(13);

/// The full 32-bit `make_hash2` of a byte-aligned binary, starting from
/// hash 0 (a top-level term): Bob Jenkins' lookup2 `block_hash` over its
/// bytes, seeded with `HCONST_13`; the empty binary hashes to the seed.
fn phash2_hash(bytes: &[u8]) -> u32 {
    let seed = HCONST_13;
    if bytes.is_empty() {
        return seed;
    }
    block_hash(bytes, seed)
}

/// lookup2's `mix`: `a -= b; a -= c; a ^= c >> 13;` and so on.
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 13);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 8);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 13);
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 12);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 16);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 5);
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 3);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 10);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 15);
}

/// lookup2's hash of `bytes` with `initval`: 12-byte blocks as three
/// little-endian words, then the tail with the length in `c`'s low byte.
fn block_hash(bytes: &[u8], initval: u32) -> u32 {
    let word = |k: &[u8]| -> u32 {
        k.iter().enumerate().fold(0_u32, |acc, (i, &byte)| {
            acc.wrapping_add(u32::from(byte) << (8 * i))
        })
    };
    let (mut a, mut b, mut c) = (HCONST, HCONST, initval);
    let mut blocks = bytes.chunks_exact(12);
    for block in &mut blocks {
        a = a.wrapping_add(word(&block[0..4]));
        b = b.wrapping_add(word(&block[4..8]));
        c = c.wrapping_add(word(&block[8..12]));
        mix(&mut a, &mut b, &mut c);
    }
    let tail = blocks.remainder();
    // The length is added modulo 2^32, as the C code's `Uint32 c += length`.
    c = c.wrapping_add(bytes.len() as u32);
    a = a.wrapping_add(word(&tail[..tail.len().min(4)]));
    if tail.len() > 4 {
        b = b.wrapping_add(word(&tail[4..tail.len().min(8)]));
    }
    if tail.len() > 8 {
        // c's first byte is the length: the tail's bytes 8.. start at bit 8.
        c = c.wrapping_add(word(&tail[8..]) << 8);
    }
    mix(&mut a, &mut b, &mut c);
    c
}
