//! How a replica speaks Elixir's own `Phoenix.Tracker` protocol (the
//! Phoenix engine, [`Encoding::Phoenix`](crate::gossip::Encoding)): the
//! replica protocol's messages to and from `phoenix_pubsub_redis` frames
//! of the tracker's shard topic, through the typed codec of
//! [`crate::phoenix::tracker`].
//!
//! The mapping between the two vocabularies:
//!
//! - **Names.** A replica name is a binary or an atom on the wire, and the
//!   two are different names (Phoenix compares them as terms). The shard
//!   holds names as text: a binary as itself, an atom as `:` and its
//!   text (`:"phx-a"` is `":phx-a"`). A binary name starting with `:`
//!   would read as an atom: such a frame is refused (skipped, counted).
//! - **Pids.** A pid is part of a presence's identity `{topic, pid, key}`
//!   and otherwise opaque. An Elixir pid becomes a [`PresenceId`] whose
//!   origin has its top bit set and holds a 63-bit hash of the pid's node
//!   and creation, and whose sequence holds its serial and id words: two
//!   pids are one id exactly when they are one pid (up to a hash
//!   collision of two nodes, about 2^-63). This node's own presences are
//!   sent with pids of its own node atom, `<name>@staff-pubsub.invalid`
//!   ([`Pid::node_for_replica`]), creation from the tracker's random
//!   origin (never 0), and the presence's sequence number in the id and
//!   serial words (15 and 13 bits, the range every OTP release takes:
//!   the words wrap after 2^28 presences of one tracker incarnation).
//! - **Metas.** See [`crate::phoenix::tracker`]'s meta mapping: sent as
//!   an atom-keyed map with `phx_ref` added; read by `Meta`'s
//!   `Deserialize`. `phx_ref` is 16 url-safe base64 characters of the
//!   presence's dot (its replica's vsn and its clock): one per value, the
//!   same in every message that carries it, new on every update, as
//!   Phoenix's. `phx_ref_prev` is not sent.
//! - **Keys.** A binary key is its text; an integer or atom key (what
//!   `Phoenix.Tracker.track/5` allows besides binaries) is its text as
//!   `to_string/1` writes it, as `Phoenix.Presence.list/1` groups it. Any
//!   other key, a meta that `Meta` cannot read, or a topic that is not
//!   UTF-8 makes that one presence skipped (and counted): the rest of the
//!   message is taken, and the skipped presence's dot is still seen.
//! - **What this node sends of others.** Its heartbeats carry its own
//!   values, and the dots it saw removed of every replica (as Phoenix
//!   re-gossips removals). Its transfer answers carry only its own
//!   replica: its own values, context, clouds and range, as the capture's
//!   README recommends, so that it never relays another node's presence
//!   (whose meta it may not hold whole) nor claims another replica's
//!   clock without all its values. Every replica asks every other one
//!   whose clock it does not dominate, so nothing is missed.
//! - **Transfer references** are echoed: the answer to a `transfer_req`
//!   carries the request's reference; this node's own requests carry a
//!   reference it makes (`make_ref()`'s shape).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::clock::{Context, Replica, Tag};
use super::codec::Msg;
use super::shard::{Destination, Message, Outgoing};
use super::state::{Clouds, Delta, FullState, Status, Transfer, Value};
use super::tracker::PresenceId;
use crate::gossip::PhoenixShard;
use crate::loom::sync::Arc;
use crate::phoenix::tracker::{
    self as wire, MapSet, MapSetForm, Pid, RawTerm, ReplicaRef, ReplicaStatus, TrackerFrame,
    TrackerMessage, TransferPayload,
};
use crate::phoenix::{AtomEncoding, Term};
use crate::phoenix::{FrameMode, NodeName};

/// What this node writes its atoms as: OTP 25's form, every captured
/// Elixir frame's.
const ATOMS: AtomEncoding = AtomEncoding::Latin1;

/// The mark of an atom name in the shard's names.
const ATOM_MARK: char = ':';

