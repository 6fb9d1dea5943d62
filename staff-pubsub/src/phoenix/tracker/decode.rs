//! Reading tracker frames: the envelope through [`frame`](crate::phoenix::frame),
//! then the message, walking the validated term lazily.

use std::collections::HashSet;
use std::hash::Hash;

use crate::phoenix::etf::{self, AtomEncoding, Items, TermRef};
use crate::phoenix::frame::{self, FrameError, NodeName, NodeRef};

use super::types::{
    Clocks, Clouds, Context, MapSet, MapSetForm, Meta, Pid, Presence, RawTerm, ReplicaRef,
    ReplicaStatus, State, StateMode, Tag, TrackerFrame, TrackerMessage, TransferPayload, Values,
};

/// Why a frame is not a tracker frame this codec takes: it is skipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackerError {
    /// Too large, not a valid term, not a `phoenix_pubsub_redis` v3
    /// frame, or another dispatcher than `Phoenix.PubSub`.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame whose message is not `{:pub, kind, ...}` of a tracker kind
    /// (an application's broadcast on the same channel): not a tracker
    /// message at all.
    #[error("not a tracker message: {0}")]
    NotTracker(&'static str),
    /// A tracker message (`{:pub, :heartbeat | :transfer_req |
    /// :transfer_ack | :graceful_permdown, ...}`) whose shape is not the
    /// tracker's: hostile, or from a version this codec does not know.
    #[error("malformed {kind}: {what}")]
    Malformed {
        /// The message kind.
        kind: &'static str,
        /// What does not fit.
        what: &'static str,
    },
    /// A message this codec cannot write (an atom longer than 255
    /// characters, a map over 2^32 pairs).
    #[error("tracker message not encoded: {0}")]
    Encode(&'static str),
}

/// What does not fit, inside a message of a known kind.
type Bad = &'static str;
type R<T> = Result<T, Bad>;

/// At most this many items are reserved ahead of a container's stated
/// count: the rest grows with what is actually read, so that a count can
/// never reserve more than the bytes it is read from.
const RESERVE: usize = 64;

/// Decodes one frame of the Redis channel as a tracker frame.
///
/// Every tracker message kind is read in full, with all its typed parts:
/// `{3, mode, node, topic, {:pub, kind, ...}, Phoenix.PubSub}`. Frames
/// larger than `max_frame_size` (compressed ones before inflating), terms
/// nested deeper than [`MAX_DEPTH`](crate::phoenix::MAX_DEPTH), and
/// lengths larger than the bytes that follow are refused before anything
/// is allocated for them; what is allocated is proportional to the
/// frame's size.
///
/// The topic is not checked: a caller takes the frames of its shard
/// topics ([`parse_shard_topic`](super::parse_shard_topic)) and skips the
/// rest before decoding them.
///
/// # Errors
///
/// [`TrackerError::Frame`] for the envelope, [`TrackerError::NotTracker`]
/// for another message, [`TrackerError::Malformed`] for a tracker message
/// of the wrong shape: a missing `State` field, a pid that is not
/// `NEW_PID_EXT`, a binary node name or topic that is not UTF-8, a clock
/// or vsn that is not a non-negative integer of 64 bits, a key twice in a
/// context, cloud, values or replicas map.
pub fn decode_tracker_frame(
    frame: &[u8],
    max_frame_size: usize,
) -> Result<TrackerFrame, TrackerError> {
    let body = frame::body(frame, max_frame_size)?;
    let header = frame::header(&body)?;
    header.check_dispatcher()?;
    let (message, atoms) = message(header.message)?;
    let node = match header.node {
        NodeRef::Binary(bytes) => NodeName::Binary(
            std::str::from_utf8(bytes)
                .map_err(|_| TrackerError::Malformed {
                    kind: message.kind(),
                    what: "the envelope's node name is a binary that is not UTF-8",
                })?
                .to_owned(),
        ),
        NodeRef::Atom(atom) => NodeName::Atom(atom.text().into_owned()),
    };
    Ok(TrackerFrame {
        mode: header.mode,
        node,
        topic: header.topic.to_owned(),
        message,
        atoms,
    })
}

/// `{:pub, kind, ...}`, and how its atoms are written (by its `:pub`).
fn message(term: TermRef<'_>) -> Result<(TrackerMessage, AtomEncoding), TrackerError> {
    let TermRef::Tuple { arity, items } = term else {
        return Err(TrackerError::NotTracker("not a tuple"));
    };
    if !(3..=5).contains(&arity) {
        return Err(TrackerError::NotTracker("not a {:pub, kind, ...} tuple"));
    }
    let mut items = Items::new(items, arity);
    let not_pub = TrackerError::NotTracker("the first element is not :pub");
    let atoms = match items.next_term().map_err(FrameError::from)? {
        Some(TermRef::Atom(atom)) if atom.is("pub") => {
            if atom.is_utf8() {
                AtomEncoding::Utf8
            } else {
                AtomEncoding::Latin1
            }
        }
        _ => return Err(not_pub),
    };
    let Some(TermRef::Atom(kind)) = items.next_term().map_err(FrameError::from)? else {
        return Err(TrackerError::NotTracker("the kind is not an atom"));
    };
    let (kind, want) = if kind.is("heartbeat") {
        ("heartbeat", 5)
    } else if kind.is("transfer_req") {
        ("transfer_req", 5)
    } else if kind.is("transfer_ack") {
        ("transfer_ack", 5)
    } else if kind.is("graceful_permdown") {
        ("graceful_permdown", 3)
    } else {
        return Err(TrackerError::NotTracker("not a tracker message kind"));
    };
    let malformed = |what| TrackerError::Malformed { kind, what };
    if arity != want {
        return Err(malformed("wrong tuple size"));
    }
    let message = (|| -> R<TrackerMessage> {
        Ok(match kind {
            "heartbeat" => {
                let replica = replica_ref(next(&mut items)?)?;
                let delta = match next(&mut items)? {
                    TermRef::Atom(atom) if atom.is("empty") => None,
                    other => Some(state(other)?),
                };
                let clocks = clocks(next(&mut items)?)?;
                TrackerMessage::Heartbeat {
                    replica,
                    delta,
                    clocks,
                }
            }
            "transfer_req" => TrackerMessage::TransferReq {
                reference: next_raw(&mut items)?.1,
                replica: replica_ref(next(&mut items)?)?,
                clocks: clocks(next(&mut items)?)?,
            },
            "transfer_ack" => {
                let reference = next_raw(&mut items)?.1;
                let replica = replica_ref(next(&mut items)?)?;
                let payload = match next(&mut items)? {
                    TermRef::Tuple { arity: 2, items } => {
                        let mut items = Items::new(items, 2);
                        TransferPayload::State {
                            state: state(next(&mut items)?)?,
                            values: values(next(&mut items)?)?,
                        }
                    }
                    other @ TermRef::Map { .. } => TransferPayload::Delta(state(other)?),
                    _ => return Err("the payload is neither a State nor {State, values}"),
                };
                TrackerMessage::TransferAck {
                    reference,
                    replica,
                    payload,
                }
            }
            _ => TrackerMessage::GracefulPermdown {
                replica: replica_ref(next(&mut items)?)?,
            },
        })
    })()
    .map_err(malformed)?;
    Ok((message, atoms))
}

fn next<'a>(items: &mut Items<'a>) -> R<TermRef<'a>> {
    // The term was validated whole: an item that cannot be read is a
    // container shorter than its count, which validation refuses.
    items
        .next_term()
        .map_err(|_| "an item cannot be read")?
        .ok_or("a tuple or map is shorter than its count")
}

