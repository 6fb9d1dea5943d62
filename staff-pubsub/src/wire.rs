//! The envelope a network transport carries: versioned JSON that any
//! language can read.
//!
//! One broadcast is one envelope, whatever the number of topics:
//!
//! ```json
//! {"v":1,"origin":"node-a","instance":"5f0c3a9e17d2b846","mode":"except_origin","topics":["staff:teams","staff:team:019ab6a3-c1c6-748b-9697-6c080717373b"],"message":{"scope":"staff","event":"team_created","payload":{"uuid":"019ab6a3-c1c6-748b-9697-6c080717373b"}}}
//! ```
//!
//! - `v`: the format version, [`VERSION`]. A reader refuses any other.
//! - `origin`: the sending node's name.
//! - `instance` (optional): the sending server's random instance id, 16
//!   lower-case hex digits. Two live servers given the same name differ
//!   here: a node takes an envelope carrying its own name but another
//!   instance as one from another node (and reports the name clash). A
//!   publisher that is not a server leaves it out.
//! - `mode`: `"all"` (every node, the origin included), `"except_origin"`
//!   (every node but the origin, which dispatched locally already) or
//!   `"only"` (the node named by `target`, present only in that mode).
//! - `topics`: the topic strings the message reaches on every node.
//! - `message`: the message in its serde JSON form; for a spec made by
//!   `#[staff_events]`, `{"scope":..,"event":..,"payload":{..}}`.
//!
//! Readers ignore fields they do not know, so a later minor addition does
//! not need a new version. Nothing here knows about any engine: Redis and
//! later transports share this encoding.
//!
//! ```
//! use staff_pubsub::wire;
//! use staff_pubsub::transport::{Envelope, Mode};
//! use staff_pubsub::Topic;
//!
//! const ROOMS: Topic = Topic::new("chat:rooms");
//! let message = "hello".to_owned();
//! let envelope = Envelope {
//!     origin: "a",
//!     instance: Some(0x2a),
//!     mode: Mode::ExceptOrigin,
//!     topics: &[ROOMS],
//!     message: &message,
//! };
//! let bytes = wire::encode(&envelope, wire::DEFAULT_MAX_MESSAGE_SIZE)?;
//! assert_eq!(
//!     std::str::from_utf8(&bytes).unwrap(),
//!     r#"{"v":1,"origin":"a","instance":"000000000000002a","mode":"except_origin","topics":["chat:rooms"],"message":"hello"}"#
//! );
//!
//! let incoming = wire::decode(&bytes, wire::DEFAULT_MAX_MESSAGE_SIZE)?;
//! assert_eq!(incoming.instance(), Some(0x2a));
//! assert!(incoming.is_for("b", 7));
//! // Sent by node "a" itself: it dispatched locally already.
//! assert!(!incoming.is_for("a", 0x2a));
//! // Another server that is also named "a" takes it, and should report the clash.
//! assert!(incoming.is_for("a", 7));
//! assert!(incoming.is_name_conflict("a", 7));
//! assert_eq!(incoming.topics().collect::<Vec<_>>(), ["chat:rooms"]);
//! assert_eq!(incoming.message::<String>()?, "hello");
//! # Ok::<(), wire::WireError>(())
//! ```

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::topic::Topic;
use crate::transport::{Envelope, Mode};

/// The envelope format version this crate writes and reads.
pub const VERSION: u64 = 1;

/// The default most topics one received envelope may list: a generated
/// `broadcast_*` function lists a handful; an envelope with more is
/// refused.
pub const DEFAULT_MAX_TOPICS: usize = 1024;

/// The default largest encoded envelope, in bytes (1 MiB): larger ones are
/// refused when sent and skipped when received.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// Why an envelope could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The encoded envelope is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The bytes are not an envelope: not JSON, truncated, or a field of the
    /// wrong type.
    #[error("not an envelope: {0}")]
    Malformed(serde_json::Error),
    /// An envelope field is missing.
    #[error("not an envelope: field `{0}` is missing")]
    MissingField(&'static str),
    /// An envelope of a format version this node does not read.
    #[error(
        "envelope format version {found} is not supported (this node reads version {VERSION})"
    )]
    UnsupportedVersion {
        /// The version the envelope declares.
        found: u64,
    },
    /// The envelope lists more topics than the receiver (or sender) allows.
    #[error("envelope lists {count} topics, more than the maximum of {max}")]
    TooManyTopics {
        /// The number of topics listed.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The envelope does not belong where it arrived: on a NATS topic's
    /// subject, it lists other topics than that one; on the direct subject,
    /// it is not a direct (`only`) envelope.
    #[error("the envelope does not belong on the subject it arrived on")]
    Misrouted,
    /// The `instance` is not 16 hex digits.
    #[error("the envelope's `instance` is not 16 hex digits")]
    InvalidInstance,
    /// The `mode` is none of `all`, `except_origin`, `only`.
    #[error("unknown envelope mode `{0}`")]
    UnknownMode(String),
    /// The envelope is well formed, but its message is not a message of
    /// this node's type (an unknown event name, a missing payload field...).
    #[error("the message does not decode: {0}")]
    Message(serde_json::Error),
    /// The message could not be serialized (its `Serialize` implementation
    /// failed).
    #[error("the message does not encode: {0}")]
    Encode(serde_json::Error),
}

