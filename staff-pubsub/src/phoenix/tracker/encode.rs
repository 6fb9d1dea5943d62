//! Writing tracker frames as `term_to_binary/1` writes them.

use crate::phoenix::etf::{self, AtomEncoding, EtfError, Term};
use crate::phoenix::frame::{self, FrameMode, NodeName};

use super::decode::TrackerError;
use super::types::{
    Clocks, Context, MapSet, MapSetForm, Meta, Pid, Presence, RawTerm, ReplicaRef, ReplicaStatus,
    State, StateMode, Tag, TrackerFrame, TrackerMessage, TransferPayload,
};

impl From<EtfError> for TrackerError {
    fn from(error: EtfError) -> Self {
        match error {
            EtfError::Encode(what) => TrackerError::Encode(what),
            EtfError::TooDeep => TrackerError::Encode("a term nested too deep"),
            _ => TrackerError::Encode("a term that cannot be written"),
        }
    }
}

/// Encodes a tracker frame: `{3, mode, node, topic, {:pub, ...},
/// Phoenix.PubSub}`, with every atom in `frame.atoms`, every map's pairs
/// in the order held, the node name in its form, and compressed with zlib
/// at `compression_level` (0: not; 1..=9, only when that is smaller, as
/// `term_to_binary(term, compressed: level)`).
///
/// A frame decoded by [`decode_tracker_frame`](super::decode_tracker_frame)
/// encodes to its own bytes (see the module's "Round trip" for the
/// exceptions). For a frame this node sends, build it with
/// [`TrackerFrame::broadcast`] or [`TrackerFrame::direct`], which put its
/// maps in the order OTP writes them.
///
/// # Errors
///
/// [`TrackerError::Encode`]: an atom (node name, pid node, meta atom)
/// longer than 255 characters, a container over 2^32 items, a meta
/// nested deeper than [`MAX_DEPTH`](crate::phoenix::MAX_DEPTH).
pub fn encode_tracker_frame(
    frame: &TrackerFrame,
    compression_level: u32,
) -> Result<Vec<u8>, TrackerError> {
    let mut writer = Writer {
        out: Vec::with_capacity(256),
        atoms: frame.atoms,
    };
    writer.message(&frame.message)?;
    Ok(frame::assemble_as(
        frame.mode,
        frame.node.text(),
        frame.node.form(),
        &frame.topic,
        &writer.out,
        compression_level.min(9),
        frame.atoms,
    )?)
}

impl TrackerFrame {
    /// A frame this node broadcasts (`heartbeat`, `graceful_permdown`):
    /// `:except` its own name `me` (as the other nodes will see it: the
    /// name of its replica refs), on `topic`, with its maps in OTP's
    /// order ([`TrackerFrame::canonicalize`]).
    pub fn broadcast(
        me: NodeName,
        topic: impl Into<String>,
        message: TrackerMessage,
        atoms: AtomEncoding,
    ) -> Self {
        let mut frame = Self {
            mode: FrameMode::Except,
            node: me,
            topic: topic.into(),
            message,
            atoms,
        };
        frame.canonicalize();
        frame
    }

    /// A frame this node sends to one replica (`transfer_req`,
    /// `transfer_ack`): `:only` `target`, which must be the name of the
    /// target's replica ref exactly as received (an atom stays an atom:
    /// an Elixir node never takes a frame addressed to its name in the
    /// other form).
    pub fn direct(
        target: NodeName,
        topic: impl Into<String>,
        message: TrackerMessage,
        atoms: AtomEncoding,
    ) -> Self {
        let mut frame = Self {
            mode: FrameMode::Only,
            node: target,
            topic: topic.into(),
            message,
            atoms,
        };
        frame.canonicalize();
        frame
    }

