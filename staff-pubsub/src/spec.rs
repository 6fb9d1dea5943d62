//! What generated specs are made of: the route table types, the default
//! server, and the serde form of messages.
//!
//! Everything here is used by the code `#[staff_events]` generates; the
//! types are public because they appear in that code's API.

use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{PubSub, Topic, TopicKind};

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

/// [`install`](crate::staff::install) came too late: the default server was
/// already installed or used. Holds the server that was not installed.
#[derive(thiserror::Error)]
#[error("the default server was already installed or in use")]
pub struct AlreadyInstalled<M>(pub PubSub<M>);

impl<M> fmt::Debug for AlreadyInstalled<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AlreadyInstalled(..)")
    }
}

/// The per-spec default server: created in process on first use, unless one
/// was installed before.
pub struct DefaultServer<M> {
    cell: OnceLock<PubSub<M>>,
}

impl<M> DefaultServer<M> {
    /// An empty slot (a `static` initialiser).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            cell: OnceLock::new(),
        }
    }
}

impl<M> Default for DefaultServer<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Send + Sync + 'static> DefaultServer<M> {
    /// The server, created with default settings if none was installed.
    pub fn get(&self) -> &PubSub<M> {
        self.cell.get_or_init(PubSub::new)
    }

    /// Installs `pubsub`, unless a server was installed or created already.
    ///
    /// # Errors
    ///
    /// [`AlreadyInstalled`] with `pubsub` given back.
    pub fn install(&self, pubsub: PubSub<M>) -> Result<(), AlreadyInstalled<M>> {
        self.cell.set(pubsub).map_err(AlreadyInstalled)
    }
}

/// A fixed-capacity list of topics on the stack: a broadcast's targets,
/// collected without allocating.
pub struct TopicList<const N: usize> {
    topics: [Topic; N],
    len: usize,
}

impl<const N: usize> TopicList<N> {
    /// An empty list.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            topics: [Topic::new(""); N],
            len: 0,
        }
    }

    /// Appends a topic. The generated code sizes the list for every target
    /// of its route, so the list never overflows; if it did, the topic would
    /// be dropped with an error logged, never a panic.
    pub fn push(&mut self, topic: Topic) {
        // One copy per reached topic: a route whose fields name the same
        // topic twice (two endpoints of one entity, two fields with one id)
        // reaches it once. N is a handful, so the scan is cheap.
        if self.as_slice().contains(&topic) {
            return;
        }
        match self.topics.get_mut(self.len) {
            Some(slot) => {
                *slot = topic;
                self.len += 1;
            }
            None => tracing::error!(%topic, capacity = N, "topic list full: topic dropped"),
        }
    }

    /// The topics pushed so far.
    #[must_use]
    pub fn as_slice(&self) -> &[Topic] {
        &self.topics[..self.len]
    }
}

impl<const N: usize> AsRef<[Topic]> for TopicList<N> {
    fn as_ref(&self) -> &[Topic] {
        self.as_slice()
    }
}

impl<const N: usize> Default for TopicList<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Implemented by each spec's `Message`: what the serde form needs to know.
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

/// The serde form of a message: `{"scope": .., "event": .., "payload": ..}`.
#[derive(Serialize)]
#[serde(rename = "Message")]
struct MessageRef<'a, P> {
    scope: &'a str,
    event: &'a str,
    payload: &'a P,
}

/// Serializes a message as `{"scope":..,"event":..,"payload":..}`.
///
/// # Errors
///
/// The serializer's error.
pub fn serialize_message<P: Serialize, S: Serializer>(
    scope: &str,
    event: &str,
    payload: &P,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    MessageRef {
        scope,
        event,
        payload,
    }
    .serialize(serializer)
}

/// An unknown-event error in the deserializer's terms.
pub fn unknown_event<E: de::Error>(event: &str, expected: &'static [&'static str]) -> E {
    E::unknown_variant(event, expected)
}

const FIELDS: &[&str] = &["scope", "event", "payload"];

/// Deserializes a message from its serde form. The fields may come in any
/// order; a payload that precedes its event is buffered (self-describing
/// formats such as JSON only, which are the ones that reorder).
///
/// # Errors
///
/// Missing or duplicate fields, a scope other than the spec's, an unknown
/// event, or a payload that does not fit the event.
pub fn deserialize_message<'de, M: SpecMessage, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<M, D::Error> {
    deserializer.deserialize_struct("Message", FIELDS, MessageVisitor(PhantomData))
}

