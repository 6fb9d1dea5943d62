//! The frame codec: `{3, mode, node, topic, message, dispatcher}` in
//! Erlang's term format, read lazily and written as OTP 25 writes it.

use serde::Serialize;

use crate::spec::SpecMessage;

use super::etf::{self, EtfError, PayloadDeserializer, Term, TermRef};

/// The `phoenix_pubsub_redis` frame version this transport reads and writes.
pub const FRAME_VERSION: u8 = 3;

/// The largest frame read or written, unless
/// [`PhoenixConfig::max_frame_size`](super::PhoenixConfig::max_frame_size) says otherwise: 1 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1024 * 1024;

/// The dispatcher of every frame this transport takes and writes.
pub(super) const DISPATCHER: &str = "Elixir.Phoenix.PubSub";

/// Which nodes take a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameMode {
    /// `:except`: every node but the one named (the sender, which
    /// delivered locally already).
    Except,
    /// `:only`: only the node named (`direct_broadcast`).
    Only,
}

/// A node name as a frame carries it: a binary (a `node_name: "..."`
/// option, and every Rust node's own name) or an atom (the `node()`
/// default, or an atom option). Phoenix never takes an atom to equal a
/// binary.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeName {
    /// A binary.
    Binary(String),
    /// An atom.
    Atom(String),
}

impl NodeName {
    /// The name's text, whatever its form.
    #[must_use]
    pub fn text(&self) -> &str {
        match self {
            NodeName::Binary(name) | NodeName::Atom(name) => name,
        }
    }

    /// The name's form.
    #[must_use]
    pub fn form(&self) -> NameForm {
        match self {
            NodeName::Binary(_) => NameForm::Binary,
            NodeName::Atom(_) => NameForm::Atom,
        }
    }
}

/// How a node name is written in a frame: see
/// [`PhoenixConfig::default_name_form`](super::PhoenixConfig::default_name_form).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NameForm {
    /// An atom: Phoenix's default (`node_name` defaults to `node()`, such
    /// as `:"app@host"`), and the only form phoenix_pubsub_redis 3.1.0 as
    /// released accepts in its options.
    #[default]
    Atom,
    /// A binary (`node_name: "phx-a"`, accepted by phoenix_pubsub_redis
    /// 3.0.x and by commits after 3.1.0; every Rust node's own name).
    Binary,
}

/// A decoded frame of this spec: [`decode_frame`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Frame<M> {
    /// `:except` or `:only`.
    pub mode: FrameMode,
    /// The node the mode refers to.
    pub node: NodeName,
    /// The topic.
    pub topic: String,
    /// The message.
    pub message: M,
}

/// Why a frame was not decoded (skipped) or not encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Larger than the maximum frame size.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The frame's size (inflated, when it was compressed and this is
        /// known).
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// Not a well-formed Erlang term, or not one this reader takes.
    #[error("not a valid Erlang term: {0}")]
    Term(#[from] EtfError),
    /// A term that is not `{3, :except | :only, node, topic, message, dispatcher}`.
    #[error("not a phoenix_pubsub_redis v3 frame: {0}")]
    NotAFrame(&'static str),
    /// Another dispatcher than `Phoenix.PubSub` (such as the
    /// `Phoenix.Channel.Server` of an endpoint broadcast).
    #[error("dispatcher {0} is not Phoenix.PubSub")]
    Dispatcher(String),
    /// A message that is not `{scope, event, map}` of this spec.
    #[error("not a message of this spec: {0}")]
    NotThisSpec(String),
    /// A message of this spec whose payload does not fit its event.
    #[error("payload of {event}: {error}")]
    Payload {
        /// The event.
        event: String,
        /// What does not fit.
        error: String,
    },
    /// A message this node cannot encode.
    #[error("message not encoded: {0}")]
    Encode(String),
}

/// A parsed frame whose message is not read yet.
pub(super) struct Header<'a> {
    pub(super) mode: FrameMode,
    pub(super) node: NodeRef<'a>,
    pub(super) topic: &'a str,
    pub(super) message: TermRef<'a>,
    pub(super) dispatcher: etf::AtomRef<'a>,
}