/// The top bit of a [`PresenceId`] origin: an Elixir (or other remote) pid.
const REMOTE: u64 = 1 << 63;

/// At most this many transfer references are kept between a request and
/// its answer (each request is answered in the same step, so one at a time
/// in practice).
const MAX_PENDING_REFS: usize = 1024;

type Out<Meta> = Outgoing<Arc<str>, PresenceId, Arc<Meta>>;
type Values<Meta> = BTreeMap<Tag<Arc<str>>, Value<PresenceId, Arc<Meta>>>;

/// What does not fit in a frame of a known kind.
type Bad = String;

/// The shard's name of a replica whose wire name is `name`.
fn shard_name(name: &NodeName) -> Result<Arc<str>, Bad> {
    match name {
        NodeName::Binary(text) if text.starts_with(ATOM_MARK) => {
            Err("a binary replica name that starts with ':'".to_owned())
        }
        NodeName::Binary(text) => Ok(Arc::from(text.as_str())),
        NodeName::Atom(text) => Ok(Arc::from(format!("{ATOM_MARK}{text}"))),
    }
}

/// The wire name of the shard's `name`.
fn wire_name(name: &str) -> NodeName {
    match name.strip_prefix(ATOM_MARK) {
        Some(atom) => NodeName::Atom(atom.to_owned()),
        None => NodeName::Binary(name.to_owned()),
    }
}

/// The name this node's replica has in the shard, for `shard`.
pub(crate) fn replica_name(shard: &PhoenixShard) -> Arc<str> {
    if shard.name_is_atom {
        Arc::from(format!("{ATOM_MARK}{}", shard.name))
    } else {
        Arc::clone(&shard.name)
    }
}

/// `phx_ref` of the value at dot `(vsn, clock)`: 12 bytes (vsn, then the
/// clock's low 32 bits) as 16 url-safe base64 characters, the length of
/// Phoenix's.
fn phx_ref(vsn: u64, clock: u64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0_u8; 12];
    bytes[..8].copy_from_slice(&vsn.to_be_bytes());
    // The low 32 bits: a replica's clock stays far below 2^32.
    bytes[8..].copy_from_slice(&(clock as u32).to_be_bytes());
    let mut out = String::with_capacity(16);
    for chunk in bytes.chunks_exact(3) {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
        }
    }
    out
}

/// The text of a presence key (see the [module](self)).
fn key_text(key: &RawTerm) -> Result<Arc<str>, Bad> {
    match key.to_term().map_err(|error| error.to_string())? {
        Term::Binary(bytes) => String::from_utf8(bytes)
            .map(Arc::from)
            .map_err(|_| "a key that is not UTF-8".to_owned()),
        Term::Int(int) => Ok(Arc::from(int.to_string())),
        Term::Atom(atom) => Ok(Arc::from(atom)),
        _ => Err("a key that is not a binary, an integer or an atom".to_owned()),
    }
}

/// One tracker's Phoenix codec: see the [module](self).
pub(crate) struct PhoenixCodec {
    shard: PhoenixShard,
    /// This replica as the wire names it.
    me: NodeName,
    /// This replica's name in the shard.
    me_in_shard: Arc<str>,
    /// The random half of this tracker's presence ids.
    origin: u64,
    /// The node atom of this node's pids.
    pid_node: String,
    /// The creation of this node's pids (never 0).
    creation: u32,
    /// The reference of each transfer request not answered yet, by the
    /// requester's name.
    pending: HashMap<Arc<str>, RawTerm>,
    /// The count in this node's transfer references.
    requests: u32,
    /// Per own presence sent: the clock of its value last sent, and that
    /// of the value it replaced (its `phx_ref_prev`). Pruned when a
    /// heartbeat says the presence is gone.
    sent: HashMap<PresenceId, (u64, Option<u64>)>,
}

