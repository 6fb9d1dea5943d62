//! The tracker's messages and its `State` struct, typed as they travel.

use std::cmp::Ordering;
use std::fmt;

use crate::phoenix::etf::{self, AtomEncoding, EtfError, Term, TermRef};
use crate::phoenix::frame::{FrameMode, NodeName};

/// A replica: `{name, vsn}`, one incarnation of one shard of one node.
///
/// `name` is the node's PubSub `node_name` in the form it has (a binary
/// such as `"phx-a"`, or an atom such as `:"phx-a@127.0.0.1"`); `vsn` is
/// the shard's start time in microseconds plus a unique integer (about
/// 1.8e15, a `SMALL_BIG_EXT` on the wire), new on every restart. Two
/// refs are the same replica only when both name (with its form) and vsn
/// are equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplicaRef {
    /// The node name, binary or atom.
    pub name: NodeName,
    /// The incarnation.
    pub vsn: u64,
}

impl ReplicaRef {
    /// A replica named `name` (a binary or an atom), incarnation `vsn`.
    pub fn new(name: NodeName, vsn: u64) -> Self {
        Self { name, vsn }
    }

    /// Erlang's term order of `{name, vsn}`: an atom name before a
    /// binary one, names by their bytes, then the vsn.
    #[must_use]
    pub fn erl_cmp(&self, other: &Self) -> Ordering {
        name_cmp(&self.name, &other.name).then(self.vsn.cmp(&other.vsn))
    }
}

/// Term order of node names: atoms (class "atom") before binaries (class
/// "bitstring"); within a class, by UTF-8 bytes.
fn name_cmp(a: &NodeName, b: &NodeName) -> Ordering {
    match (a, b) {
        (NodeName::Atom(_), NodeName::Binary(_)) => Ordering::Less,
        (NodeName::Binary(_), NodeName::Atom(_)) => Ordering::Greater,
        _ => a.text().as_bytes().cmp(b.text().as_bytes()),
    }
}

/// A dot: `{replica_ref, clock}`, the `clock`-th event (1, 2, 3, ...) of
/// `replica`. Every track, untrack and update consumes dots of the
/// replica that makes it; a value is stored under the dot that added it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    /// Whose event.
    pub replica: ReplicaRef,
    /// Which event of that replica.
    pub clock: u64,
}

impl Tag {
    /// The `clock`-th dot of `replica`.
    pub fn new(replica: ReplicaRef, clock: u64) -> Self {
        Self { replica, clock }
    }

    /// Erlang's term order of `{replica_ref, clock}`.
    #[must_use]
    pub fn erl_cmp(&self, other: &Self) -> Ordering {
        self.replica
            .erl_cmp(&other.replica)
            .then(self.clock.cmp(&other.clock))
    }
}

/// A causal context, `%{replica_ref => clock}`: every dot `(r, c)` with
/// `c <= clock` of `r` has been seen. The pairs are in the frame's order
/// (decoded), or in the order they were built; [`TrackerFrame::canonicalize`]
/// sorts them as OTP writes them.
pub type Context = Vec<(ReplicaRef, u64)>;

/// `%{replica_ref => MapSet.t(tag)}`: per replica, the dots seen that are
/// not yet contiguous with the context (or, in a delta, the dots the
/// delta creates and removes, other replicas' removed dots included).
pub type Clouds = Vec<(ReplicaRef, MapSet<Tag>)>;

/// `%{tag => {pid, topic, key, meta}}`: the live values, by the dot that
/// added them.
pub type Values = Vec<(Tag, Presence)>;

