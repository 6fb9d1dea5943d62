//! Every item the macro adds to a spec module, each declared once: its
//! name, its signature and its fallback. `expand` writes each item under its
//! declared signature with a body of its own, `fallback` writes the declared
//! stub, and the clash rules of `valid` read the declared names; a test of
//! `expand` checks that what is declared is exactly what is generated.
//! Adding a generated function is one entry in the `items!` table below plus
//! its body in `expand`.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use syn::ext::IdentExt;

use super::ast::{Entity, Spec};
use super::attr::{EntityKind, Options};
use super::names::{is_ident, variant_name};

/// The name under which an extensible spec module re-exports its carrier
/// macro. An extension calls `<extends path>::__extensible_staff_events_spec!`:
/// a path that names no such spec fails there, with the user's tokens.
pub(crate) const CARRIER: &str = "__extensible_staff_events_spec";

/// Writes tokens of a declaration (a signature, a stub's body) in the
/// context of one item.
pub(crate) type Tokens = fn(&Sig<'_>) -> TokenStream;

/// What a declaration's signature and stub are written with.
pub(crate) struct Sig<'a> {
    /// `<runtime>::__private`.
    pub(crate) p: TokenStream,
    /// The item's own name.
    pub(crate) name: Ident,
    /// The spec's scope, as written (empty when missing).
    pub(crate) scope: &'a str,
    /// The extended spec, in an extension.
    pub(crate) base: Option<&'a syn::Path>,
    /// Of an entity's item: the payload type.
    pub(crate) payload: Option<&'a Ident>,
    /// Of an entity's item: the event enum.
    pub(crate) event: Option<Ident>,
}

/// One generated item.
pub(crate) struct Decl {
    /// Its name; `{}` stands for the word [`Per::Entity`] gives.
    pub(crate) template: &'static str,
    /// How many the module gets.
    pub(crate) per: Per,
    /// What it is, and its signature.
    pub(crate) form: Form,
    /// What a spec with errors defines in its place.
    pub(crate) fallback: Fallback,
}

/// How many of an item a module gets.
pub(crate) enum Per {
    /// One, when the spec's options call for it.
    Module(fn(&Options) -> bool),
    /// One per entity for which this gives a word.
    Entity(fn(&Entity) -> Option<String>),
}

/// What an item is, and how it is written.
pub(crate) enum Form {
    /// `<head> = <value>;`, the head being `pub const NAME: Type`.
    Const(Tokens),
    /// `<head> { <body> }`, the head being the whole signature, visibility
    /// included.
    Fn(Tokens),
    /// Written whole by `expand` (a type, a static, a re-export, a macro).
    Whole,
}

/// What a spec with errors defines in the item's place, so that code using
/// it elsewhere in the crate compiles and adds no error of its own. A stub is
/// never run, nor its value used: a spec with errors never compiles.
pub(crate) enum Fallback {
    /// Nothing: a private item, or one only the crates that extend the spec
    /// name, which cannot compile against it anyway.
    Nothing,
    /// The declared item, with this body (a function's, whose parameters
    /// become `_`) or value (a constant's). A `const fn` returns a
    /// placeholder rather than panic, so that a `const` using it adds no
    /// error either.
    Stub(Tokens),
    /// Another signature, more lenient than the declared one (generic where
    /// that one names a payload, whatever state the payload is in), and its
    /// body.
    Lenient { head: Tokens, body: Tokens },
    /// Built by `fallback` from what is valid of the spec (the message, the
    /// event enums, the re-exports).
    FromSpec,
}

/// A stub's body that panics; see [`Fallback`] for why nothing calls it.
const UNIMPLEMENTED: Tokens = |_| quote!(::core::unimplemented!());

/// Every spec generates it.
fn always(_: &Options) -> bool {
    true
}

/// Only an extension (`extends = ...`) generates it.
fn in_extension(options: &Options) -> bool {
    options.extends.is_some()
}

