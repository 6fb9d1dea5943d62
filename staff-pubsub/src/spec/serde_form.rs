//! The serde form of a generated `Message` and of its event enums (see
//! [the module doc of `spec`](crate::spec#the-serde-form-of-a-message)):
//! reached by generated code through `__private` only, not public API.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::SpecMessage;

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

/// An event enum's `Deserialize`: the atom as a string, read through the
/// enum's `FromStr`; an unknown atom is serde's unknown-variant error,
/// listing `atoms`.
///
/// # Errors
///
/// Not a string, or not one of `atoms`.
pub fn deserialize_event<'de, E: std::str::FromStr, D: Deserializer<'de>>(
    deserializer: D,
    atoms: &'static [&'static str],
) -> Result<E, D::Error> {
    deserializer.deserialize_str(EventVisitor {
        atoms,
        event: PhantomData,
    })
}

struct EventVisitor<E> {
    atoms: &'static [&'static str],
    event: PhantomData<E>,
}

impl<E: std::str::FromStr> Visitor<'_> for EventVisitor<E> {
    type Value = E;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("variant identifier")
    }

    fn visit_str<Er: de::Error>(self, atom: &str) -> Result<E, Er> {
        atom.parse()
            .map_err(|_| Er::unknown_variant(atom, self.atoms))
    }

    fn visit_bytes<Er: de::Error>(self, bytes: &[u8]) -> Result<E, Er> {
        match std::str::from_utf8(bytes) {
            Ok(atom) => self.visit_str(atom),
            Err(_) => Err(Er::invalid_value(de::Unexpected::Bytes(bytes), &self)),
        }
    }
}

/// One arm of a generated `deserialize_payload`: the payload of `event`,
/// made a message by `message` (a variant of the spec's `Message`).
///
/// # Errors
///
/// The payload does not deserialize.
pub fn deserialize_payload_of<'de, E, P, M, D>(
    deserializer: D,
    event: E,
    message: impl FnOnce(E, P) -> M,
) -> Result<M, D::Error>
where
    P: Deserialize<'de>,
    D: Deserializer<'de>,
{
    P::deserialize(deserializer).map(|payload| message(event, payload))
}

const FIELDS: &[&str] = &["scope", "event", "payload"];

/// Deserializes a message from its serde form: a map
/// `{"scope": .., "event": .., "payload": ..}` whose fields may come in any
/// order, with unknown fields ignored, or a sequence
/// `[scope, event, payload]`.
///
/// The whole behaviour, with serde_json and with other formats, is stated
/// in [the serde form of a message](crate::spec#the-serde-form-of-a-message).
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
        let scope = seq
            .next_element_seed(TextSeed)?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        check_scope::<M, A::Error>(&scope)?;
        let event = seq
            .next_element_seed(TextSeed)?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        seq.next_element_seed(PayloadSeed::<M>::new(Some(&event)))?
            .ok_or_else(|| de::Error::invalid_length(2, &self))?
            .decode(&event)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<M, A::Error> {
        // Borrowed from the input when the deserializer lends it: no
        // allocation for the two names.
        let mut scope: Option<Cow<'de, str>> = None;
        let mut event: Option<Cow<'de, str>> = None;
        let mut payload: Option<Payload<'de, M>> = None;
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Scope => {
                    let value = map.next_value_seed(TextSeed)?;
                    check_scope::<M, A::Error>(&value)?;
                    set_once(&mut scope, value, "scope")?;
                }
                Field::Event => set_once(&mut event, map.next_value_seed(TextSeed)?, "event")?,
                Field::Payload => {
                    if payload.is_some() {
                        return Err(de::Error::duplicate_field("payload"));
                    }
                    let read = map.next_value_seed(PayloadSeed::<M>::new(event.as_deref()))?;
                    // Decoded as soon as the event is known, so that an error
                    // points near the payload; the same decoding either way.
                    payload = Some(match &event {
                        Some(event) => Payload::Message(read.decode(event)?),
                        None => read,
                    });
                }
                Field::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        if scope.is_none() {
            return Err(de::Error::missing_field("scope"));
        }
        let event = event.ok_or_else(|| de::Error::missing_field("event"))?;
        payload
            .ok_or_else(|| de::Error::missing_field("payload"))?
            .decode(&event)
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

/// A payload as read, before or after its event.
enum Payload<'de, M> {
    /// Decoded in place: another format than JSON, the event known.
    Message(M),
    /// The payload's JSON text, borrowed from the input when it can be.
    Json(Cow<'de, str>),
    /// Another format than JSON, before the event: buffered.
    Buffered(serde_value::Value),
}

impl<M: SpecMessage> Payload<'_, M> {
    /// The message of `event` with this payload.
    fn decode<E: de::Error>(self, event: &str) -> Result<M, E> {
        match self {
            Self::Message(message) => Ok(message),
            Self::Json(json) => decode_json(event, &json),
            Self::Buffered(value) => {
                M::deserialize_payload(event, serde_value::ValueDeserializer::<E>::new(value))
            }
        }
    }
}

