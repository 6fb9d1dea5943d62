//! What reads and checks a spec, below what generates code (as
//! serde_derive's `internals`): nothing here imports `expand`, `extend`,
//! `fallback` or `entry`.
//!
//! From the bottom up: `ctxt` collects errors; `names` converts case and
//! derives the spec's words; `types` recognises field types; `attr` reads
//! the macro's arguments and helper attributes; `ast` reads the module into
//! a [`Spec`](ast::Spec); `items` declares every item the macro generates
//! (name, signature, fallback); `routes` plans the topics each broadcast
//! reaches; `valid` checks the spec, generated names included.

pub(crate) mod ast;
pub(crate) mod attr;
pub(crate) mod ctxt;
pub(crate) mod items;
pub(crate) mod names;
pub(crate) mod routes;
pub(crate) mod types;
pub(crate) mod valid;