/// Declares [`Gen`]: one variant per entry, in the order `generated_names`
/// lists them, and its [`Decl`].
macro_rules! items {
    ($($(#[doc = $doc:literal])* $gen:ident => $decl:expr,)*) => {
        /// An item the macro generates.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Gen {
            $($(#[doc = $doc])* $gen,)*
        }

        impl Gen {
            /// Every item, in declaration order: the module-wide ones first.
            pub(crate) const ALL: &'static [Gen] = &[$(Gen::$gen),*];

            /// Its declaration.
            pub(crate) fn decl(self) -> Decl {
                match self {
                    $(Gen::$gen => $decl,)*
                }
            }
        }
    };
}

items! {
    /// `pub const SCOPE`.
    ScopeConst => Decl {
        template: "SCOPE",
        per: Per::Module(always),
        form: Form::Const(|s| {
            let name = &s.name;
            quote!(pub const #name: &str)
        }),
        fallback: Fallback::Stub(|s| {
            let scope = s.scope;
            quote!(#scope)
        }),
    },
    /// `pub const TOPIC_KINDS`.
    TopicKinds => Decl {
        template: "TOPIC_KINDS",
        per: Per::Module(always),
        form: Form::Const(|s| {
            let (p, name) = (&s.p, &s.name);
            quote!(pub const #name: &[#p::TopicKind])
        }),
        fallback: Fallback::Stub(|_| quote!(&[])),
    },
    /// `pub const EVENTS`.
    Events => Decl {
        template: "EVENTS",
        per: Per::Module(always),
        form: Form::Const(|s| {
            let name = &s.name;
            quote!(pub const #name: &[&str])
        }),
        fallback: Fallback::Stub(|_| quote!(&[])),
    },
    /// `pub const ROUTES`.
    Routes => Decl {
        template: "ROUTES",
        per: Per::Module(always),
        form: Form::Const(|s| {
            let (p, name) = (&s.p, &s.name);
            quote!(pub const #name: &[#p::Route])
        }),
        fallback: Fallback::Stub(|_| quote!(&[])),
    },
    /// `pub const SPEC`.
    Spec => Decl {
        template: "SPEC",
        per: Per::Module(always),
        form: Form::Const(|s| {
            let (p, name) = (&s.p, &s.name);
            quote!(pub const #name: #p::Spec)
        }),
        fallback: Fallback::Stub(|s| {
            let (p, scope) = (&s.p, s.scope);
            quote!(#p::Spec { scope: #scope, topic_kinds: &[], events: &[], routes: &[] })
        }),
    },
    /// `pub enum Message`.
    Message => Decl {
        template: "Message",
        per: Per::Module(always),
        form: Form::Whole,
        fallback: Fallback::FromSpec,
    },
    /// `pub fn parse_topic`.
    ParseTopic => Decl {
        template: "parse_topic",
        per: Per::Module(always),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote! {
                pub fn #name(input: &str) -> ::core::result::Result<#p::Topic, #p::ParseTopicError>
            }
        }),
        fallback: Fallback::Stub(UNIMPLEMENTED),
    },
    /// `pub fn server`.
    Server => Decl {
        template: "server",
        per: Per::Module(always),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote!(pub fn #name() -> #p::PubSub<Message>)
        }),
        fallback: Fallback::Stub(UNIMPLEMENTED),
    },
    /// `pub fn builder`.
    Builder => Decl {
        template: "builder",
        per: Per::Module(always),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote!(pub fn #name() -> #p::Builder<Message>)
        }),
        fallback: Fallback::Stub(UNIMPLEMENTED),
    },
    /// `pub fn install`.
    Install => Decl {
        template: "install",
        per: Per::Module(always),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote! {
                pub fn #name(
                    pubsub: #p::PubSub<Message>,
                ) -> ::core::result::Result<(), #p::AlreadyInstalled<Message>>
            }
        }),
        fallback: Fallback::Stub(UNIMPLEMENTED),
    },
    /// `pub fn scope`.
    ScopeFn => Decl {
        template: "scope",
        per: Per::Module(always),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote! {
                pub fn #name<F: ::core::future::Future>(
                    pubsub: #p::PubSub<Message>,
                    future: F,
                ) -> #p::Scoped<F>
            }
        }),
        fallback: Fallback::Stub(UNIMPLEMENTED),
    },
    /// `pub fn subscribe`.
    Subscribe => Decl {
        template: "subscribe",
        per: Per::Module(always),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote! {
                pub fn #name(
                    topic: #p::Topic,
                ) -> ::core::result::Result<#p::Subscription<Message>, #p::Error>
            }
        }),
        fallback: Fallback::Stub(UNIMPLEMENTED),
    },
    /// `pub fn subscribe_many`.
    SubscribeMany => Decl {
        template: "subscribe_many",
        per: Per::Module(always),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote! {
                pub fn #name(
                    topics: impl ::core::iter::IntoIterator<Item = #p::Topic>,
                ) -> ::core::result::Result<#p::Subscription<Message>, #p::Error>
            }
        }),
        fallback: Fallback::Stub(UNIMPLEMENTED),
    },
    /// The default server, a private `static`.
    ServerStatic => Decl {
        template: "__SERVER",
        per: Per::Module(always),
        form: Form::Whole,
        fallback: Fallback::Nothing,
    },
    /// The scoped server of this thread, a private `thread_local!`.
    ScopedStatic => Decl {
        template: "__SCOPED",
        per: Per::Module(always),
        form: Form::Whole,
        fallback: Fallback::Nothing,
    },
    /// Which base server each of an extension's servers is linked to, a
    /// private `static`.
    BasesStatic => Decl {
        template: "__BASES",
        per: Per::Module(in_extension),
        form: Form::Whole,
        fallback: Fallback::Nothing,
    },
    /// The default server, for the crates that extend the spec.
    DefaultServer => Decl {
        template: "__default_server",
        per: Per::Module(always),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote!(pub fn #name() -> &'static #p::DefaultServer<Message>)
        }),
        fallback: Fallback::Nothing,
    },
    /// The process-wide server, created on first use.
    Global => Decl {
        template: "__global",
        per: Per::Module(always),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote!(fn #name() -> &'static #p::PubSub<Message>)
        }),
        fallback: Fallback::Nothing,
    },
    /// A message of the extended spec as this one's.
    ToExtension => Decl {
        template: "__to_extension",
        per: Per::Module(in_extension),
        form: Form::Fn(|s| {
            let (base, name) = (s.base, &s.name);
            quote! {
                fn #name(message: &#base::Message) -> ::core::option::Option<Message>
            }
        }),
        fallback: Fallback::Nothing,
    },
    /// A message of this spec as the extended spec's, if it is one.
    ToBase => Decl {
        template: "__to_base",
        per: Per::Module(in_extension),
        form: Form::Fn(|s| {
            let (base, name) = (s.base, &s.name);
            quote! {
                fn #name(message: &Message) -> ::core::option::Option<#base::Message>
            }
        }),
        fallback: Fallback::Nothing,
    },
    /// Links the extended spec's process-wide server to this one's.
    LinkGlobal => Decl {
        template: "__link_global",
        per: Per::Module(in_extension),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote!(fn #name(extension: &#p::PubSub<Message>))
        }),
        fallback: Fallback::Nothing,
    },
    /// The re-exported carrier macro of an extensible spec.
    Carrier => Decl {
        template: CARRIER,
        per: Per::Module(|options| options.extensible),
        form: Form::Whole,
        fallback: Fallback::Nothing,
    },
    /// `<Payload>Event`.
    EventEnum => Decl {
        template: "{}Event",
        per: Per::Entity(|entity| Some(entity.ident.unraw().to_string())),
        form: Form::Whole,
        fallback: Fallback::FromSpec,
    },
    /// `broadcast_<name>`.
    Broadcast => Decl {
        template: "broadcast_{}",
        per: Per::Entity(|entity| Some(entity.name.value.clone())),
        form: Form::Fn(|s| {
            let (p, name, event, payload) = (&s.p, &s.name, &s.event, s.payload);
            quote! {
                pub fn #name(
                    event: #event,
                    payload: #payload,
                ) -> impl ::core::future::Future<Output = ::core::result::Result<(), #p::Error>> + ::core::marker::Send + 'static
            }
        }),
        // Generic in the event and the payload, so that a call compiles
        // whatever state the payload type is in.
        fallback: Fallback::Lenient {
            head: |s| {
                let (p, name) = (&s.p, &s.name);
                quote! {
                    pub fn #name<E, P>(
                        _: E,
                        _: P,
                    ) -> ::core::future::Ready<::core::result::Result<(), #p::Error>>
                }
            },
            body: UNIMPLEMENTED,
        },
    },
    /// `broadcast_<name>_on`.
    BroadcastOn => Decl {
        template: "broadcast_{}_on",
        per: Per::Entity(|entity| Some(entity.name.value.clone())),
        form: Form::Fn(|s| {
            let (p, name, event, payload) = (&s.p, &s.name, &s.event, s.payload);
            quote! {
                pub fn #name(
                    pubsub: &#p::PubSub<Message>,
                    event: #event,
                    payload: #payload,
                ) -> impl ::core::future::Future<Output = ::core::result::Result<(), #p::Error>> + ::core::marker::Send + '_
            }
        }),
        fallback: Fallback::Lenient {
            head: |s| {
                let (p, name) = (&s.p, &s.name);
                quote! {
                    pub fn #name<E, P>(
                        _: &#p::PubSub<Message>,
                        _: E,
                        _: P,
                    ) -> ::core::future::Ready<::core::result::Result<(), #p::Error>>
                }
            },
            body: UNIMPLEMENTED,
        },
    },
    /// `topic_<name>(id)`, of an entity (not a relation).
    TopicKeyed => Decl {
        template: "topic_{}",
        per: Per::Entity(|entity| {
            (entity.kind == EntityKind::Entity).then(|| entity.name.value.clone())
        }),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote!(pub const fn #name(id: #p::Uuid) -> #p::Topic)
        }),
        fallback: Fallback::Stub(|s| {
            let p = &s.p;
            quote!(#p::Topic::new(""))
        }),
    },
    /// `topic_<collection>()`, of an entity.
    TopicCollection => Decl {
        template: "topic_{}",
        per: Per::Entity(|entity| match entity.kind {
            EntityKind::Entity => entity.collection.as_ref().map(|c| c.value.clone()),
            EntityKind::Relation => None,
        }),
        form: Form::Fn(|s| {
            let (p, name) = (&s.p, &s.name);
            quote!(pub const fn #name() -> #p::Topic)
        }),
        fallback: Fallback::Stub(|s| {
            let p = &s.p;
            quote!(#p::Topic::new(""))
        }),
    },
    /// The re-export of an inherited payload, under its own name.
    InheritedPayload => Decl {
        template: "{}",
        per: Per::Entity(|entity| {
            entity
                .inherited_from
                .is_some()
                .then(|| entity.ident.unraw().to_string())
        }),
        form: Form::Whole,
        fallback: Fallback::FromSpec,
    },
}

impl Gen {
    /// The name it has in a module, for `entity` if it is an entity's
    /// item; `None` if it is not generated there. A string: this runs
    /// before the names are known to be identifiers.
    pub(crate) fn name(self, entity: Option<&Entity>) -> Option<String> {
        let decl = self.decl();
        match decl.per {
            Per::Module(_) => Some(decl.template.to_owned()),
            Per::Entity(word) => entity
                .and_then(word)
                .map(|word| decl.template.replacen("{}", &word, 1)),
        }
    }

    /// What its signature and stub are written with, for `entity` if it is
    /// an entity's item; `None` if it is not generated there or its name is
    /// no identifier.
    pub(crate) fn sig<'a>(self, spec: &'a Spec, entity: Option<&'a Entity>) -> Option<Sig<'a>> {
        let name = self.name(entity).filter(|name| is_ident(name))?;
        Some(Sig {
            p: spec.options.private_path(),
            name: format_ident!("{}", name),
            scope: spec.options.scope.as_ref().map_or("", |s| s.value.as_str()),
            base: spec.options.extends.as_ref(),
            payload: entity.map(|e| &e.ident),
            event: entity.map(event_enum),
        })
    }
}

impl Form {
    /// The item: `attrs`, then the declared head with `body` (or, of a
    /// [`Form::Whole`], `body` alone).
    pub(crate) fn write(
        &self,
        sig: &Sig<'_>,
        attrs: TokenStream,
        body: TokenStream,
    ) -> TokenStream {
        match self {
            Form::Const(head) => {
                let head = head(sig);
                quote!(#attrs #head = #body;)
            }
            Form::Fn(head) => {
                let head = head(sig);
                quote!(#attrs #head { #body })
            }
            Form::Whole => quote!(#attrs #body),
        }
    }
}

/// `TeamEvent`, spanned at the payload's name.
pub(crate) fn event_enum(entity: &Entity) -> Ident {
    let name = Gen::EventEnum
        .name(Some(entity))
        .unwrap_or_else(|| entity.ident.to_string());
    Ident::new(&name, entity.ident.span())
}

/// `topic_teams`, `topic_team`: the topic function of a word.
pub(crate) fn topic_fn(word: &str) -> Ident {
    format_ident!(
        "{}",
        Gen::TopicKeyed.decl().template.replacen("{}", word, 1)
    )
}

/// `broadcast_team`, for docs and messages: a string, as in a spec with
/// errors it may be no identifier.
pub(crate) fn broadcast_fn(entity: &Entity) -> String {
    Gen::Broadcast.name(Some(entity)).unwrap_or_default()
}

/// The variant of `event` in the event enum of `entity`, spanned at the
/// event.
pub(crate) fn variant_ident(entity: &Entity, event: &Ident) -> Ident {
    format_ident!(
        "{}",
        variant_name(&entity.name.value, &event.to_string()),
        span = event.span()
    )
}

/// One item name the macro adds to the module.
#[derive(Debug)]
pub(crate) struct Generated {
    pub(crate) name: String,
    /// The entity it is generated for (index into the spec's entities);
    /// `None` for the module-wide items.
    pub(crate) owner: Option<usize>,
    /// Which item it is. Two entities whose names clash through the same
    /// template have the same name, topic or payload type, which other
    /// rules report.
    pub(crate) gen: Gen,
}

/// Every item name the macro adds to the module: the module-wide items,
/// then each entity's, in declaration order.
pub(crate) fn generated_names(spec: &Spec) -> Vec<Generated> {
    let mut names: Vec<Generated> = Gen::ALL
        .iter()
        .filter(|gen| matches!(gen.decl().per, Per::Module(when) if when(&spec.options)))
        .filter_map(|&gen| {
            Some(Generated {
                name: gen.name(None)?,
                owner: None,
                gen,
            })
        })
        .collect();
    for (index, entity) in spec.entities.iter().enumerate() {
        names.extend(Gen::ALL.iter().filter_map(|&gen| {
            let Per::Entity(_) = gen.decl().per else {
                return None;
            };
            Some(Generated {
                name: gen.name(Some(entity))?,
                owner: Some(index),
                gen,
            })
        }));
    }
    names
}