impl Header<'_> {
    /// Phoenix.PubSub's own dispatcher, not another one (the
    /// `Phoenix.Channel.Server` of an endpoint broadcast).
    pub(super) fn check_dispatcher(&self) -> Result<(), FrameError> {
        if self.dispatcher.is(DISPATCHER) {
            return Ok(());
        }
        let name = self.dispatcher.text();
        let name = name.strip_prefix("Elixir.").unwrap_or(&name);
        Err(FrameError::Dispatcher(name.chars().take(64).collect()))
    }
}

pub(super) enum NodeRef<'a> {
    Binary(&'a [u8]),
    Atom(etf::AtomRef<'a>),
}

impl NodeRef<'_> {
    /// Whether this is the binary `name` (an atom never is).
    pub(super) fn is_binary(&self, name: &str) -> bool {
        matches!(self, NodeRef::Binary(bytes) if *bytes == name.as_bytes())
    }

    /// Whether this is `name` in either form.
    pub(super) fn is_named(&self, name: &str) -> bool {
        match self {
            NodeRef::Binary(bytes) => *bytes == name.as_bytes(),
            NodeRef::Atom(atom) => atom.is(name),
        }
    }

    /// The name's text and form; `None` for a binary that is not UTF-8
    /// (no Rust caller can name it).
    pub(super) fn named(&self) -> Option<(std::borrow::Cow<'_, str>, NameForm)> {
        match self {
            NodeRef::Binary(bytes) => std::str::from_utf8(bytes)
                .ok()
                .map(|text| (std::borrow::Cow::Borrowed(text), NameForm::Binary)),
            NodeRef::Atom(atom) => Some((atom.text(), NameForm::Atom)),
        }
    }

    fn owned(&self) -> NodeName {
        match self {
            NodeRef::Binary(bytes) => NodeName::Binary(String::from_utf8_lossy(bytes).into_owned()),
            NodeRef::Atom(atom) => NodeName::Atom(atom.text().into_owned()),
        }
    }
}

/// Validates the frame's term, then reads its six elements.
pub(super) fn header(body: &[u8]) -> Result<Header<'_>, FrameError> {
    etf::validate(body)?;
    let TermRef::Tuple { arity: 6, items } = etf::view(body, 0)? else {
        return Err(FrameError::NotAFrame("not a 6-tuple"));
    };
    let mut items = etf::Items::new(items, 6);
    let mut next = || -> Result<TermRef<'_>, FrameError> {
        items
            .next_term()?
            .ok_or(FrameError::NotAFrame("not a 6-tuple"))
    };
    if !matches!(next()?, TermRef::Int(version) if version == i64::from(FRAME_VERSION)) {
        return Err(FrameError::NotAFrame("version is not 3"));
    }
    let mode = match next()? {
        TermRef::Atom(atom) if atom.is("except") => FrameMode::Except,
        TermRef::Atom(atom) if atom.is("only") => FrameMode::Only,
        _ => return Err(FrameError::NotAFrame("mode is not :except or :only")),
    };
    let node = match next()? {
        TermRef::Binary(bytes) => NodeRef::Binary(bytes),
        TermRef::Atom(atom) => NodeRef::Atom(atom),
        _ => {
            return Err(FrameError::NotAFrame(
                "node name is not a binary or an atom",
            ))
        }
    };
    let topic = match next()? {
        TermRef::Binary(bytes) => {
            std::str::from_utf8(bytes).map_err(|_| FrameError::NotAFrame("topic is not UTF-8"))?
        }
        _ => return Err(FrameError::NotAFrame("topic is not a binary")),
    };
    let message = next()?;
    let TermRef::Atom(dispatcher) = next()? else {
        return Err(FrameError::NotAFrame("dispatcher is not an atom"));
    };
    Ok(Header {
        mode,
        node,
        topic,
        message,
        dispatcher,
    })
}

