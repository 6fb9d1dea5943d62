//! The macro's own arguments and its helper attributes: `#[entity(...)]`,
//! `#[relation(...)]` on payload structs, `#[route(...)]` and
//! `#[endpoint(...)]` on their fields.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Ident, LitStr, Token};

use super::ctxt::Ctxt;
use super::names::did_you_mean;

/// A string from the spec with the span of its literal, for errors.
#[derive(Clone, Debug)]
pub(crate) struct Name {
    pub(crate) value: String,
    pub(crate) span: Span,
}

impl Name {
    pub(crate) fn from_lit(lit: &LitStr) -> Self {
        Self {
            value: lit.value(),
            span: lit.span(),
        }
    }
}

/// `#[staff_events(scope = "...", crate = "...", extends = path)]`.
pub(crate) struct Options {
    pub(crate) scope: Option<Name>,
    /// The path of the runtime crate in the generated code.
    pub(crate) krate: syn::Path,
    /// A spec this one extends (see the crate docs).
    pub(crate) extends: Option<syn::Path>,
    /// Whether other crates may extend this spec.
    pub(crate) extensible: bool,
    /// Where `extensible` was written, for the error when it cannot apply.
    pub(crate) extensible_span: Option<Span>,
}

const OPTION_KEYS: &[&str] = &["scope", "crate", "extends", "extensible"];

impl Options {
    pub(crate) fn parse(cx: &mut Ctxt, args: TokenStream) -> Self {
        let mut options = Options {
            scope: None,
            krate: syn::parse_quote!(::staff_pubsub),
            extends: None,
            extensible: false,
            extensible_span: None,
        };
        let parser = syn::meta::parser(|meta| options.parse_one(&meta));
        if let Err(error) = syn::parse::Parser::parse2(parser, args) {
            cx.push(error);
        }
        if let (Some(span), Some(_)) = (options.extensible_span, &options.extends) {
            cx.error_at(
                span,
                "an extension cannot itself be extended: remove `extensible` (or `extends`)",
            );
        }
        options
    }

    /// `<runtime>::__private`: every path of the generated code goes
    /// through it.
    pub(crate) fn private_path(&self) -> TokenStream {
        let krate = &self.krate;
        quote::quote!(#krate::__private)
    }

    fn parse_one(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        if meta.path.is_ident("scope") {
            self.scope = Some(Name::from_lit(&meta.value()?.parse()?));
        } else if meta.path.is_ident("crate") {
            let lit: LitStr = meta.value()?.parse()?;
            self.krate = lit.parse().map(absolute_crate_path).map_err(|_| {
                syn::Error::new(lit.span(), "`crate` takes the path of the runtime crate, e.g. `crate = \"my_staff_pubsub\"`")
            })?;
        } else if meta.path.is_ident("extends") {
            self.extends = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("extensible") {
            self.extensible = true;
            self.extensible_span = Some(meta.path.span());
        } else {
            return Err(unknown_key(meta, "#[staff_events]", OPTION_KEYS));
        }
        Ok(())
    }
}

/// Which helper attribute marks a payload struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntityKind {
    /// `#[entity]`: has its own collection and per-entity topics.
    Entity,
    /// `#[relation]`: joins entities and reaches their topics only.
    Relation,
}

/// The contents of `#[entity(...)]` or `#[relation(...)]`.
pub(crate) struct EntityAttr {
    pub(crate) kind: EntityKind,
    pub(crate) span: Span,
    pub(crate) name: Option<Name>,
    pub(crate) collection: Option<Name>,
    pub(crate) events: Vec<Ident>,
    pub(crate) events_span: Option<Span>,
}

const ENTITY_KEYS: &[&str] = &["name", "collection", "events"];
const RELATION_KEYS: &[&str] = &["name", "events"];

impl EntityAttr {
    pub(crate) fn parse(attr: &Attribute, kind: EntityKind) -> syn::Result<Self> {
        let mut parsed = EntityAttr {
            kind,
            span: attr.path().span(),
            name: None,
            collection: None,
            events: Vec::new(),
            events_span: None,
        };
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                parsed.name = Some(Name::from_lit(&meta.value()?.parse()?));
            } else if meta.path.is_ident("collection") && kind == EntityKind::Entity {
                parsed.collection = Some(Name::from_lit(&meta.value()?.parse()?));
            } else if meta.path.is_ident("events") {
                parsed.events_span = Some(meta.path.span());
                let content;
                syn::parenthesized!(content in meta.input);
                let events = Punctuated::<Ident, Token![,]>::parse_terminated(&content).map_err(|error| {
                    syn::Error::new(error.span(), "an event is a snake_case name such as `team_created`")
                })?;
                parsed.events.extend(events);
            } else if meta.path.is_ident("collection") {
                return Err(meta.error(
                    "a `#[relation]` has no collection of its own: it reaches the topics of its `#[endpoint]` fields",
                ));
            } else {
                let (what, keys) = match kind {
                    EntityKind::Entity => ("#[entity]", ENTITY_KEYS),
                    EntityKind::Relation => ("#[relation]", RELATION_KEYS),
                };
                return Err(unknown_key(&meta, what, keys));
            }
            Ok(())
        })?;
        Ok(parsed)
    }
}