/// Decodes the payload's JSON text, `json`, for `event`, with a
/// `serde_json::Deserializer` of its own: the one way a JSON payload is
/// decoded, whichever order the fields came in.
fn decode_json<M: SpecMessage, E: de::Error>(event: &str, json: &str) -> Result<M, E> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    M::deserialize_payload(event, &mut deserializer).map_err(|error| {
        if !M::EVENTS.contains(&event) {
            return unknown_event(event, M::EVENTS);
        }
        // serde_json's position is within the payload's text: say so, in a
        // form that the caller's serde_json does not take for its own.
        let text = error.to_string();
        let suffix = format!(" at line {} column {}", error.line(), error.column());
        match text.strip_suffix(&suffix) {
            Some(message) if error.line() != 0 => E::custom(format_args!(
                "payload of `{event}`: {message} (payload line {}, column {})",
                error.line(),
                error.column()
            )),
            _ => E::custom(format_args!("payload of `{event}`: {text}")),
        }
    })
}

/// Reads a payload: its JSON text from a serde_json deserializer (which
/// hands over a value's text when asked for a newtype struct named by its
/// raw-value token), otherwise the decoded message when the event is known,
/// or a buffered value when it is not.
struct PayloadSeed<'a, M> {
    event: Option<&'a str>,
    message: PhantomData<M>,
}

impl<'a, M> PayloadSeed<'a, M> {
    fn new(event: Option<&'a str>) -> Self {
        Self {
            event,
            message: PhantomData,
        }
    }
}

impl<'de, M: SpecMessage> DeserializeSeed<'de> for PayloadSeed<'_, M> {
    type Value = Payload<'de, M>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        // serde_json is human-readable: a format that is not is not asked.
        match raw_value_token().filter(|_| deserializer.is_human_readable()) {
            Some(token) => deserializer.deserialize_newtype_struct(
                token,
                PayloadVisitor {
                    event: self.event,
                    token,
                    message: PhantomData,
                },
            ),
            None => read_in_place(self.event, deserializer),
        }
    }
}

/// A payload of another format than JSON: decoded when the event is known,
/// buffered otherwise.
fn read_in_place<'de, M: SpecMessage, D: Deserializer<'de>>(
    event: Option<&str>,
    deserializer: D,
) -> Result<Payload<'de, M>, D::Error> {
    match event {
        Some(event) => M::deserialize_payload(event, deserializer).map(Payload::Message),
        None => serde_value::Value::deserialize(deserializer).map(Payload::Buffered),
    }
}

struct PayloadVisitor<'a, M> {
    event: Option<&'a str>,
    token: &'static str,
    message: PhantomData<M>,
}

impl<'de, M: SpecMessage> Visitor<'de> for PayloadVisitor<'_, M> {
    type Value = Payload<'de, M>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the payload of a `{}` message", M::SCOPE)
    }

    /// What most formats do with a newtype struct: hand over the value.
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        read_in_place(self.event, deserializer)
    }

    /// serde_json's answer: a one-entry map from its token to the payload's
    /// text. A format that reads a newtype struct as its content lands here
    /// too with a map payload, which is then buffered.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let first = match map.next_key_seed(KeySeed(self.token))? {
            Some(Key::Token) => return map.next_value_seed(TextSeed).map(Payload::Json),
            Some(Key::Other(key)) => Some((key, map.next_value()?)),
            None => None,
        };
        let mut entries = std::collections::BTreeMap::new();
        entries.extend(first);
        while let Some((key, value)) = map.next_entry()? {
            entries.insert(key, value);
        }
        Ok(Payload::Buffered(serde_value::Value::Map(entries)))
    }

    /// A format that reads a newtype struct as its content, with a payload
    /// in sequence form.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        serde_value::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))
            .map(Payload::Buffered)
    }
}

