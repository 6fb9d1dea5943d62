//! The rules a spec must follow, one function each. Every rule reports into
//! the context and goes on, so that all mistakes show in one compile.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::Visibility;

use super::ast::{item_ident, Entity, Field, Spec};
use super::attr::{EntityKind, Name, RouteKind};
use super::ctxt::Ctxt;
use super::items::{self, generated_names, Gen, Generated};
use super::names::{did_you_mean, is_ident, is_lower_snake, variant_name};
use super::types::{is_uuid, option_inner};

pub(crate) fn check(cx: &mut Ctxt, spec: &Spec) {
    check_scope(cx, spec);
    check_not_empty(cx, spec);
    for entity in local_entities(spec) {
        check_shape(cx, entity);
        check_public(cx, entity);
        check_names(cx, entity);
        check_uuid_field(cx, entity);
        check_event_list(cx, entity);
    }
    check_unique_entities(cx, spec);
    check_unique_topics(cx, spec);
    check_unique_events(cx, spec);
    check_routes(cx, spec);
    check_relation_endpoints(cx, spec);
    check_generated_names_are_free(cx, spec);
    check_generated_names_are_distinct(cx, spec);
}

/// Entities declared in this module (not inherited): the ones whose mistakes
/// this compile can point at.
fn local_entities(spec: &Spec) -> impl Iterator<Item = &Entity> {
    spec.entities.iter().filter(|e| e.inherited_from.is_none())
}

fn check_scope(cx: &mut Ctxt, spec: &Spec) {
    match &spec.options.scope {
        None => cx.error_at(
            Span::call_site(),
            "#[staff_events] needs a scope, the first segment of every topic: `#[staff_events(scope = \"staff\")]`",
        ),
        Some(scope) => check_topic_word(cx, scope, "scope"),
    }
}

fn check_not_empty(cx: &mut Ctxt, spec: &Spec) {
    if spec.module.content.is_some() && spec.entities.is_empty() {
        cx.error_spanned_by(
            &spec.module.ident,
            "the spec declares no entity: mark a payload struct with `#[entity(collection = \"...\", events(...))]`",
        );
    }
}

/// A word that becomes part of topic strings and of function names.
fn check_topic_word(cx: &mut Ctxt, word: &Name, what: &str) {
    if word.value.is_empty() {
        cx.error_at(word.span, format!("the {what} must not be empty"));
    } else if word.value.contains(':') {
        cx.error_at(
            word.span,
            format!("the {what} must not contain `:`, which separates topic segments"),
        );
    } else if word.value.chars().any(char::is_whitespace) {
        cx.error_at(
            word.span,
            format!("the {what} must not contain white space"),
        );
    } else if !is_lower_snake(&word.value) {
        cx.error_at(
            word.span,
            format!("the {what} must be lower snake_case (`[a-z][a-z0-9_]*`): it becomes part of topic and function names"),
        );
    }
}

fn check_shape(cx: &mut Ctxt, entity: &Entity) {
    if !entity.named_fields {
        cx.error_spanned_by(
            &entity.ident,
            "a payload is a struct with named fields: `struct Team { uuid: Uuid, .. }`",
        );
    }
    let generics = &entity.generics;
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        cx.error_spanned_by(
            generics,
            "payload structs cannot be generic: every event must have one concrete payload type",
        );
    }
}

/// The generated `Message` and `broadcast_*` functions are `pub` and name
/// the payload: a less visible payload would leak through them.
fn check_public(cx: &mut Ctxt, entity: &Entity) {
    let broadcast = items::broadcast_fn(entity);
    let message = format!(
        "the payload `{}` must be `pub`: it is part of the generated `pub` items `Message` and `{broadcast}`",
        entity.ident,
    );
    match &entity.vis {
        Visibility::Public(_) => {}
        Visibility::Inherited => cx.error_spanned_by(&entity.ident, message),
        restricted @ Visibility::Restricted(_) => cx.error_spanned_by(restricted, message),
    }
}

fn check_names(cx: &mut Ctxt, entity: &Entity) {
    check_topic_word(cx, &entity.name, "entity name");
    match (&entity.collection, entity.kind) {
        (Some(collection), _) => {
            check_topic_word(cx, collection, "collection");
            if collection.value == entity.name.value {
                cx.error_at(
                    collection.span,
                    format!(
                        "the collection must differ from the entity name `{}`: `topic_{}()` and `topic_{}(id)` would clash",
                        entity.name.value, collection.value, entity.name.value
                    ),
                );
            }
        }
        (None, EntityKind::Entity) => cx.error_at(
            entity.span,
            format!(
                "an entity needs its collection name, e.g. `collection = \"{}s\"` (spell irregular plurals out: `people`)",
                entity.name.value
            ),
        ),
        (None, EntityKind::Relation) => {}
    }
}

