//! Durable delivery's vocabulary: a message's [`Position`] in the engine's
//! log, and what a [`Gap`] says was lost.
//!
//! A server whose transport is durable (Redis Streams with
//! [`RedisConfig::durable`](crate::redis::RedisConfig::durable), NATS
//! JetStream with [`NatsConfig::durable`](crate::nats::NatsConfig::durable))
//! delivers every broadcast from the engine's log, in log order, and
//! knows each message's position there. After a reconnect it reads the
//! log from the last position it delivered, so nothing is lost while the
//! entries are still retained; when they are not, subscribers are told by
//! a [`Gap`] that says how.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

/// The bits of a [`Position`] that hold the sequence number.
const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// Where a message stands in a durable transport's log: which log (a
/// 16-bit id that changes when the log is lost and started afresh) and
/// the entry's sequence number in it (from 1, consecutive: the first
/// entry is 1, the next 2, ...).
///
/// Positions of one log are ordered by their sequence number. Printed as
/// `<log>-<seq>`, the log in four lower-case hex digits (`002a-1042`), the
/// form the SSE bridge sends as an event's `id:` and parses back from a
/// browser's `Last-Event-ID`.
///
/// ```
/// use staff_pubsub::Position;
///
/// let position = Position::new(0x2a, 1042).unwrap();
/// assert_eq!(position.to_string(), "002a-1042");
/// assert_eq!("002a-1042".parse::<Position>().unwrap(), position);
/// assert_eq!(position.next(), Position::new(0x2a, 1043));
/// // Sequence numbers start at 1 and have 48 bits.
/// assert_eq!(Position::new(0x2a, 0), None);
/// assert_eq!(Position::new(0x2a, 1 << 48), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position(NonZeroU64);

impl Position {
    /// The largest sequence number a position holds: 2^48 - 1 (89 years of
    /// 100,000 broadcasts a second).
    pub const MAX_SEQ: u64 = SEQ_MASK;

    /// The position of entry `seq` of log `log`; `None` unless
    /// `1 <= seq <= MAX_SEQ`.
    #[must_use]
    pub fn new(log: u16, seq: u64) -> Option<Self> {
        if seq == 0 || seq > SEQ_MASK {
            return None;
        }
        NonZeroU64::new((u64::from(log) << SEQ_BITS) | seq).map(Self)
    }

    /// The log's id.
    #[must_use]
    pub fn log(self) -> u16 {
        // The top 16 bits: the shift leaves nothing else.
        (self.0.get() >> SEQ_BITS) as u16
    }

    /// The entry's sequence number in its log, from 1.
    #[must_use]
    pub fn seq(self) -> u64 {
        self.0.get() & SEQ_MASK
    }

    /// The next entry's position in the same log; `None` past
    /// [`MAX_SEQ`](Self::MAX_SEQ).
    #[must_use]
    pub fn next(self) -> Option<Self> {
        Self::new(self.log(), self.seq() + 1)
    }

    /// The number of entries after `self` up to and including `later`, when
    /// both are of the same log and `later` is not before `self`.
    #[must_use]
    pub fn entries_until(self, later: Self) -> Option<u64> {
        (self.log() == later.log())
            .then(|| later.seq().checked_sub(self.seq()))
            .flatten()
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({self})")
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}-{}", self.log(), self.seq())
    }
}

/// Why a string is not a [`Position`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a log position (expected `<4 hex digits>-<sequence number from 1>`): {0:?}")]
pub struct ParsePositionError(String);

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ParsePositionError(s.chars().take(64).collect());
        let (log, seq) = s.split_once('-').ok_or_else(invalid)?;
        if log.len() != 4
            || !log.bytes().all(|b| b.is_ascii_hexdigit())
            || seq.is_empty()
            || !seq.bytes().all(|b| b.is_ascii_digit())
            || seq.len() > 20
        {
            return Err(invalid());
        }
        let log = u16::from_str_radix(log, 16).map_err(|_| invalid())?;
        let seq = seq.parse::<u64>().map_err(|_| invalid())?;
        Self::new(log, seq).ok_or_else(invalid)
    }
}

