//! One tracker replica as a state machine without I/O or clock
//! (`Phoenix.Tracker.Shard`): it is told the time, handed the messages
//! other replicas sent, and returns the messages to send and the diffs to
//! report. A runtime drives it with a timer ([`Shard::tick`] every
//! broadcast period) and a transport; tests drive it with a simulated
//! network.
//!
//! Liveness, as Phoenix has it: a replica is up from its first heartbeat;
//! down after `down_period` without one (its presences leave but are
//! kept); permanently down after `permdown_period` (they are deleted), or
//! at once when it says so ([`Message::GracefulPermdown`]) or when a new
//! incarnation of its name heartbeats. A down replica that heartbeats
//! again with the same version comes back up and its presences rejoin.

use std::collections::BTreeMap;

use super::clock::{self, Clocks, Context, Name, Replica};
use super::generations::{Generations, DEFAULT_MAX_DELTA_SIZES};
use super::state::{Delta, Diff, JoinError, NoPresence, Pid, State, StateLimits, Transfer, Value};

/// The replica's timing, with Phoenix's option names and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardConfig {
    /// How often [`Shard::tick`] is called, in ms (default 1500).
    pub broadcast_period_ms: u64,
    /// Ticks without a change before an idle heartbeat is sent (default 10):
    /// an idle replica heartbeats every `max_silent_periods + 1` periods.
    pub max_silent_periods: u32,
    /// Silence after which a replica is down, in ms (default
    /// `broadcast_period * max_silent_periods * 2`).
    pub down_period_ms: u64,
    /// Silence after which a replica is permanently down, in ms (default
    /// 20 minutes).
    pub permdown_period_ms: u64,
    /// Every how many ticks transfers are requested (default 2).
    pub clock_sample_periods: u32,
    /// Delta generation sizes (default `[100, 1000, 10000]`).
    pub max_delta_sizes: Vec<usize>,
    /// Bounds on the state.
    pub limits: StateLimits,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            broadcast_period_ms: 1500,
            max_silent_periods: 10,
            down_period_ms: 1500 * 10 * 2,
            permdown_period_ms: 1_200_000,
            clock_sample_periods: 2,
            max_delta_sizes: DEFAULT_MAX_DELTA_SIZES.to_vec(),
            limits: StateLimits::default(),
        }
    }
}

/// Why a [`ShardConfig`] is refused (Phoenix refuses the same).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `down_period` below twice `broadcast_period`.
    #[error("down_period must be at least twice as large as the broadcast_period")]
    DownPeriod,
    /// `permdown_period` not above `down_period`.
    #[error("permdown_period must be larger than the down_period")]
    PermdownPeriod,
    /// A period or count of 0.
    #[error("broadcast_period and clock_sample_periods must be positive")]
    Zero,
}

impl ShardConfig {
    /// Checks the periods as Phoenix does.
    ///
    /// # Errors
    ///
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.broadcast_period_ms == 0 || self.clock_sample_periods == 0 {
            return Err(ConfigError::Zero);
        }
        if self.down_period_ms < 2 * self.broadcast_period_ms {
            return Err(ConfigError::DownPeriod);
        }
        if self.permdown_period_ms <= self.down_period_ms {
            return Err(ConfigError::PermdownPeriod);
        }
        Ok(())
    }
}

/// What replicas send each other (the tracker's `{:pub, ...}` messages,
/// without the wire's opaque transfer ref).
#[derive(Clone, Debug, PartialEq)]
pub enum Message<N, P, M> {
    /// Sent to all: the sender is alive; with a delta when it changed.
    Heartbeat {
        /// The sender.
        from: Replica<N>,
        /// What changed since its previous heartbeat.
        delta: Option<Delta<N, P, M>>,
        /// The sender's clocks.
        clocks: Clocks<N>,
    },
    /// Sent to one name: send me what I lack.
    TransferReq {
        /// The requester.
        from: Replica<N>,
        /// The requester's clocks.
        clocks: Clocks<N>,
    },
    /// The answer to a transfer request.
    TransferAck {
        /// The sender.
        from: Replica<N>,
        /// A delta generation or the entire state.
        payload: Transfer<N, P, M>,
    },
    /// Sent to all by a replica that stops for good.
    GracefulPermdown {
        /// The replica that stops.
        from: Replica<N>,
    },
}

