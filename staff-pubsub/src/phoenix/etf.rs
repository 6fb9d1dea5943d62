//! The subset of Erlang's External Term Format that Phoenix frames use:
//! a bounded reader that borrows from the frame, a serde `Deserializer`
//! over what it reads, a writer, and an owned [`Term`] for inspection.
//!
//! The reader validates a whole term once ([`skip`]) before anything reads
//! it: nesting deeper than [`MAX_DEPTH`] is refused, and every length is
//! checked against the bytes that are left before it is used, so nothing
//! is allocated from a length the frame states. Reading then walks the
//! validated bytes lazily: a payload field the message does not have is
//! never materialised.

use std::borrow::Cow;
use std::fmt;
use std::io::{Read, Write};

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

/// The deepest nesting of lists, tuples and maps a term may have. A staff
/// frame needs 4 (a `DateTime` in a payload); the bound keeps a hostile
/// frame from exhausting the stack.
pub const MAX_DEPTH: usize = 64;

/// The longest a zlib stream can inflate per input byte (deflate's
/// maximum ratio is about 1032:1): a compressed frame declaring more is
/// refused before inflating.
const MAX_INFLATE_RATIO: usize = 1100;

pub(crate) const VERSION: u8 = 131;
const COMPRESSED: u8 = 80;
const NEW_FLOAT_EXT: u8 = 70;
const BIT_BINARY_EXT: u8 = 77;
const NEW_PID_EXT: u8 = 88;
const NEW_PORT_EXT: u8 = 89;
const NEWER_REFERENCE_EXT: u8 = 90;
const SMALL_INTEGER_EXT: u8 = 97;
const INTEGER_EXT: u8 = 98;
const FLOAT_EXT: u8 = 99;
const ATOM_EXT: u8 = 100;
const REFERENCE_EXT: u8 = 101;
const PORT_EXT: u8 = 102;
const PID_EXT: u8 = 103;
const SMALL_TUPLE_EXT: u8 = 104;
const LARGE_TUPLE_EXT: u8 = 105;
const NIL_EXT: u8 = 106;
const STRING_EXT: u8 = 107;
const LIST_EXT: u8 = 108;
const BINARY_EXT: u8 = 109;
const SMALL_BIG_EXT: u8 = 110;
const LARGE_BIG_EXT: u8 = 111;
const NEW_FUN_EXT: u8 = 112;
const EXPORT_EXT: u8 = 113;
const NEW_REFERENCE_EXT: u8 = 114;
const SMALL_ATOM_EXT: u8 = 115;
const MAP_EXT: u8 = 116;
const ATOM_UTF8_EXT: u8 = 118;
const SMALL_ATOM_UTF8_EXT: u8 = 119;
const V4_PORT_EXT: u8 = 120;

/// Why bytes are not a term this reader takes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EtfError {
    /// The bytes end inside a term.
    #[error("truncated term")]
    Truncated,
    /// The first byte is not the format version 131.
    #[error("not an Erlang term (version byte {0}, expected 131)")]
    Version(u8),
    /// A tag this reader does not know (or one used only by distribution).
    #[error("unsupported term tag {0}")]
    UnsupportedTag(u8),
    /// Lists, tuples and maps nested deeper than [`MAX_DEPTH`].
    #[error("terms nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A length or count larger than the bytes that follow could hold.
    #[error("a length of {0} exceeds the frame")]
    Length(u64),
    /// An atom whose UTF-8 text is not UTF-8, or longer than 255 characters.
    #[error("invalid atom")]
    InvalidAtom,
    /// A compressed term larger than allowed, or whose stream does not
    /// inflate to the size it states.
    #[error("invalid compressed term: {0}")]
    Compressed(&'static str),
    /// Bytes after the term.
    #[error("{0} bytes after the term")]
    Trailing(usize),
    /// A term too large to encode.
    #[error("too large to encode: {0}")]
    Encode(&'static str),
}

/// The term of a frame: inflated when it was compressed. Refuses a frame
/// (or inflated term) of more than `max_size` bytes, before inflating.
pub(crate) fn body(frame: &[u8], max_size: usize) -> Result<Cow<'_, [u8]>, EtfError> {
    let (&version, rest) = frame.split_first().ok_or(EtfError::Truncated)?;
    if version != VERSION {
        return Err(EtfError::Version(version));
    }
    if rest.first() != Some(&COMPRESSED) {
        return Ok(Cow::Borrowed(rest));
    }
    let size = rest.get(1..5).ok_or(EtfError::Truncated)?;
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    let stream = &rest[5..];
    if size > max_size {
        return Err(EtfError::Compressed("larger than the maximum frame size"));
    }
    if size > stream.len().saturating_mul(MAX_INFLATE_RATIO) {
        return Err(EtfError::Compressed("states a size its stream cannot hold"));
    }
    // Never more than the stated size (plus one byte, to notice a stream
    // that goes on): the buffer grows with what actually inflates.
    let mut inflated = Vec::new();
    let mut decoder = flate2::bufread::ZlibDecoder::new(stream);
    (&mut decoder)
        .take(size as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|_| EtfError::Compressed("not a zlib stream"))?;
    if inflated.len() != size {
        return Err(EtfError::Compressed("inflates to another size"));
    }
    if decoder.total_in() != stream.len() as u64 {
        return Err(EtfError::Compressed("bytes after the zlib stream"));
    }
    Ok(Cow::Owned(inflated))
}

fn take(bytes: &[u8], pos: usize, len: usize) -> Result<&[u8], EtfError> {
    let end = pos.checked_add(len).ok_or(EtfError::Truncated)?;
    bytes.get(pos..end).ok_or(EtfError::Truncated)
}

fn u8_at(bytes: &[u8], pos: usize) -> Result<u8, EtfError> {
    bytes.get(pos).copied().ok_or(EtfError::Truncated)
}

