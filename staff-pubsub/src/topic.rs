//! Topics: a compact key made of a static name and an optional UUID.

use std::fmt;
use std::hash::{Hash, Hasher};

use uuid::Uuid;

/// The length of a UUID in its hyphenated text form, the only form a topic
/// string may carry (`8-4-4-4-12` hex digits).
const HYPHENATED_UUID_LEN: usize = 36;

/// How many bytes of the input a [`ParseTopicError`] quotes at most.
const QUOTE_MAX: usize = 64;

/// A pub/sub topic: a static name such as `staff:teams`, optionally keyed by a
/// UUID (`staff:team:<uuid>`).
///
/// A `Topic` is `Copy`, 40 bytes, and hashing or comparing one never formats a
/// string: the name's bytes are folded into one word and the id is hashed as
/// one 128-bit word. The string form
/// (`Display`) is for display, logs and the wire; [`Topic::parse`] turns such
/// a string back into a topic, accepting only the kinds it is given.
///
/// ```
/// use staff_pubsub::Topic;
/// use uuid::Uuid;
///
/// let id = Uuid::parse_str("019ab6a3-c1c6-748b-9697-6c080717373b").unwrap();
/// assert_eq!(Topic::new("chat:rooms").to_string(), "chat:rooms");
/// assert_eq!(
///     Topic::keyed("chat:room", id).to_string(),
///     "chat:room:019ab6a3-c1c6-748b-9697-6c080717373b"
/// );
/// ```
#[derive(Clone, Copy, Eq, PartialOrd, Ord)]
pub struct Topic {
    name: &'static str,
    id: Option<Uuid>,
}

impl Topic {
    /// A topic without an id, such as `staff:teams`.
    #[must_use]
    pub const fn new(name: &'static str) -> Self {
        Self { name, id: None }
    }

    /// A topic keyed by an id, such as `staff:team:<uuid>`.
    #[must_use]
    pub const fn keyed(name: &'static str, id: Uuid) -> Self {
        Self { name, id: Some(id) }
    }

    /// The static name: `staff:teams` or, for a keyed topic, `staff:team`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The id of a keyed topic.
    #[must_use]
    pub const fn id(&self) -> Option<Uuid> {
        self.id
    }

    /// Parses the string form of a topic, accepting only the given kinds.
    ///
    /// A keyed kind needs `<name>:<uuid>` with the UUID in its hyphenated
    /// form (either case; the topic keeps the UUID, so it displays in lower
    /// case); a plain kind needs exactly its name. Anything else (surrounding
    /// white space, wildcards, an extra segment, an id on a plain kind) is a
    /// [`ParseTopicError`].
    ///
    /// The order of `kinds` does not matter, even when their names overlap
    /// (`chat:room` keyed and `chat:room:list` plain): an exact plain name
    /// wins, then a keyed kind whose id parses. Only when no kind accepts the
    /// input is it an error, about the longest keyed name the input starts
    /// with (a missing or invalid id), else [`ParseTopicError::Unknown`].
    ///
    /// ```
    /// use staff_pubsub::{Topic, TopicKind};
    ///
    /// const KINDS: &[TopicKind] = &[TopicKind::plain("chat:rooms"), TopicKind::keyed("chat:room")];
    /// let topic = Topic::parse("chat:room:019AB6A3-C1C6-748B-9697-6C080717373B", KINDS).unwrap();
    /// assert_eq!(topic.to_string(), "chat:room:019ab6a3-c1c6-748b-9697-6c080717373b");
    /// assert!(Topic::parse("chat:rooms:*", KINDS).is_err());
    /// ```
    pub fn parse(input: &str, kinds: &[TopicKind]) -> Result<Self, ParseTopicError> {
        // The result does not depend on the order of `kinds`: an exact plain
        // name wins, then a keyed kind whose id parses (at most one can: the
        // id is the last 36 bytes, so the name is fixed by the input), and
        // only then the error of the longest keyed name the input starts with.
        if let Some(kind) = kinds.iter().find(|kind| !kind.keyed && kind.name == input) {
            return Ok(Self::new(kind.name));
        }
        let mut nearest: Option<(&'static str, Option<&str>)> = None;
        for kind in kinds.iter().filter(|kind| kind.keyed) {
            let Some(rest) = input.strip_prefix(kind.name) else {
                continue;
            };
            let id = match rest.strip_prefix(':') {
                Some(id) => match parse_id(id) {
                    Some(uuid) => return Ok(Self::keyed(kind.name, uuid)),
                    None => Some(id),
                },
                None if rest.is_empty() => None,
                None => continue,
            };
            if nearest.is_none_or(|(name, _)| name.len() < kind.name.len()) {
                nearest = Some((kind.name, id));
            }
        }
        Err(match nearest {
            Some((kind, None)) => ParseTopicError::MissingId { kind },
            Some((kind, Some(id))) => ParseTopicError::InvalidId {
                kind,
                id: quote(id),
            },
            None => ParseTopicError::Unknown {
                input: quote(input),
            },
        })
    }

    /// The same topic as a borrowed key, for looking up a topic whose name is
    /// not `'static` (a topic read from the wire).
    pub(crate) fn as_key(&self) -> TopicKey<'static> {
        TopicKey {
            name: self.name,
            id: self.id,
        }
    }
}

