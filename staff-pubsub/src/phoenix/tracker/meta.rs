//! A presence's metadata between Rust types and Elixir maps: what a Rust
//! replica of an Elixir tracker sends and reads.
//!
//! - Sent: the Rust value as JSON (`serde`), which must be an object (a
//!   struct, or a map with string keys): its keys become **atoms**, as
//!   `Phoenix.Presence` metas have them (`%{name: "Ada"}`); strings are
//!   binaries, integers and floats themselves, `null` (and a `None`
//!   field) `nil`, booleans `true`/`false`, arrays lists, nested objects
//!   maps with binary keys. The tracker's own keys (`phx_ref`,
//!   `phx_ref_prev`) are added as atoms, replacing fields of those names.
//! - Read: the Elixir map, keys atoms or binaries alike, read by the
//!   Rust type's `Deserialize` as Elixir terms read
//!   (`crate::phoenix::etf::TermDeserializer`): atoms and UTF-8 binaries
//!   as strings, `nil` as `None` or unit, lists and tuples as sequences.
//!   `phx_ref` (and `phx_ref_prev`) are among the keys: a struct without
//!   such fields passes over them, a map keeps them.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::phoenix::etf::{self, AtomEncoding, TermDeserializer};

use super::types::Meta;

impl Meta {
    /// The meta read into `T` (see the [module](self)).
    ///
    /// # Errors
    ///
    /// The map does not fit `T`: the error names what does not.
    pub(crate) fn read_into<T: DeserializeOwned>(&self) -> Result<T, String> {
        let term = etf::view(self.raw().as_bytes(), 0).map_err(|error| error.to_string())?;
        T::deserialize(TermDeserializer(term)).map_err(|error| error.to_string())
    }

    /// The meta of `value` with the tracker's keys `extra` (`phx_ref`,
    /// and `phx_ref_prev` on update) added as atom keys (see the
    /// [module](self)), its atoms in `atoms`.
    ///
    /// # Errors
    ///
    /// `value` does not serialize as a JSON object, or cannot be written
    /// (an atom key over 255 characters, nesting too deep).
    pub(crate) fn of_value<T: Serialize + ?Sized>(
        value: &T,
        extra: &[(&str, &str)],
        atoms: AtomEncoding,
    ) -> Result<Self, String> {
        let mut json = crate::phoenix::value::to_value(value).map_err(|error| error.to_string())?;
        let Some(object) = json.as_object_mut() else {
            return Err("the metadata does not serialize as a map".to_owned());
        };
        for (key, text) in extra {
            object.insert((*key).to_owned(), serde_json::Value::from(*text));
        }
        Self::from_json(&json, atoms)
            .ok_or_else(|| "the metadata cannot be written as an Elixir map".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phoenix::etf::Term;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Viewer {
        name: String,
        online_at: u64,
        role: Option<String>,
    }

    #[test]
    fn a_struct_is_an_atom_keyed_map_with_phx_ref_and_reads_back() {
        let viewer = Viewer {
            name: "Ada".into(),
            online_at: 1_795_000_000,
            role: None,
        };
        let meta = Meta::of_value(
            &viewer,
            &[("phx_ref", "GO6mI__VuMAAZQGC")],
            AtomEncoding::Latin1,
        )
        .expect("a map");
        let pairs = meta.to_pairs().expect("pairs");
        let keys: Vec<&Term> = pairs.iter().map(|(key, _)| key).collect();
        assert_eq!(
            keys,
            [
                &Term::Atom("name".into()),
                &Term::Atom("online_at".into()),
                &Term::Atom("phx_ref".into()),
                &Term::Atom("role".into()),
            ]
        );
        assert_eq!(pairs[3].1, Term::Atom("nil".into()), "None is nil");
        assert_eq!(meta.get_str("phx_ref"), Some("GO6mI__VuMAAZQGC"));
        assert_eq!(meta.read_into::<Viewer>(), Ok(viewer));
        let map: std::collections::BTreeMap<String, serde_json::Value> =
            meta.read_into().expect("a map reads as a map");
        assert_eq!(map["phx_ref"], "GO6mI__VuMAAZQGC");
    }

    #[test]
    fn a_value_that_is_not_a_map_is_refused() {
        assert!(Meta::of_value("viewing", &[], AtomEncoding::Latin1).is_err());
        assert!(Meta::of_value(&[1, 2], &[], AtomEncoding::Latin1).is_err());
    }
}
