//! The spec as read from the annotated module: which structs are payloads,
//! their names, events, fields and routes. Helper attributes are removed from
//! the module here, so that it can be emitted as it is whether or not the
//! spec is valid.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, Fields, Ident, Item, ItemMod, ItemStruct, Type, Visibility};

use super::attr::{
    misspelled_helper, EntityAttr, EntityKind, Name, Options, RouteAttr, RouteKind, FIELD_HELPERS,
    RENAMED_STRUCT_HELPERS, STRUCT_HELPERS,
};
use super::ctxt::Ctxt;
use super::names::snake_case;

pub(crate) struct Spec {
    pub(crate) options: Options,
    /// The user's module, helper attributes removed.
    pub(crate) module: ItemMod,
    pub(crate) entities: Vec<Entity>,
}

pub(crate) struct Entity {
    pub(crate) kind: EntityKind,
    /// The payload struct.
    pub(crate) ident: Ident,
    /// Its visibility, as written.
    pub(crate) vis: Visibility,
    /// Where the `#[entity]`/`#[relation]` attribute is.
    pub(crate) span: Span,
    /// The singular name: `team`, `team_membership`.
    pub(crate) name: Name,
    /// The collection name (`people`); entities only.
    pub(crate) collection: Option<Name>,
    pub(crate) events: Vec<Ident>,
    pub(crate) events_span: Option<Span>,
    pub(crate) fields: Vec<Field>,
    pub(crate) generics: syn::Generics,
    /// Whether the struct has named fields (`struct X { .. }`).
    pub(crate) named_fields: bool,
    /// Index of the struct among the module's items.
    pub(crate) item_index: usize,
    /// Where an inherited entity is defined (`path::to::spec`); `None` for
    /// the entities of this module.
    pub(crate) inherited_from: Option<syn::Path>,
}

pub(crate) struct Field {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    pub(crate) route: Option<RouteAttr>,
}

impl Entity {
    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.ident == name)
    }

    pub(crate) fn routed_fields(&self) -> impl Iterator<Item = (&Field, &RouteAttr)> {
        self.fields
            .iter()
            .filter_map(|f| f.route.as_ref().map(|r| (f, r)))
    }
}

impl Spec {
    /// Reads the spec out of `module`, recording every problem in `cx`.
    pub(crate) fn from_module(cx: &mut Ctxt, options: Options, mut module: ItemMod) -> Self {
        let mut entities = Vec::new();
        match &mut module.content {
            Some((_, items)) => {
                for (item_index, item) in items.iter_mut().enumerate() {
                    if let Some(entity) = read_item(cx, item, item_index) {
                        entities.push(entity);
                    }
                }
            }
            None => cx.error_spanned_by(
                &module,
                "#[staff_events] needs the spec inline: `mod name { ... }`, not `mod name;`",
            ),
        }
        Spec {
            options,
            module,
            entities,
        }
    }
}

/// Reads one item: a payload struct yields an entity; any other item is
/// checked for misplaced helper attributes and left alone.
fn read_item(cx: &mut Ctxt, item: &mut Item, item_index: usize) -> Option<Entity> {
    let Item::Struct(item) = item else {
        if let Some(attrs) = item_attrs(item) {
            reject_helpers(
                cx,
                attrs,
                STRUCT_HELPERS,
                "goes on a payload struct with named fields",
            );
        }
        return None;
    };
    let marker = take_entity_attr(cx, &mut item.attrs);
    let fields = take_fields(cx, item, marker.is_some());
    let attr = marker?;
    let attr = match attr {
        Ok(attr) => attr,
        Err(error) => {
            cx.push(error);
            return None;
        }
    };
    let name = attr.name.unwrap_or_else(|| Name {
        value: snake_case(&item.ident.to_string()),
        span: item.ident.span(),
    });
    Some(Entity {
        kind: attr.kind,
        ident: item.ident.clone(),
        vis: item.vis.clone(),
        span: attr.span,
        name,
        collection: attr.collection,
        events: attr.events,
        events_span: attr.events_span,
        fields,
        generics: item.generics.clone(),
        named_fields: matches!(item.fields, Fields::Named(_)),
        item_index,
        inherited_from: None,
    })
}

/// Removes and parses the `#[entity]` or `#[relation]` attribute of a struct.
fn take_entity_attr(cx: &mut Ctxt, attrs: &mut Vec<Attribute>) -> Option<syn::Result<EntityAttr>> {
    let kinds = [
        ("entity", EntityKind::Entity),
        ("relation", EntityKind::Relation),
    ];
    let helpers = Helpers {
        names: STRUCT_HELPERS,
        renamed: RENAMED_STRUCT_HELPERS,
        once: "a payload struct takes one `#[entity]` or `#[relation]` attribute",
    };
    take_helper(cx, attrs, &kinds, &helpers, EntityAttr::parse)
}