/// What a subscriber missed: carried by [`RecvError::Gap`](crate::RecvError::Gap).
///
/// A gap comes in queue order: after every message queued before the loss,
/// before every message after it. State built from the stream should be
/// reloaded, unless the application can tell the missing messages did not
/// concern it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Gap {
    /// Live delivery (not durable): the link to the other nodes was down,
    /// or its receive task had to be restarted. What was published meanwhile
    /// is lost; how much is not known. Durable delivery: a resumed
    /// subscription's paged replay could not read its next page from the
    /// log ([`PubSub::subscribe_since`](crate::PubSub::subscribe_since)):
    /// the rest of its range is not delivered.
    Disconnected,
    /// Durable delivery: entries were trimmed from the log (its retention)
    /// before this node read them: `missing` entries from position
    /// `first` on. They were broadcasts to any topic, so the subscriber
    /// may have missed fewer than `missing` of its own. On Redis, also
    /// when another client raised the log's meta `seq`: `missing` then
    /// counts numbers never written (see the `redis`
    /// module's "Durable delivery").
    Trimmed {
        /// The first entry that was lost.
        first: Position,
        /// How many consecutive log entries were lost from `first` on (the
        /// sum, when two losses merged before the subscriber read the first).
        missing: u64,
    },
    /// Durable delivery: the log itself was lost (the engine restarted
    /// without persistence, its keys or stream were deleted, or, on Redis,
    /// another client wrote values to its keys that are not the log's own)
    /// and started afresh under a new log id.
    /// What was published between this node's last read and the loss is
    /// gone; how much is not known.
    LogLost,
    /// A resume ([`PubSub::subscribe_since`](crate::PubSub::subscribe_since))
    /// asked for more entries than it may replay: `missing` log entries
    /// were not replayed.
    ReplayLimit {
        /// The number of log entries not replayed.
        missing: u64,
    },
}

impl Gap {
    /// How many log entries are known to be missing: `None` when that is
    /// not known ([`Gap::Disconnected`], [`Gap::LogLost`]).
    #[must_use]
    pub fn missing(&self) -> Option<u64> {
        match self {
            Gap::Trimmed { missing, .. } | Gap::ReplayLimit { missing } => Some(*missing),
            Gap::Disconnected | Gap::LogLost => None,
        }
    }

    /// One gap covering `self` and then `later`, for a subscriber that had
    /// not read the first yet: a loss of unknown size wins; two known
    /// losses add up.
    pub(crate) fn merge(self, later: Gap) -> Gap {
        match (self, later) {
            (Gap::LogLost, _) | (_, Gap::LogLost) => Gap::LogLost,
            (Gap::Disconnected, _) | (_, Gap::Disconnected) => Gap::Disconnected,
            (Gap::Trimmed { first, missing }, other) => Gap::Trimmed {
                first,
                missing: missing.saturating_add(other.missing().unwrap_or(0)),
            },
            (
                Gap::ReplayLimit { missing },
                Gap::Trimmed {
                    first,
                    missing: more,
                },
            ) => Gap::Trimmed {
                first,
                missing: missing.saturating_add(more),
            },
            (Gap::ReplayLimit { missing }, Gap::ReplayLimit { missing: more }) => {
                Gap::ReplayLimit {
                    missing: missing.saturating_add(more),
                }
            }
        }
    }
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gap::Disconnected => {
                f.write_str("the transport reconnected: messages may have been missed")
            }
            Gap::Trimmed { first, missing } => write!(
                f,
                "{missing} log entries from {first} on were trimmed before they were read"
            ),
            Gap::LogLost => f.write_str("the log was lost: messages may have been missed"),
            Gap::ReplayLimit { missing } => {
                write!(f, "{missing} log entries were past the replay limit")
            }
        }
    }
}

/// How much of its log a durable transport keeps, and how much a resume
/// may replay: what [`RedisConfig::durable`](crate::redis::RedisConfig::durable)
/// and [`NatsConfig::durable`](crate::nats::NatsConfig::durable) take.
///
/// The log keeps at least the last `max_entries` entries and/or the
/// entries younger than `max_age` (the engine may keep a few more: Redis
/// trims whole blocks of entries). A node that is away longer than that
/// misses what was trimmed, and its subscribers get [`Gap::Trimmed`].
///
/// ```
/// use std::time::Duration;
/// use staff_pubsub::Retention;
///
/// let retention = Retention::entries(100_000).max_age(Duration::from_secs(3600));
/// assert_eq!(retention.entries_limit(), Some(100_000));
/// assert_eq!(retention.age_limit(), Some(Duration::from_secs(3600)));
/// assert_eq!(retention.replay_limit(), Retention::DEFAULT_MAX_REPLAY);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Retention {
    max_entries: Option<u64>,
    max_age: Option<Duration>,
    max_replay: u64,
}