impl PhoenixCodec {
    /// The codec of `shard`, for the tracker whose presence ids have the
    /// random half `origin`.
    pub(crate) fn new(shard: PhoenixShard, origin: u64) -> Self {
        let me = if shard.name_is_atom {
            NodeName::Atom(shard.name.to_string())
        } else {
            NodeName::Binary(shard.name.to_string())
        };
        Self {
            me_in_shard: replica_name(&shard),
            pid_node: Pid::node_for_replica(&shard.name),
            // The low half, never 0 (a creation of 0 is a node that is
            // not distributed).
            creation: (origin as u32).max(1),
            me,
            origin,
            shard,
            pending: HashMap::new(),
            requests: 0,
            sent: HashMap::new(),
        }
    }

    // ------------------------------------------------------------ reading

    /// The presence id of the pid `pid` (see the [module](self)).
    fn id_of(&self, pid: &Pid) -> PresenceId {
        let own_range = pid.id < 1 << 15 && pid.serial < 1 << 13;
        if pid.node == self.pid_node && pid.creation == self.creation && own_range {
            let seq = u64::from(pid.serial) << 15 | u64::from(pid.id);
            return PresenceId::from_parts((self.origin, seq));
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        pid.node.hash(&mut hasher);
        pid.creation.hash(&mut hasher);
        let origin = REMOTE | (hasher.finish() >> 1);
        PresenceId::from_parts((origin, u64::from(pid.serial) << 32 | u64::from(pid.id)))
    }

    fn replica(reference: &ReplicaRef) -> Result<Replica<Arc<str>>, Bad> {
        Ok(Replica::new(shard_name(&reference.name)?, reference.vsn))
    }

    fn context(context: &wire::Context) -> Result<Context<Arc<str>>, Bad> {
        context
            .iter()
            .map(|(replica, clock)| Ok((Self::replica(replica)?, *clock)))
            .collect()
    }

    /// Each dot under the replica its tag names.
    fn clouds(clouds: &wire::Clouds) -> Result<Clouds<Arc<str>>, Bad> {
        let mut out = Clouds::new();
        for (_, set) in clouds {
            for tag in &set.members {
                out.entry(Self::replica(&tag.replica)?)
                    .or_default()
                    .insert(tag.clock);
            }
        }
        Ok(out)
    }

    /// The values, without those that do not fit (counted in `skipped`).
    fn values<Meta: DeserializeOwned>(
        &self,
        values: &wire::Values,
        skipped: &mut u32,
    ) -> Result<Values<Meta>, Bad> {
        let mut out = BTreeMap::new();
        for (tag, presence) in values {
            let tag = Tag::new(Self::replica(&tag.replica)?, tag.clock);
            let value = key_text(&presence.key).and_then(|key| {
                let meta: Meta = presence.meta.read_into()?;
                Ok(Value {
                    pid: self.id_of(&presence.pid),
                    topic: Arc::from(presence.topic.as_str()),
                    key,
                    meta: Arc::new(meta),
                })
            });
            match value {
                Ok(value) => {
                    out.insert(tag, value);
                }
                Err(error) => {
                    *skipped += 1;
                    tracing::debug!(%error, clock = tag.clock, replica = %tag.replica.name, "presence from Phoenix skipped");
                }
            }
        }
        Ok(out)
    }

    fn delta<Meta: DeserializeOwned>(
        &self,
        state: &wire::State,
        skipped: &mut u32,
    ) -> Result<Delta<Arc<str>, PresenceId, Arc<Meta>>, Bad> {
        let Some(values) = &state.values else {
            return Err("a delta without values".to_owned());
        };
        Ok(Delta {
            replica: Self::replica(&state.replica)?,
            clouds: Self::clouds(&state.clouds)?,
            values: self.values(values, skipped)?,
            range: (
                Self::context(&state.range.0)?,
                Self::context(&state.range.1)?,
            ),
        })
    }

    /// Decodes a frame the engine handed over (one of the shard topic's,
    /// `:except` another node or `:only` this one): the message, and how
    /// many of its presences were skipped.
    ///
    /// # Errors
    ///
    /// Not a tracker frame of this shard, a broadcast whose envelope names
    /// another node than its sender, or a name that does not fit.
    pub(crate) fn decode<Meta: DeserializeOwned>(
        &mut self,
        bytes: &[u8],
    ) -> Result<(Msg<Meta>, u32), Bad> {
        let frame = wire::decode_tracker_frame(bytes, self.shard.max_frame_size)
            .map_err(|error| error.to_string())?;
        if *frame.topic != *self.shard.topic {
            return Err("a frame of another topic".to_owned());
        }
        if frame.mode == FrameMode::Except && frame.node != frame.message.sender().name {
            return Err("a broadcast naming another node than its sender".to_owned());
        }
        let mut skipped = 0;
        let message = match &frame.message {
            TrackerMessage::Heartbeat {
                replica,
                delta,
                clocks,
            } => Message::Heartbeat {
                from: Self::replica(replica)?,
                delta: match delta {
                    Some(delta) => Some(self.delta(delta, &mut skipped)?),
                    None => None,
                },
                clocks: (
                    Self::replica(&clocks.replica)?,
                    Self::context(&clocks.context)?,
                ),
            },
            TrackerMessage::TransferReq {
                reference,
                replica,
                clocks,
            } => {
                let from = Self::replica(replica)?;
                if self.pending.len() >= MAX_PENDING_REFS {
                    self.pending.clear();
                }
                self.pending
                    .insert(Arc::clone(&from.name), reference.clone());
                Message::TransferReq {
                    from,
                    clocks: (
                        Self::replica(&clocks.replica)?,
                        Self::context(&clocks.context)?,
                    ),
                }
            }
            TrackerMessage::TransferAck {
                replica, payload, ..
            } => Message::TransferAck {
                from: Self::replica(replica)?,
                payload: match payload {
                    TransferPayload::Delta(state) => {
                        Transfer::Delta(self.delta(state, &mut skipped)?)
                    }
                    TransferPayload::State { state, values } => Transfer::Full(FullState {
                        replica: Self::replica(&state.replica)?,
                        context: Self::context(&state.context)?,
                        clouds: Self::clouds(&state.clouds)?,
                        replicas: state
                            .replicas
                            .iter()
                            .map(|(replica, status)| {
                                let status = match status {
                                    ReplicaStatus::Up => Status::Up,
                                    ReplicaStatus::Down => Status::Down,
                                };
                                Ok((Self::replica(replica)?, status))
                            })
                            .collect::<Result<_, Bad>>()?,
                        values: self.values(values, &mut skipped)?,
                    }),
                },
            },
            TrackerMessage::GracefulPermdown { replica } => Message::GracefulPermdown {
                from: Self::replica(replica)?,
            },
        };
        Ok((message, skipped))
    }

    // ------------------------------------------------------------ writing

    fn wire_replica(replica: &Replica<Arc<str>>) -> ReplicaRef {
        ReplicaRef::new(wire_name(&replica.name), replica.vsn)
    }

    fn wire_context<'a>(
        context: impl IntoIterator<Item = (&'a Replica<Arc<str>>, &'a u64)>,
    ) -> wire::Context {
        context
            .into_iter()
            .map(|(replica, clock)| (Self::wire_replica(replica), *clock))
            .collect()
    }