/// The part of a rejected input an error quotes: all of it up to
/// [`QUOTE_MAX`] bytes, else its first bytes up to a char boundary and `…`.
fn quote(input: &str) -> String {
    if input.len() <= QUOTE_MAX {
        return input.to_owned();
    }
    let mut end = QUOTE_MAX;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    let mut quoted = String::with_capacity(end + '…'.len_utf8());
    quoted.push_str(input.get(..end).unwrap_or_default());
    quoted.push('…');
    quoted
}

/// Parses the id part of a topic: the hyphenated form only, so that a topic
/// has exactly one spelling up to letter case.
fn parse_id(id: &str) -> Option<Uuid> {
    if id.len() != HYPHENATED_UUID_LEN {
        return None;
    }
    Uuid::try_parse(id).ok()
}

// Equality as the derived one (same name, same id), in the cheaper order:
// the ids first (a plain and a keyed topic, or two ids, differ there), then
// the names, equal at once when they are the very same static string. Two
// names of one length (`staff:people`, `staff:person`) would otherwise cost
// a `memcmp` on every broadcast's duplicate check.
impl PartialEq for Topic {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && ((self.name.as_ptr() == other.name.as_ptr() && self.name.len() == other.name.len())
                || self.name == other.name)
    }
}

// Hash and equality agree with `TopicKey`, so that the registry can look up a
// topic by a borrowed key. Both hash the name's bytes, then the id.
impl Hash for Topic {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_key().hash(state);
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_key().fmt(f)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({self})")
    }
}

/// A topic whose name is borrowed: what a network transport reads off the
/// wire before it knows whether any local subscriber has that topic.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicKey<'a> {
    pub(crate) name: &'a str,
    pub(crate) id: Option<Uuid>,
}

impl<'a> TopicKey<'a> {
    /// Splits a topic string into name and id: the id is the last segment when
    /// that segment is a hyphenated UUID. Used for wire topics, whose kinds the
    /// runtime does not know; a topic no local subscriber has simply matches
    /// nothing.
    pub(crate) fn from_wire(topic: &'a str) -> Self {
        match topic.rsplit_once(':') {
            Some((name, id)) => match parse_id(id) {
                Some(id) => Self { name, id: Some(id) },
                None => Self {
                    name: topic,
                    id: None,
                },
            },
            None => Self {
                name: topic,
                id: None,
            },
        }
    }