    /// Sorts every map of the message (contexts, clouds and their
    /// MapSets, values, replicas, metas and the maps inside them) into
    /// Erlang's term order, the order in which OTP 25 writes a map of up
    /// to 32 keys; a meta is rewritten with its atoms in the frame's
    /// [`AtomEncoding`] (a meta that cannot be read or written back is
    /// left as it is). OTP writes a
    /// larger map in its internal hash order, which this does not
    /// reproduce: such a map is still read the same by every decoder.
    pub fn canonicalize(&mut self) {
        let atoms = self.atoms;
        match &mut self.message {
            TrackerMessage::Heartbeat { delta, clocks, .. } => {
                if let Some(delta) = delta {
                    sort_state(delta, atoms);
                }
                sort_context(&mut clocks.context);
            }
            TrackerMessage::TransferReq { clocks, .. } => sort_context(&mut clocks.context),
            TrackerMessage::TransferAck { payload, .. } => match payload {
                TransferPayload::Delta(state) => sort_state(state, atoms),
                TransferPayload::State { state, values } => {
                    sort_state(state, atoms);
                    sort_values(values, atoms);
                }
            },
            TrackerMessage::GracefulPermdown { .. } => {}
        }
    }
}

impl TrackerMessage {
    /// `{:pub, :heartbeat, me, delta | :empty, {me, context}}`: `delta`
    /// is `None` for an idle heartbeat.
    pub fn heartbeat(me: ReplicaRef, delta: Option<State>, context: Context) -> Self {
        TrackerMessage::Heartbeat {
            replica: me.clone(),
            delta,
            clocks: Clocks {
                replica: me,
                context,
            },
        }
    }

    /// `{:pub, :transfer_req, reference, me, {me, context}}`: `context`
    /// must list every replica data is wanted from (with 0 when nothing
    /// of it is known yet), and `reference` is any term the answer echoes
    /// ([`reference`](super::reference)).
    pub fn transfer_req(reference: RawTerm, me: ReplicaRef, context: Context) -> Self {
        TrackerMessage::TransferReq {
            reference,
            replica: me.clone(),
            clocks: Clocks {
                replica: me,
                context,
            },
        }
    }

    /// `{:pub, :transfer_ack, reference, me, payload}`, `reference` as the
    /// request carried it.
    pub fn transfer_ack(reference: RawTerm, me: ReplicaRef, payload: TransferPayload) -> Self {
        TrackerMessage::TransferAck {
            reference,
            replica: me,
            payload,
        }
    }

    /// `{:pub, :graceful_permdown, me}`.
    pub fn graceful_permdown(me: ReplicaRef) -> Self {
        TrackerMessage::GracefulPermdown { replica: me }
    }
}

/// A reference for a `transfer_req` this node sends, as `make_ref()`
/// writes one (`NEWER_REFERENCE_EXT`): `node` (the node's pid atom,
/// [`Pid::node_for_replica`]), creation 1, and three id words (a counter
/// in the first). Elixir only echoes it.
///
/// # Errors
///
/// [`TrackerError::Encode`]: `node` is longer than 255 characters.
pub fn reference(node: &str, ids: [u32; 3], atoms: AtomEncoding) -> Result<RawTerm, TrackerError> {
    let term = etf::newer_reference(node, 1, &ids, atoms)?;
    Ok(RawTerm::from_term(&term, atoms)?)
}

fn sort_context(context: &mut Context) {
    context.sort_by(|a, b| a.0.erl_cmp(&b.0));
}

fn sort_values(values: &mut [(Tag, Presence)], atoms: AtomEncoding) {
    values.sort_by(|a, b| a.0.erl_cmp(&b.0));
    for (_, presence) in values {
        sort_meta(&mut presence.meta, atoms);
    }
}