/// What goes on the wire, borrowed from an [`Envelope`]. Field order is the
/// documented one: `v` first.
#[derive(Serialize)]
struct Outgoing<'a, M> {
    v: u64,
    origin: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<Instance>,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(serialize_with = "topic_strings")]
    topics: &'a [Topic],
    message: &'a M,
}

/// An instance id in its wire form: 16 lower-case hex digits (a JSON
/// number would lose precision in JavaScript).
struct Instance(u64);

impl Serialize for Instance {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:016x}", self.0))
    }
}

fn topic_strings<S: Serializer>(topics: &&[Topic], serializer: S) -> Result<S::Ok, S::Error> {
    struct AsStr<'t>(&'t Topic);
    impl Serialize for AsStr<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self.0)
        }
    }
    serializer.collect_seq(topics.iter().map(AsStr))
}

/// Encodes `envelope` as the JSON bytes of one network message.
///
/// # Errors
///
/// [`WireError::TooLarge`] when the encoding is longer than `max_size`
/// bytes; [`WireError::Encode`] when the message does not serialize.
pub fn encode<M: Serialize>(
    envelope: &Envelope<'_, M>,
    max_size: usize,
) -> Result<Vec<u8>, WireError> {
    let (mode, target) = match envelope.mode {
        Mode::All => ("all", None),
        Mode::ExceptOrigin => ("except_origin", None),
        Mode::Only(node) => ("only", Some(node)),
    };
    let outgoing = Outgoing {
        v: VERSION,
        origin: envelope.origin,
        instance: envelope.instance.map(Instance),
        mode,
        target,
        topics: envelope.topics,
        message: envelope.message,
    };
    let bytes = serde_json::to_vec(&outgoing).map_err(WireError::Encode)?;
    if bytes.len() > max_size {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            max: max_size,
        });
    }
    Ok(bytes)
}

/// The first bytes of every envelope that [`encode`] writes for a broadcast
/// in [`Mode::ExceptOrigin`] from `origin` with instance id `instance`, up
/// to and including the comma after `mode`. A node that finds them at the
/// start of an envelope knows, without decoding it, that the envelope is
/// its own and not for it (the sender dispatched it at the call).
#[cfg(any(feature = "redis", feature = "nats"))]
pub(crate) fn own_prefix(origin: &str, instance: u64) -> Vec<u8> {
    let outgoing = Outgoing {
        v: VERSION,
        origin,
        instance: Some(Instance(instance)),
        mode: "except_origin",
        target: None,
        topics: &[],
        message: &(),
    };
    // A `&str`, a `u64` and unit always serialize; an empty prefix (never)
    // would only make the skip never apply.
    let mut bytes = serde_json::to_vec(&outgoing).unwrap_or_default();
    // The origin is an escaped JSON string: it cannot hold `,"topics":`,
    // whose quote would be escaped; the last one is the field's.
    let end = bytes
        .windows(10)
        .rposition(|window| window == b",\"topics\":")
        .map_or(0, |at| at + 1);
    bytes.truncate(end);
    bytes
}

/// The envelope as read: every field optional, so that the version can be
/// checked before anything else is required.
#[derive(Deserialize)]
struct Raw<'a> {
    v: Option<u64>,
    #[serde(borrow)]
    origin: Option<Cow<'a, str>>,
    #[serde(borrow)]
    instance: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mode: Option<Cow<'a, str>>,
    #[serde(borrow)]
    target: Option<Cow<'a, str>>,
    #[serde(borrow)]
    topics: Option<Vec<Cow<'a, str>>>,
    /// Missing: `None`; present, `null` included (the JSON form of `()`,
    /// of `None`, of a unit struct): `Some`.
    #[serde(borrow, default, deserialize_with = "present")]
    message: Option<&'a RawValue>,
}

