//! The wire of `Phoenix.Tracker` (phoenix_pubsub 2.x), the presence CRDT
//! under `Phoenix.Presence`, as it travels over `phoenix_pubsub_redis`:
//! typed messages, decoded from and encoded to the exact bytes of the
//! Redis channel's frames, shard topics, and `:erlang.phash2/2`.
//!
//! This module is the codec only: the CRDT's merge, liveness (up, down,
//! permdown) and transfer policy are elsewhere ([`crate::presence`]),
//! and a server's trackers speak through it when given an Elixir tracker
//! ([`PhoenixConfig::presence`](crate::phoenix::PhoenixConfig::presence)).
//!
//! # Topics and shards
//!
//! A tracker module `T` with `pool_size: N` runs `N` shards; shard `n` is
//! one replica with its own vsn, on the topic
//! `phx_presence:Elixir.<T>_shard<n>` ([`shard_topic`],
//! [`parse_shard_topic`]). A topic's presences live in shard
//! `:erlang.phash2(topic, N)` ([`shard_for_topic`], [`phash2`],
//! [`phash2_range`]). The default `pool_size` is 1.
//!
//! # Frames
//!
//! Every frame is `{3, mode, node, topic, {:pub, kind, ...}, Phoenix.PubSub}`
//! ([`TrackerFrame`]); the message ([`TrackerMessage`]) is one of:
//!
//! | kind | term | mode, envelope node |
//! |---|---|---|
//! | heartbeat | `{:pub, :heartbeat, ref, :empty \| delta, {ref, context}}` | `:except` the sender |
//! | transfer_req | `{:pub, :transfer_req, reference, ref, {ref, context}}` | `:only` the replica asked |
//! | transfer_ack | `{:pub, :transfer_ack, reference, ref, delta \| {state, values}}` | `:only` the requester |
//! | graceful_permdown | `{:pub, :graceful_permdown, ref}` | `:except` the sender |
//!
//! where `ref` is a [`ReplicaRef`] `{name, vsn}`, a context is
//! `%{ref => clock}` ([`Context`]), and a delta or state is
//! `%Phoenix.Tracker.State{}` ([`State`]) with its clouds
//! (`%{ref => MapSet.t(tag)}`, [`Clouds`], [`MapSet`] in either
//! [`MapSetForm`]) and values (`%{tag => {pid, topic, key, meta}}`,
//! [`Values`], [`Presence`], [`Pid`], [`Meta`]). A transfer_ack carries a
//! delta generation ([`TransferPayload::Delta`]) or the entire state
//! ([`TransferPayload::State`]); both occur and both are read.
//!
//! # Decoding, and hostile input
//!
//! [`decode_tracker_frame`] validates the whole term first (lengths
//! checked against the bytes left before anything is allocated, nesting
//! bounded by [`MAX_DEPTH`](crate::phoenix::MAX_DEPTH), compressed frames
//! bounded before inflating), then reads it into the typed message.
//! Nothing panics on any input. What it allocates is proportional to the
//! frame's size, bounded by `max_frame_size`: what the tracker carries
//! without reading it (a presence's key and meta, a transfer's reference)
//! stays the bytes it came as ([`RawTerm`], [`Meta`]), and the typed parts
//! (refs, dots, contexts, pids) cost a few times their encoded size (at
//! most about 5 times for a frame of nothing but the smallest context
//! entries, dots or values; 1.2 times for the captured frames). A frame that is
//! not a tracker frame is a typed [`TrackerError`], to be skipped and
//! counted: [`TrackerError::NotTracker`] for another message on the
//! channel, [`TrackerError::Malformed`] for a tracker message of the wrong
//! shape.
//!
//! Tolerated on input and not kept: a `State`'s `pids` and `delta` (which
//! receivers never read) and keys a later version may add. Refused: a
//! `State` without one of the fields receivers read, a pid other than
//! `NEW_PID_EXT`, a non-UTF-8 binary name or topic, clocks or vsns that
//! are not non-negative 64-bit integers, a key twice in a map this codec
//! types (OTP's own `binary_to_term` refuses such a map), a `MapSet`
//! member whose value is not `[]`, a meta that is not a map.
//!
//! # Encoding, and the round trip
//!
//! [`encode_tracker_frame`] writes a frame as `term_to_binary/1` does:
//! integers in their smallest form (`SMALL_BIG_EXT` for a vsn), binaries,
//! small tuples, atoms in the frame's [`AtomEncoding`](crate::phoenix::AtomEncoding), every map's pairs
//! in the order the typed message holds them, and raw terms as their
//! bytes. Decoding keeps each map's order as the frame had it and records
//! the frame's atom encoding, so that **a decoded frame re-encodes to its
//! own bytes**: all 142 captured frames do, the Python replica's (OTP
//! 26-style atoms, maps in insertion order) included. What cannot
//! round-trip byte for byte, and is the same term instead:
//!
//! - a `State`'s keys are written in term order (OTP 25's, which every
//!   frame of the captures has); `pids` and `delta` are written as `nil`
//!   and `:unset`, and unknown keys are dropped;
//! - the atoms of the typed parts of a frame that mixes atom encodings are
//!   written in the one of its `:pub`.
//!
//! # This node's own frames
//!
//! [`TrackerFrame::broadcast`] (heartbeat, graceful_permdown) and
//! [`TrackerFrame::direct`] (transfer_req to a replica's name, transfer_ack
//! to the requester's name, each exactly as its ref carries it) build a
//! frame with its maps in the order OTP 25 writes them
//! ([`TrackerFrame::canonicalize`]); the messages come from
//! [`TrackerMessage::heartbeat`], [`TrackerMessage::transfer_req`],
//! [`TrackerMessage::transfer_ack`] and
//! [`TrackerMessage::graceful_permdown`]. What Elixir needs of them:
//!
//! - a `State` always has all ten keys (a missing one crashes the
//!   receiving shard): the typed [`State`] cannot lack one;
//! - the replica name may be a binary even when the Elixir nodes use
//!   atoms; it must be unique, and the vsn new on every restart;
//! - pids are identity: a replica that is not a BEAM node uses its own
//!   pid node atom ([`Pid::node_for_replica`], [`Pid::of_replica`]) with a
//!   distinct id per tracked connection, never `nonode@nohost` nor an
//!   Elixir node's name;
//! - a transfer_req's reference is opaque ([`reference()`] makes one as
//!   `make_ref()` would), and a transfer_ack echoes the request's;
//! - the metas have atom keys, `phx_ref` (and `phx_ref_prev` on update)
//!   among them, as `Phoenix.Presence` and its JavaScript client expect
//!   ([`Meta::from_json`] writes a JSON object's keys as atoms).
//!
//! ```
//! use staff_pubsub::phoenix::tracker::{
//!     decode_tracker_frame, encode_tracker_frame, shard_topic, ReplicaRef, TrackerFrame,
//!     TrackerMessage,
//! };
//! use staff_pubsub::phoenix::{AtomEncoding, NodeName, DEFAULT_MAX_FRAME_SIZE};
//!
//! let me = ReplicaRef::new(NodeName::Binary("rust-1".into()), 1_796_556_024_166_087);
//! let heartbeat = TrackerMessage::heartbeat(me.clone(), None, vec![(me.clone(), 0)]);
//! let frame = TrackerFrame::broadcast(
//!     me.name.clone(),
//!     shard_topic("MyApp.Tracker", 0),
//!     heartbeat,
//!     AtomEncoding::Latin1,
//! );
//! let bytes = encode_tracker_frame(&frame, 0).unwrap();
//! assert_eq!(decode_tracker_frame(&bytes, DEFAULT_MAX_FRAME_SIZE).unwrap(), frame);
//! ```

mod decode;
mod encode;
mod meta;
mod shard;
mod types;

pub use decode::{decode_tracker_frame, TrackerError};
pub use encode::{encode_tracker_frame, reference};
pub use shard::{
    parse_shard_topic, phash2, phash2_range, shard_for_topic, shard_topic, SHARD_TOPIC_PREFIX,
};
pub use types::{
    Clocks, Clouds, Context, MapSet, MapSetForm, Meta, Pid, Presence, RawTerm, ReplicaRef,
    ReplicaStatus, State, StateMode, Tag, TrackerFrame, TrackerMessage, TransferPayload, Values,
};

#[cfg(test)]
mod tests;