fn u16_at(bytes: &[u8], pos: usize) -> Result<usize, EtfError> {
    let b = take(bytes, pos, 2)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

fn u32_at(bytes: &[u8], pos: usize) -> Result<usize, EtfError> {
    let b = take(bytes, pos, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// `count` items of at least `min` bytes each must fit in what is left.
fn fits(bytes: &[u8], pos: usize, count: usize, min: usize) -> Result<(), EtfError> {
    let needed = count.saturating_mul(min);
    if needed > bytes.len().saturating_sub(pos) {
        return Err(EtfError::Length(count as u64));
    }
    Ok(())
}

/// Validates the term at `pos` and returns where it ends. Recursion is
/// bounded by [`MAX_DEPTH`]; lengths are checked before they are used.
pub(crate) fn skip(bytes: &[u8], pos: usize, depth: usize) -> Result<usize, EtfError> {
    let tag = u8_at(bytes, pos)?;
    let at = pos + 1;
    let nested = |depth: usize| {
        if depth >= MAX_DEPTH {
            Err(EtfError::TooDeep)
        } else {
            Ok(depth + 1)
        }
    };
    let end = match tag {
        SMALL_INTEGER_EXT => at + 1,
        INTEGER_EXT => at + 4,
        NEW_FLOAT_EXT => at + 8,
        FLOAT_EXT => at + 31,
        ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT => {
            let (atom, end) = read_atom(bytes, pos)?;
            atom.check()?;
            end
        }
        NIL_EXT => at,
        STRING_EXT => at + 2 + u16_at(bytes, at)?,
        BINARY_EXT => {
            let len = u32_at(bytes, at)?;
            fits(bytes, at + 4, len, 1)?;
            at + 4 + len
        }
        BIT_BINARY_EXT => {
            let len = u32_at(bytes, at)?;
            fits(bytes, at + 5, len, 1)?;
            at + 5 + len
        }
        SMALL_BIG_EXT => at + 2 + usize::from(u8_at(bytes, at)?),
        LARGE_BIG_EXT => {
            let len = u32_at(bytes, at)?;
            fits(bytes, at + 5, len, 1)?;
            at + 5 + len
        }
        SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => {
            let (arity, mut next) = if tag == SMALL_TUPLE_EXT {
                (usize::from(u8_at(bytes, at)?), at + 1)
            } else {
                (u32_at(bytes, at)?, at + 4)
            };
            fits(bytes, next, arity, 1)?;
            let depth = nested(depth)?;
            for _ in 0..arity {
                next = skip(bytes, next, depth)?;
            }
            next
        }
        LIST_EXT => {
            let count = u32_at(bytes, at)?;
            fits(bytes, at + 4, count, 1)?;
            let depth = nested(depth)?;
            let mut next = at + 4;
            // The elements, then the tail (`[]` for a proper list).
            for _ in 0..=count {
                next = skip(bytes, next, depth)?;
            }
            next
        }
        MAP_EXT => {
            let arity = u32_at(bytes, at)?;
            fits(bytes, at + 4, arity, 2)?;
            let depth = nested(depth)?;
            let mut next = at + 4;
            for _ in 0..arity {
                next = skip(bytes, next, depth)?;
                next = skip(bytes, next, depth)?;
            }
            next
        }
        // Opaque terms: validated so that they can be skipped, never read.
        NEW_PID_EXT => skip_atom(bytes, at)? + 12,
        PID_EXT => skip_atom(bytes, at)? + 9,
        NEW_PORT_EXT => skip_atom(bytes, at)? + 8,
        V4_PORT_EXT => skip_atom(bytes, at)? + 12,
        PORT_EXT => skip_atom(bytes, at)? + 5,
        REFERENCE_EXT => skip_atom(bytes, at)? + 5,
        NEW_REFERENCE_EXT | NEWER_REFERENCE_EXT => {
            let ids = u16_at(bytes, at)?;
            let creation = if tag == NEW_REFERENCE_EXT { 1 } else { 4 };
            skip_atom(bytes, at + 2)? + creation + 4 * ids
        }
        EXPORT_EXT => {
            let next = skip_atom(bytes, at)?;
            let next = skip_atom(bytes, next)?;
            if u8_at(bytes, next)? != SMALL_INTEGER_EXT {
                return Err(EtfError::UnsupportedTag(tag));
            }
            next + 2
        }
        NEW_FUN_EXT => {
            // Its size counts itself and everything after the tag.
            let size = u32_at(bytes, at)?;
            if size < 4 {
                return Err(EtfError::Length(size as u64));
            }
            at + size
        }
        other => return Err(EtfError::UnsupportedTag(other)),
    };
    if end > bytes.len() {
        return Err(EtfError::Truncated);
    }
    Ok(end)
}

fn skip_atom(bytes: &[u8], pos: usize) -> Result<usize, EtfError> {
    let (atom, end) = read_atom(bytes, pos)?;
    atom.check()?;
    Ok(end)
}

/// Validates a whole term (the body of a frame, after the version byte).
pub(crate) fn validate(body: &[u8]) -> Result<(), EtfError> {
    let end = skip(body, 0, 0)?;
    if end != body.len() {
        return Err(EtfError::Trailing(body.len() - end));
    }
    Ok(())
}

/// An atom as the frame holds it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AtomRef<'a> {
    bytes: &'a [u8],
    utf8: bool,
}

impl<'a> AtomRef<'a> {
    fn check(&self) -> Result<(), EtfError> {
        if self.utf8 {
            let text = std::str::from_utf8(self.bytes).map_err(|_| EtfError::InvalidAtom)?;
            if text.chars().count() > 255 {
                return Err(EtfError::InvalidAtom);
            }
        } else if self.bytes.len() > 255 {
            return Err(EtfError::InvalidAtom);
        }
        Ok(())
    }

    /// The atom's text (Latin-1 atoms converted to UTF-8).
    pub(crate) fn text(&self) -> Cow<'a, str> {
        if self.utf8 || self.bytes.is_ascii() {
            // Checked by `skip`; lossless for valid input.
            String::from_utf8_lossy(self.bytes)
        } else {
            Cow::Owned(self.bytes.iter().map(|&b| char::from(b)).collect())
        }
    }

    /// Whether the frame wrote it as a UTF-8 atom (`ATOM_UTF8_EXT` or
    /// `SMALL_ATOM_UTF8_EXT`, as OTP 26 and later write every atom).
    pub(crate) fn is_utf8(&self) -> bool {
        self.utf8
    }

    /// Whether the atom is `name`, without allocating.
    pub(crate) fn is(&self, name: &str) -> bool {
        if self.utf8 || self.bytes.is_ascii() {
            self.bytes == name.as_bytes()
        } else {
            self.bytes.len() == name.chars().count()
                && self
                    .bytes
                    .iter()
                    .zip(name.chars())
                    .all(|(&b, c)| char::from(b) == c)
        }
    }
}

fn read_atom(bytes: &[u8], pos: usize) -> Result<(AtomRef<'_>, usize), EtfError> {
    let tag = u8_at(bytes, pos)?;
    let (len, start, utf8) = match tag {
        ATOM_EXT => (u16_at(bytes, pos + 1)?, pos + 3, false),
        ATOM_UTF8_EXT => (u16_at(bytes, pos + 1)?, pos + 3, true),
        SMALL_ATOM_EXT => (usize::from(u8_at(bytes, pos + 1)?), pos + 2, false),
        SMALL_ATOM_UTF8_EXT => (usize::from(u8_at(bytes, pos + 1)?), pos + 2, true),
        other => return Err(EtfError::UnsupportedTag(other)),
    };
    let bytes = take(bytes, start, len)?;
    Ok((AtomRef { bytes, utf8 }, start + len))
}

/// A validated term, read lazily: containers keep their encoded items.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TermRef<'a> {
    Int(i64),
    UInt(u64),
    /// An integer beyond `i64` and `u64`: its sign and little-endian
    /// digits as the frame holds them.
    BigInt {
        negative: bool,
        digits: &'a [u8],
    },
    Float(f64),
    Atom(AtomRef<'a>),
    Binary(&'a [u8]),
    /// `STRING_EXT`: a list of small integers.
    Bytes(&'a [u8]),
    /// A proper or improper list: `count` elements then the tail.
    List {
        count: usize,
        items: &'a [u8],
    },
    Tuple {
        arity: usize,
        items: &'a [u8],
    },
    Map {
        arity: usize,
        items: &'a [u8],
    },
    /// A pid, port, reference, fun or bitstring (or a `FLOAT_EXT` that is
    /// not a float): its tag and the bytes after the tag.
    Opaque(u8, &'a [u8]),
}

/// Reads the validated term at `pos`: the term and where it ends.
pub(crate) fn read(bytes: &[u8], pos: usize) -> Result<(TermRef<'_>, usize), EtfError> {
    Ok((view(bytes, pos)?, skip(bytes, pos, 0)?))
}

/// The items of a container from `pos` on (to the end of the bytes: the
/// container's count bounds what is read of them).
fn from(bytes: &[u8], pos: usize) -> Result<&[u8], EtfError> {
    bytes.get(pos..).ok_or(EtfError::Truncated)
}

/// Reads the validated term at `pos`, without walking it: a container's
/// items are read as they are iterated ([`Items`]).
pub(crate) fn view(bytes: &[u8], pos: usize) -> Result<TermRef<'_>, EtfError> {
    let tag = u8_at(bytes, pos)?;
    let at = pos + 1;
    let term = match tag {
        SMALL_INTEGER_EXT => TermRef::Int(i64::from(u8_at(bytes, at)?)),
        INTEGER_EXT => {
            let b = take(bytes, at, 4)?;
            TermRef::Int(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        }
        NEW_FLOAT_EXT => {
            let b = take(bytes, at, 8)?;
            let mut raw = [0_u8; 8];
            raw.copy_from_slice(b);
            TermRef::Float(f64::from_be_bytes(raw))
        }
        FLOAT_EXT => {
            let text = take(bytes, at, 31)?;
            let text = std::str::from_utf8(text)
                .unwrap_or("")
                .trim_end_matches('\0');
            match text.trim().parse() {
                Ok(value) => TermRef::Float(value),
                Err(_) => TermRef::Opaque(tag, take(bytes, at, 31)?),
            }
        }
        ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT => {
            TermRef::Atom(read_atom(bytes, pos)?.0)
        }
        NIL_EXT => TermRef::List {
            count: 0,
            items: &[],
        },
        STRING_EXT => TermRef::Bytes(take(bytes, at + 2, u16_at(bytes, at)?)?),
        BINARY_EXT => TermRef::Binary(take(bytes, at + 4, u32_at(bytes, at)?)?),
        SMALL_BIG_EXT => big(
            u8_at(bytes, at + 1)? != 0,
            take(bytes, at + 2, usize::from(u8_at(bytes, at)?))?,
        ),
        LARGE_BIG_EXT => big(
            u8_at(bytes, at + 4)? != 0,
            take(bytes, at + 5, u32_at(bytes, at)?)?,
        ),
        SMALL_TUPLE_EXT => TermRef::Tuple {
            arity: usize::from(u8_at(bytes, at)?),
            items: from(bytes, at + 1)?,
        },
        LARGE_TUPLE_EXT => TermRef::Tuple {
            arity: u32_at(bytes, at)?,
            items: from(bytes, at + 4)?,
        },
        LIST_EXT => TermRef::List {
            count: u32_at(bytes, at)?,
            items: from(bytes, at + 4)?,
        },
        MAP_EXT => TermRef::Map {
            arity: u32_at(bytes, at)?,
            items: from(bytes, at + 4)?,
        },
        // Flat terms (a fun states its size): finding the end is cheap.
        other => TermRef::Opaque(other, take(bytes, at, skip(bytes, pos, 0)? - at)?),
    };
    Ok(term)
}

/// A bignum: little-endian digits.
fn big(negative: bool, digits: &[u8]) -> TermRef<'_> {
    let significant = digits.iter().rposition(|&d| d != 0).map_or(0, |i| i + 1);
    if significant > 8 {
        return TermRef::BigInt { negative, digits };
    }
    let magnitude = digits[..significant]
        .iter()
        .rev()
        .fold(0_u64, |acc, &d| (acc << 8) | u64::from(d));
    if !negative {
        return match i64::try_from(magnitude) {
            Ok(value) => TermRef::Int(value),
            Err(_) => TermRef::UInt(magnitude),
        };
    }
    if magnitude <= i64::MAX as u64 + 1 {
        TermRef::Int(0_i64.wrapping_sub_unsigned(magnitude))
    } else {
        TermRef::BigInt { negative, digits }
    }
}

/// The items of a validated container, in order. The end of an item is
/// found (by walking it) only when the next one is asked for, so the last
/// item of a container is never walked twice.
pub(crate) struct Items<'a> {
    bytes: &'a [u8],
    pos: usize,
    left: usize,
    /// Where the item last returned starts, until the next one is read.
    current: Option<usize>,
}

impl<'a> Items<'a> {
    pub(crate) fn new(items: &'a [u8], count: usize) -> Self {
        Self {
            bytes: items,
            pos: 0,
            left: count,
            current: None,
        }
    }

    /// Moves past the item last returned.
    fn advance(&mut self) -> Result<(), EtfError> {
        if let Some(start) = self.current.take() {
            self.pos = skip(self.bytes, start, 0)?;
        }
        Ok(())
    }

    pub(crate) fn next_term(&mut self) -> Result<Option<TermRef<'a>>, EtfError> {
        self.advance()?;
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let term = view(self.bytes, self.pos)?;
        self.current = Some(self.pos);
        Ok(Some(term))
    }

    /// The next item and its encoded bytes.
    pub(crate) fn next_with_bytes(&mut self) -> Result<Option<(TermRef<'a>, &'a [u8])>, EtfError> {
        self.advance()?;
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let term = view(self.bytes, self.pos)?;
        let end = skip(self.bytes, self.pos, 0)?;
        let bytes = take(self.bytes, self.pos, end - self.pos)?;
        self.pos = end;
        Ok(Some((term, bytes)))
    }

    /// What follows the items: a list's tail.
    fn rest(&mut self) -> Result<TermRef<'a>, EtfError> {
        self.advance()?;
        view(self.bytes, self.pos)
    }
}