/// The first key of a payload read as a map: serde_json's raw-value token, or
/// a key of the payload itself.
enum Key {
    Token,
    Other(serde_value::Value),
}

struct KeySeed(&'static str);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a payload field")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(if key == self.0 {
            Key::Token
        } else {
            Key::Other(serde_value::Value::String(key.to_owned()))
        })
    }

    fn visit_bool<E: de::Error>(self, key: bool) -> Result<Key, E> {
        Ok(Key::Other(serde_value::Value::Bool(key)))
    }

    fn visit_i64<E: de::Error>(self, key: i64) -> Result<Key, E> {
        Ok(Key::Other(serde_value::Value::I64(key)))
    }

    fn visit_u64<E: de::Error>(self, key: u64) -> Result<Key, E> {
        Ok(Key::Other(serde_value::Value::U64(key)))
    }

    fn visit_char<E: de::Error>(self, key: char) -> Result<Key, E> {
        Ok(Key::Other(serde_value::Value::Char(key)))
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Key, E> {
        Ok(Key::Other(serde_value::Value::Bytes(key.to_owned())))
    }
}

/// A string, borrowed from the input when the deserializer lends it (a
/// scope, an event, a payload's JSON text).
struct TextSeed;

impl<'de> DeserializeSeed<'de> for TextSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TextSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_owned()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text))
    }

    // UTF-8 bytes, as `String` takes them.
    fn visit_borrowed_bytes<E: de::Error>(self, bytes: &'de [u8]) -> Result<Self::Value, E> {
        std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|_| E::invalid_value(de::Unexpected::Bytes(bytes), &self))
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
        std::str::from_utf8(bytes)
            .map(|text| Cow::Owned(text.to_owned()))
            .map_err(|_| E::invalid_value(de::Unexpected::Bytes(bytes), &self))
    }
}

/// The newtype-struct name under which serde_json hands over a value's JSON
/// text: learnt once from `Box<RawValue>`'s own `Deserialize`, so that it is
/// not copied from serde_json's private code. `None` if `RawValue` stops
/// asking for a newtype struct: then every payload is read as in formats
/// other than JSON.
fn raw_value_token() -> Option<&'static str> {
    static TOKEN: crate::loom::sync::OnceLock<Option<&'static str>> =
        crate::loom::sync::OnceLock::new();
    *TOKEN.get_or_init(|| {
        let mut probe = TokenProbe(None);
        let _ = Box::<serde_json::value::RawValue>::deserialize(&mut probe);
        probe.0
    })
}