    /// Whether this key names `topic`. The ids are compared first (most
    /// topics of a registry differ there), and a name that is the very same
    /// static string is equal without comparing its bytes.
    pub(crate) fn matches(&self, topic: &Topic) -> bool {
        self.id == topic.id
            && ((self.name.as_ptr() == topic.name.as_ptr() && self.name.len() == topic.name.len())
                || same_name(self.name.as_bytes(), topic.name.as_bytes()))
    }
}

// Two words: one folded from the name's bytes, then the id (or a marker
// without one). Fewer hasher rounds than the derived impl, and still a
// function of what `==` compares, so equal keys hash alike.
impl Hash for TopicKey<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(name_word(self.name.as_bytes()));
        match self.id {
            Some(id) => state.write_u128(id.as_u128()),
            None => state.write_u8(0xff),
        }
    }
}

/// Folds a name into one word: its length, first eight and last eight
/// bytes (all of it, for names up to 16 bytes). Names that share all three
/// only share a hash, never an entry: lookups compare the names.
#[inline]
fn name_word(name: &[u8]) -> u64 {
    let len = name.len();
    if len >= 8 {
        word(name.get(..8)) ^ word(name.get(len - 8..)).rotate_left(29) ^ len as u64
    } else {
        name.iter()
            .fold(len as u64, |word, &byte| word << 8 | u64::from(byte))
    }
}

/// Whether two names are equal. A name of 8 to 16 bytes (every stock
/// name) is compared as two overlapping words, inline, instead of through
/// `memcmp`: the same name from another crate is a copy of the literal at
/// another address, so the pointer check above misses for it.
#[inline]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    if !(8..=16).contains(&len) {
        return a == b;
    }
    word(a.get(..8)) == word(b.get(..8)) && word(a.get(len - 8..)) == word(b.get(len - 8..))
}

/// Eight bytes as a word. Callers pass in-bounds slices of eight bytes
/// (their names have at least eight): the fallback 0 is never taken.
#[inline]
fn word(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(0, u64::from_le_bytes)
}

impl fmt::Display for TopicKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "{}:{}", self.name, id.hyphenated()),
            None => f.write_str(self.name),
        }
    }
}

/// One kind of topic a spec knows: a plain name, or a name that takes an id.
/// A list of kinds is what [`Topic::parse`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicKind {
    /// The topic name (`staff:teams`) or, for a keyed kind, its prefix (`staff:team`).
    pub name: &'static str,
    /// Whether the topic takes a UUID after the name.
    pub keyed: bool,
}

impl TopicKind {
    /// A kind without an id.
    #[must_use]
    pub const fn plain(name: &'static str) -> Self {
        Self { name, keyed: false }
    }

    /// A kind that takes an id.
    #[must_use]
    pub const fn keyed(name: &'static str) -> Self {
        Self { name, keyed: true }
    }
}