/// The next item as a [`RawTerm`], and the item.
fn next_raw<'a>(items: &mut Items<'a>) -> R<(TermRef<'a>, RawTerm)> {
    let (term, bytes) = items
        .next_with_bytes()
        .map_err(|_| "an item cannot be read")?
        .ok_or("a tuple is shorter than its arity")?;
    // Part of the validated frame: one whole term.
    Ok((term, RawTerm::from_validated(bytes)))
}

fn pair<'a>(term: TermRef<'a>, what: Bad) -> R<(TermRef<'a>, TermRef<'a>)> {
    let TermRef::Tuple { arity: 2, items } = term else {
        return Err(what);
    };
    let mut items = Items::new(items, 2);
    Ok((next(&mut items)?, next(&mut items)?))
}

fn uint(term: TermRef<'_>, what: Bad) -> R<u64> {
    match term {
        TermRef::Int(value) => u64::try_from(value).map_err(|_| what),
        TermRef::UInt(value) => Ok(value),
        _ => Err(what),
    }
}

fn name(term: TermRef<'_>) -> R<NodeName> {
    match term {
        TermRef::Binary(bytes) => std::str::from_utf8(bytes)
            .map(|text| NodeName::Binary(text.to_owned()))
            .map_err(|_| "a replica name is a binary that is not UTF-8"),
        TermRef::Atom(atom) => Ok(NodeName::Atom(atom.text().into_owned())),
        _ => Err("a replica name is neither a binary nor an atom"),
    }
}