/// The shape of an Elixir `MapSet` on the wire. Both shapes interoperate
/// (Elixir 1.14's `MapSet` has clauses for both; 1.15 and later match
/// `%MapSet{map: map}`, which ignores an extra `version` key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MapSetForm {
    /// `%{__struct__: MapSet, map: %{elem => []}, version: 2}`: Elixir
    /// 1.14 and earlier (every Elixir frame of the captures).
    Versioned,
    /// `%{__struct__: MapSet, map: %{elem => []}}`: Elixir 1.15 and later
    /// (`:sets` v2). What a Rust replica sends by default; the captures'
    /// Python replica sent it to Elixir 1.14, which took it.
    #[default]
    Unversioned,
}

/// An Elixir `MapSet`: its members (each a key of the struct's `map`,
/// with `[]` as value) and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSet<T> {
    /// The members, in the frame's order when decoded.
    pub members: Vec<T>,
    /// With or without `version: 2`.
    pub form: MapSetForm,
}

impl<T> MapSet<T> {
    /// A set of `members` in `form`.
    pub fn new(members: Vec<T>, form: MapSetForm) -> Self {
        Self { members, form }
    }
}

/// A pid as `NEW_PID_EXT` carries it. Part of a presence's identity
/// `{topic, pid, key}`, and otherwise opaque: the tracker never sends to,
/// links or monitors a remote pid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pid {
    /// The node atom's text (`phx-a@127.0.0.1`; `nonode@nohost` for a
    /// VM that is not distributed).
    pub node: String,
    /// The process id word.
    pub id: u32,
    /// The serial word.
    pub serial: u32,
    /// The node's creation (0 for `nonode@nohost`).
    pub creation: u32,
}

impl Pid {
    /// The pid node atom of a replica that is not a BEAM node, named
    /// `replica_name`: `"<replica_name>@staff-pubsub.invalid"`. A pid is
    /// part of a presence's identity on every node, and `untrack(pid)` or
    /// a local process exit on an Elixir node removes every presence of
    /// pids equal to its own, remote ones included: the atom must be one
    /// no BEAM node uses (never `nonode@nohost` nor an Elixir node's
    /// name). The `.invalid` host is reserved (RFC 2606), so no node runs
    /// there, and a message an application sends to such a pid is
    /// dropped after a failed connection attempt.
    #[must_use]
    pub fn node_for_replica(replica_name: &str) -> String {
        format!("{replica_name}@staff-pubsub.invalid")
    }

    /// A pid of a replica that is not a BEAM node: `node` (see
    /// [`Pid::node_for_replica`]), a distinct `id` per tracked
    /// connection, serial 0 and creation 1, as the README of the captures
    /// recommends.
    pub fn of_replica(node: impl Into<String>, id: u32) -> Self {
        Self {
            node: node.into(),
            id,
            serial: 0,
            creation: 1,
        }
    }
}

/// A term kept as the bytes that encode it (External Term Format, no
/// version byte), validated: what the tracker carries without reading it
/// (a transfer's reference, a presence's metadata). It costs its encoded
/// size and is written back byte for byte; [`RawTerm::to_term`] reads it.
/// Two raw terms are equal when their bytes are (the same atom written as
/// `ATOM_EXT` and as `SMALL_ATOM_UTF8_EXT` differs).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawTerm(Box<[u8]>);

impl RawTerm {
    /// Validated bytes: the caller has checked they are one whole term.
    pub(super) fn from_validated(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    /// The bytes of one whole term (no version byte), validated.
    ///
    /// # Errors
    ///
    /// Not one term this codec reads ([`EtfError`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EtfError> {
        etf::validate(bytes)?;
        Ok(Self::from_validated(bytes))
    }

    /// `term`, encoded with its atoms in `atoms`.
    ///
    /// # Errors
    ///
    /// A term that cannot be encoded (an atom over 255 characters,
    /// nesting deeper than [`MAX_DEPTH`](crate::phoenix::MAX_DEPTH)).
    pub fn from_term(term: &Term, atoms: AtomEncoding) -> Result<Self, EtfError> {
        let mut out = Vec::new();
        etf::write_term(&mut out, term, atoms, 0)?;
        Ok(Self(out.into()))
    }