// ---------------------------------------------------------------- serde

/// A payload value that does not fit the message's type.
#[derive(Debug)]
pub(crate) struct DeError(pub(crate) String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

impl From<EtfError> for DeError {
    fn from(error: EtfError) -> Self {
        Self(error.to_string())
    }
}

/// A serde `Deserializer` over a validated term, in Elixir's terms: atom
/// keys and atoms read as strings, `nil` as `None` (or unit), `true` and
/// `false` as booleans, binaries as strings (or bytes when not UTF-8),
/// lists and tuples as sequences, maps as maps.
#[derive(Clone, Copy)]
pub(crate) struct TermDeserializer<'a>(pub(crate) TermRef<'a>);

impl<'de> TermDeserializer<'de> {
    fn unsupported(self, what: &str) -> DeError {
        DeError(format!("{what} cannot be read from this term"))
    }
}

struct Seq<'a>(Items<'a>);

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.0.next_term()? {
            Some(term) => seed.deserialize(TermDeserializer(term)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.left)
    }
}

struct ByteSeq<'a>(std::slice::Iter<'a, u8>);

impl<'de> SeqAccess<'de> for ByteSeq<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.0.next() {
            Some(&byte) => seed.deserialize(byte.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
}

struct Map<'a> {
    items: Items<'a>,
    /// A payload's map: only atom keys name fields (see [`PayloadDeserializer`]).
    atom_fields: bool,
    /// The key of `value`, to name the field when its value does not fit.
    key: Option<TermRef<'a>>,
    value: Option<TermRef<'a>>,
}