impl<N, P, M> Message<N, P, M> {
    /// The sending replica.
    pub fn sender(&self) -> &Replica<N> {
        match self {
            Self::Heartbeat { from, .. }
            | Self::TransferReq { from, .. }
            | Self::TransferAck { from, .. }
            | Self::GracefulPermdown { from } => from,
        }
    }
}

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination<N> {
    /// Every other replica (`broadcast_from`).
    All,
    /// The replica of this name, whichever incarnation (`direct_broadcast`).
    Name(N),
}

/// A message to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing<N, P, M> {
    /// Its destination.
    pub to: Destination<N>,
    /// The message.
    pub message: Message<N, P, M>,
}

/// A change of another replica's liveness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaEvent<N> {
    /// It heartbeat for the first time, or again after being down.
    Up(Replica<N>),
    /// It was silent for the down period (or restarted, or left).
    Down(Replica<N>),
    /// It is forgotten.
    Permdown(Replica<N>),
}

/// What handling a message or a tick produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Effects<N, P, M> {
    /// Diffs to report, in order: one per `handle_diff` Phoenix would call.
    pub diffs: Vec<Diff<P, M>>,
    /// Messages to send.
    pub outgoing: Vec<Outgoing<N, P, M>>,
    /// Liveness changes, in order.
    pub events: Vec<ReplicaEvent<N>>,
}

