//! The spec as data, for applications and engine authors: the constant
//! [`Spec`] each generated spec module exports as `SPEC` (its topics,
//! events and [`Route`]s, each route's [`Target`]s), the error of an event
//! name that is not the spec's ([`UnknownEvent`], the `Err` of a generated
//! event enum's `FromStr`), and [`SpecMessage`], the trait of every
//! generated `Message`, which an engine that takes any spec's messages
//! names in its bounds (as `staff_pubsub::phoenix`'s frame functions do).
//!
//! The functions the generated code calls are not here: they are the
//! runtime's `__private` items, not public API. The default server of a
//! spec is its generated `server()` (see [`staff_events`](crate::staff_events)).
//!
//! # The serde form of a message
//!
//! A generated `Message` serializes as a map
//! `{"scope": .., "event": .., "payload": ..}` and deserializes from such a
//! map, whose fields may come in any order, with unknown fields ignored, or
//! from a sequence `[scope, event, payload]`.
//!
//! With serde_json, the wire format, field order does not matter: the same
//! fields, byte for byte, in any order give the same message, or an error
//! for every order. Wherever the payload comes, its JSON text is taken as
//! it is (as [`RawValue`](serde_json::value::RawValue) takes it) and, once
//! the event is known, decoded by a `serde_json::Deserializer` of its own
//! over that text: the one way a payload is decoded, before or after its
//! event. This holds for every serde_json deserializer (`from_str`,
//! `from_slice`, `from_reader`, `from_value`, a `RawValue`). It costs no
//! memory beyond the decoded message when the input is borrowed (`from_str`,
//! `from_slice`, the wire's [`Incoming::message`](crate::wire::Incoming::message)),
//! and a copy of the payload's text otherwise (up to twice its size while
//! serde_json collects it). It does not hold when serde buffers the message
//! first (a field of a `#[serde(flatten)]` or `#[serde(untagged)]` type):
//! serde_json is then out of sight, and the message is read as in another
//! format.
//!
//! With other formats, field order may matter. A payload that comes after
//! its event is decoded in place; one that comes before is buffered as a
//! [`serde_value::Value`] and decoded from that, which can give another
//! outcome (the buffer keeps the last of duplicate keys, for one). A
//! human-readable format is first asked for the payload as serde_json's
//! raw-value newtype struct, so it must hand a newtype struct's content over
//! (as serde-value does); a format that is not human-readable (MessagePack,
//! say) is not asked.
//!
//! Reading fails on missing or duplicate fields, a scope other than the
//! spec's, an unknown event, or a payload that does not fit the event.

// What only generated code calls: re-exported by `__private` alone.
pub(crate) mod serde_form;
pub(crate) mod support;

use serde::Deserializer;

use crate::TopicKind;

/// A whole spec as constant data: `<spec>::SPEC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The first segment of every topic (`staff`).
    pub scope: &'static str,
    /// Every kind of topic, as accepted by the spec's `parse_topic`.
    pub topic_kinds: &'static [TopicKind],
    /// Every event atom, in declaration order.
    pub events: &'static [&'static str],
    /// One route per broadcast function.
    pub routes: &'static [Route],
}

/// How one broadcast function fans out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The function, such as `broadcast_team`.
    pub function: &'static str,
    /// The entity it broadcasts, such as `team`.
    pub entity: &'static str,
    /// The events it takes.
    pub events: &'static [&'static str],
    /// The topics it reaches, in order.
    pub targets: &'static [Target],
}

/// One topic a route reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The topic string (`staff:teams`) or, with a key, the keyed topic's
    /// name (`staff:team`).
    pub topic: &'static str,
    /// The payload field whose id keys the topic.
    pub key: Option<TargetKey>,
}

/// The payload field that keys a [`Target`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetKey {
    /// The field, such as `department_uuid`.
    pub field: &'static str,
    /// Whether the field is an `Option`: the topic is reached only when `Some`.
    pub optional: bool,
}

/// A string that is not an event of the spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown event `{name}`: expected one of {}", .expected.join(", "))]
pub struct UnknownEvent {
    name: String,
    expected: &'static [&'static str],
}

impl UnknownEvent {
    /// `name` is not one of `expected`.
    #[must_use]
    pub fn new(name: &str, expected: &'static [&'static str]) -> Self {
        Self {
            name: name.to_owned(),
            expected,
        }
    }

    /// The rejected name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Implemented by each spec's `Message` (by `#[staff_events]`): its scope,
/// its events, and the reading of one event's payload, which is what the
/// [serde form](self#the-serde-form-of-a-message) needs. An engine that
/// encodes or decodes a spec's messages in a form of its own bounds on it.
pub trait SpecMessage: Sized {
    /// The spec's scope.
    const SCOPE: &'static str;
    /// Every event atom of the spec.
    const EVENTS: &'static [&'static str];

    /// Reads the payload of `event` and builds the message.
    ///
    /// # Errors
    ///
    /// The deserializer's error, or an unknown-variant error for an event
    /// the spec does not have.
    fn deserialize_payload<'de, D: Deserializer<'de>>(
        event: &str,
        deserializer: D,
    ) -> Result<Self, D::Error>;
}