fn sort_meta(meta: &mut Meta, atoms: AtomEncoding) {
    fn sort_term(term: &mut Term) {
        match term {
            Term::Map(pairs) => {
                for (key, value) in pairs.iter_mut() {
                    sort_term(key);
                    sort_term(value);
                }
                pairs.sort_by(|a, b| a.0.erl_cmp(&b.0));
            }
            Term::List(items, tail) => {
                items.iter_mut().for_each(sort_term);
                if let Some(tail) = tail {
                    sort_term(tail);
                }
            }
            Term::Tuple(items) => items.iter_mut().for_each(sort_term),
            _ => {}
        }
    }
    let Ok(mut pairs) = meta.to_pairs() else {
        return;
    };
    for (key, value) in &mut pairs {
        sort_term(key);
        sort_term(value);
    }
    pairs.sort_by(|a, b| a.0.erl_cmp(&b.0));
    if let Ok(sorted) = Meta::from_pairs(pairs, atoms) {
        *meta = sorted;
    }
}

fn sort_state(state: &mut State, atoms: AtomEncoding) {
    sort_context(&mut state.context);
    sort_context(&mut state.range.0);
    sort_context(&mut state.range.1);
    state.clouds.sort_by(|a, b| a.0.erl_cmp(&b.0));
    for (_, cloud) in &mut state.clouds {
        cloud.members.sort_by(Tag::erl_cmp);
    }
    if let Some(values) = &mut state.values {
        sort_values(values, atoms);
    }
    state.replicas.sort_by(|a, b| a.0.erl_cmp(&b.0));
}

struct Writer {
    out: Vec<u8>,
    atoms: AtomEncoding,
}

impl Writer {
    fn atom(&mut self, name: &str) -> Result<(), TrackerError> {
        Ok(etf::write_atom_as(&mut self.out, name, self.atoms)?)
    }

    fn tuple(&mut self, arity: u8) {
        etf::write_small_tuple(&mut self.out, arity);
    }

    fn uint(&mut self, value: u64) {
        etf::write_int(&mut self.out, i128::from(value));
    }

    fn map(&mut self, arity: usize) -> Result<(), TrackerError> {
        Ok(etf::write_map_header(&mut self.out, arity)?)
    }

    fn name(&mut self, name: &NodeName) -> Result<(), TrackerError> {
        match name {
            NodeName::Binary(text) => etf::write_binary(&mut self.out, text.as_bytes())?,
            NodeName::Atom(text) => self.atom(text)?,
        }
        Ok(())
    }

    fn replica_ref(&mut self, replica: &ReplicaRef) -> Result<(), TrackerError> {
        self.tuple(2);
        self.name(&replica.name)?;
        self.uint(replica.vsn);
        Ok(())
    }

    fn tag(&mut self, tag: &Tag) -> Result<(), TrackerError> {
        self.tuple(2);
        self.replica_ref(&tag.replica)?;
        self.uint(tag.clock);
        Ok(())
    }

    fn context(&mut self, context: &[(ReplicaRef, u64)]) -> Result<(), TrackerError> {
        self.map(context.len())?;
        for (replica, clock) in context {
            self.replica_ref(replica)?;
            self.uint(*clock);
        }
        Ok(())
    }

    fn clocks(&mut self, clocks: &Clocks) -> Result<(), TrackerError> {
        self.tuple(2);
        self.replica_ref(&clocks.replica)?;
        self.context(&clocks.context)
    }

    /// `%{__struct__: MapSet, map: %{tag => []}[, version: 2]}`: the keys
    /// in term order, as OTP writes a struct's.
    fn mapset(&mut self, set: &MapSet<Tag>) -> Result<(), TrackerError> {
        self.map(match set.form {
            MapSetForm::Versioned => 3,
            MapSetForm::Unversioned => 2,
        })?;
        self.atom("__struct__")?;
        self.atom("Elixir.MapSet")?;
        self.atom("map")?;
        self.map(set.members.len())?;
        for tag in &set.members {
            self.tag(tag)?;
            etf::write_nil(&mut self.out);
        }
        if set.form == MapSetForm::Versioned {
            self.atom("version")?;
            self.uint(2);
        }
        Ok(())
    }