    /// The encoded bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The term, read into an owned tree (which may take up to about 40
    /// times the encoded size for a term of many tiny elements).
    ///
    /// # Errors
    ///
    /// None for a raw term of this codec (its bytes were validated); the
    /// `Result` is the reader's.
    pub fn to_term(&self) -> Result<Term, EtfError> {
        Ok(Term::read_owned(&self.0, 0)?.0)
    }
}

impl fmt::Debug for RawTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_term() {
            Ok(term) => write!(f, "RawTerm({term:?})"),
            Err(_) => write!(f, "RawTerm({:?})", self.0),
        }
    }
}

/// A presence's metadata: a map, in practice with atom keys (`phx_ref`,
/// `phx_ref_prev` and the application's keys), kept as its encoded bytes
/// ([`RawTerm`]): a meta costs its size on the wire, and is read on
/// demand ([`Meta::get_str`], [`Meta::to_pairs`]).
///
/// Invariant: the raw term is a map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Meta(RawTerm);

impl Meta {
    /// A validated raw term that is a map.
    pub(super) fn from_raw(raw: RawTerm) -> Self {
        Self(raw)
    }

    /// A meta of `pairs` in the order given (see
    /// [`TrackerFrame::canonicalize`] for OTP's), atoms in `atoms`.
    ///
    /// # Errors
    ///
    /// A term that cannot be encoded (see [`RawTerm::from_term`]).
    pub fn from_pairs(pairs: Vec<(Term, Term)>, atoms: AtomEncoding) -> Result<Self, EtfError> {
        Ok(Self(RawTerm::from_term(&Term::Map(pairs), atoms)?))
    }

    /// A meta from a JSON object, as Elixir would hold it: the object's
    /// keys as atoms (in term order, as OTP writes a small map), strings
    /// as binaries, `null` as `nil`, nested objects as maps with binary
    /// keys. `None` when `json` is not an object or cannot be encoded (a
    /// key over 255 characters, nesting too deep).
    #[must_use]
    pub fn from_json(json: &serde_json::Value, atoms: AtomEncoding) -> Option<Self> {
        if !json.is_object() {
            return None;
        }
        let mut out = Vec::new();
        etf::write_json(&mut out, json, true, 0).ok()?;
        let meta = Self(RawTerm(out.into()));
        match atoms {
            AtomEncoding::Latin1 => Some(meta),
            // write_json writes OTP 25's atoms: rewritten.
            AtomEncoding::Utf8 => Self::from_pairs(meta.to_pairs().ok()?, atoms).ok(),
        }
    }

    /// The encoded map.
    #[must_use]
    pub fn raw(&self) -> &RawTerm {
        &self.0
    }

    /// The pairs, read into owned terms, in the encoded order.
    ///
    /// # Errors
    ///
    /// None for a meta of this codec (see [`RawTerm::to_term`]).
    pub fn to_pairs(&self) -> Result<Vec<(Term, Term)>, EtfError> {
        match self.0.to_term()? {
            Term::Map(pairs) => Ok(pairs),
            // The invariant: a meta is a map.
            _ => Err(EtfError::UnsupportedTag(0)),
        }
    }

    /// The value of the atom key `key` when it is a UTF-8 binary
    /// (`get_str("phx_ref")`), read in place without allocating.
    #[must_use]
    pub fn get_str(&self, key: &str) -> Option<&str> {
        let TermRef::Map { arity, items } = etf::view(self.0.as_bytes(), 0).ok()? else {
            return None;
        };
        let mut items = etf::Items::new(items, arity.saturating_mul(2));
        while let (Some(k), Some(value)) = (items.next_term().ok()?, items.next_term().ok()?) {
            if matches!(k, TermRef::Atom(atom) if atom.is(key)) {
                return match value {
                    TermRef::Binary(bytes) => std::str::from_utf8(bytes).ok(),
                    _ => None,
                };
            }
        }
        None
    }
}

