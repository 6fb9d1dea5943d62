//! Names derived from the spec, shared by validation and expansion so that
//! what is checked is exactly what is generated.

use proc_macro2::Ident;
use quote::format_ident;

use crate::ast::{Entity, Spec};
use crate::attr::EntityKind;
use crate::names::upper_camel_case;

/// The variant of an event: the atom without the entity's own prefix, in
/// UpperCamelCase (`team_created` of `team` -> `Created`;
/// `team_person_added` of `team_membership` -> `TeamPersonAdded`).
pub(crate) fn variant_name(entity: &str, event: &str) -> String {
    let bare = event
        .strip_prefix(entity)
        .and_then(|rest| rest.strip_prefix('_'))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(event);
    upper_camel_case(bare)
}

pub(crate) fn variant_ident(entity: &Entity, event: &Ident) -> Ident {
    format_ident!(
        "{}",
        variant_name(&entity.name.value, &event.to_string()),
        span = event.span()
    )
}

pub(crate) fn event_enum(entity: &Entity) -> Ident {
    format_ident!("{}Event", entity.ident)
}

pub(crate) fn topic_fn(word: &str) -> Ident {
    format_ident!("topic_{}", word)
}

pub(crate) fn broadcast_fn(entity: &Entity) -> Ident {
    format_ident!("broadcast_{}", entity.name.value)
}

pub(crate) fn broadcast_on_fn(entity: &Entity) -> Ident {
    format_ident!("broadcast_{}_on", entity.name.value)
}

/// `staff:teams`, `staff:team`: a topic string, or the name of a keyed topic.
pub(crate) fn topic_string(scope: &str, word: &str) -> String {
    format!("{scope}:{word}")
}

/// `team_membership` -> `team membership`, for docs.
pub(crate) fn display_name(name: &str) -> String {
    name.replace('_', " ")
}

/// Names of the module-level items the macro generates, besides the payloads.
pub(crate) const FIXED_ITEMS: &[&str] = &[
    "SCOPE",
    "TOPIC_KINDS",
    "EVENTS",
    "ROUTES",
    "SPEC",
    "Message",
    "parse_topic",
    "server",
    "install",
    "subscribe",
    "__SERVER",
];

/// Every item name the macro adds to the module. Strings, not idents: this
/// runs before the names are known to be valid identifiers.
pub(crate) fn generated_names(spec: &Spec) -> Vec<String> {
    let mut names: Vec<String> = FIXED_ITEMS.iter().map(|s| (*s).to_owned()).collect();
    for entity in &spec.entities {
        let name = &entity.name.value;
        names.push(format!("{}Event", entity.ident));
        names.push(format!("broadcast_{name}"));
        names.push(format!("broadcast_{name}_on"));
        if entity.kind == EntityKind::Entity {
            names.push(format!("topic_{name}"));
            if let Some(collection) = &entity.collection {
                names.push(format!("topic_{}", collection.value));
            }
        }
        if entity.inherited_from.is_some() {
            names.push(entity.ident.to_string());
        }
    }
    names
}