fn replica_ref(term: TermRef<'_>) -> R<ReplicaRef> {
    let (name_term, vsn) = pair(term, "a replica ref is not {name, vsn}")?;
    Ok(ReplicaRef {
        name: name(name_term)?,
        vsn: uint(vsn, "a vsn is not a non-negative 64-bit integer")?,
    })
}

fn tag(term: TermRef<'_>) -> R<Tag> {
    let (replica, clock) = pair(term, "a tag is not {replica_ref, clock}")?;
    Ok(Tag {
        replica: replica_ref(replica)?,
        clock: uint(clock, "a clock is not a non-negative 64-bit integer")?,
    })
}

fn map_items<'a>(term: TermRef<'a>, what: Bad) -> R<(usize, Items<'a>)> {
    match term {
        TermRef::Map { arity, items } => Ok((arity, Items::new(items, arity.saturating_mul(2)))),
        _ => Err(what),
    }
}

/// The pairs of a map, each read by `entry`; a key twice is refused.
fn pairs<'a, K: Eq + Hash, V>(
    term: TermRef<'a>,
    what: Bad,
    mut entry: impl FnMut(TermRef<'a>, TermRef<'a>) -> R<(K, V)>,
) -> R<Vec<(K, V)>> {
    let (arity, mut items) = map_items(term, what)?;
    let mut out = Vec::with_capacity(arity.min(RESERVE));
    for _ in 0..arity {
        let key = next(&mut items)?;
        let value = next(&mut items)?;
        out.push(entry(key, value)?);
    }
    unique(&out)?;
    Ok(out)
}

/// Refuses a key twice: OTP's `binary_to_term` refuses such a map.
fn unique<K: Eq + Hash, V>(pairs: &[(K, V)]) -> R<()> {
    if pairs.len() > 1 {
        let mut seen = HashSet::with_capacity(pairs.len());
        if !pairs.iter().all(|(key, _)| seen.insert(key)) {
            return Err("a map holds a key twice");
        }
    }
    Ok(())
}

fn context(term: TermRef<'_>) -> R<Context> {
    pairs(term, "a context is not a map", |key, value| {
        Ok((
            replica_ref(key)?,
            uint(value, "a clock is not a non-negative 64-bit integer")?,
        ))
    })
}

fn clocks(term: TermRef<'_>) -> R<Clocks> {
    let (replica, context_term) = pair(term, "clocks are not {replica_ref, context}")?;
    Ok(Clocks {
        replica: replica_ref(replica)?,
        context: context(context_term)?,
    })
}

fn mapset(term: TermRef<'_>) -> R<MapSet<Tag>> {
    let (arity, mut items) = map_items(term, "a cloud is not a MapSet")?;
    let mut members = None;
    let mut form = MapSetForm::Unversioned;
    let mut is_mapset = false;
    for _ in 0..arity {
        let key = next(&mut items)?;
        let value = next(&mut items)?;
        let TermRef::Atom(key) = key else {
            return Err("a MapSet has a key that is not an atom");
        };
        if key.is("__struct__") {
            is_mapset = matches!(value, TermRef::Atom(module) if module.is("Elixir.MapSet"));
        } else if key.is("map") {
            if members.is_some() {
                return Err("a MapSet has two maps");
            }
            let tags = pairs(
                value,
                "a MapSet's map is not a map",
                |member, value| match value {
                    TermRef::List { count: 0, .. } => Ok((tag(member)?, ())),
                    _ => Err("a MapSet member's value is not []"),
                },
            )?;
            members = Some(tags.into_iter().map(|(tag, ())| tag).collect());
        } else if key.is("version") {
            if !matches!(value, TermRef::Int(2)) {
                return Err("a MapSet's version is not 2");
            }
            form = MapSetForm::Versioned;
        } else {
            return Err("a MapSet has a key other than __struct__, map and version");
        }
    }
    if !is_mapset {
        return Err("a cloud is not a %MapSet{}");
    }
    Ok(MapSet {
        members: members.ok_or("a MapSet has no map")?,
        form,
    })
}