    fn wire_clouds<'a>(
        clouds: impl IntoIterator<Item = (&'a Replica<Arc<str>>, &'a std::collections::BTreeSet<u64>)>,
    ) -> wire::Clouds {
        clouds
            .into_iter()
            .map(|(replica, dots)| {
                let reference = Self::wire_replica(replica);
                let members = dots
                    .iter()
                    .map(|clock| wire::Tag::new(reference.clone(), *clock))
                    .collect();
                (reference, MapSet::new(members, MapSetForm::Unversioned))
            })
            .collect()
    }

    fn pid(&self, id: PresenceId) -> Pid {
        let (_, seq) = id.parts();
        Pid {
            node: self.pid_node.clone(),
            id: (seq & 0x7fff) as u32,
            serial: ((seq >> 15) & 0x1fff) as u32,
            creation: self.creation,
        }
    }

    fn is_mine(&self, replica: &Replica<Arc<str>>) -> bool {
        replica.name == self.me_in_shard
    }

    /// The clock of the value the own presence `id`, now at `clock`,
    /// replaced: see `sent`.
    fn replaced(&mut self, id: PresenceId, clock: u64) -> Option<u64> {
        match self.sent.get(&id).copied() {
            Some((last, prev)) if last == clock => prev,
            Some((last, _)) if last > clock => None,
            last => {
                let prev = last.map(|(last, _)| last);
                self.sent.insert(id, (clock, prev));
                prev
            }
        }
    }

    /// This node's own values among `values` (see the [module](self)); a
    /// value whose meta cannot be written is left out, with a warning.
    fn wire_values<Meta: Serialize>(&mut self, values: &Values<Meta>) -> wire::Values {
        let (me, origin) = (Arc::clone(&self.me_in_shard), self.origin);
        values
            .iter()
            .filter(|(tag, value)| tag.replica.name == me && value.pid.parts().0 == origin)
            .filter_map(|(tag, value)| {
                let reference = phx_ref(tag.replica.vsn, tag.clock);
                let previous = self
                    .replaced(value.pid, tag.clock)
                    .map(|clock| phx_ref(tag.replica.vsn, clock));
                let mut extra = vec![("phx_ref", reference.as_str())];
                if let Some(previous) = &previous {
                    extra.push(("phx_ref_prev", previous.as_str()));
                }
                let meta =
                    match wire::Meta::of_value(&*value.meta, &extra, ATOMS) {
                        Ok(meta) => meta,
                        Err(error) => {
                            tracing::warn!(%error, key = %value.key, topic = %value.topic, "presence not sent to Phoenix: its metadata is not a map");
                            return None;
                        }
                    };
                let key = RawTerm::from_term(&Term::Binary(value.key.as_bytes().to_vec()), ATOMS)
                    .ok()?;
                Some((
                    wire::Tag::new(Self::wire_replica(&tag.replica), tag.clock),
                    wire::Presence {
                        pid: self.pid(value.pid),
                        topic: value.topic.to_string(),
                        key,
                        meta,
                    },
                ))
            })
            .collect()
    }

    /// Forgets the own presences a heartbeat's `delta` removes: their
    /// value's dot is in its clouds, and no value of theirs in it.
    fn forget_removed<Meta>(&mut self, delta: &Delta<Arc<str>, PresenceId, Arc<Meta>>) {
        let Some(dots) = delta
            .clouds
            .iter()
            .find(|(replica, _)| self.is_mine(replica))
            .map(|(_, dots)| dots)
        else {
            return;
        };
        let alive: std::collections::HashSet<PresenceId> =
            delta.values.values().map(|value| value.pid).collect();
        self.sent
            .retain(|id, (clock, _)| alive.contains(id) || !dots.contains(clock));
    }

    fn wire_delta<Meta: Serialize>(
        &mut self,
        delta: &Delta<Arc<str>, PresenceId, Arc<Meta>>,
        only_mine: bool,
    ) -> wire::State {
        let values = self.wire_values(&delta.values);
        if !only_mine {
            self.forget_removed(delta);
        }
        let keep = |replica: &&Replica<Arc<str>>| !only_mine || self.is_mine(replica);
        wire::State::delta(
            Self::wire_replica(&delta.replica),
            Self::wire_clouds(delta.clouds.iter().filter(|(replica, _)| keep(replica))),
            values,
            (
                Self::wire_context(delta.range.0.iter().filter(|(replica, _)| keep(replica))),
                Self::wire_context(delta.range.1.iter().filter(|(replica, _)| keep(replica))),
            ),
        )
    }

    fn wire_full<Meta: Serialize>(
        &mut self,
        full: &FullState<Arc<str>, PresenceId, Arc<Meta>>,
    ) -> TransferPayload {
        let values = self.wire_values(&full.values);
        let me = Self::wire_replica(&full.replica);
        let mine = |replica: &&Replica<Arc<str>>| self.is_mine(replica);
        // Every own dot the requester may lack is in the context or
        // the clouds, so its clouds are sent even when empty (as Phoenix
        // sends the requester's keys).
        let mut clouds = Self::wire_clouds(full.clouds.iter().filter(|(replica, _)| mine(replica)));
        if clouds.is_empty() {
            clouds.push((me.clone(), MapSet::new(Vec::new(), MapSetForm::Unversioned)));
        }
        TransferPayload::State {
            state: wire::State::full(
                me.clone(),
                Self::wire_context(full.context.iter().filter(|(replica, _)| mine(replica))),
                clouds,
                vec![(me, ReplicaStatus::Up)],
            ),
            values,
        }
    }

    fn reference(&mut self) -> Result<RawTerm, Bad> {
        self.requests = self.requests.wrapping_add(1);
        let ids = [
            self.requests,
            (self.origin >> 32) as u32,
            self.origin as u32,
        ];
        wire::reference(&self.pid_node, ids, ATOMS).map_err(|error| error.to_string())
    }

    /// Encodes `out` as the whole frame to publish: `:except` this node
    /// for every replica, `:only` the replica named.
    ///
    /// # Errors
    ///
    /// A frame that cannot be written (a name over 255 characters as an
    /// atom) or that is larger than the maximum frame size.
    pub(crate) fn encode<Meta: Serialize>(&mut self, out: &Out<Meta>) -> Result<Vec<u8>, Bad> {
        let message = match &out.message {
            Message::Heartbeat {
                from,
                delta,
                clocks,
            } => TrackerMessage::Heartbeat {
                replica: Self::wire_replica(from),
                delta: delta.as_ref().map(|delta| self.wire_delta(delta, false)),
                clocks: wire::Clocks {
                    replica: Self::wire_replica(&clocks.0),
                    context: Self::wire_context(&clocks.1),
                },
            },
            Message::TransferReq { from, clocks } => TrackerMessage::TransferReq {
                reference: self.reference()?,
                replica: Self::wire_replica(from),
                clocks: wire::Clocks {
                    replica: Self::wire_replica(&clocks.0),
                    context: Self::wire_context(&clocks.1),
                },
            },
            Message::TransferAck { from, payload } => {
                let reference = match &out.to {
                    Destination::Name(name) => self.pending.remove(name),
                    Destination::All => None,
                };
                let reference = match reference {
                    Some(reference) => reference,
                    None => self.reference()?,
                };
                TrackerMessage::TransferAck {
                    reference,
                    replica: Self::wire_replica(from),
                    payload: match payload {
                        Transfer::Delta(delta) => {
                            TransferPayload::Delta(self.wire_delta(delta, true))
                        }
                        Transfer::Full(full) => self.wire_full(full),
                    },
                }
            }
            Message::GracefulPermdown { from } => TrackerMessage::GracefulPermdown {
                replica: Self::wire_replica(from),
            },
        };
        let topic = self.shard.topic.to_string();
        let frame = match &out.to {
            Destination::All => TrackerFrame::broadcast(self.me.clone(), topic, message, ATOMS),
            Destination::Name(name) => TrackerFrame::direct(wire_name(name), topic, message, ATOMS),
        };
        let bytes = wire::encode_tracker_frame(&frame, self.shard.compression_level)
            .map_err(|error| error.to_string())?;
        if bytes.len() > self.shard.max_frame_size {
            return Err(format!(
                "a frame of {} bytes, over the maximum of {}",
                bytes.len(),
                self.shard.max_frame_size
            ));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
#[path = "phoenix_codec_tests.rs"]
mod tests;
