//! The route plan: the topics a broadcast of each entity reaches, read by
//! the code, the docs and the route table alike, so that all three say the
//! same.

use syn::ext::IdentExt;
use syn::Ident;

use super::ast::{Entity, Spec};
use super::attr::RouteKind;
use super::names::{display_name, topic_string};
use super::types::option_inner;

/// One topic a broadcast reaches.
pub(crate) struct Target {
    /// The topic string or keyed topic name.
    pub(crate) topic: String,
    /// The word of its topic function (`topic_<word>`).
    pub(crate) word: String,
    /// For docs: `staff:team:<team_uuid>`.
    pub(crate) pattern: String,
    /// The payload field that keys it; `None` for a collection topic.
    pub(crate) key: Option<Key>,
    /// For docs: "the team topic of `team_uuid`".
    pub(crate) phrase: String,
}

/// The payload field that keys a target.
pub(crate) struct Key {
    /// As written in code (`r#type`).
    pub(crate) ident: Ident,
    /// As in the payload's JSON and the route table (`type`).
    pub(crate) field: String,
    /// Whether it is an `Option<Uuid>`, skipped when `None`.
    pub(crate) optional: bool,
}

impl Target {
    /// Whether `self` and `other` are the same topic of a payload: the
    /// same topic name, keyed by the same field (or neither keyed).
    fn same_as(&self, other: &Target) -> bool {
        self.topic == other.topic
            && match (&self.key, &other.key) {
                (None, None) => true,
                (Some(a), Some(b)) => a.field == b.field && a.optional == b.optional,
                _ => false,
            }
    }
}

/// The targets of each entity of `spec`, by index. Never fails: a route to
/// an unknown entity (an error `valid` reports) reaches nothing.
pub(crate) fn plan(spec: &Spec) -> Vec<Vec<Target>> {
    let scope = spec.options.scope.as_ref().map_or("", |s| s.value.as_str());
    spec.entities
        .iter()
        .map(|entity| distinct_targets(spec, scope, entity))
        .collect()
}

/// The topics a broadcast of `entity` reaches, in order: its own collection
/// and topic, then each routed field in declaration order. Each target is
/// listed once (two endpoints of one entity share its collection topic);
/// keyed targets of different fields stay apart, as they are different
/// topics for most payloads.
fn distinct_targets(spec: &Spec, scope: &str, entity: &Entity) -> Vec<Target> {
    let mut distinct: Vec<Target> = Vec::new();
    for target in all_targets(spec, scope, entity) {
        if !distinct.iter().any(|seen| seen.same_as(&target)) {
            distinct.push(target);
        }
    }
    distinct
}

/// The targets of `entity` with repetitions, in order.
fn all_targets(spec: &Spec, scope: &str, entity: &Entity) -> Vec<Target> {
    let mut targets = Vec::new();
    if let Some(collection) = &entity.collection {
        targets.push(collection_target(scope, &collection.value));
        targets.push(keyed_target(
            scope,
            &entity.name.value,
            &Ident::new("uuid", proc_macro2::Span::call_site()),
            false,
            format!("the {}'s own topic", display_name(&entity.name.value)),
        ));
    }
    for (field, route) in entity.routed_fields() {
        let Some(target) = spec.entities.iter().find(|e| route.target == e.name.value) else {
            continue;
        };
        let target_name = &target.name.value;
        let optional = option_inner(&field.ty).is_some();
        // Endpoints are never optional (checked in `valid`).
        if route.kind == RouteKind::Endpoint {
            if let Some(collection) = &target.collection {
                targets.push(collection_target(scope, &collection.value));
            }
        }
        let mut phrase = format!(
            "the {} topic of `{}`",
            display_name(target_name),
            field.ident.unraw()
        );
        if optional {
            phrase.push_str(" (if present)");
        }
        targets.push(keyed_target(
            scope,
            target_name,
            &field.ident,
            optional,
            phrase,
        ));
    }
    targets
}

fn collection_target(scope: &str, collection: &str) -> Target {
    Target {
        topic: topic_string(scope, collection),
        word: collection.to_owned(),
        pattern: topic_string(scope, collection),
        key: None,
        phrase: format!("the {} topic", display_name(collection)),
    }
}

fn keyed_target(scope: &str, name: &str, ident: &Ident, optional: bool, phrase: String) -> Target {
    // `r#type` in code, `type` in the payload's JSON and the route table.
    let field = ident.unraw().to_string();
    let topic = topic_string(scope, name);
    Target {
        pattern: format!("{topic}:<{field}>"),
        topic,
        word: name.to_owned(),
        key: Some(Key {
            ident: ident.clone(),
            field,
            optional,
        }),
        phrase,
    }
}