fn check_uuid_field(cx: &mut Ctxt, entity: &Entity) {
    if !entity.named_fields {
        return;
    }
    match entity.field("uuid") {
        None => cx.error_spanned_by(
            &entity.ident,
            format!(
                "the payload `{}` needs a `uuid: Uuid` field: every payload carries its id",
                entity.ident
            ),
        ),
        Some(field) if !is_uuid(&field.ty) => {
            cx.error_spanned_by(
                &field.ty,
                "the `uuid` field must be of type `Uuid` (uuid::Uuid, not optional)",
            );
        }
        Some(_) => {}
    }
}

fn check_event_list(cx: &mut Ctxt, entity: &Entity) {
    if entity.events.is_empty() {
        let span = entity.events_span.unwrap_or(entity.span);
        cx.error_at(
            span,
            format!(
                "`{}` needs at least one event: `events({}_created, ...)`",
                entity.ident, entity.name.value
            ),
        );
    }
    for event in &entity.events {
        if !is_lower_snake(&event.to_string()) {
            cx.error_spanned_by(
                event,
                "an event name is a lower snake_case atom such as `team_created`",
            );
        }
    }
    let mut variants: HashMap<String, &syn::Ident> = HashMap::new();
    for event in &entity.events {
        let variant = variant_name(&entity.name.value, &event.to_string());
        if !is_ident(&variant) {
            cx.error_spanned_by(
                event,
                format!("the event `{event}` makes no valid variant name (`{variant}`)"),
            );
            continue;
        }
        if let Some(first) = variants.insert(variant.clone(), event) {
            let message = if *first == *event {
                format!("duplicate event `{event}`")
            } else {
                format!("events `{first}` and `{event}` both become the variant `{variant}`")
            };
            cx.error_spanned_by(event, message);
        }
    }
}

fn check_unique_entities(cx: &mut Ctxt, spec: &Spec) {
    let mut names: HashMap<&str, &Entity> = HashMap::new();
    let mut idents: HashMap<String, &Entity> = HashMap::new();
    for entity in &spec.entities {
        if let Some(first) = names.insert(&entity.name.value, entity) {
            report_clash(
                cx,
                first,
                entity,
                entity.name.span,
                &format!("entity `{}`", entity.name.value),
            );
        }
        if let Some(first) = idents.insert(entity.ident.to_string(), entity) {
            report_clash(
                cx,
                first,
                entity,
                entity.ident.span(),
                &format!("payload type `{}`", entity.ident),
            );
        }
    }
}

/// Topic strings and topic functions must be unique: every entity name and
/// every collection name is one topic function, `topic_<word>`.
fn check_unique_topics(cx: &mut Ctxt, spec: &Spec) {
    let mut words: HashMap<&str, &Entity> = HashMap::new();
    for entity in spec
        .entities
        .iter()
        .filter(|e| e.kind == EntityKind::Entity)
    {
        for word in [Some(&entity.name), entity.collection.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Some(first) = words.insert(&word.value, entity) {
                if !std::ptr::eq(first, entity) {
                    let what = format!("topic `{}:{}`", scope_of(spec), word.value);
                    report_clash(cx, first, entity, word.span, &what);
                }
            }
        }
    }
}

fn check_unique_events(cx: &mut Ctxt, spec: &Spec) {
    let mut owners: HashMap<String, &Entity> = HashMap::new();
    for entity in &spec.entities {
        for event in &entity.events {
            let name = event.to_string();
            match owners.get(&name) {
                Some(first) if !std::ptr::eq(*first, entity) => {
                    let what =
                        format!("event `{name}` (event names are atoms: unique across the spec)");
                    report_clash(cx, first, entity, event.span(), &what);
                }
                _ => {
                    owners.insert(name, entity);
                }
            }
        }
    }
}

/// Reports that `second` redeclares what `first` declared, at `span` (a token
/// of `second`). Inherited entities come first in a spec, so `second` is
/// always one the user can edit.
fn report_clash(cx: &mut Ctxt, first: &Entity, _second: &Entity, span: Span, what: &str) {
    let other = match &first.inherited_from {
        Some(path) => format!("the extended spec `{}`", path_string(path)),
        None => format!("`{}`", first.ident),
    };
    cx.error_at(span, format!("{what} is already declared by {other}"));
}