/// `#[route(entity)]` or `#[endpoint(entity)]` on a payload field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// `#[route(department)]`: also reach `topic_department(field)`.
    Route,
    /// `#[endpoint(team)]`: reach `topic_teams()` and `topic_team(field)`.
    Endpoint,
}

impl RouteKind {
    pub(crate) fn attr_name(self) -> &'static str {
        match self {
            RouteKind::Route => "route",
            RouteKind::Endpoint => "endpoint",
        }
    }
}

pub(crate) struct RouteAttr {
    pub(crate) kind: RouteKind,
    pub(crate) span: Span,
    pub(crate) target: Ident,
}

impl RouteAttr {
    pub(crate) fn parse(attr: &Attribute, kind: RouteKind) -> syn::Result<Self> {
        let target: Ident = attr.parse_args().map_err(|error| {
            syn::Error::new(
                error.span(),
                format!(
                    "`#[{}]` names one entity, e.g. `#[{}(department)]`",
                    kind.attr_name(),
                    kind.attr_name()
                ),
            )
        })?;
        Ok(RouteAttr {
            kind,
            span: attr.span(),
            target,
        })
    }
}

/// The helper attribute names the macro consumes.
pub(crate) const STRUCT_HELPERS: &[&str] = &["entity", "relation"];

/// Former names of helper attributes, `(old, new, why)`: the old name is an
/// error naming the new one, and is read as the new one, so that the rest of
/// the spec is still checked. `#[link]` is also rustc's own attribute.
pub(crate) const RENAMED_STRUCT_HELPERS: &[(&str, &str, &str)] = &[(
    "link",
    "relation",
    "`#[link]` is rustc's attribute for native libraries",
)];
pub(crate) const FIELD_HELPERS: &[&str] = &["route", "endpoint"];

/// A near miss of a helper attribute name (`#[entiy]`), for a clear error
/// instead of rustc's "cannot find attribute".
pub(crate) fn misspelled_helper(
    attr: &Attribute,
    helpers: &[&'static str],
) -> Option<&'static str> {
    let ident = attr.path().get_ident()?.to_string();
    if helpers.contains(&ident.as_str()) {
        return None;
    }
    did_you_mean(&ident, helpers)
}

fn unknown_key(meta: &ParseNestedMeta<'_>, what: &str, keys: &[&str]) -> syn::Error {
    let key = meta
        .path
        .get_ident()
        .map(ToString::to_string)
        .unwrap_or_default();
    let expected = keys
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = did_you_mean(&key, keys)
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    meta.error(format!(
        "unknown key `{key}` in `{what}`: expected one of {expected}{hint}"
    ))
}

/// `my_runtime` -> `::my_runtime`: a bare crate name resolves through the
/// extern prelude, which `#![no_implicit_prelude]` turns off; a leading `::`
/// always reaches the crate. `crate`, `self` and `super` paths stay as written.
fn absolute_crate_path(mut path: syn::Path) -> syn::Path {
    let relative_keyword = path
        .segments
        .first()
        .is_some_and(|s| s.ident == "crate" || s.ident == "self" || s.ident == "super");
    if path.leading_colon.is_none() && !relative_keyword {
        path.leading_colon = Some(Default::default());
    }
    path
}