/// Reads `{scope, event, map}` of `M`'s spec.
pub(super) fn message<M: SpecMessage>(term: TermRef<'_>) -> Result<M, FrameError> {
    let TermRef::Tuple { arity: 3, items } = term else {
        return Err(FrameError::NotThisSpec(
            "not a {scope, event, payload} tuple".to_owned(),
        ));
    };
    let mut items = etf::Items::new(items, 3);
    let mut next = || -> Result<TermRef<'_>, FrameError> {
        items
            .next_term()?
            .ok_or(FrameError::NotAFrame("short tuple"))
    };
    let scope = next()?;
    if !matches!(scope, TermRef::Atom(atom) if atom.is(M::SCOPE)) {
        return Err(FrameError::NotThisSpec(format!(
            "scope is not :{}",
            M::SCOPE
        )));
    }
    let TermRef::Atom(event) = next()? else {
        return Err(FrameError::NotThisSpec("event is not an atom".to_owned()));
    };
    let Some(&event) = M::EVENTS.iter().find(|name| event.is(name)) else {
        let name: String = event.text().chars().take(64).collect();
        return Err(FrameError::NotThisSpec(format!(
            "no event :{name} in scope :{}",
            M::SCOPE
        )));
    };
    let payload = next()?;
    if !matches!(payload, TermRef::Map { .. }) {
        return Err(FrameError::Payload {
            event: event.to_owned(),
            error: "not a map".to_owned(),
        });
    }
    M::deserialize_payload(event, PayloadDeserializer(payload)).map_err(|error| {
        FrameError::Payload {
            event: event.to_owned(),
            error: error.0.chars().take(200).collect(),
        }
    })
}

pub(super) fn check_size(frame: &[u8], max: usize) -> Result<(), FrameError> {
    if frame.len() > max {
        return Err(FrameError::TooLarge {
            size: frame.len(),
            max,
        });
    }
    Ok(())
}

pub(super) fn body(frame: &[u8], max: usize) -> Result<std::borrow::Cow<'_, [u8]>, FrameError> {
    check_size(frame, max)?;
    Ok(etf::body(frame, max)?)
}

/// Decodes one frame (a Redis message of the channel) whose message is of
/// `M`'s spec.
///
/// # Errors
///
/// [`FrameError`]: too large (checked first, and for a compressed frame
/// before inflating), not a term, not a frame, another dispatcher, not a
/// message of this spec, or a payload that does not fit its event (an
/// invalid UUID, a missing field).
pub fn decode_frame<M: SpecMessage>(
    frame: &[u8],
    max_frame_size: usize,
) -> Result<Frame<M>, FrameError> {
    let body = body(frame, max_frame_size)?;
    let header = header(&body)?;
    header.check_dispatcher()?;
    Ok(Frame {
        mode: header.mode,
        node: header.node.owned(),
        topic: header.topic.to_owned(),
        message: message(header.message)?,
    })
}

/// Decodes any term (a frame, or anything else written by
/// `:erlang.term_to_binary/1,2`), to inspect it or compare two frames.
///
/// Unlike [`decode_frame`], which reads lazily, this builds the whole
/// tree: a hostile term of `max_size` bytes may take up to about 100 times that in
/// memory. Meant for tools and tests, not for a channel's every message.
///
/// # Errors
///
/// Too large, or not a term this reader takes ([`EtfError`]).
pub fn decode_term(bytes: &[u8], max_size: usize) -> Result<Term, FrameError> {
    let body = body(bytes, max_size)?;
    etf::validate(&body)?;
    Ok(Term::read_owned(&body, 0)?.0)
}

/// The term `{scope, event, payload}` of `message`, encoded (no version
/// byte): the spec's scope and event atoms, the payload's fields as atom
/// keys.
pub(super) fn encode_message<M: Serialize + SpecMessage>(
    message: &M,
) -> Result<Vec<u8>, FrameError> {
    let value =
        super::value::to_value(message).map_err(|error| FrameError::Encode(error.to_string()))?;
    let field = |name: &str| value.get(name);
    let scope = field("scope").and_then(serde_json::Value::as_str);
    if scope != Some(M::SCOPE) {
        return Err(FrameError::Encode(format!(
            "the message's scope is not {}",
            M::SCOPE
        )));
    }
    let event = field("event")
        .and_then(serde_json::Value::as_str)
        .and_then(|event| M::EVENTS.iter().find(|name| **name == event))
        .ok_or_else(|| FrameError::Encode("the message's event is not of its spec".to_owned()))?;
    let payload = field("payload")
        .filter(|payload| payload.is_object())
        .ok_or_else(|| FrameError::Encode("the payload is not a struct".to_owned()))?;
    let mut out = Vec::with_capacity(128);
    etf::write_small_tuple(&mut out, 3);
    etf::write_atom(&mut out, M::SCOPE)?;
    etf::write_atom(&mut out, event)?;
    etf::write_json(&mut out, payload, true, 0)?;
    Ok(out)
}