/// A field that is there, whatever its value: `null` is a message too
/// (`Option`'s own deserialization would read it as a missing field).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// A decoded envelope whose message is still undecoded: check
/// [`mode`](Self::mode) first, then decode the [`message`](Self::message)
/// only if this node takes it. Borrows the received bytes.
#[derive(Debug)]
pub struct Incoming<'a> {
    origin: Cow<'a, str>,
    instance: Option<u64>,
    mode: WireMode<'a>,
    topics: Vec<Cow<'a, str>>,
    message: &'a RawValue,
}

#[derive(Debug)]
enum WireMode<'a> {
    All,
    ExceptOrigin,
    Only(Cow<'a, str>),
}

impl Incoming<'_> {
    /// The sending node.
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Which nodes should dispatch the message: see [`Mode::accepts`].
    #[must_use]
    pub fn mode(&self) -> Mode<'_> {
        match &self.mode {
            WireMode::All => Mode::All,
            WireMode::ExceptOrigin => Mode::ExceptOrigin,
            WireMode::Only(node) => Mode::Only(node),
        }
    }

    /// The sending server's instance id, if the envelope carries one.
    #[must_use]
    pub fn instance(&self) -> Option<u64> {
        self.instance
    }

    /// Whether the server named `me` with instance id `instance` should
    /// dispatch this envelope, per its [`mode`](Self::mode). The envelope
    /// counts as this server's own only when both the name and the
    /// instance id match (or, without an instance id, the name alone).
    #[must_use]
    pub fn is_for(&self, me: &str, instance: u64) -> bool {
        match self.mode() {
            Mode::All => true,
            Mode::ExceptOrigin => !self.is_own(me, instance),
            Mode::Only(node) => node == me,
        }
    }

    /// Whether another live server, with another instance id, sent this
    /// envelope under the name `me`: two nodes share one name.
    #[must_use]
    pub fn is_name_conflict(&self, me: &str, instance: u64) -> bool {
        self.origin() == me && self.instance.is_some_and(|sender| sender != instance)
    }

    fn is_own(&self, me: &str, instance: u64) -> bool {
        self.origin() == me && self.instance.is_none_or(|sender| sender == instance)
    }

    /// The topic strings the message reaches.
    pub fn topics(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.topics.iter().map(|topic| &**topic)
    }

    /// The message's JSON text, undecoded.
    #[must_use]
    pub fn message_json(&self) -> &str {
        self.message.get()
    }

    /// Decodes the message.
    ///
    /// # Errors
    ///
    /// [`WireError::Message`] when it is not a message of type `M`, such
    /// as an event name the spec does not have.
    pub fn message<M: DeserializeOwned>(&self) -> Result<M, WireError> {
        serde_json::from_str(self.message.get()).map_err(WireError::Message)
    }
}

/// Decodes the envelope in `bytes`, leaving its message undecoded.
///
/// Never panics, whatever the input.
///
/// # Errors
///
/// [`WireError::TooLarge`] when `bytes` is longer than `max_size` (checked
/// before anything is parsed); [`WireError::Malformed`] or
/// [`WireError::MissingField`] when the bytes are not an envelope (not
/// JSON, truncated, a field of the wrong type);
/// [`WireError::UnsupportedVersion`] for another format version;
/// [`WireError::UnknownMode`] for an unknown mode.
pub fn decode(bytes: &[u8], max_size: usize) -> Result<Incoming<'_>, WireError> {
    if bytes.len() > max_size {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            max: max_size,
        });
    }
    let raw: Raw<'_> = serde_json::from_slice(bytes).map_err(WireError::Malformed)?;
    let version = raw.v.ok_or(WireError::MissingField("v"))?;
    if version != VERSION {
        return Err(WireError::UnsupportedVersion { found: version });
    }
    let origin = raw.origin.ok_or(WireError::MissingField("origin"))?;
    let instance = match raw.instance {
        None => None,
        Some(hex) => Some(parse_instance(&hex).ok_or(WireError::InvalidInstance)?),
    };
    let mode = match raw.mode.ok_or(WireError::MissingField("mode"))?.as_ref() {
        "all" => WireMode::All,
        "except_origin" => WireMode::ExceptOrigin,
        "only" => WireMode::Only(raw.target.ok_or(WireError::MissingField("target"))?),
        other => return Err(WireError::UnknownMode(other.to_owned())),
    };
    Ok(Incoming {
        origin,
        instance,
        mode,
        topics: raw.topics.ok_or(WireError::MissingField("topics"))?,
        message: raw.message.ok_or(WireError::MissingField("message"))?,
    })
}