/// Removes and parses the `#[route]`/`#[endpoint]` attributes of a struct's
/// fields. On a struct that is not a payload they are errors.
fn take_fields(cx: &mut Ctxt, item: &mut ItemStruct, is_payload: bool) -> Vec<Field> {
    let mut fields = Vec::new();
    for field in item.fields.iter_mut() {
        let route = take_route_attr(cx, &mut field.attrs);
        if !is_payload {
            if let Some(Ok(route)) = &route {
                cx.error_at(
                    route.span,
                    format!(
                        "`#[{}]` only applies to fields of an `#[entity]` or `#[relation]` struct",
                        route.kind.attr_name()
                    ),
                );
            }
        }
        let route = match route {
            Some(Ok(route)) => Some(route),
            Some(Err(error)) => {
                cx.push(error);
                None
            }
            None => None,
        };
        if let Some(ident) = &field.ident {
            fields.push(Field {
                ident: ident.clone(),
                ty: field.ty.clone(),
                route,
            });
        }
    }
    fields
}

fn take_route_attr(cx: &mut Ctxt, attrs: &mut Vec<Attribute>) -> Option<syn::Result<RouteAttr>> {
    let kinds = [
        ("route", RouteKind::Route),
        ("endpoint", RouteKind::Endpoint),
    ];
    let helpers = Helpers {
        names: FIELD_HELPERS,
        renamed: &[],
        once: "a field takes one `#[route]` or `#[endpoint]` attribute",
    };
    take_helper(cx, attrs, &kinds, &helpers, RouteAttr::parse)
}

/// The helper attributes of one position (struct or field).
struct Helpers {
    names: &'static [&'static str],
    /// `(old, new, why)`: see [`RENAMED_STRUCT_HELPERS`].
    renamed: &'static [(&'static str, &'static str, &'static str)],
    /// The error for a second one.
    once: &'static str,
}

/// Removes the helper attributes named in `kinds` from `attrs` and parses the
/// one allowed; reports a second one, near misses of the helper names and
/// former names (which are removed too, so rustc adds no error of its own; a
/// former name is read as the current one).
fn take_helper<K: Copy, T>(
    cx: &mut Ctxt,
    attrs: &mut Vec<Attribute>,
    kinds: &[(&str, K)],
    helpers: &Helpers,
    parse: fn(&Attribute, K) -> syn::Result<T>,
) -> Option<syn::Result<T>> {
    let mut found = None;
    let mut kept = Vec::with_capacity(attrs.len());
    for attr in attrs.drain(..) {
        let mut name = attr.path().get_ident().map(ToString::to_string);
        if let Some((_, new, why)) = helpers
            .renamed
            .iter()
            .find(|(old, ..)| name.as_deref() == Some(old))
        {
            cx.error_spanned_by(
                attr.path(),
                format!("{why} (and the former name of `#[{new}]`); did you mean `#[{new}(...)]`?"),
            );
            name = Some((*new).to_owned());
        }
        let Some((_, kind)) = kinds.iter().find(|(kind, _)| name.as_deref() == Some(kind)) else {
            match misspelled_helper(&attr, helpers.names) {
                Some(helper) => cx.error_spanned_by(
                    attr.path(),
                    format!("unknown attribute; did you mean `#[{helper}(...)]`?"),
                ),
                None => kept.push(attr),
            }
            continue;
        };
        if found.is_some() {
            cx.error_spanned_by(&attr, helpers.once);
            continue;
        }
        found = Some(parse(&attr, *kind));
    }
    *attrs = kept;
    found
}

/// Reports helper attributes on items that cannot carry them, and removes them.
fn reject_helpers(cx: &mut Ctxt, attrs: &mut Vec<Attribute>, helpers: &[&str], rule: &str) {
    attrs.retain(|attr| {
        let Some(helper) = helpers.iter().find(|h| attr.path().is_ident(h)) else {
            return true;
        };
        cx.error_at(attr.path().span(), format!("`#[{helper}]` {rule}"));
        false
    });
}

fn item_attrs(item: &mut Item) -> Option<&mut Vec<Attribute>> {
    Some(match item {
        Item::Const(i) => &mut i.attrs,
        Item::Enum(i) => &mut i.attrs,
        Item::Fn(i) => &mut i.attrs,
        Item::Impl(i) => &mut i.attrs,
        Item::Mod(i) => &mut i.attrs,
        Item::Static(i) => &mut i.attrs,
        Item::Trait(i) => &mut i.attrs,
        Item::Type(i) => &mut i.attrs,
        Item::Union(i) => &mut i.attrs,
        Item::Use(i) => &mut i.attrs,
        _ => return None,
    })
}

/// The name an item defines in the module, if it is one the macro could
/// generate (a type, a function, a constant, ...).
pub(crate) fn item_ident(item: &Item) -> Option<&syn::Ident> {
    match item {
        Item::Const(i) => Some(&i.ident),
        Item::Enum(i) => Some(&i.ident),
        Item::Fn(i) => Some(&i.sig.ident),
        Item::Static(i) => Some(&i.ident),
        Item::Struct(i) => Some(&i.ident),
        Item::Trait(i) => Some(&i.ident),
        Item::Type(i) => Some(&i.ident),
        Item::Union(i) => Some(&i.ident),
        Item::Mod(i) => Some(&i.ident),
        _ => None,
    }
}