impl<N, P, M> Default for Effects<N, P, M> {
    fn default() -> Self {
        Self {
            diffs: Vec::new(),
            outgoing: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl<N, P, M> Effects<N, P, M> {
    fn diff(&mut self, joins: Vec<Value<P, M>>, leaves: Vec<Value<P, M>>) {
        if !joins.is_empty() || !leaves.is_empty() {
            self.diffs.push(Diff { joins, leaves });
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    Up,
    Down,
}

#[derive(Clone, Debug)]
struct Peer {
    vsn: u64,
    last_heartbeat_ms: u64,
    liveness: Liveness,
}

/// One replica: its [`State`], what it knows of the others, and its
/// timers' counters. See the [module](self).
#[derive(Clone, Debug)]
pub struct Shard<N, P, M> {
    state: State<N, P, M>,
    config: ShardConfig,
    peers: BTreeMap<N, Peer>,
    pending_clockset: Vec<Clocks<N>>,
    silent_periods: u32,
    sample_count: u32,
    generations: Generations<N, P, M>,
}

impl<N: Name, P: Pid, M: Clone> Shard<N, P, M> {
    /// Replica `replica`, empty. Its first [`tick`](Self::tick) heartbeats.
    ///
    /// # Errors
    ///
    /// The configuration's first broken rule ([`ShardConfig::validate`]).
    pub fn new(replica: Replica<N>, config: ShardConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            state: State::with_limits(replica, config.limits),
            peers: BTreeMap::new(),
            pending_clockset: Vec::new(),
            silent_periods: config.max_silent_periods,
            sample_count: config.clock_sample_periods,
            generations: Generations::new(config.max_delta_sizes.clone()),
            config,
        })
    }

    /// The CRDT.
    pub fn state(&self) -> &State<N, P, M> {
        &self.state
    }

    /// This replica.
    pub fn replica(&self) -> &Replica<N> {
        self.state.replica()
    }

    /// The configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The other replicas known, with whether each is up.
    pub fn peers(&self) -> impl Iterator<Item = (Replica<N>, bool)> + '_ {
        self.peers.iter().map(|(name, peer)| {
            (
                Replica::new(name.clone(), peer.vsn),
                peer.liveness == Liveness::Up,
            )
        })
    }

    /// Sets the state's limits for what is added from now on
    /// ([`State::set_limits`]).
    pub fn set_limits(&mut self, limits: StateLimits) {
        self.config.limits = limits;
        self.state.set_limits(limits);
    }

    /// Drops the pending delta without sending it: for a replica that has
    /// no other replica to send it to (in process), where it would grow
    /// with every change. A replica that has peers must not call it: they
    /// would then learn the changes only by transfer.
    pub fn discard_delta(&mut self) {
        drop(self.state.take_delta());
    }

    /// Tracks a presence of this replica (`Phoenix.Tracker.track`).
    /// Returns the diff to report (one join).
    ///
    /// # Errors
    ///
    /// As [`State::join`].
    pub fn track(
        &mut self,
        pid: P,
        topic: &str,
        key: &str,
        meta: M,
    ) -> Result<Diff<P, M>, JoinError> {
        let value = self.state.join(pid, topic.into(), key.into(), meta)?;
        Ok(Diff {
            joins: vec![value],
            leaves: Vec::new(),
        })
    }

    /// Untracks `{topic, pid, key}`; an empty diff if it was not tracked.
    pub fn untrack(&mut self, pid: &P, topic: &str, key: &str) -> Diff<P, M> {
        Diff {
            joins: Vec::new(),
            leaves: self.state.leave(pid, topic, key).into_iter().collect(),
        }
    }

    /// Untracks every presence of `pid`.
    pub fn untrack_pid(&mut self, pid: &P) -> Diff<P, M> {
        Diff {
            joins: Vec::new(),
            leaves: self.state.leave_pid(pid),
        }
    }

    /// Replaces the meta of `{topic, pid, key}`: one diff with the new
    /// value joining and the old one leaving.
    ///
    /// # Errors
    ///
    /// [`NoPresence`] if it is not tracked.
    pub fn update(
        &mut self,
        pid: &P,
        topic: &str,
        key: &str,
        meta: M,
    ) -> Result<Diff<P, M>, NoPresence> {
        let (old, new) = self.state.leave_join(pid, topic, key, meta)?;
        Ok(Diff {
            joins: vec![new],
            leaves: vec![old],
        })
    }

    /// The presences on `topic` of replicas that are up.
    pub fn list(&self, topic: &str) -> Vec<Value<P, M>> {
        self.state.list(topic)
    }

    /// The message to send when this replica stops for good: the others
    /// take it down and forget it at once instead of after their periods.
    pub fn graceful_permdown(&self) -> Outgoing<N, P, M> {
        Outgoing {
            to: Destination::All,
            message: Message::GracefulPermdown {
                from: self.replica().clone(),
            },
        }
    }

    /// One broadcast period passed; `now_ms` is the time in ms (any
    /// monotonic origin, the same for every call). Sends the pending delta
    /// as a heartbeat, or an idle heartbeat after `max_silent_periods`
    /// quiet ticks; every `clock_sample_periods` ticks, asks each replica
    /// whose advertised clock this one's does not dominate for a transfer;
    /// then takes down and permanently down the silent replicas.
    pub fn tick(&mut self, now_ms: u64) -> Effects<N, P, M> {
        let mut effects = Effects::default();
        self.broadcast_heartbeat(&mut effects);
        self.request_transfers(&mut effects);
        self.detect_downs(now_ms, &mut effects);
        effects
    }

    fn broadcast_heartbeat(&mut self, effects: &mut Effects<N, P, M>) {
        if self.state.has_delta() {
            let delta = self.state.take_delta();
            effects.outgoing.push(Outgoing {
                to: Destination::All,
                message: Message::Heartbeat {
                    from: self.replica().clone(),
                    delta: Some(delta.clone()),
                    clocks: self.state.clocks(),
                },
            });
            self.silent_periods = 0;
            self.generations.push(&self.state, &delta);
        } else if self.silent_periods >= self.config.max_silent_periods {
            effects.outgoing.push(Outgoing {
                to: Destination::All,
                message: Message::Heartbeat {
                    from: self.replica().clone(),
                    delta: None,
                    clocks: self.state.clocks(),
                },
            });
            self.silent_periods = 0;
        } else {
            self.silent_periods += 1;
        }
    }

    fn request_transfers(&mut self, effects: &mut Effects<N, P, M>) {
        if self.sample_count > 1 {
            self.sample_count -= 1;
            return;
        }
        self.sample_count = self.config.clock_sample_periods;
        let mut clockset = std::mem::take(&mut self.pending_clockset);
        clock::append_clock(&mut clockset, self.state.clocks());
        for (replica, _) in clockset {
            if replica != *self.replica() {
                effects.outgoing.push(Outgoing {
                    to: Destination::Name(replica.name),
                    message: Message::TransferReq {
                        from: self.replica().clone(),
                        clocks: self.state.clocks(),
                    },
                });
            }
        }
    }

    fn detect_downs(&mut self, now_ms: u64, effects: &mut Effects<N, P, M>) {
        let names: Vec<N> = self.peers.keys().cloned().collect();
        for name in names {
            let Some(peer) = self.peers.get(&name).cloned() else {
                continue;
            };
            let replica = Replica::new(name.clone(), peer.vsn);
            let downtime = now_ms.saturating_sub(peer.last_heartbeat_ms);
            if downtime > self.config.permdown_period_ms {
                self.peers.remove(&name);
                if peer.liveness == Liveness::Up {
                    self.down(&replica, effects);
                }
                self.permdown(&replica, effects);
            } else if downtime > self.config.down_period_ms && peer.liveness == Liveness::Up {
                if let Some(peer) = self.peers.get_mut(&name) {
                    peer.liveness = Liveness::Down;
                }
                self.down(&replica, effects);
            }
        }
    }

    fn up(&mut self, replica: &Replica<N>, effects: &mut Effects<N, P, M>) {
        effects.events.push(ReplicaEvent::Up(replica.clone()));
        let joins = self.state.replica_up(replica);
        effects.diff(joins, Vec::new());
    }

    fn down(&mut self, replica: &Replica<N>, effects: &mut Effects<N, P, M>) {
        effects.events.push(ReplicaEvent::Down(replica.clone()));
        let leaves = self.state.replica_down(replica);
        effects.diff(Vec::new(), leaves);
    }

    fn permdown(&mut self, replica: &Replica<N>, effects: &mut Effects<N, P, M>) {
        effects.events.push(ReplicaEvent::Permdown(replica.clone()));
        self.state.remove_replica(replica);
        self.generations.remove_replica(replica);
        if self
            .peers
            .get(&replica.name)
            .is_some_and(|peer| peer.vsn == replica.vsn)
        {
            self.peers.remove(&replica.name);
        }
    }

    /// A heartbeat from `from` arrived at `now_ms` (`handle_heartbeat`):
    /// a new name comes up; a down one with the same version comes back;
    /// a new version of a known name ends the old incarnation (down, if it
    /// was up, then permanently) and brings up the new one.
    fn heartbeat_from(&mut self, from: &Replica<N>, now_ms: u64, effects: &mut Effects<N, P, M>) {
        let previous = self.peers.insert(
            from.name.clone(),
            Peer {
                vsn: from.vsn,
                last_heartbeat_ms: now_ms,
                liveness: Liveness::Up,
            },
        );
        match previous {
            None => self.up(from, effects),
            Some(peer) if peer.vsn == from.vsn => {
                if peer.liveness == Liveness::Down {
                    self.up(from, effects);
                }
            }
            Some(peer) => {
                let old = Replica::new(from.name.clone(), peer.vsn);
                if peer.liveness == Liveness::Up {
                    self.down(&old, effects);
                }
                self.permdown(&old, effects);
                self.up(from, effects);
            }
        }
    }

    /// Handles a message another replica sent, arrived at `now_ms`.
    /// Messages from this replica's own name are ignored (a transport does
    /// not deliver a node's broadcasts back to it).
    pub fn handle(&mut self, message: &Message<N, P, M>, now_ms: u64) -> Effects<N, P, M> {
        let mut effects = Effects::default();
        if message.sender().name == self.replica().name {
            return effects;
        }
        match message {
            Message::Heartbeat {
                from,
                delta: None,
                clocks,
            } => {
                clock::append_clock(&mut self.pending_clockset, clocks.clone());
                self.heartbeat_from(from, now_ms, &mut effects);
            }
            Message::Heartbeat {
                from,
                delta: Some(delta),
                clocks,
            } => {
                self.heartbeat_from(from, now_ms, &mut effects);
                let diff = self.state.merge_delta(delta);
                effects.diff(diff.joins, diff.leaves);
                clock::append_clock(&mut self.pending_clockset, clocks.clone());
                self.generations.push(&self.state, delta);
            }
            Message::TransferReq { from, clocks } => {
                let payload = self.generations.extract(&self.state, &clocks.1);
                effects.outgoing.push(Outgoing {
                    to: Destination::Name(from.name.clone()),
                    message: Message::TransferAck {
                        from: self.replica().clone(),
                        payload,
                    },
                });
            }
            Message::TransferAck { payload, .. } => {
                let diff = self.state.merge(payload);
                effects.diff(diff.joins, diff.leaves);
                match payload {
                    Transfer::Full(_) => self.generations.clear(),
                    Transfer::Delta(delta) => self.generations.push(&self.state, delta),
                }
            }
            Message::GracefulPermdown { from } => {
                let current = self
                    .peers
                    .get(&from.name)
                    .is_some_and(|peer| peer.vsn == from.vsn);
                let up = self
                    .peers
                    .get(&from.name)
                    .is_some_and(|peer| peer.liveness == Liveness::Up);
                if current {
                    // Phoenix reports a down replica's leaves again here;
                    // they were reported when it went down.
                    if up {
                        self.down(from, &mut effects);
                    }
                    self.permdown(from, &mut effects);
                }
            }
        }
        effects
    }

    /// The clocks this replica advertises.
    pub fn clocks(&self) -> Clocks<N> {
        self.state.clocks()
    }

    /// This replica's context.
    pub fn context(&self) -> &Context<N> {
        self.state.context()
    }
}