/// Why a string is not a topic.
///
/// An error stays small whatever the input: the part of the input it quotes
/// (`input` of [`Unknown`](Self::Unknown), `id` of
/// [`InvalidId`](Self::InvalidId)) is truncated to its first 64 bytes (on a
/// char boundary) followed by `…`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseTopicError {
    /// The string names no known topic.
    #[error("unknown topic `{input}`")]
    Unknown {
        /// The rejected input, truncated to 64 bytes and `…` if longer.
        input: String,
    },
    /// A keyed topic without its id, such as `staff:team`.
    #[error("topic `{kind}` needs an id: `{kind}:<uuid>`")]
    MissingId {
        /// The keyed kind.
        kind: &'static str,
    },
    /// A keyed topic whose id is not a hyphenated UUID.
    #[error("topic `{kind}` needs a hyphenated UUID after `{kind}:`, found `{id}`")]
    InvalidId {
        /// The keyed kind.
        kind: &'static str,
        /// The rejected id, truncated to 64 bytes and `…` if longer.
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: &[TopicKind] = &[
        TopicKind::plain("chat:rooms"),
        TopicKind::keyed("chat:room"),
    ];
    const ID: &str = "019ab6a3-c1c6-748b-9697-6c080717373b";

    #[test]
    fn names_are_equal_exactly_when_their_bytes_are() {
        // Every length around the word-compare range, and a difference at
        // every byte: the two overlapping words must cover the whole name.
        for len in 0_usize..=20 {
            let name: Vec<u8> = (0..len).map(|i| b'a' + i as u8).collect();
            assert!(same_name(&name, &name.clone()), "len {len}");
            assert!(!same_name(&name, &name[..len.saturating_sub(1)]) || len == 0);
            for at in 0..len {
                let mut other = name.clone();
                other[at] = b'Z';
                assert!(!same_name(&name, &other), "len {len}, differs at {at}");
            }
        }
    }

    #[test]
    fn parse_round_trips_display() {
        for input in ["chat:rooms".to_owned(), format!("chat:room:{ID}")] {
            let topic = Topic::parse(&input, KINDS).map(|t| t.to_string());
            assert_eq!(topic.as_deref(), Ok(input.as_str()));
        }
    }

    #[test]
    fn parse_rejects_other_forms_of_uuid() {
        let simple = ID.replace('-', "");
        let braced = format!("{{{ID}}}");
        for id in [simple.as_str(), braced.as_str(), "*", ">", ""] {
            let err = Topic::parse(&format!("chat:room:{id}"), KINDS);
            assert!(
                matches!(err, Err(ParseTopicError::InvalidId { .. })),
                "{id}: {err:?}"
            );
        }
    }

    #[test]
    fn parse_says_which_part_is_wrong() {
        assert_eq!(
            Topic::parse("chat:room", KINDS),
            Err(ParseTopicError::MissingId { kind: "chat:room" })
        );
        assert!(matches!(
            Topic::parse("chat:roomz", KINDS),
            Err(ParseTopicError::Unknown { .. })
        ));
    }

    /// Every order of `kinds`, by Heap's algorithm.
    fn permutations(kinds: &[TopicKind]) -> Vec<Vec<TopicKind>> {
        fn heap(k: usize, kinds: &mut Vec<TopicKind>, out: &mut Vec<Vec<TopicKind>>) {
            if k <= 1 {
                out.push(kinds.clone());
                return;
            }
            for i in 0..k {
                heap(k - 1, kinds, out);
                kinds.swap(if k.is_multiple_of(2) { i } else { 0 }, k - 1);
            }
        }
        let mut out = Vec::new();
        heap(kinds.len(), &mut kinds.to_vec(), &mut out);
        out
    }

    #[test]
    fn parse_does_not_depend_on_the_order_of_the_kinds() {
        let two = [
            TopicKind::keyed("chat:room"),
            TopicKind::plain("chat:room:list"),
        ];
        for kinds in permutations(&two) {
            assert_eq!(
                Topic::parse("chat:room:list", &kinds),
                Ok(Topic::new("chat:room:list")),
                "{kinds:?}"
            );
        }

        let id = Uuid::parse_str(ID).unwrap();
        let overlapping = [
            TopicKind::keyed("chat"),
            TopicKind::keyed("chat:room"),
            TopicKind::plain("chat:room:list"),
            TopicKind::plain("chat:room"),
            TopicKind::keyed("chat:room:list"),
        ];
        let cases = [
            (
                "chat:room:list".to_owned(),
                Ok(Topic::new("chat:room:list")),
            ),
            ("chat:room".to_owned(), Ok(Topic::new("chat:room"))),
            (format!("chat:room:{ID}"), Ok(Topic::keyed("chat:room", id))),
            (format!("chat:{ID}"), Ok(Topic::keyed("chat", id))),
            (
                format!("chat:room:list:{ID}"),
                Ok(Topic::keyed("chat:room:list", id)),
            ),
            (
                "chat:room:lists".to_owned(),
                Err(ParseTopicError::InvalidId {
                    kind: "chat:room",
                    id: "lists".to_owned(),
                }),
            ),
            (
                "chat:room:list:x".to_owned(),
                Err(ParseTopicError::InvalidId {
                    kind: "chat:room:list",
                    id: "x".to_owned(),
                }),
            ),
            (
                "chat".to_owned(),
                Err(ParseTopicError::MissingId { kind: "chat" }),
            ),
            (
                "chatter".to_owned(),
                Err(ParseTopicError::Unknown {
                    input: "chatter".to_owned(),
                }),
            ),
        ];
        let orders = permutations(&overlapping);
        assert_eq!(orders.len(), 120);
        for kinds in orders {
            for (input, expected) in &cases {
                assert_eq!(
                    &Topic::parse(input, &kinds),
                    expected,
                    "{input} in {kinds:?}"
                );
            }
        }
    }

    #[test]
    fn parse_reports_the_longest_matching_kind() {
        let kinds = [TopicKind::keyed("a"), TopicKind::keyed("a:b")];
        for kinds in permutations(&kinds) {
            assert_eq!(
                Topic::parse("a:b", &kinds),
                Err(ParseTopicError::MissingId { kind: "a:b" }),
                "{kinds:?}"
            );
            assert_eq!(
                Topic::parse("a:b:c", &kinds),
                Err(ParseTopicError::InvalidId {
                    kind: "a:b",
                    id: "c".to_owned()
                }),
                "{kinds:?}"
            );
        }
    }

    #[test]
    fn parse_errors_quote_a_bounded_part_of_the_input() {
        let huge = "é".repeat(512 * 1024);
        assert_eq!(huge.len(), 1024 * 1024);
        for input in [huge.clone(), format!("chat:room:{huge}")] {
            let Err(err) = Topic::parse(&input, KINDS) else {
                panic!("parsed a 1 MB topic");
            };
            let quoted = match &err {
                ParseTopicError::Unknown { input } => input,
                ParseTopicError::InvalidId { id, .. } => id,
                ParseTopicError::MissingId { .. } => panic!("{err:?}"),
            };
            assert!(
                quoted.len() <= QUOTE_MAX + '…'.len_utf8(),
                "{}",
                quoted.len()
            );
            assert!(quoted.ends_with('…'), "{quoted}");
            assert!(quoted.starts_with("é"));
            assert!(err.to_string().len() < 200, "{}", err.to_string().len());
        }
        // A short input is quoted whole, without an ellipsis.
        assert_eq!(
            Topic::parse("chat:room:nope", KINDS),
            Err(ParseTopicError::InvalidId {
                kind: "chat:room",
                id: "nope".to_owned()
            })
        );
    }

    #[test]
    fn a_topic_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Topic>(), 40);
    }

    #[test]
    fn equal_keys_hash_alike_whatever_the_name_s_address() {
        use std::hash::BuildHasher;
        let hasher = std::hash::RandomState::new();
        let id = Uuid::parse_str(ID).unwrap();
        for topic in [Topic::new("chat:rooms"), Topic::keyed("chat:room", id)] {
            let printed = topic.to_string();
            let key = TopicKey::from_wire(&printed);
            assert!(key.matches(&topic));
            assert_eq!(hasher.hash_one(key), hasher.hash_one(topic));
        }
        let short = Topic::new("a:b");
        assert_eq!(
            hasher.hash_one(TopicKey::from_wire("a:b")),
            hasher.hash_one(short)
        );
        assert_ne!(
            hasher.hash_one(Topic::new("staff:person")),
            hasher.hash_one(Topic::new("staff:people"))
        );
    }

    #[test]
    fn wire_key_matches_the_topic_it_was_printed_from() {
        let id = Uuid::parse_str(ID).unwrap();
        for topic in [Topic::new("chat:rooms"), Topic::keyed("chat:room", id)] {
            let printed = topic.to_string();
            assert!(TopicKey::from_wire(&printed).matches(&topic));
        }
        assert!(!TopicKey::from_wire("chat:room").matches(&Topic::keyed("chat:room", id)));
    }
}