fn clouds(term: TermRef<'_>) -> R<Clouds> {
    pairs(term, "clouds are not a map", |key, value| {
        Ok((replica_ref(key)?, mapset(value)?))
    })
}

fn pid(term: TermRef<'_>) -> R<Pid> {
    match term {
        TermRef::Opaque(etf::PID_TAG, body) => {
            let (node, id, serial, creation) =
                etf::read_pid(body).map_err(|_| "a pid cannot be read")?;
            Ok(Pid {
                node: node.text().into_owned(),
                id,
                serial,
                creation,
            })
        }
        _ => Err("a pid is not a NEW_PID_EXT"),
    }
}

fn presence(term: TermRef<'_>) -> R<Presence> {
    let TermRef::Tuple { arity: 4, items } = term else {
        return Err("a value is not {pid, topic, key, meta}");
    };
    let mut items = Items::new(items, 4);
    let pid = pid(next(&mut items)?)?;
    let topic = match next(&mut items)? {
        TermRef::Binary(bytes) => std::str::from_utf8(bytes)
            .map_err(|_| "a topic is a binary that is not UTF-8")?
            .to_owned(),
        _ => return Err("a topic is not a binary"),
    };
    let key = next_raw(&mut items)?.1;
    let meta = match next_raw(&mut items)? {
        (TermRef::Map { .. }, raw) => Meta::from_raw(raw),
        _ => return Err("a meta is not a map"),
    };
    Ok(Presence {
        pid,
        topic,
        key,
        meta,
    })
}

fn values(term: TermRef<'_>) -> R<Values> {
    pairs(term, "values are not a map", |key, value| {
        Ok((tag(key)?, presence(value)?))
    })
}

fn replicas(term: TermRef<'_>) -> R<Vec<(ReplicaRef, ReplicaStatus)>> {
    pairs(term, "replicas are not a map", |key, value| {
        let status = match value {
            TermRef::Atom(atom) if atom.is("up") => ReplicaStatus::Up,
            TermRef::Atom(atom) if atom.is("down") => ReplicaStatus::Down,
            _ => return Err("a replica status is neither :up nor :down"),
        };
        Ok((replica_ref(key)?, status))
    })
}

/// The fields of `%Phoenix.Tracker.State{}` this codec reads, by index.
const FIELDS: [&str; 8] = [
    "__struct__",
    "replica",
    "mode",
    "context",
    "clouds",
    "values",
    "range",
    "replicas",
];

fn state(term: TermRef<'_>) -> R<State> {
    let (arity, mut items) = map_items(term, "a state is not a map")?;
    let mut fields: [Option<TermRef<'_>>; 8] = [None; 8];
    for _ in 0..arity {
        let key = next(&mut items)?;
        let value = next(&mut items)?;
        let TermRef::Atom(key) = key else {
            return Err("a State has a key that is not an atom");
        };
        // `pids` (nil) and `delta` (:unset) are not read by a receiver;
        // keys of a later version are passed over.
        if let Some(index) = FIELDS.iter().position(|field| key.is(field)) {
            if fields[index].replace(value).is_some() {
                return Err("a State has a field twice");
            }
        }
    }
    let [Some(module), Some(replica), Some(mode), Some(context_term), Some(clouds_term), Some(values_term), Some(range), Some(replicas_term)] =
        fields
    else {
        return Err("a State lacks one of replica, mode, context, clouds, values, range, replicas, __struct__");
    };
    if !matches!(module, TermRef::Atom(module) if module.is("Elixir.Phoenix.Tracker.State")) {
        return Err("a state's __struct__ is not Phoenix.Tracker.State");
    }
    let mode = match mode {
        TermRef::Atom(atom) if atom.is("delta") => StateMode::Delta,
        TermRef::Atom(atom) if atom.is("normal") => StateMode::Normal,
        _ => return Err("a state's mode is neither :delta nor :normal"),
    };
    let values = match values_term {
        TermRef::Atom(atom) if atom.is("nil") => None,
        other => Some(values(other)?),
    };
    let (start, end) = pair(range, "a range is not {context, context}")?;
    Ok(State {
        replica: replica_ref(replica)?,
        mode,
        context: context(context_term)?,
        clouds: clouds(clouds_term)?,
        values,
        range: (context(start)?, context(end)?),
        replicas: replicas(replicas_term)?,
    })
}
