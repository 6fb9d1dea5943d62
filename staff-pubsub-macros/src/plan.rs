//! Names derived from the spec, shared by validation and expansion so that
//! what is checked is exactly what is generated.

use proc_macro2::Ident;
use quote::format_ident;

use crate::ast::{Entity, Spec};
use crate::attr::EntityKind;
use crate::names::upper_camel_case;

/// The variant of an event: the atom without the entity's own prefix, in
/// UpperCamelCase (`team_created` of `team` -> `Created`;
/// `team_person_added` of `team_membership` -> `TeamPersonAdded`). When the
/// stripped name is no identifier (`account_2fa_enabled` -> `2faEnabled`,
/// `account_self` -> `Self`), the whole atom is used.
pub(crate) fn variant_name(entity: &str, event: &str) -> String {
    let stripped = event
        .strip_prefix(entity)
        .and_then(|rest| rest.strip_prefix('_'))
        .filter(|rest| !rest.is_empty())
        .map(upper_camel_case);
    match stripped {
        Some(variant) if is_ident(&variant) => variant,
        _ => upper_camel_case(event),
    }
}

/// Whether `name` can be written as a Rust identifier (not a keyword).
pub(crate) fn is_ident(name: &str) -> bool {
    syn::parse_str::<syn::Ident>(name).is_ok()
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
    "builder",
    "install",
    "scope",
    "subscribe",
    "subscribe_many",
    "__SERVER",
    "__SCOPED",
    "__default_server",
    "__global",
    "__to_extension",
    "__to_base",
    "__link_global",
];

/// One item name the macro adds to the module.
pub(crate) struct Generated {
    pub(crate) name: String,
    /// The entity it is generated for (index into the spec's entities);
    /// `None` for the module-wide items.
    pub(crate) owner: Option<usize>,
    /// A re-export of an inherited payload, not a new item.
    pub(crate) reexport: bool,
    /// Which pattern made the name (`"topic_{}"`, ...). Two entities whose
    /// names clash through the *same* pattern have the same name, topic or
    /// payload type, which other rules report.
    pub(crate) pattern: &'static str,
}

/// Every item name the macro adds to the module. Strings, not idents: this
/// runs before the names are known to be valid identifiers.
pub(crate) fn generated_names(spec: &Spec) -> Vec<Generated> {
    let fixed = FIXED_ITEMS.iter().map(|name| Generated {
        name: (*name).to_owned(),
        owner: None,
        reexport: false,
        pattern: "fixed",
    });
    let mut names: Vec<Generated> = fixed.collect();
    if spec.options.extensible {
        names.push(Generated {
            name: crate::entry::CARRIER.to_owned(),
            owner: None,
            reexport: false,
            pattern: "fixed",
        });
    }
    for (index, entity) in spec.entities.iter().enumerate() {
        let name = &entity.name.value;
        let mut own = vec![
            ("{}Event", format!("{}Event", entity.ident)),
            ("broadcast_{}", format!("broadcast_{name}")),
            ("broadcast_{}_on", format!("broadcast_{name}_on")),
        ];
        if entity.kind == EntityKind::Entity {
            own.push(("topic_{}", format!("topic_{name}")));
            if let Some(collection) = &entity.collection {
                own.push(("topic_{}", format!("topic_{}", collection.value)));
            }
        }
        if entity.inherited_from.is_some() {
            own.push(("payload", entity.ident.to_string()));
        }
        names.extend(own.into_iter().map(|(pattern, name)| Generated {
            reexport: pattern == "payload",
            name,
            owner: Some(index),
            pattern,
        }));
    }
    names
}