    fn pid(&mut self, pid: &Pid) -> Result<(), TrackerError> {
        Ok(etf::write_pid(
            &mut self.out,
            &pid.node,
            pid.id,
            pid.serial,
            pid.creation,
            self.atoms,
        )?)
    }

    fn values(&mut self, values: &[(Tag, Presence)]) -> Result<(), TrackerError> {
        self.map(values.len())?;
        for (tag, presence) in values {
            self.tag(tag)?;
            self.tuple(4);
            self.pid(&presence.pid)?;
            etf::write_binary(&mut self.out, presence.topic.as_bytes())?;
            self.out.extend_from_slice(presence.key.as_bytes());
            self.out.extend_from_slice(presence.meta.raw().as_bytes());
        }
        Ok(())
    }

    /// The struct's ten keys in term order (OTP 25's order):
    /// `__struct__, clouds, context, delta, mode, pids, range, replica,
    /// replicas, values`.
    fn state(&mut self, state: &State) -> Result<(), TrackerError> {
        self.map(10)?;
        self.atom("__struct__")?;
        self.atom("Elixir.Phoenix.Tracker.State")?;
        self.atom("clouds")?;
        self.map(state.clouds.len())?;
        for (replica, cloud) in &state.clouds {
            self.replica_ref(replica)?;
            self.mapset(cloud)?;
        }
        self.atom("context")?;
        self.context(&state.context)?;
        self.atom("delta")?;
        self.atom("unset")?;
        self.atom("mode")?;
        self.atom(match state.mode {
            StateMode::Delta => "delta",
            StateMode::Normal => "normal",
        })?;
        self.atom("pids")?;
        self.atom("nil")?;
        self.atom("range")?;
        self.tuple(2);
        self.context(&state.range.0)?;
        self.context(&state.range.1)?;
        self.atom("replica")?;
        self.replica_ref(&state.replica)?;
        self.atom("replicas")?;
        self.map(state.replicas.len())?;
        for (replica, status) in &state.replicas {
            self.replica_ref(replica)?;
            self.atom(match status {
                ReplicaStatus::Up => "up",
                ReplicaStatus::Down => "down",
            })?;
        }
        self.atom("values")?;
        match &state.values {
            Some(values) => self.values(values),
            None => self.atom("nil"),
        }
    }

    fn message(&mut self, message: &TrackerMessage) -> Result<(), TrackerError> {
        match message {
            TrackerMessage::Heartbeat {
                replica,
                delta,
                clocks,
            } => {
                self.tuple(5);
                self.atom("pub")?;
                self.atom("heartbeat")?;
                self.replica_ref(replica)?;
                match delta {
                    Some(delta) => self.state(delta)?,
                    None => self.atom("empty")?,
                }
                self.clocks(clocks)
            }
            TrackerMessage::TransferReq {
                reference,
                replica,
                clocks,
            } => {
                self.tuple(5);
                self.atom("pub")?;
                self.atom("transfer_req")?;
                self.out.extend_from_slice(reference.as_bytes());
                self.replica_ref(replica)?;
                self.clocks(clocks)
            }
            TrackerMessage::TransferAck {
                reference,
                replica,
                payload,
            } => {
                self.tuple(5);
                self.atom("pub")?;
                self.atom("transfer_ack")?;
                self.out.extend_from_slice(reference.as_bytes());
                self.replica_ref(replica)?;
                match payload {
                    TransferPayload::Delta(state) => self.state(state),
                    TransferPayload::State { state, values } => {
                        self.tuple(2);
                        self.state(state)?;
                        self.values(values)
                    }
                }
            }
            TrackerMessage::GracefulPermdown { replica } => {
                self.tuple(3);
                self.atom("pub")?;
                self.atom("graceful_permdown")?;
                self.replica_ref(replica)
            }
        }
    }
}
