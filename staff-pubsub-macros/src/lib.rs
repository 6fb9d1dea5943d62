//! The `#[staff_events]` attribute macro of
//! [staff-pubsub](https://docs.rs/staff-pubsub): declare entities, topics and
//! routes once, get typed topic functions, events, a message type and
//! fan-out functions. Use it through `staff_pubsub::staff_events`, whose
//! documentation describes the spec language.
//!
//! The pipeline: `attr` reads the macro's arguments and helper attributes,
//! `ast` reads the module into a spec, `valid` checks it (collecting every
//! error), `expand` generates the code.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod ast;
mod attr;
mod ctxt;
mod entry;
mod expand;
mod extend;
mod fallback;
mod names;
mod plan;
mod types;
mod valid;

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
    extend::staff_events_extend(input.into()).into()
}
