//! The `#[staff_events]` attribute macro of
//! [staff-pubsub](https://docs.rs/staff-pubsub): declare entities, topics and
//! routes once, get typed topic functions, events, a message type and
//! fan-out functions. Use it through `staff_pubsub::staff_events`, whose
//! documentation describes the spec language.
//!
//! In layers, as serde_derive: `internals` reads and checks the spec (`attr`
//! reads the macro's arguments and helper attributes, `ast` the module,
//! `items` declares every generated item, `routes` plans the topics each
//! broadcast reaches, `valid` checks it all, collecting every error); above
//! it, `expand` generates the code of a valid spec, `fallback` the stubs of
//! one with errors, `extend` reads an extension; `entry` drives them. No
//! module imports one above it.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod entry;
mod expand;
mod extend;
mod fallback;
mod internals;

use proc_macro::TokenStream;

/// Generates a typed pub/sub API from a spec module. See
/// `staff_pubsub::staff_events` for the spec language.
#[proc_macro_attribute]
pub fn staff_events(args: TokenStream, input: TokenStream) -> TokenStream {
    entry::staff_events(args.into(), input.into()).into()
}

/// The second step of `#[staff_events(extends = ...)]`: called back by the
/// extended spec's carrier macro with that spec's tokens. Not for direct use.
#[doc(hidden)]
#[proc_macro]
pub fn __staff_events_extend(input: TokenStream) -> TokenStream {
    entry::staff_events_extend(input.into()).into()
}