/// A tracked presence, `{pid, topic, key, meta}`. Its identity on every
/// node is `{topic, pid, key}`: the same key under two pids (two devices)
/// is two presences.
///
/// The key is kept as its encoded bytes ([`RawTerm`], hashable, costing
/// its wire size). Bytes are the term for binaries (`Phoenix.Presence`'s
/// keys) and integers (OTP and this codec write the one minimal form); an
/// atom, or a term holding one, is written as `ATOM_EXT` by OTP 25 and
/// earlier and as `SMALL_ATOM_UTF8_EXT` by OTP 26 and later, so an atom
/// key relayed by nodes of both kinds can arrive in two byte forms
/// ([`RawTerm::to_term`] compares as terms).
#[derive(Clone, Debug, PartialEq)]
pub struct Presence {
    /// The tracked process.
    pub pid: Pid,
    /// The topic (a UTF-8 binary).
    pub topic: String,
    /// The key: any term, a binary for `Phoenix.Presence`; compared by
    /// its encoded bytes (see [`Presence`]).
    pub key: RawTerm,
    /// The metadata map, as encoded.
    pub meta: Meta,
}

/// `%Phoenix.Tracker.State{mode: ...}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateMode {
    /// `:delta`: a heartbeat's delta or a delta generation.
    Delta,
    /// `:normal`: the first element of a full-state `transfer_ack`.
    Normal,
}

/// A replica's status in a full state's `replicas` map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaStatus {
    /// `:up`.
    Up,
    /// `:down` (possibly stale forever: receivers ignore this map).
    Down,
}

/// `%Phoenix.Tracker.State{}` as it travels: a map of ten atom keys,
/// `__struct__` and the nine fields (`pids` is always `nil` and `delta`
/// always `:unset` on the wire; they are not kept, and written so).
///
/// | field | delta form | full form |
/// |---|---|---|
/// | `mode` | [`StateMode::Delta`] | [`StateMode::Normal`] |
/// | `context` | empty | the sender's, limited to the requester's keys |
/// | `clouds` | dots created and removed (also other replicas') | the sender's, limited |
/// | `values` | `Some`: the live adds | `None` (`nil`; the values travel beside it) |
/// | `range` | `{start, end}` of the sender's own clock | `{%{}, %{}}` |
/// | `replicas` | empty | the sender's statuses |
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The sender's ref.
    pub replica: ReplicaRef,
    /// Delta or full.
    pub mode: StateMode,
    /// The causal context.
    pub context: Context,
    /// The clouds.
    pub clouds: Clouds,
    /// The values (`None`: `nil`, the full form).
    pub values: Option<Values>,
    /// `{start_context, end_context}`.
    pub range: (Context, Context),
    /// `%{replica_ref => :up | :down}`.
    pub replicas: Vec<(ReplicaRef, ReplicaStatus)>,
}

impl State {
    /// A delta, as a heartbeat or a delta `transfer_ack` carries it:
    /// `context: %{}`, `replicas: %{}`.
    pub fn delta(
        replica: ReplicaRef,
        clouds: Clouds,
        values: Values,
        range: (Context, Context),
    ) -> Self {
        Self {
            replica,
            mode: StateMode::Delta,
            context: Vec::new(),
            clouds,
            values: Some(values),
            range,
            replicas: Vec::new(),
        }
    }

    /// The state of a full-state `transfer_ack` (its values travel beside
    /// it, [`TransferPayload::State`]): `values: nil`, `range: {%{}, %{}}`.
    pub fn full(
        replica: ReplicaRef,
        context: Context,
        clouds: Clouds,
        replicas: Vec<(ReplicaRef, ReplicaStatus)>,
    ) -> Self {
        Self {
            replica,
            mode: StateMode::Normal,
            context,
            clouds,
            values: None,
            range: (Vec::new(), Vec::new()),
            replicas,
        }
    }
}