struct MessageVisitor<M>(PhantomData<M>);

impl<'de, M: SpecMessage> Visitor<'de> for MessageVisitor<M> {
    type Value = M;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a `{}` message {{scope, event, payload}}", M::SCOPE)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<M, A::Error> {
        let scope: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        check_scope::<M, A::Error>(&scope)?;
        let event: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        seq.next_element_seed(PayloadSeed::<M>::new(&event))?
            .ok_or_else(|| de::Error::invalid_length(2, &self))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<M, A::Error> {
        let mut scope: Option<String> = None;
        let mut event: Option<String> = None;
        let mut message: Option<M> = None;
        let mut buffered: Option<serde_value::Value> = None;
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Scope => {
                    let value: String = map.next_value()?;
                    check_scope::<M, A::Error>(&value)?;
                    set_once(&mut scope, value, "scope")?;
                }
                Field::Event => set_once(&mut event, map.next_value()?, "event")?,
                Field::Payload => match &event {
                    Some(event) if message.is_none() && buffered.is_none() => {
                        message = Some(map.next_value_seed(PayloadSeed::<M>::new(event))?);
                    }
                    None if buffered.is_none() => buffered = Some(map.next_value()?),
                    _ => return Err(de::Error::duplicate_field("payload")),
                },
                Field::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        if scope.is_none() {
            return Err(de::Error::missing_field("scope"));
        }
        let event = event.ok_or_else(|| de::Error::missing_field("event"))?;
        match (message, buffered) {
            (Some(message), _) => Ok(message),
            (None, Some(payload)) => M::deserialize_payload(
                &event,
                serde_value::ValueDeserializer::<A::Error>::new(payload),
            ),
            (None, None) => Err(de::Error::missing_field("payload")),
        }
    }
}

fn check_scope<M: SpecMessage, E: de::Error>(scope: &str) -> Result<(), E> {
    if scope == M::SCOPE {
        Ok(())
    } else {
        Err(E::invalid_value(de::Unexpected::Str(scope), &M::SCOPE))
    }
}

fn set_once<T, E: de::Error>(slot: &mut Option<T>, value: T, field: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(field));
    }
    *slot = Some(value);
    Ok(())
}

enum Field {
    Scope,
    Event,
    Payload,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message field")
            }
            fn visit_str<E: de::Error>(self, field: &str) -> Result<Field, E> {
                Ok(match field {
                    "scope" => Field::Scope,
                    "event" => Field::Event,
                    "payload" => Field::Payload,
                    _ => Field::Other,
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

struct PayloadSeed<'a, M> {
    event: &'a str,
    message: PhantomData<M>,
}

impl<'a, M> PayloadSeed<'a, M> {
    fn new(event: &'a str) -> Self {
        Self {
            event,
            message: PhantomData,
        }
    }
}

impl<'de, M: SpecMessage> DeserializeSeed<'de> for PayloadSeed<'_, M> {
    type Value = M;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<M, D::Error> {
        M::deserialize_payload(self.event, deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{staff, Uuid};

    #[test]
    fn a_topic_list_keeps_each_topic_once() {
        let id = Uuid::from_u128(1);
        let mut topics = TopicList::<3>::new();
        for topic in [
            staff::topic_people(),
            staff::topic_person(id),
            staff::topic_people(),
        ] {
            topics.push(topic);
        }
        assert_eq!(
            topics.as_slice(),
            [staff::topic_people(), staff::topic_person(id)]
        );
    }

    #[test]
    fn a_second_payload_is_a_duplicate_field_whatever_the_order() {
        let u = Uuid::from_u128(1);
        let v = Uuid::from_u128(2);
        for text in [
            format!(
                r#"{{"payload":{{"uuid":"{u}"}},"scope":"staff","event":"department_created","payload":{{"uuid":"{v}"}}}}"#
            ),
            format!(
                r#"{{"scope":"staff","event":"department_created","payload":{{"uuid":"{u}"}},"payload":{{"uuid":"{v}"}}}}"#
            ),
            format!(
                r#"{{"payload":{{"uuid":"{u}"}},"payload":{{"uuid":"{v}"}},"scope":"staff","event":"department_created"}}"#
            ),
        ] {
            let error = serde_json::from_str::<staff::Message>(&text).unwrap_err();
            assert!(
                error.to_string().contains("duplicate field `payload`"),
                "{text}: {error}"
            );
        }
    }
}