fn check_routes(cx: &mut Ctxt, spec: &Spec) {
    let entity_names: Vec<&str> = spec
        .entities
        .iter()
        .filter(|e| e.kind == EntityKind::Entity)
        .map(|e| e.name.value.as_str())
        .collect();
    for entity in local_entities(spec) {
        for (field, route) in entity.routed_fields() {
            let target = route.target.to_string();
            let Some(target_entity) = spec.entities.iter().find(|e| e.name.value == target) else {
                let hint = did_you_mean(&target, &entity_names)
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                cx.error_spanned_by(
                    &route.target,
                    format!(
                        "no entity `{target}` in this spec to route to (entities: {}){hint}",
                        entity_names.join(", ")
                    ),
                );
                continue;
            };
            if target_entity.kind == EntityKind::Relation {
                cx.error_spanned_by(
                    &route.target,
                    format!("`{target}` is a relation: it has no topics to route to"),
                );
            } else if std::ptr::eq(target_entity, entity) && field.ident == "uuid" {
                cx.error_spanned_by(
                    &route.target,
                    format!("events of `{target}` already reach its own topic"),
                );
            }
            check_route_field_type(cx, field, route.kind);
        }
    }
}

fn check_route_field_type(cx: &mut Ctxt, field: &Field, kind: RouteKind) {
    if is_uuid(&field.ty) {
        return;
    }
    let optional_uuid = option_inner(&field.ty).is_some_and(is_uuid);
    match kind {
        RouteKind::Route if optional_uuid => {}
        RouteKind::Route => cx.error_spanned_by(
            &field.ty,
            format!("a routed field holds the target's id: `{}: Uuid` or `Option<Uuid>` (skipped when `None`)", field.ident),
        ),
        RouteKind::Endpoint => cx.error_spanned_by(
            &field.ty,
            format!(
                "an endpoint is the id of an entity the relation joins: `{}: Uuid`, never optional (use `#[route(...)]` for an optional id)",
                field.ident
            ),
        ),
    }
}

fn check_relation_endpoints(cx: &mut Ctxt, spec: &Spec) {
    for entity in local_entities(spec).filter(|e| e.kind == EntityKind::Relation) {
        let endpoints = entity
            .routed_fields()
            .filter(|(_, r)| r.kind == RouteKind::Endpoint)
            .count();
        if endpoints == 0 && entity.named_fields {
            cx.error_at(
                entity.span,
                format!("the relation `{}` reaches no topic: mark the id fields it joins with `#[endpoint(entity)]`", entity.ident),
            );
        }
    }
}

/// The macro adds items to the module; a user item of the same name would be
/// a confusing rustc error, so it is a spanned one here.
fn check_generated_names_are_free(cx: &mut Ctxt, spec: &Spec) {
    let Some((_, items)) = &spec.module.content else {
        return;
    };
    let generated = generated_names(spec);
    for item in items {
        let Some(ident) = item_ident(item) else {
            continue;
        };
        // A payload that clashes with an inherited payload is reported by
        // `check_unique_entities`; any other clash (a payload named
        // `Message`, or `TeamEvent` beside a `Team`) is reported here.
        let clash = generated
            .iter()
            .find(|g| *ident == g.name && g.gen != Gen::InheritedPayload);
        if clash.is_some() {
            cx.error_spanned_by(
                ident,
                format!(
                    "`{ident}` is generated by #[staff_events] in this module: rename this item"
                ),
            );
        }
    }
}

/// Two entities must not generate the same item (`add` and `add_on` would
/// both make `broadcast_add_on`).
fn check_generated_names_are_distinct(cx: &mut Ctxt, spec: &Spec) {
    let names = generated_names(spec);
    let mut makers: HashMap<&str, &Generated> = HashMap::new();
    for generated in &names {
        let Some(first) = makers.get(generated.name.as_str()).copied() else {
            makers.insert(&generated.name, generated);
            continue;
        };
        let same_template = first.gen.decl().template == generated.gen.decl().template;
        let (Some(owner), false) = (generated.owner, same_template) else {
            continue;
        };
        let entity = &spec.entities[owner];
        let other = first.owner.map_or_else(
            || "the module".to_owned(),
            |i| format!("`{}`", spec.entities[i].name.value),
        );
        cx.error_at(
            entity.name.span,
            format!(
                "`{}` would be generated for both {other} and `{}`: rename one",
                generated.name, entity.name.value
            ),
        );
    }
}

fn scope_of(spec: &Spec) -> &str {
    spec.options.scope.as_ref().map_or("", |s| s.value.as_str())
}

fn path_string(path: &syn::Path) -> String {
    quote::quote!(#path).to_string().replace(' ', "")
}
