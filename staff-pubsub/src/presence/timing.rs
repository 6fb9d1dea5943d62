//! [`PresenceTiming`]: how often a server's trackers heartbeat and how long
//! they wait before taking a silent node down, set on the server's
//! [`Builder`] with [`Builder::presence_timing`].

use std::time::Duration;

use super::generations::DEFAULT_MAX_DELTA_SIZES;
use super::shard::ShardConfig;
use super::state::StateLimits;
use crate::server::Builder;

/// The timing of a server's presence trackers, with Phoenix.Tracker's
/// options and defaults: set it with [`Builder::presence_timing`]. It
/// applies to every tracker of the server.
///
/// It matters only on a server whose engine gossips (Redis live and
/// durable, NATS live and durable, and Phoenix for a tracker given an
/// Elixir tracker with
/// [`PhoenixConfig::presence`](crate::phoenix::PhoenixConfig::presence)):
/// there, each tracker heartbeats every broadcast period and takes the
/// presences of a node that has been silent for the down period away
/// (leaves). In process, and on a Phoenix server for the other trackers,
/// the trackers are this node's alone and nothing is timed; the timing is
/// kept and checked all the same. Two linked servers (a spec's and its
/// extension's) share the trackers of the one with the transport, timed
/// by *that* server's timing: set it there (the other's is not used).
///
/// Every node of a namespace should use the same timing: a node takes
/// another down after *its own* down period without the *other's*
/// heartbeats, so the down period must be well above the heartbeat
/// interval of every other node. Against Elixir, give the Rust node the
/// Elixir tracker's options (`broadcast_period`, `max_silent_periods`,
/// `down_period`, `permdown_period`, `clock_sample_periods`; the defaults
/// are the same on both sides).
///
/// Times are counted in whole milliseconds (anything below is dropped).
///
/// ```
/// use std::time::Duration;
/// use staff_pubsub::presence::PresenceTiming;
/// use staff_pubsub::PubSub;
///
/// # fn main() -> Result<(), staff_pubsub::presence::PresenceTimingError> {
/// // Heartbeats every 200 ms (idle: every 5 × 200 ms), down after 3 s.
/// let timing = PresenceTiming::default()
///     .broadcast_period(Duration::from_millis(200))
///     .max_silent_periods(4)
///     .down_period(Duration::from_secs(3));
/// let pubsub = PubSub::<String>::builder().presence_timing(timing)?.build();
/// # drop(pubsub);
///
/// // Refused: a node would be down before it has had the time to heartbeat.
/// let too_short = PresenceTiming::default().down_period(Duration::from_secs(2));
/// assert!(PubSub::<String>::builder().presence_timing(too_short).is_err());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct PresenceTiming {
    broadcast_period: Duration,
    max_silent_periods: u32,
    /// `None`: Phoenix's default, derived from the two above.
    down_period: Option<Duration>,
    permdown_period: Duration,
    clock_sample_periods: u32,
    max_delta_sizes: Vec<usize>,
}

impl Default for PresenceTiming {
    /// Phoenix.Tracker's defaults: broadcast period 1.5 s, 10 silent
    /// periods, down period 30 s (derived), permdown period 20 minutes,
    /// clock sample periods 2, delta generations of 100, 1000 and 10,000.
    fn default() -> Self {
        Self {
            broadcast_period: Duration::from_millis(1500),
            max_silent_periods: 10,
            down_period: None,
            permdown_period: Duration::from_secs(20 * 60),
            clock_sample_periods: 2,
            max_delta_sizes: DEFAULT_MAX_DELTA_SIZES.to_vec(),
        }
    }
}