/// A deserializer that only notes the name of the newtype struct asked for.
struct TokenProbe(Option<&'static str>);

impl<'de> Deserializer<'de> for &mut TokenProbe {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a newtype struct"))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some(name);
        Err(de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct seq tuple tuple_struct map
        struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{staff, Uuid};
    use serde::Serialize;

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

    /// The message's fields in another order than `serialize_message`'s.
    #[derive(Serialize)]
    struct PayloadFirst<'a> {
        payload: &'a staff::TeamMembership,
        event: &'a str,
        scope: &'a str,
    }

    fn payload_first(message: &staff::Message) -> PayloadFirst<'_> {
        let staff::Message::TeamMembership(event, payload) = message else {
            unreachable!("a membership message")
        };
        PayloadFirst {
            payload,
            event: event.as_str(),
            scope: "staff",
        }
    }

    #[test]
    fn an_event_is_its_atom_in_serde_with_the_derived_errors() {
        use staff::TeamEvent;
        // What `#[derive(Deserialize)]` with the atoms as names gave before.
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        enum Derived {
            #[serde(rename = "team_created")]
            Created,
            #[serde(rename = "team_updated")]
            Updated,
            #[serde(rename = "team_deleted")]
            Deleted,
        }
        for event in TeamEvent::ALL {
            let json = serde_json::to_string(event).unwrap();
            assert_eq!(json, format!("\"{}\"", event.as_str()));
            assert_eq!(serde_json::from_str::<TeamEvent>(&json).unwrap(), *event);
            assert_eq!(event.to_string().parse::<TeamEvent>(), Ok(*event));
            let value = serde_value::to_value(event).unwrap();
            assert_eq!(value, serde_value::Value::String(event.as_str().to_owned()));
        }
        let unknown = r#""team_exploded""#;
        assert_eq!(
            serde_json::from_str::<TeamEvent>(unknown)
                .unwrap_err()
                .to_string(),
            serde_json::from_str::<Derived>(unknown)
                .unwrap_err()
                .to_string()
        );
        assert_eq!(
            "team_exploded".parse::<TeamEvent>().unwrap_err().to_string(),
            "unknown event `team_exploded`: expected one of team_created, team_updated, team_deleted"
        );
        assert!(serde_json::from_str::<TeamEvent>("1").is_err());
    }

    #[test]
    fn serde_json_raw_value_token_is_found() {
        let token = raw_value_token().expect("RawValue asks for a newtype struct");
        assert!(token.starts_with("$serde_json::"), "{token}");
    }

    #[test]
    fn every_serde_json_deserializer_reads_the_payload_as_json_text() {
        let message = membership();
        let event_first = serde_json::to_string(&message).unwrap();
        let payload_first = serde_json::to_string(&payload_first(&message)).unwrap();
        assert!(
            payload_first.starts_with(r#"{"payload":"#),
            "{payload_first}"
        );
        for text in [&event_first, &payload_first] {
            let decoded: [staff::Message; 5] = [
                serde_json::from_str(text).unwrap(),
                serde_json::from_slice(text.as_bytes()).unwrap(),
                serde_json::from_reader(text.as_bytes()).unwrap(),
                serde_json::from_value(serde_json::from_str(text).unwrap()).unwrap(),
                Deserialize::deserialize(
                    &*serde_json::value::RawValue::from_string(text.clone()).unwrap(),
                )
                .unwrap(),
            ];
            assert!(decoded.iter().all(|m| *m == message), "{text}");
        }
        // The sequence form reads its payload the same way.
        let seq = r#"["staff","team_person_added",{"uuid":"00000000-0000-0000-0000-000000000001","uuid":"00000000-0000-0000-0000-000000000001"}]"#;
        let error = serde_json::from_str::<staff::Message>(seq).unwrap_err();
        assert!(
            error.to_string().contains("duplicate field `uuid`"),
            "{error}"
        );
    }

    #[test]
    fn a_payload_error_names_the_event_and_the_place_in_the_payload() {
        let u = Uuid::from_u128(1);
        let text = format!(
            r#"{{"payload":{{"uuid":"{u}","uuid":"{u}"}},"scope":"staff","event":"person_created"}}"#
        );
        let error = serde_json::from_str::<staff::Message>(&text).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "payload of `person_created`: duplicate field `uuid` (payload line 1, column 53) at line 1 column {}",
                text.len()
            )
        );
        let text = r#"{"scope":"staff","event":"person_exploded","payload":{}}"#;
        let error = serde_json::from_str::<staff::Message>(text).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("unknown variant `person_exploded`, expected one of"),
            "{error}"
        );
    }

    #[test]
    fn other_deserializers_still_decode() {
        let message = membership();
        // A tree of values, and serde's own buffering of an untagged enum,
        // which hides serde_json.
        let value = serde_value::to_value(&message).unwrap();
        let decoded = staff::Message::deserialize(serde_value::ValueDeserializer::<
            serde_value::DeserializerError,
        >::new(value))
        .unwrap();
        assert_eq!(decoded, message);
        #[derive(Deserialize, Debug, PartialEq)]
        #[serde(untagged)]
        enum Either {
            Message(staff::Message),
        }
        let text = serde_json::to_string(&payload_first(&message)).unwrap();
        let Either::Message(decoded) = serde_json::from_str(&text).unwrap();
        assert_eq!(decoded, message);
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
