//! Names derived from the spec, shared by validation and expansion so that
//! what is checked is exactly what is generated.

use proc_macro2::Ident;
use quote::format_ident;
use syn::ext::IdentExt;

use crate::ast::{Entity, Spec};
use crate::attr::{EntityKind, Options};
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

/// `TeamEvent`, spanned at the payload's name.
pub(crate) fn event_enum(entity: &Entity) -> Ident {
    let name = Pattern::EventEnum.name(&entity.ident.unraw().to_string());
    Ident::new(&name, entity.ident.span())
}

/// `topic_teams`, `topic_team`.
pub(crate) fn topic_fn(word: &str) -> Ident {
    format_ident!("{}", Pattern::Topic { keyed: false }.name(word))
}

pub(crate) fn broadcast_fn(entity: &Entity) -> Ident {
    format_ident!("{}", Pattern::Broadcast.name(&entity.name.value))
}

pub(crate) fn broadcast_on_fn(entity: &Entity) -> Ident {
    format_ident!("{}", Pattern::BroadcastOn.name(&entity.name.value))
}

/// `staff:teams`, `staff:team`: a topic string, or the name of a keyed topic.
pub(crate) fn topic_string(scope: &str, word: &str) -> String {
    format!("{scope}:{word}")
}

/// `team_membership` -> `team membership`, for docs.
pub(crate) fn display_name(name: &str) -> String {
    name.replace('_', " ")
}

/// How the name of a generated item is made: the one place each name
/// format is spelled, for the code, the clash rules and the fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// A module-wide item.
    Fixed(Fixed),
    /// `<Payload>Event`, of a payload's name.
    EventEnum,
    /// `broadcast_<name>`.
    Broadcast,
    /// `broadcast_<name>_on`.
    BroadcastOn,
    /// `topic_<name>(id)` (`keyed`) or `topic_<collection>()`.
    Topic { keyed: bool },
    /// The re-export of an inherited payload, under its own name.
    InheritedPayload,
}

impl Pattern {
    /// The format, `{}` standing for the word.
    pub(crate) fn template(self) -> &'static str {
        match self {
            Pattern::Fixed(fixed) => fixed.name(),
            Pattern::EventEnum => "{}Event",
            Pattern::Broadcast => "broadcast_{}",
            Pattern::BroadcastOn => "broadcast_{}_on",
            Pattern::Topic { .. } => "topic_{}",
            Pattern::InheritedPayload => "{}",
        }
    }

    /// The name this pattern makes of `word`.
    pub(crate) fn name(self, word: &str) -> String {
        self.template().replacen("{}", word, 1)
    }
}

/// The module-wide items the macro generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fixed {
    ScopeConst,
    TopicKinds,
    Events,
    Routes,
    Spec,
    Message,
    ParseTopic,
    Server,
    Builder,
    Install,
    ScopeFn,
    Subscribe,
    SubscribeMany,
    ServerStatic,
    ScopedStatic,
    DefaultServer,
    Global,
    /// Only in an extension.
    ToExtension,
    /// Only in an extension.
    ToBase,
    /// Only in an extension.
    LinkGlobal,
    /// Only in an extensible spec: the re-exported carrier macro.
    Carrier,
}

impl Fixed {
    pub(crate) const ALL: &'static [Fixed] = &[
        Fixed::ScopeConst,
        Fixed::TopicKinds,
        Fixed::Events,
        Fixed::Routes,
        Fixed::Spec,
        Fixed::Message,
        Fixed::ParseTopic,
        Fixed::Server,
        Fixed::Builder,
        Fixed::Install,
        Fixed::ScopeFn,
        Fixed::Subscribe,
        Fixed::SubscribeMany,
        Fixed::ServerStatic,
        Fixed::ScopedStatic,
        Fixed::DefaultServer,
        Fixed::Global,
        Fixed::ToExtension,
        Fixed::ToBase,
        Fixed::LinkGlobal,
        Fixed::Carrier,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Fixed::ScopeConst => "SCOPE",
            Fixed::TopicKinds => "TOPIC_KINDS",
            Fixed::Events => "EVENTS",
            Fixed::Routes => "ROUTES",
            Fixed::Spec => "SPEC",
            Fixed::Message => "Message",
            Fixed::ParseTopic => "parse_topic",
            Fixed::Server => "server",
            Fixed::Builder => "builder",
            Fixed::Install => "install",
            Fixed::ScopeFn => "scope",
            Fixed::Subscribe => "subscribe",
            Fixed::SubscribeMany => "subscribe_many",
            Fixed::ServerStatic => "__SERVER",
            Fixed::ScopedStatic => "__SCOPED",
            Fixed::DefaultServer => "__default_server",
            Fixed::Global => "__global",
            Fixed::ToExtension => "__to_extension",
            Fixed::ToBase => "__to_base",
            Fixed::LinkGlobal => "__link_global",
            Fixed::Carrier => crate::entry::CARRIER,
        }
    }

    /// Whether a spec with these options generates the item.
    fn generated_for(self, options: &Options) -> bool {
        match self {
            Fixed::ToExtension | Fixed::ToBase | Fixed::LinkGlobal => options.extends.is_some(),
            Fixed::Carrier => options.extensible,
            _ => true,
        }
    }
}

/// One item name the macro adds to the module.
#[derive(Debug)]
pub(crate) struct Generated {
    pub(crate) name: String,
    /// The entity it is generated for (index into the spec's entities);
    /// `None` for the module-wide items.
    pub(crate) owner: Option<usize>,
    /// Which pattern made the name. Two entities whose names clash through
    /// the same template have the same name, topic or payload type, which
    /// other rules report.
    pub(crate) pattern: Pattern,
}

impl Generated {
    /// A re-export of an inherited payload, not a new item.
    pub(crate) fn is_reexport(&self) -> bool {
        self.pattern == Pattern::InheritedPayload
    }
}

/// Every item name the macro adds to the module, in the order `expand`
/// emits them by kind. Strings, not idents: this runs before the names are
/// known to be valid identifiers.
pub(crate) fn generated_names(spec: &Spec) -> Vec<Generated> {
    let mut names: Vec<Generated> = Fixed::ALL
        .iter()
        .filter(|fixed| fixed.generated_for(&spec.options))
        .map(|&fixed| Generated {
            name: fixed.name().to_owned(),
            owner: None,
            pattern: Pattern::Fixed(fixed),
        })
        .collect();
    for (index, entity) in spec.entities.iter().enumerate() {
        let payload = entity.ident.unraw().to_string();
        let name = entity.name.value.as_str();
        let mut own = vec![
            (Pattern::EventEnum, payload.as_str()),
            (Pattern::Broadcast, name),
            (Pattern::BroadcastOn, name),
        ];
        if entity.kind == EntityKind::Entity {
            own.push((Pattern::Topic { keyed: true }, name));
            if let Some(collection) = &entity.collection {
                own.push((Pattern::Topic { keyed: false }, &collection.value));
            }
        }
        if entity.inherited_from.is_some() {
            own.push((Pattern::InheritedPayload, &payload));
        }
        names.extend(own.into_iter().map(|(pattern, word)| Generated {
            name: pattern.name(word),
            owner: Some(index),
            pattern,
        }));
    }
    names
}