/// Why a [`PresenceTiming`] is refused by [`Builder::presence_timing`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceTimingError {
    /// The broadcast period is under 1 ms, or the clock sample periods 0.
    #[error("broadcast_period must be at least 1 ms and clock_sample_periods positive")]
    Zero,
    /// The down period is below twice the broadcast period (Phoenix
    /// refuses it too).
    #[error("down_period must be at least twice as large as the broadcast_period")]
    DownPeriod,
    /// The down period is not longer than an idle node's heartbeat
    /// interval, `broadcast_period × (max_silent_periods + 1)` (plus a
    /// tenth, the jitter): an idle node would be taken down between two of
    /// its heartbeats. Phoenix does not check it.
    #[error(
        "down_period must be longer than an idle heartbeat interval, \
         broadcast_period × (max_silent_periods + 1) and a tenth"
    )]
    IdleHeartbeat,
    /// The permdown period is not longer than the down period (Phoenix
    /// refuses it too).
    #[error("permdown_period must be larger than the down_period")]
    PermdownPeriod,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl PresenceTiming {
    /// Phoenix's defaults: the same as [`Default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// How often a tracker sends what changed (Phoenix's
    /// `broadcast_period`, default 1.5 s): a track, update or untrack
    /// reaches the other nodes within about one period. Each period is
    /// jittered by up to a tenth either way.
    pub fn broadcast_period(mut self, period: Duration) -> Self {
        self.broadcast_period = period;
        self
    }

    /// How many broadcast periods without a change a tracker stays silent
    /// before it heartbeats anyway (Phoenix's `max_silent_periods`,
    /// default 10): an idle node heartbeats every `max_silent_periods + 1`
    /// broadcast periods.
    pub fn max_silent_periods(mut self, periods: u32) -> Self {
        self.max_silent_periods = periods;
        self
    }

    /// How long a node may be silent before the others take it down and
    /// report its presences as leaves (Phoenix's `down_period`; default,
    /// as Phoenix's, `broadcast_period × max_silent_periods × 2`: 30 s).
    /// A node that heartbeats again before its permdown period comes back
    /// up and its presences join again.
    pub fn down_period(mut self, period: Duration) -> Self {
        self.down_period = Some(period);
        self
    }

    /// How long a node may be silent before the others forget it and its
    /// presences for good (Phoenix's `permdown_period`, default 20
    /// minutes).
    pub fn permdown_period(mut self, period: Duration) -> Self {
        self.permdown_period = period;
        self
    }

    /// Every how many broadcast periods a tracker compares its clocks with
    /// what the others advertised and asks those ahead of it for a
    /// transfer of what it lacks (Phoenix's `clock_sample_periods`,
    /// default 2).
    pub fn clock_sample_periods(mut self, periods: u32) -> Self {
        self.clock_sample_periods = periods;
        self
    }

    /// The sizes of the delta generations a tracker keeps to answer
    /// transfer requests with a delta rather than its whole state
    /// (Phoenix's `max_delta_sizes`, default `[100, 1000, 10000]`, counted
    /// in values and dots). Empty: transfers always send the whole state.
    pub fn max_delta_sizes(mut self, sizes: impl Into<Vec<usize>>) -> Self {
        self.max_delta_sizes = sizes.into();
        self
    }

    /// The down period in force: the one set, or the default derived from
    /// the broadcast period.
    fn resolved_down_period_ms(&self) -> u64 {
        self.down_period.map_or_else(
            || {
                millis(self.broadcast_period)
                    .saturating_mul(u64::from(self.max_silent_periods))
                    .saturating_mul(2)
            },
            millis,
        )
    }

    /// Checks the rules of [`PresenceTimingError`].
    ///
    /// # Errors
    ///
    /// The first rule broken, in the order of [`PresenceTimingError`]'s
    /// variants.
    pub fn validate(&self) -> Result<(), PresenceTimingError> {
        let broadcast = millis(self.broadcast_period);
        let down = self.resolved_down_period_ms();
        if broadcast == 0 || self.clock_sample_periods == 0 {
            return Err(PresenceTimingError::Zero);
        }
        if down < broadcast.saturating_mul(2) {
            return Err(PresenceTimingError::DownPeriod);
        }
        let idle = broadcast.saturating_mul(u64::from(self.max_silent_periods) + 1);
        if down <= idle.saturating_add(idle / 10) {
            return Err(PresenceTimingError::IdleHeartbeat);
        }
        if millis(self.permdown_period) <= down {
            return Err(PresenceTimingError::PermdownPeriod);
        }
        Ok(())
    }

    /// The replica's configuration of this timing.
    pub(crate) fn shard_config(&self) -> ShardConfig {
        ShardConfig {
            broadcast_period_ms: millis(self.broadcast_period),
            max_silent_periods: self.max_silent_periods,
            down_period_ms: self.resolved_down_period_ms(),
            permdown_period_ms: millis(self.permdown_period),
            clock_sample_periods: self.clock_sample_periods,
            max_delta_sizes: self.max_delta_sizes.clone(),
            limits: StateLimits::default(),
        }
    }
}

impl<M: Send + Sync + 'static> Builder<M> {
    /// The timing of the server's presence trackers (heartbeats, down and
    /// permdown periods): see [`PresenceTiming`]. Default: Phoenix's.
    ///
    /// # Errors
    ///
    /// [`PresenceTimingError`] when the timing breaks one of its rules
    /// (the builder is then dropped).
    pub fn presence_timing(self, timing: PresenceTiming) -> Result<Self, PresenceTimingError> {
        timing.validate()?;
        Ok(self.preset(timing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_phoenix_s_and_validates() {
        let timing = PresenceTiming::default();
        assert_eq!(timing.validate(), Ok(()));
        assert_eq!(timing.shard_config(), ShardConfig::default());
    }

    #[test]
    fn the_down_period_follows_the_broadcast_period_unless_set() {
        let derived = PresenceTiming::new()
            .broadcast_period(Duration::from_millis(100))
            .max_silent_periods(3);
        assert_eq!(derived.shard_config().down_period_ms, 600);
        assert_eq!(derived.validate(), Ok(()));
        let set = derived.down_period(Duration::from_millis(1_000));
        assert_eq!(set.shard_config().down_period_ms, 1_000);
        assert_eq!(set.shard_config().validate(), Ok(()));
    }

    #[test]
    fn each_rule_is_checked() {
        let ms = Duration::from_millis;
        let base = PresenceTiming::new()
            .broadcast_period(ms(100))
            .max_silent_periods(2)
            .down_period(ms(1_000))
            .permdown_period(ms(5_000));
        assert_eq!(base.validate(), Ok(()));
        let broken = [
            (
                base.clone().broadcast_period(Duration::from_micros(900)),
                PresenceTimingError::Zero,
            ),
            (
                base.clone().clock_sample_periods(0),
                PresenceTimingError::Zero,
            ),
            (
                base.clone().down_period(ms(199)),
                PresenceTimingError::DownPeriod,
            ),
            (
                base.clone().down_period(ms(330)),
                PresenceTimingError::IdleHeartbeat,
            ),
            (
                base.clone().max_silent_periods(0).down_period(ms(199)),
                PresenceTimingError::DownPeriod,
            ),
            (
                // The derived down period, 0.
                PresenceTiming::new().max_silent_periods(0),
                PresenceTimingError::DownPeriod,
            ),
            (
                base.clone().permdown_period(ms(1_000)),
                PresenceTimingError::PermdownPeriod,
            ),
        ];
        for (timing, error) in broken {
            assert_eq!(timing.validate(), Err(error), "{timing:?}");
        }
        assert_eq!(base.down_period(ms(331)).validate(), Ok(()));
    }
}