/// One frame around an encoded message term.
pub(super) fn assemble(
    mode: FrameMode,
    node: &str,
    node_form: NameForm,
    topic: &str,
    message: &[u8],
    compression_level: u32,
) -> Result<Vec<u8>, FrameError> {
    assemble_as(
        mode,
        node,
        node_form,
        topic,
        message,
        compression_level,
        etf::AtomEncoding::Latin1,
    )
}

/// [`assemble`], with the envelope's atoms (mode, an atom node name,
/// dispatcher) written in `atoms`.
pub(super) fn assemble_as(
    mode: FrameMode,
    node: &str,
    node_form: NameForm,
    topic: &str,
    message: &[u8],
    compression_level: u32,
    atoms: etf::AtomEncoding,
) -> Result<Vec<u8>, FrameError> {
    let mut term = Vec::with_capacity(message.len() + node.len() + topic.len() + 48);
    etf::write_small_tuple(&mut term, 6);
    etf::write_int(&mut term, i128::from(FRAME_VERSION));
    etf::write_atom_as(
        &mut term,
        match mode {
            FrameMode::Except => "except",
            FrameMode::Only => "only",
        },
        atoms,
    )?;
    match node_form {
        NameForm::Binary => etf::write_binary(&mut term, node.as_bytes())?,
        NameForm::Atom => etf::write_atom_as(&mut term, node, atoms)?,
    }
    etf::write_binary(&mut term, topic.as_bytes())?;
    term.extend_from_slice(message);
    etf::write_atom_as(&mut term, DISPATCHER, atoms)?;
    if compression_level == 0 {
        term.insert(0, etf::VERSION);
        return Ok(term);
    }
    let mut frame = Vec::with_capacity(term.len() + 1);
    etf::finish(&term, compression_level, &mut frame)?;
    Ok(frame)
}

/// Encodes `message` as the frame a Phoenix node would publish for it on
/// `topic`: `{3, mode, node, topic, {scope, event, payload}, Phoenix.PubSub}`,
/// with `node` as a binary ([`encode_frame_named`] for an atom), compressed at `compression_level` (0: not)
/// when that makes it smaller. Payload fields become atom keys in Erlang's
/// order (so that, uncompressed, the bytes equal OTP 25's
/// `term_to_binary`); `None` becomes `nil`, strings and UUIDs binaries,
/// nested maps binary-keyed maps.
///
/// # Errors
///
/// [`FrameError::Encode`]: the message does not serialize as its spec's
/// `{"scope","event","payload"}` form with a struct payload.
pub fn encode_frame<M: Serialize + SpecMessage>(
    mode: FrameMode,
    node: &str,
    topic: &str,
    message: &M,
    compression_level: u32,
) -> Result<Vec<u8>, FrameError> {
    encode_frame_as(
        mode,
        node,
        NameForm::Binary,
        topic,
        message,
        compression_level,
    )
}

/// As [`encode_frame`], with the node name in the form `node` has: an
/// atom as a Phoenix node started without a `node_name` (or with an atom
/// one) writes it.
///
/// # Errors
///
/// As [`encode_frame`], and [`FrameError::Term`] for an atom name longer
/// than 255 characters.
pub fn encode_frame_named<M: Serialize + SpecMessage>(
    mode: FrameMode,
    node: &NodeName,
    topic: &str,
    message: &M,
    compression_level: u32,
) -> Result<Vec<u8>, FrameError> {
    encode_frame_as(
        mode,
        node.text(),
        node.form(),
        topic,
        message,
        compression_level,
    )
}

/// [`encode_frame`] and [`encode_frame_named`]: `node` in `form`.
fn encode_frame_as<M: Serialize + SpecMessage>(
    mode: FrameMode,
    node: &str,
    form: NameForm,
    topic: &str,
    message: &M,
    compression_level: u32,
) -> Result<Vec<u8>, FrameError> {
    let message = encode_message(message)?;
    assemble(mode, node, form, topic, &message, compression_level.min(9))
}