/// `{replica_ref, context}`: a sender's clock, the output of
/// `State.clocks/1` (replicas the sender marks down are left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clocks {
    /// The sender.
    pub replica: ReplicaRef,
    /// Its context.
    pub context: Context,
}

/// What a `transfer_ack` carries.
#[derive(Clone, Debug, PartialEq)]
pub enum TransferPayload {
    /// A delta generation covering the requester's context: a
    /// [`StateMode::Delta`] state.
    Delta(State),
    /// The entire state: `{%State{mode: :normal, values: nil}, values}`.
    /// The values include the requester's own (a quirk of
    /// `Phoenix.Tracker.Shard`).
    State {
        /// The state, `values: nil`.
        state: State,
        /// Every value whose replica is in the requester's context.
        values: Values,
    },
}

/// A tracker message: `{:pub, kind, ...}`, the fifth element of the
/// envelope.
#[derive(Clone, Debug, PartialEq)]
pub enum TrackerMessage {
    /// `{:pub, :heartbeat, ref, :empty | delta, clocks}`, broadcast
    /// (`:except` the sender) every broadcast period with a delta, and
    /// empty after `max_silent_periods` quiet ones.
    Heartbeat {
        /// The sender.
        replica: ReplicaRef,
        /// The delta (`None`: `:empty`).
        delta: Option<State>,
        /// The sender's clocks.
        clocks: Clocks,
    },
    /// `{:pub, :transfer_req, ref, requester, clocks}`, sent `:only` to
    /// the replica asked, by name.
    TransferReq {
        /// Opaque (`make_ref()` from Elixir): copied into the ack, never read.
        reference: RawTerm,
        /// The requester.
        replica: ReplicaRef,
        /// The requester's clocks, which list every replica it wants data from.
        clocks: Clocks,
    },
    /// `{:pub, :transfer_ack, ref, sender, payload}`, sent `:only` to the
    /// requester.
    TransferAck {
        /// The request's reference, echoed.
        reference: RawTerm,
        /// The sender.
        replica: ReplicaRef,
        /// A delta or the entire state.
        payload: TransferPayload,
    },
    /// `{:pub, :graceful_permdown, ref}`, broadcast: the sender leaves for
    /// good, its presences are leaves at once.
    GracefulPermdown {
        /// The replica leaving.
        replica: ReplicaRef,
    },
}

impl TrackerMessage {
    /// The kind's atom: `heartbeat`, `transfer_req`, `transfer_ack` or
    /// `graceful_permdown`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            TrackerMessage::Heartbeat { .. } => "heartbeat",
            TrackerMessage::TransferReq { .. } => "transfer_req",
            TrackerMessage::TransferAck { .. } => "transfer_ack",
            TrackerMessage::GracefulPermdown { .. } => "graceful_permdown",
        }
    }

    /// The replica that sent the message.
    #[must_use]
    pub fn sender(&self) -> &ReplicaRef {
        match self {
            TrackerMessage::Heartbeat { replica, .. }
            | TrackerMessage::TransferReq { replica, .. }
            | TrackerMessage::TransferAck { replica, .. }
            | TrackerMessage::GracefulPermdown { replica } => replica,
        }
    }
}

/// A `phoenix_pubsub_redis` frame carrying a tracker message:
/// `{3, mode, node, topic, message, Phoenix.PubSub}`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackerFrame {
    /// `:except` (heartbeat, graceful_permdown) or `:only` (transfers).
    pub mode: FrameMode,
    /// The sender (`:except`) or the target (`:only`).
    pub node: NodeName,
    /// The shard topic.
    pub topic: String,
    /// The message.
    pub message: TrackerMessage,
    /// How the frame's atoms are written: decoded from its `:pub` atom,
    /// and used to write every atom of the frame (an opaque term's own
    /// atoms, such as a reference's node, keep their bytes).
    pub atoms: AtomEncoding,
}