/// 16 hex digits, as [`Instance`] writes them (either case read).
fn parse_instance(hex: &str) -> Option<u64> {
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staff;
    use crate::Uuid;

    const MAX: usize = DEFAULT_MAX_MESSAGE_SIZE;

    fn membership() -> staff::Message {
        staff::Message::TeamMembership(
            staff::TeamMembershipEvent::TeamPersonAdded,
            staff::TeamMembership {
                uuid: Uuid::from_u128(1),
                team_uuid: Uuid::from_u128(2),
                staff_person_uuid: Uuid::from_u128(3),
            },
        )
    }

    fn topics() -> Vec<Topic> {
        vec![
            staff::topic_teams(),
            staff::topic_team(Uuid::from_u128(2)),
            staff::topic_people(),
            staff::topic_person(Uuid::from_u128(3)),
        ]
    }

    fn encoded(mode: Mode<'_>) -> Vec<u8> {
        let message = membership();
        let topics = topics();
        let envelope = Envelope {
            origin: "node-a",
            instance: None,
            mode,
            topics: &topics,
            message: &message,
        };
        encode(&envelope, MAX).unwrap()
    }

    /// A message whose JSON form is `null` (`()`, `None`, a unit struct)
    /// crosses: it is not taken for a missing message.
    #[test]
    fn a_null_message_is_a_message_and_a_missing_one_is_refused() {
        let topics = [Topic::new("chat:rooms")];
        let bytes = encode(
            &Envelope {
                origin: "node-a",
                instance: None,
                mode: Mode::All,
                topics: &topics,
                message: &(),
            },
            MAX,
        )
        .unwrap();
        let incoming = decode(&bytes, MAX).unwrap();
        assert_eq!(incoming.message_json(), "null");
        incoming.message::<()>().unwrap();
        assert_eq!(incoming.message::<Option<u8>>().unwrap(), None);

        let missing = br#"{"v":1,"origin":"a","mode":"all","topics":["chat:rooms"]}"#;
        assert!(matches!(
            decode(missing, MAX),
            Err(WireError::MissingField("message"))
        ));
    }

    /// `own_prefix` starts exactly the envelopes `is_for` refuses to their
    /// sender: its own `except_origin` ones, whatever the name holds.
    #[cfg(any(feature = "redis", feature = "nats"))]
    #[test]
    fn the_own_prefix_starts_exactly_the_senders_except_origin_envelopes() {
        let message = membership();
        let topics = topics();
        let names = [
            "node-a",
            "a",
            "ab",
            "q\"uote,\"topics\":[]",
            "back\\slash",
            "ünï",
            "",
        ];
        for me in names {
            let prefix = own_prefix(me, 0x2a);
            assert!(prefix.ends_with(br#""mode":"except_origin","#), "{me:?}");
            for origin in names {
                for instance in [Some(0x2a), Some(0x2b), None] {
                    for mode in [Mode::All, Mode::ExceptOrigin, Mode::Only(me)] {
                        let envelope = Envelope {
                            origin,
                            instance,
                            mode,
                            topics: &topics,
                            message: &message,
                        };
                        let bytes = encode(&envelope, MAX).unwrap();
                        let skipped = bytes.starts_with(&prefix);
                        let for_me = decode(&bytes, MAX).unwrap().is_for(me, 0x2a);
                        let own = origin == me && instance == Some(0x2a);
                        assert_eq!(
                            skipped,
                            own && mode == Mode::ExceptOrigin,
                            "{me:?} {origin:?} {instance:?} {mode:?}"
                        );
                        assert!(!(skipped && for_me), "{me:?} {origin:?} {mode:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn round_trips_every_mode() {
        for mode in [Mode::All, Mode::ExceptOrigin, Mode::Only("node-b")] {
            let bytes = encoded(mode);
            let incoming = decode(&bytes, MAX).unwrap();
            assert_eq!(incoming.origin(), "node-a");
            assert_eq!(incoming.mode(), mode);
            let expected: Vec<String> = topics().iter().map(Topic::to_string).collect();
            assert_eq!(incoming.topics().collect::<Vec<_>>(), expected);
            assert_eq!(incoming.message::<staff::Message>().unwrap(), membership());
        }
    }

    #[test]
    fn the_json_form_is_the_documented_one() {
        let text = String::from_utf8(encoded(Mode::Only("node-b"))).unwrap();
        assert!(
            text.starts_with(
                r#"{"v":1,"origin":"node-a","mode":"only","target":"node-b","topics":["staff:teams","staff:team:00000000-0000-0000-0000-000000000002","#
            ),
            "{text}"
        );
        assert!(
            text.ends_with(r#""message":{"scope":"staff","event":"team_person_added","payload":{"uuid":"00000000-0000-0000-0000-000000000001","team_uuid":"00000000-0000-0000-0000-000000000002","staff_person_uuid":"00000000-0000-0000-0000-000000000003"}}}"#),
            "{text}"
        );
    }

    #[test]
    fn another_language_may_reorder_fields_escape_strings_and_add_fields() {
        let text = r#"{"message":{"payload":{"uuid":"00000000-0000-0000-0000-000000000001"},"event":"person_created","scope":"staff"},
            "topics":["staff:\u0070eople"],"extra":[1,2,3],"mode":"all","origin":"py\"thon","v":1}"#;
        let incoming = decode(text.as_bytes(), MAX).unwrap();
        assert_eq!(incoming.origin(), "py\"thon");
        assert_eq!(incoming.mode(), Mode::All);
        assert_eq!(incoming.topics().collect::<Vec<_>>(), ["staff:people"]);
        assert!(matches!(
            incoming.message::<staff::Message>().unwrap(),
            staff::Message::Person(staff::PersonEvent::Created, _)
        ));
    }

    #[test]
    fn oversize_is_refused_both_ways() {
        let bytes = encoded(Mode::All);
        let max = bytes.len() - 1;
        let message = membership();
        let topics = topics();
        let envelope = Envelope {
            origin: "node-a",
            instance: None,
            mode: Mode::All,
            topics: &topics,
            message: &message,
        };
        assert!(matches!(
            encode(&envelope, max),
            Err(WireError::TooLarge { size, max: m }) if size == bytes.len() && m == max
        ));
        assert!(matches!(
            decode(&bytes, max),
            Err(WireError::TooLarge { .. })
        ));
        assert!(decode(&bytes, bytes.len()).is_ok());
    }

    #[test]
    fn each_kind_of_garbage_has_its_error() {
        let bytes = encoded(Mode::All);
        let text = String::from_utf8(bytes.clone()).unwrap();
        type Expected = fn(&WireError) -> bool;
        let cases: Vec<(Vec<u8>, Expected)> = vec![
            (b"hello".to_vec(), |e| matches!(e, WireError::Malformed(_))),
            (vec![0xff, 0x00, 0x9c], |e| {
                matches!(e, WireError::Malformed(_))
            }),
            (b"[1,2]".to_vec(), |e| matches!(e, WireError::Malformed(_))),
            (b"{}".to_vec(), |e| {
                matches!(e, WireError::MissingField("v"))
            }),
            (text.replace(r#""v":1"#, r#""v":2"#).into_bytes(), |e| {
                matches!(e, WireError::UnsupportedVersion { found: 2 })
            }),
            (text.replace(r#""v":1"#, r#""v":"1""#).into_bytes(), |e| {
                matches!(e, WireError::Malformed(_))
            }),
            (
                text.replace(r#""mode":"all""#, r#""mode":"some""#)
                    .into_bytes(),
                |e| matches!(e, WireError::UnknownMode(m) if m == "some"),
            ),
            (
                text.replace(r#""mode":"all""#, r#""mode":"only""#)
                    .into_bytes(),
                |e| matches!(e, WireError::MissingField("target")),
            ),
            (
                text.replace(r#""topics":"#, r#""topicz":"#).into_bytes(),
                |e| matches!(e, WireError::MissingField("topics")),
            ),
            (bytes[..bytes.len() / 2].to_vec(), |e| {
                matches!(e, WireError::Malformed(_))
            }),
        ];
        for (input, expected) in cases {
            let error = decode(&input, MAX).unwrap_err();
            assert!(
                expected(&error),
                "{:?}: {error:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[test]
    fn an_unknown_event_is_a_message_error() {
        let text = String::from_utf8(encoded(Mode::All))
            .unwrap()
            .replace("team_person_added", "team_person_exploded");
        let incoming = decode(text.as_bytes(), MAX).unwrap();
        let error = incoming.message::<staff::Message>().unwrap_err();
        assert!(matches!(error, WireError::Message(_)), "{error:?}");
        assert!(
            error.to_string().contains("team_person_exploded"),
            "{error}"
        );
    }

    #[test]
    fn no_prefix_and_no_corrupted_byte_panics() {
        let bytes = encoded(Mode::Only("node-b"));
        for end in 0..bytes.len() {
            let Ok(incoming) = decode(&bytes[..end], MAX) else {
                continue;
            };
            panic!("a truncated envelope decoded: {incoming:?}");
        }
        // Corrupt each byte in turn: whatever the outcome, no panic.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for index in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            corrupt[index] = (seed >> 56) as u8;
            if let Ok(incoming) = decode(&corrupt, MAX) {
                let _ = incoming.message::<staff::Message>();
            }
        }
    }
}