/// A map key: atoms and binaries as their text. As a struct's field name
/// in a payload's map (`atom_fields`), only an atom names a field: another
/// key names none, and is passed over as an unknown field is.
struct Key<'a> {
    term: TermRef<'a>,
    atom_fields: bool,
}

impl<'de> Deserializer<'de> for Key<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.term {
            TermRef::Atom(atom) => match atom.text() {
                Cow::Borrowed(text) => visitor.visit_borrowed_str(text),
                Cow::Owned(text) => visitor.visit_string(text),
            },
            other => TermDeserializer(other).deserialize_any(visitor),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.term {
            TermRef::Atom(_) => self.deserialize_any(visitor),
            // A field index no struct has: serde's derived field visitor
            // takes it as an unknown field.
            _ if self.atom_fields => visitor.visit_u64(u64::MAX),
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum ignored_any
    }
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(key) = self.items.next_term()? else {
            return Ok(None);
        };
        self.value = self.items.next_term()?;
        self.key = Some(key);
        seed.deserialize(Key {
            term: key,
            atom_fields: self.atom_fields,
        })
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(value) => seed.deserialize(TermDeserializer(value)).map_err(|error| {
                // Named by its key, so that a skipped frame's log line says
                // which field did not fit.
                let key = match self.key {
                    Some(TermRef::Atom(atom)) => atom.text().chars().take(64).collect(),
                    Some(TermRef::Binary(bytes)) => {
                        String::from_utf8_lossy(bytes).chars().take(64).collect()
                    }
                    _ => String::from("?"),
                };
                DeError(format!("field `{key}`: {error}"))
            }),
            None => Err(DeError("a map value is missing".to_owned())),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.left / 2)
    }
}

impl<'de> Deserializer<'de> for TermDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            TermRef::Int(value) => visitor.visit_i64(value),
            TermRef::UInt(value) => visitor.visit_u64(value),
            TermRef::BigInt { .. } => Err(self.unsupported("an integer this large")),
            TermRef::Float(value) => visitor.visit_f64(value),
            TermRef::Atom(atom) if atom.is("nil") => visitor.visit_unit(),
            TermRef::Atom(atom) if atom.is("true") => visitor.visit_bool(true),
            TermRef::Atom(atom) if atom.is("false") => visitor.visit_bool(false),
            TermRef::Atom(atom) => match atom.text() {
                Cow::Borrowed(text) => visitor.visit_borrowed_str(text),
                Cow::Owned(text) => visitor.visit_string(text),
            },
            TermRef::Binary(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => visitor.visit_borrowed_str(text),
                Err(_) => visitor.visit_borrowed_bytes(bytes),
            },
            TermRef::Bytes(bytes) => visitor.visit_seq(ByteSeq(bytes.iter())),
            TermRef::List { count, items } => {
                let mut seq = Seq(Items::new(items, count));
                let value = visitor.visit_seq(&mut seq)?;
                // The visitor may stop early: drain, then check the tail.
                while seq.0.next_term()?.is_some() {}
                match seq.0.rest() {
                    Ok(TermRef::List { count: 0, .. }) => Ok(value),
                    _ if count == 0 => Ok(value),
                    _ => Err(self.unsupported("an improper list")),
                }
            }
            TermRef::Tuple { arity, items } => visitor.visit_seq(Seq(Items::new(items, arity))),
            TermRef::Map { arity, items } => visitor.visit_map(Map {
                items: Items::new(items, arity.saturating_mul(2)),
                atom_fields: false,
                key: None,
                value: None,
            }),
            TermRef::Opaque(tag, _) => Err(DeError(format!(
                "a term with tag {tag} (pid, port, reference, fun or bitstring) cannot be read"
            ))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            TermRef::Atom(atom) if atom.is("nil") => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Validated already: nothing to walk.
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let text: Cow<'de, str> = match self.0 {
            TermRef::Atom(atom) => atom.text(),
            TermRef::Binary(bytes) => Cow::Borrowed(
                std::str::from_utf8(bytes).map_err(|_| self.unsupported("an enum variant"))?,
            ),
            _ => return Err(self.unsupported("an enum variant")),
        };
        visitor.visit_enum(text.into_owned().into_deserializer())
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        Key {
            term: self.0,
            atom_fields: false,
        }
        .deserialize_any(visitor)
    }

    /// A string is an Elixir string: a UTF-8 binary, nothing else. A
    /// charlist, a list of integers, an atom or a non-UTF-8 binary is
    /// refused here rather than offered to the visitor, whose sequence
    /// and byte forms would take 16 of anything as a `Uuid`.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            TermRef::Binary(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => visitor.visit_borrowed_str(text),
                Err(_) => Err(DeError(
                    "invalid type: a binary that is not UTF-8, expected a string".to_owned(),
                )),
            },
            other => Err(DeError(format!(
                "invalid type: {}, expected a string (a UTF-8 binary)",
                kind(other)
            ))),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
    }
}