impl Retention {
    /// The most log entries one [`PubSub::subscribe_since`](crate::PubSub::subscribe_since)
    /// (and so one browser's resume) replays, unless
    /// [`max_replay`](Self::max_replay) says otherwise: 10,000.
    pub const DEFAULT_MAX_REPLAY: u64 = 10_000;

    /// Keeps the last `max_entries` entries (at least 1): messages, not
    /// the engine's records (a Redis stream entry holds a batch of them;
    /// Redis keeps at least `max_entries`, and a little more: see the
    /// `redis` module's "Durable delivery").
    pub fn entries(max_entries: u64) -> Self {
        Self {
            max_entries: Some(max_entries.max(1)),
            max_age: None,
            max_replay: Self::DEFAULT_MAX_REPLAY,
        }
    }

    /// Keeps the entries younger than `max_age` (at least 1 ms).
    pub fn age(max_age: Duration) -> Self {
        Self {
            max_entries: None,
            max_age: Some(max_age.max(Duration::from_millis(1))),
            max_replay: Self::DEFAULT_MAX_REPLAY,
        }
    }

    /// Also bounds the number of entries kept (at least 1).
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = Some(max_entries.max(1));
        self
    }

    /// Also bounds the age of the entries kept (at least 1 ms).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age.max(Duration::from_millis(1)));
        self
    }

    /// The most log entries one resume replays (at least 1): a position
    /// further behind gets [`Gap::ReplayLimit`] instead of a replay.
    /// Default [`DEFAULT_MAX_REPLAY`](Self::DEFAULT_MAX_REPLAY).
    pub fn max_replay(mut self, entries: u64) -> Self {
        self.max_replay = entries.max(1);
        self
    }

    /// The bound on the number of entries kept, if any.
    #[must_use]
    pub fn entries_limit(&self) -> Option<u64> {
        self.max_entries
    }

    /// The bound on the age of the entries kept, if any.
    #[must_use]
    pub fn age_limit(&self) -> Option<Duration> {
        self.max_age
    }

    /// The most log entries one resume replays.
    #[must_use]
    pub fn replay_limit(&self) -> u64 {
        self.max_replay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_refuse_junk() {
        for (log, seq) in [(0, 1), (0xffff, Position::MAX_SEQ), (7, 123_456)] {
            let position = Position::new(log, seq).unwrap();
            assert_eq!((position.log(), position.seq()), (log, seq));
            assert_eq!(position.to_string().parse::<Position>(), Ok(position));
        }
        for junk in [
            "",
            "-",
            "2a-1",
            "002a-0",
            "002a-",
            "002a-+1",
            "zzzz-1",
            "002a-1-2",
            "002a-99999999999999999999",
        ] {
            assert!(junk.parse::<Position>().is_err(), "{junk:?}");
        }
        let a = Position::new(1, 10).unwrap();
        assert_eq!(a.entries_until(Position::new(1, 15).unwrap()), Some(5));
        assert_eq!(a.entries_until(Position::new(1, 9).unwrap()), None);
        assert_eq!(a.entries_until(Position::new(2, 15).unwrap()), None);
    }

    #[test]
    fn gaps_merge_to_the_worse_and_add_known_counts() {
        let first = Position::new(1, 5).unwrap();
        let trimmed = Gap::Trimmed { first, missing: 3 };
        assert_eq!(
            trimmed.merge(Gap::Trimmed {
                first: Position::new(1, 20).unwrap(),
                missing: 4
            }),
            Gap::Trimmed { first, missing: 7 }
        );
        assert_eq!(trimmed.merge(Gap::Disconnected), Gap::Disconnected);
        assert_eq!(Gap::Disconnected.merge(Gap::LogLost), Gap::LogLost);
        assert_eq!(trimmed.missing(), Some(3));
        assert_eq!(Gap::LogLost.missing(), None);
    }
}