/// The payload map of a message, `{scope, event, payload}`: as
/// [`TermDeserializer`], except that the payload's fields are its map's
/// atom keys only (`%{uuid: ..}`); a binary key (`%{"uuid" => ..}`, what
/// decoded JSON params hold) names no field. Maps nested in the payload
/// are read by [`TermDeserializer`], whose binary keys are names as the
/// encoder writes them.
#[derive(Clone, Copy)]
pub(crate) struct PayloadDeserializer<'a>(pub(crate) TermRef<'a>);

impl<'de> Deserializer<'de> for PayloadDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            TermRef::Map { arity, items } => visitor.visit_map(Map {
                items: Items::new(items, arity.saturating_mul(2)),
                atom_fields: true,
                key: None,
                value: None,
            }),
            other => TermDeserializer(other).deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// What a term is, in Elixir's words, for an error message.
fn kind(term: TermRef<'_>) -> &'static str {
    match term {
        TermRef::Int(_) | TermRef::UInt(_) | TermRef::BigInt { .. } => "an integer",
        TermRef::Float(_) => "a float",
        TermRef::Atom(atom) if atom.is("nil") => "nil",
        TermRef::Atom(_) => "an atom",
        TermRef::Binary(_) => "a binary",
        TermRef::Bytes(_) => "a charlist (a list of small integers)",
        TermRef::List { .. } => "a list",
        TermRef::Tuple { .. } => "a tuple",
        TermRef::Map { .. } => "a map",
        TermRef::Opaque(..) => "a pid, port, reference, fun or bitstring",
    }
}

// ---------------------------------------------------------------- writing

/// Writes an atom as OTP 25 does: `ATOM_EXT` with Latin-1 bytes when every
/// character is Latin-1, else `SMALL_ATOM_UTF8_EXT`.
pub(crate) fn write_atom(out: &mut Vec<u8>, name: &str) -> Result<(), EtfError> {
    if name.chars().count() > 255 {
        return Err(EtfError::Encode("an atom longer than 255 characters"));
    }
    if name.is_ascii() {
        out.push(ATOM_EXT);
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
    } else if name.chars().all(|c| u32::from(c) <= 0xff) {
        out.push(ATOM_EXT);
        out.extend_from_slice(&(name.chars().count() as u16).to_be_bytes());
        out.extend(name.chars().map(|c| u32::from(c) as u8));
    } else if name.len() <= 255 {
        out.push(SMALL_ATOM_UTF8_EXT);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    } else {
        out.push(ATOM_UTF8_EXT);
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    Ok(())
}

/// How atoms are written: the one choice in which the encoders of OTP
/// releases differ for the terms Phoenix sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AtomEncoding {
    /// `ATOM_EXT` (Latin-1 bytes) whenever every character is Latin-1,
    /// else `SMALL_ATOM_UTF8_EXT`: what OTP 25 and earlier write, and the
    /// form of every frame an Elixir node of the captures sent.
    #[default]
    Latin1,
    /// `SMALL_ATOM_UTF8_EXT` (`ATOM_UTF8_EXT` past 255 bytes) for every
    /// atom: what OTP 26 and later write (and the captures' Python replica).
    Utf8,
}

/// Writes an atom in `encoding`.
pub(crate) fn write_atom_as(
    out: &mut Vec<u8>,
    name: &str,
    encoding: AtomEncoding,
) -> Result<(), EtfError> {
    match encoding {
        AtomEncoding::Latin1 => write_atom(out, name),
        AtomEncoding::Utf8 => {
            if name.chars().count() > 255 {
                return Err(EtfError::Encode("an atom longer than 255 characters"));
            }
            if name.len() <= 255 {
                out.push(SMALL_ATOM_UTF8_EXT);
                out.push(name.len() as u8);
            } else {
                out.push(ATOM_UTF8_EXT);
                // At most 255 characters of at most 4 bytes: fits a u16.
                out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(name.as_bytes());
            Ok(())
        }
    }
}

pub(crate) fn write_binary(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EtfError> {
    let len = u32::try_from(bytes.len()).map_err(|_| EtfError::Encode("a binary over 4 GiB"))?;
    out.push(BINARY_EXT);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_small_tuple(out: &mut Vec<u8>, arity: u8) {
    out.push(SMALL_TUPLE_EXT);
    out.push(arity);
}

pub(crate) fn write_int(out: &mut Vec<u8>, value: i128) {
    if (0..=255).contains(&value) {
        out.push(SMALL_INTEGER_EXT);
        out.push(value as u8);
    } else if let Ok(small) = i32::try_from(value) {
        out.push(INTEGER_EXT);
        out.extend_from_slice(&small.to_be_bytes());
    } else {
        let magnitude = value.unsigned_abs();
        let digits = magnitude.to_le_bytes();
        let len = digits.iter().rposition(|&d| d != 0).map_or(0, |i| i + 1);
        out.push(SMALL_BIG_EXT);
        out.push(len as u8);
        out.push(u8::from(value < 0));
        out.extend_from_slice(&digits[..len]);
    }
}

/// Writes `term` as `term_to_binary/1` does, with atoms in `encoding`:
/// the smallest integer form, `NEW_FLOAT_EXT`, `STRING_EXT` for a proper
/// list of at most 65535 integers in 0..=255 (as OTP writes such a list),
/// map pairs in the order the term holds them, and an opaque term's bytes
/// as they are.
pub(crate) fn write_term(
    out: &mut Vec<u8>,
    term: &Term,
    encoding: AtomEncoding,
    depth: usize,
) -> Result<(), EtfError> {
    if depth > MAX_DEPTH {
        return Err(EtfError::TooDeep);
    }
    match term {
        Term::Int(value) => write_int(out, *value),
        Term::BigInt { negative, digits } => {
            if let Ok(len) = u8::try_from(digits.len()) {
                out.push(SMALL_BIG_EXT);
                out.push(len);
            } else {
                let len = u32::try_from(digits.len())
                    .map_err(|_| EtfError::Encode("an integer over 4 GiB"))?;
                out.push(LARGE_BIG_EXT);
                out.extend_from_slice(&len.to_be_bytes());
            }
            out.push(u8::from(*negative));
            out.extend_from_slice(digits);
        }
        Term::Float(value) => {
            out.push(NEW_FLOAT_EXT);
            out.extend_from_slice(&value.to_be_bytes());
        }
        Term::Atom(name) => write_atom_as(out, name, encoding)?,
        Term::Binary(bytes) => write_binary(out, bytes)?,
        Term::List(items, None) if items.is_empty() => out.push(NIL_EXT),
        Term::List(items, None)
            if items.len() <= usize::from(u16::MAX)
                && items.iter().all(|item| matches!(item, Term::Int(0..=255))) =>
        {
            out.push(STRING_EXT);
            out.extend_from_slice(&(items.len() as u16).to_be_bytes());
            out.extend(items.iter().map(|item| match item {
                Term::Int(byte) => *byte as u8,
                _ => 0,
            }));
        }
        Term::List(items, tail) => {
            if items.is_empty() {
                return Err(EtfError::Encode("an improper list without elements"));
            }
            let len =
                u32::try_from(items.len()).map_err(|_| EtfError::Encode("a list too long"))?;
            out.push(LIST_EXT);
            out.extend_from_slice(&len.to_be_bytes());
            for item in items {
                write_term(out, item, encoding, depth + 1)?;
            }
            match tail {
                Some(tail) => write_term(out, tail, encoding, depth + 1)?,
                None => out.push(NIL_EXT),
            }
        }
        Term::Tuple(items) => {
            if let Ok(arity) = u8::try_from(items.len()) {
                write_small_tuple(out, arity);
            } else {
                let arity = u32::try_from(items.len())
                    .map_err(|_| EtfError::Encode("a tuple too large"))?;
                out.push(LARGE_TUPLE_EXT);
                out.extend_from_slice(&arity.to_be_bytes());
            }
            for item in items {
                write_term(out, item, encoding, depth + 1)?;
            }
        }
        Term::Map(pairs) => {
            write_map_header(out, pairs.len())?;
            for (key, value) in pairs {
                write_term(out, key, encoding, depth + 1)?;
                write_term(out, value, encoding, depth + 1)?;
            }
        }
        Term::Opaque(tag, bytes) => {
            out.push(*tag);
            out.extend_from_slice(bytes);
        }
    }
    Ok(())
}

/// `MAP_EXT` and its arity: the pairs follow.
pub(crate) fn write_map_header(out: &mut Vec<u8>, arity: usize) -> Result<(), EtfError> {
    let arity = u32::try_from(arity).map_err(|_| EtfError::Encode("a map too large"))?;
    out.push(MAP_EXT);
    out.extend_from_slice(&arity.to_be_bytes());
    Ok(())
}

/// `NIL_EXT`: `[]`.
pub(crate) fn write_nil(out: &mut Vec<u8>) {
    out.push(NIL_EXT);
}

/// `NEW_PID_EXT`: the node atom in `encoding`, then the three words.
pub(crate) fn write_pid(
    out: &mut Vec<u8>,
    node: &str,
    id: u32,
    serial: u32,
    creation: u32,
    encoding: AtomEncoding,
) -> Result<(), EtfError> {
    out.push(NEW_PID_EXT);
    write_atom_as(out, node, encoding)?;
    for word in [id, serial, creation] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    Ok(())
}

/// The bytes after the tag of a `NEWER_REFERENCE_EXT`, as
/// [`Term::Opaque`] holds them: the count of ids, the node atom in
/// `encoding`, the creation, the ids.
pub(crate) fn newer_reference(
    node: &str,
    creation: u32,
    ids: &[u32],
    encoding: AtomEncoding,
) -> Result<Term, EtfError> {
    let count = u16::try_from(ids.len()).map_err(|_| EtfError::Encode("too many ids"))?;
    let mut out = Vec::with_capacity(2 + 3 + node.len() + 4 + 4 * ids.len());
    out.extend_from_slice(&count.to_be_bytes());
    write_atom_as(&mut out, node, encoding)?;
    out.extend_from_slice(&creation.to_be_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
    Ok(Term::Opaque(NEWER_REFERENCE_EXT, out))
}

/// The tag of a pid (`NEW_PID_EXT`), to tell one among opaque terms.
pub(crate) const PID_TAG: u8 = NEW_PID_EXT;

/// Reads the body of a `NEW_PID_EXT` (the bytes after its tag): node
/// atom, id, serial, creation.
pub(crate) fn read_pid(body: &[u8]) -> Result<(AtomRef<'_>, u32, u32, u32), EtfError> {
    let (atom, at) = read_atom(body, 0)?;
    atom.check()?;
    let word = |n: usize| -> Result<u32, EtfError> {
        let b = take(body, at + 4 * n, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if body.len() != at + 12 {
        return Err(EtfError::Length(body.len() as u64));
    }
    Ok((atom, word(0)?, word(1)?, word(2)?))
}

/// Writes a JSON value as Elixir would hold it: objects as maps (keys as
/// atoms when `atom_keys`, else binaries; in sorted order, which is
/// Erlang's term order for atom and binary keys), strings as binaries,
/// `null` as `nil`, booleans as `true`/`false`, arrays as lists.
pub(crate) fn write_json(
    out: &mut Vec<u8>,
    value: &serde_json::Value,
    atom_keys: bool,
    depth: usize,
) -> Result<(), EtfError> {
    use serde_json::Value;
    if depth > MAX_DEPTH {
        return Err(EtfError::TooDeep);
    }
    match value {
        Value::Null => write_atom(out, "nil")?,
        Value::Bool(true) => write_atom(out, "true")?,
        Value::Bool(false) => write_atom(out, "false")?,
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                write_int(out, i128::from(int));
            } else if let Some(int) = number.as_u64() {
                write_int(out, i128::from(int));
            } else {
                out.push(NEW_FLOAT_EXT);
                out.extend_from_slice(&number.as_f64().unwrap_or(f64::NAN).to_be_bytes());
            }
        }
        Value::String(text) => write_binary(out, text.as_bytes())?,
        Value::Array(items) if items.is_empty() => out.push(NIL_EXT),
        Value::Array(items) => {
            let len =
                u32::try_from(items.len()).map_err(|_| EtfError::Encode("a list too long"))?;
            out.push(LIST_EXT);
            out.extend_from_slice(&len.to_be_bytes());
            for item in items {
                write_json(out, item, false, depth + 1)?;
            }
            out.push(NIL_EXT);
        }
        Value::Object(map) => {
            let len = u32::try_from(map.len()).map_err(|_| EtfError::Encode("a map too large"))?;
            let mut pairs: Vec<_> = map.iter().collect();
            pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(MAP_EXT);
            out.extend_from_slice(&len.to_be_bytes());
            for (key, value) in pairs {
                if atom_keys {
                    write_atom(out, key)?;
                } else {
                    write_binary(out, key.as_bytes())?;
                }
                write_json(out, value, false, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// `131` then the term, compressed with zlib at `level` (1..=9) as
/// `term_to_binary(term, compressed: level)` does: only when that is
/// smaller.
pub(crate) fn finish(term: &[u8], level: u32, out: &mut Vec<u8>) -> Result<(), EtfError> {
    out.push(VERSION);
    if level > 0 {
        let size = u32::try_from(term.len()).map_err(|_| EtfError::Encode("a term over 4 GiB"))?;
        let mut encoder = flate2::write::ZlibEncoder::new(
            Vec::with_capacity(term.len() / 2),
            flate2::Compression::new(level.min(9)),
        );
        let compressed = encoder
            .write_all(term)
            .and_then(|()| encoder.finish())
            .map_err(|_| EtfError::Encode("zlib failed"))?;
        if compressed.len() + 5 < term.len() {
            out.push(COMPRESSED);
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&compressed);
            return Ok(());
        }
    }
    out.extend_from_slice(term);
    Ok(())
}

// ---------------------------------------------------------------- owned

/// An Erlang term, owned: what [`decode_term`](super::decode_term) returns,
/// to inspect or compare frames. Maps compare equal whatever the order of
/// their pairs (as Erlang maps do).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Term {
    /// An integer that fits in an `i128`.
    Int(i128),
    /// A larger integer: its sign and little-endian magnitude.
    BigInt {
        /// Whether it is negative.
        negative: bool,
        /// The magnitude's bytes, least significant first.
        digits: Vec<u8>,
    },
    /// A float.
    Float(f64),
    /// An atom, by its text (Latin-1 and UTF-8 atoms alike).
    Atom(String),
    /// A binary (an Elixir string when UTF-8).
    Binary(Vec<u8>),
    /// A list: its elements and its tail (`[]` for a proper list,
    /// [`Term::List`] with no elements and no tail).
    List(Vec<Term>, Option<Box<Term>>),
    /// A tuple.
    Tuple(Vec<Term>),
    /// A map, as pairs in the frame's order.
    Map(Vec<(Term, Term)>),
    /// A pid, port, reference, fun or bitstring: its tag and bytes.
    Opaque(u8, Vec<u8>),
}

impl PartialEq for Term {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Term::Int(a), Term::Int(b)) => a == b,
            (
                Term::BigInt {
                    negative: a,
                    digits: x,
                },
                Term::BigInt {
                    negative: b,
                    digits: y,
                },
            ) => a == b && x == y,
            (Term::Float(a), Term::Float(b)) => a.to_bits() == b.to_bits(),
            (Term::Atom(a), Term::Atom(b)) => a == b,
            (Term::Binary(a), Term::Binary(b)) => a == b,
            (Term::List(a, x), Term::List(b, y)) => a == b && x == y,
            (Term::Tuple(a), Term::Tuple(b)) => a == b,
            (Term::Map(a), Term::Map(b)) => {
                a.len() == b.len() && a.iter().all(|pair| b.contains(pair))
            }
            (Term::Opaque(a, x), Term::Opaque(b, y)) => a == b && x == y,
            _ => false,
        }
    }
}

impl Term {
    /// Erlang's term order (`number < atom < reference < fun < port < pid
    /// < tuple < map < [] < list < bitstring`): the order in which OTP 25
    /// writes the keys of a map of up to 32 pairs. Integers compare by
    /// value, and an integer before a float of the same value; atoms by
    /// their UTF-8 text; binaries bytewise; tuples by arity, then
    /// elementwise; lists elementwise; maps by size, then by their pairs
    /// in key order. Opaque terms of one kind compare by their bytes (an
    /// approximation of OTP's pid and reference order, which no tracker
    /// map key needs).
    pub(crate) fn erl_cmp(&self, other: &Term) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        fn class(term: &Term) -> u8 {
            match term {
                Term::Int(_) | Term::BigInt { .. } | Term::Float(_) => 0,
                Term::Atom(_) => 1,
                Term::Opaque(REFERENCE_EXT | NEW_REFERENCE_EXT | NEWER_REFERENCE_EXT, _) => 2,
                Term::Opaque(NEW_FUN_EXT | EXPORT_EXT, _) => 3,
                Term::Opaque(PORT_EXT | NEW_PORT_EXT | V4_PORT_EXT, _) => 4,
                Term::Opaque(PID_EXT | NEW_PID_EXT, _) => 5,
                Term::Tuple(_) => 6,
                Term::Map(_) => 7,
                Term::List(items, _) if items.is_empty() => 8,
                Term::List(..) => 9,
                Term::Binary(_) | Term::Opaque(..) => 10,
            }
        }
        /// A number's sign and magnitude ordering, then int before float.
        fn numbers(a: &Term, b: &Term) -> Ordering {
            let big = |negative: bool| {
                if negative {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            };
            match (a, b) {
                (Term::Int(x), Term::Int(y)) => x.cmp(y),
                (Term::Float(x), Term::Float(y)) => x.total_cmp(y),
                (Term::Int(x), Term::Float(y)) => (*x as f64)
                    .partial_cmp(y)
                    .unwrap_or(Ordering::Less)
                    .then(Ordering::Less),
                (Term::Float(_), Term::Int(_)) => numbers(b, a).reverse(),
                (
                    Term::BigInt {
                        negative: n,
                        digits: x,
                    },
                    Term::BigInt {
                        negative: m,
                        digits: y,
                    },
                ) => {
                    let magnitude = |d: &[u8]| {
                        let len = d.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                        d[..len].to_vec()
                    };
                    let (x, y) = (magnitude(x), magnitude(y));
                    let by_magnitude = x
                        .len()
                        .cmp(&y.len())
                        .then_with(|| x.iter().rev().cmp(y.iter().rev()));
                    match (n, m) {
                        (false, false) => by_magnitude,
                        (true, true) => by_magnitude.reverse(),
                        (true, false) => Ordering::Less,
                        (false, true) => Ordering::Greater,
                    }
                }
                // A big integer lies beyond every i128 and every float
                // of the range tracker terms use.
                (Term::BigInt { negative, .. }, _) => big(*negative),
                (_, Term::BigInt { negative, .. }) => big(*negative).reverse(),
                _ => Ordering::Equal,
            }
        }
        let by_class = class(self).cmp(&class(other));
        if by_class != Ordering::Equal {
            return by_class;
        }
        match (self, other) {
            (Term::Atom(a), Term::Atom(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Term::Binary(a), Term::Binary(b)) => a.cmp(b),
            (Term::Tuple(a), Term::Tuple(b)) => a.len().cmp(&b.len()).then_with(|| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| x.erl_cmp(y))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            }),
            (Term::List(a, x), Term::List(b, y)) => a
                .iter()
                .zip(b)
                .map(|(p, q)| p.erl_cmp(q))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| match (a.len().cmp(&b.len()), x, y) {
                    (Ordering::Equal, Some(x), Some(y)) => x.erl_cmp(y),
                    (Ordering::Equal, None, Some(_)) => Ordering::Less,
                    (Ordering::Equal, Some(_), None) => Ordering::Greater,
                    (by_len, _, _) => by_len,
                }),
            (Term::Map(a), Term::Map(b)) => a.len().cmp(&b.len()).then_with(|| {
                fn sorted(pairs: &[(Term, Term)]) -> Vec<&(Term, Term)> {
                    let mut pairs: Vec<&(Term, Term)> = pairs.iter().collect();
                    pairs.sort_by(|p, q| p.0.erl_cmp(&q.0));
                    pairs
                }
                let (a, b) = (sorted(a), sorted(b));
                a.iter()
                    .zip(&b)
                    .map(|(p, q)| p.0.erl_cmp(&q.0))
                    .chain(a.iter().zip(&b).map(|(p, q)| p.1.erl_cmp(&q.1)))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            }),
            (Term::Opaque(s, x), Term::Opaque(t, y)) => s.cmp(t).then_with(|| x.cmp(y)),
            (Term::Opaque(..), Term::Binary(_)) => Ordering::Less,
            (Term::Binary(_), Term::Opaque(..)) => Ordering::Greater,
            _ => numbers(self, other),
        }
    }

    /// The term at `pos` of validated bytes, owned.
    pub(crate) fn read_owned(bytes: &[u8], pos: usize) -> Result<(Term, usize), EtfError> {
        let (term, end) = read(bytes, pos)?;
        Ok((Term::from_ref(term)?, end))
    }

    /// A validated term, owned.
    pub(crate) fn from_ref(term: TermRef<'_>) -> Result<Term, EtfError> {
        let owned = match term {
            TermRef::Int(value) => Term::Int(i128::from(value)),
            TermRef::UInt(value) => Term::Int(i128::from(value)),
            TermRef::BigInt { negative, digits } => Term::BigInt {
                negative,
                digits: digits.to_vec(),
            },
            TermRef::Float(value) => Term::Float(value),
            TermRef::Atom(atom) => Term::Atom(atom.text().into_owned()),
            TermRef::Binary(bytes) => Term::Binary(bytes.to_vec()),
            TermRef::Bytes(bytes) => Term::List(
                bytes.iter().map(|&b| Term::Int(i128::from(b))).collect(),
                None,
            ),
            // Counts were validated against the bytes that follow (each
            // item takes at least one): reserving them is bounded.
            TermRef::List { count, items } => {
                let mut elements = Vec::with_capacity(count);
                let mut at = 0;
                for _ in 0..count {
                    let (element, next) = Term::read_owned(items, at)?;
                    elements.push(element);
                    at = next;
                }
                let tail = if count == 0 {
                    None
                } else {
                    match Term::read_owned(items, at)?.0 {
                        Term::List(nil, None) if nil.is_empty() => None,
                        tail => Some(Box::new(tail)),
                    }
                };
                Term::List(elements, tail)
            }
            TermRef::Tuple { arity, items } => {
                let mut elements = Vec::with_capacity(arity);
                let mut at = 0;
                for _ in 0..arity {
                    let (element, next) = Term::read_owned(items, at)?;
                    elements.push(element);
                    at = next;
                }
                Term::Tuple(elements)
            }
            TermRef::Map { arity, items } => {
                let mut pairs = Vec::with_capacity(arity);
                let mut at = 0;
                for _ in 0..arity {
                    let (key, next) = Term::read_owned(items, at)?;
                    let (value, next) = Term::read_owned(items, next)?;
                    pairs.push((key, value));
                    at = next;
                }
                Term::Map(pairs)
            }
            TermRef::Opaque(tag, body) => Term::Opaque(tag, body.to_vec()),
        };
        Ok(owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Term, EtfError> {
        let body = body(bytes, 1 << 20)?;
        validate(&body)?;
        Ok(Term::read_owned(&body, 0)?.0)
    }

    #[test]
    fn integers_round_trip() {
        for value in [
            0_i128,
            255,
            256,
            -1,
            i128::from(i32::MAX),
            i128::from(i32::MIN),
            i128::from(i32::MAX) + 1,
            i128::from(i64::MAX),
            i128::from(i64::MIN),
            i128::from(u64::MAX),
        ] {
            let mut term = Vec::new();
            write_int(&mut term, value);
            let mut frame = Vec::new();
            finish(&term, 0, &mut frame).unwrap();
            assert_eq!(decode(&frame).unwrap(), Term::Int(value), "{value}");
        }
    }

    #[test]
    fn latin1_and_utf8_atoms_are_read_as_text() {
        let mut term = Vec::new();
        write_atom(&mut term, "été").unwrap();
        assert_eq!(term[0], ATOM_EXT);
        assert_eq!(&term[3..], [0xe9, b't', 0xe9]);
        let mut frame = Vec::new();
        finish(&term, 0, &mut frame).unwrap();
        assert_eq!(decode(&frame).unwrap(), Term::Atom("été".into()));
        let mut term = Vec::new();
        write_atom(&mut term, "Ωmega").unwrap();
        assert_eq!(term[0], SMALL_ATOM_UTF8_EXT);
        let mut frame = Vec::new();
        finish(&term, 0, &mut frame).unwrap();
        assert_eq!(decode(&frame).unwrap(), Term::Atom("Ωmega".into()));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut frame = vec![VERSION];
        for _ in 0..=MAX_DEPTH {
            frame.extend_from_slice(&[SMALL_TUPLE_EXT, 1]);
        }
        frame.push(NIL_EXT);
        assert_eq!(decode(&frame), Err(EtfError::TooDeep));
        let mut ok = vec![VERSION];
        for _ in 0..MAX_DEPTH {
            ok.extend_from_slice(&[SMALL_TUPLE_EXT, 1]);
        }
        ok.push(NIL_EXT);
        assert!(decode(&ok).is_ok());
    }
}
