//! Code generation for a valid spec. Every path is absolute, through the
//! runtime's `__private` module, so the output compiles whatever the user's
//! module imports or shadows (`#![no_implicit_prelude]` included). Each
//! item is written under the signature `internals::items` declares for it.

use proc_macro2::{Ident, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Item, ItemStruct};

use crate::internals::ast::{Entity, Spec};
use crate::internals::attr::EntityKind;
use crate::internals::items::{self, Gen};
use crate::internals::names::{display_name, topic_string, upper_camel_case};
use crate::internals::routes::{self, Key, Target};
use crate::internals::types::option_inner;

pub(crate) struct Expander<'a> {
    spec: &'a Spec,
    /// `<runtime>::__private`.
    pub(crate) p: TokenStream,
    scope: &'a str,
    /// The targets of each entity, by index: the route plan.
    targets: Vec<Vec<Target>>,
}

impl<'a> Expander<'a> {
    pub(crate) fn new(spec: &'a Spec) -> Self {
        Expander {
            spec,
            p: spec.options.private_path(),
            scope: spec.options.scope.as_ref().map_or("", |s| s.value.as_str()),
            targets: routes::plan(spec),
        }
    }

    /// `gen` (of `entity`, if it is an entity's item) under its declared
    /// signature: `attrs`, the declared head, then `body`.
    fn declared(
        &self,
        gen: Gen,
        entity: Option<&Entity>,
        attrs: TokenStream,
        body: TokenStream,
    ) -> TokenStream {
        match gen.sig(self.spec, entity) {
            Some(sig) => gen.decl().form.write(&sig, attrs, body),
            None => TokenStream::new(),
        }
    }
}

/// The user's module with derives added to the payloads and the generated
/// items appended, `carrier` (the macro of an extensible spec) last.
pub(crate) fn expand(spec: Spec, carrier: Option<TokenStream>) -> TokenStream {
    let ex = Expander::new(&spec);
    let generated = [
        ex.reexports(),
        ex.scope_const(),
        ex.topic_fns(),
        ex.topic_kinds(),
        ex.event_enums(),
        ex.message(),
        ex.route_table(),
        ex.server(),
        ex.broadcast_fns(),
    ];
    let mut module = spec.module.clone();
    if let Some((_, items)) = &mut module.content {
        for entity in spec.entities.iter().filter(|e| e.inherited_from.is_none()) {
            if let Some(Item::Struct(item)) = items.get_mut(entity.item_index) {
                add_payload_derives(&ex, item);
            }
        }
        items.push(Item::Verbatim(ex.payload_field_checks()));
        items.extend(generated.into_iter().map(Item::Verbatim));
        items.extend(carrier.map(Item::Verbatim));
    }
    quote!(#module)
}

/// Whether `tokens` use `Self`, which means something else outside the
/// payload struct.
fn mentions_self(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == "Self",
        TokenTree::Group(group) => mentions_self(group.stream()),
        _ => false,
    })
}

/// A trait a payload needs to travel in a message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadTrait {
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
}

impl PayloadTrait {
    const ALL: [PayloadTrait; 5] = [
        PayloadTrait::Clone,
        PayloadTrait::Debug,
        PayloadTrait::PartialEq,
        PayloadTrait::Serialize,
        PayloadTrait::Deserialize,
    ];

    /// Its name in a `#[derive]`.
    fn name(self) -> &'static str {
        match self {
            PayloadTrait::Clone => "Clone",
            PayloadTrait::Debug => "Debug",
            PayloadTrait::PartialEq => "PartialEq",
            PayloadTrait::Serialize => "Serialize",
            PayloadTrait::Deserialize => "Deserialize",
        }
    }

    /// Its path, `p` being `<runtime>::__private`.
    pub(crate) fn path(self, p: &TokenStream) -> TokenStream {
        match self {
            PayloadTrait::Clone => quote!(::core::clone::Clone),
            PayloadTrait::Debug => quote!(::core::fmt::Debug),
            PayloadTrait::PartialEq => quote!(::core::cmp::PartialEq),
            PayloadTrait::Serialize => quote!(#p::serde::Serialize),
            PayloadTrait::Deserialize => quote!(#p::serde::Deserialize),
        }
    }

    /// The ones the payload does not derive itself, which the macro adds.
    pub(crate) fn missing(attrs: &[Attribute]) -> impl Iterator<Item = PayloadTrait> {
        let present = derived_names(attrs);
        Self::ALL
            .into_iter()
            .filter(move |t| !present.iter().any(|d| d == t.name()))
    }
}

/// Derives a payload needs to travel in a message: the standard ones it lacks,
/// and serde, with absent optional fields omitted rather than `null`.
fn add_payload_derives(ex: &Expander<'_>, item: &mut ItemStruct) {
    let p = &ex.p;
    let derives: Vec<TokenStream> = PayloadTrait::missing(&item.attrs)
        .map(|t| t.path(p))
        .collect();
    let serde_crate = serde_crate_path(ex);
    item.attrs.push(syn::parse_quote!(#[derive(#(#derives),*)]));
    item.attrs
        .push(syn::parse_quote!(#[serde(crate = #serde_crate)]));
    for field in item.fields.iter_mut() {
        if option_inner(&field.ty).is_some() {
            field.attrs.push(syn::parse_quote!(
                #[serde(default, skip_serializing_if = "::core::option::Option::is_none")]
            ));
        }
    }
}

fn derived_names(attrs: &[Attribute]) -> Vec<String> {
    let mut names = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("derive")) {
        let _ = attr.parse_nested_meta(|meta| {
            if let Some(last) = meta.path.segments.last() {
                names.push(last.ident.to_string());
            }
            Ok(())
        });
    }
    names
}

/// The string serde's `crate = "..."` wants: the runtime path plus
/// `::__private::serde`, written without spaces.
fn serde_crate_path(ex: &Expander<'_>) -> String {
    let krate = &ex.spec.options.krate;
    let path = quote!(#krate).to_string().replace(' ', "");
    format!("{path}::__private::serde")
}

impl Expander<'_> {
    fn entities(&self) -> impl Iterator<Item = &Entity> {
        self.spec.entities.iter()
    }

    fn topic_entities(&self) -> impl Iterator<Item = &Entity> {
        self.entities().filter(|e| e.kind == EntityKind::Entity)
    }

    /// A compile-time check that each field of each payload has the traits
    /// the payload derives, spanned at the field's type: a field type that
    /// lacks one is reported there, in the words of the runtime's
    /// `PayloadField` (rustc still reports the derives' own errors too). The
    /// trait and its `#[diagnostic::on_unimplemented]` live in the runtime,
    /// so that the check resolves under `#![no_implicit_prelude]`. One
    /// constant for the whole spec.
    fn payload_field_checks(&self) -> TokenStream {
        let p = &self.p;
        let checks = self
            .entities()
            .filter(|e| e.inherited_from.is_none())
            .flat_map(|entity| &entity.fields)
            .map(|field| &field.ty)
            .filter(|ty| !mentions_self(quote!(#ty)))
            .map(|ty| quote_spanned!(ty.span()=> #p::payload_field::<#ty>();));
        quote! {
            const _: () = {
                #(#checks)*
            };
        }
    }

    /// Inherited payloads and event enums are the extended spec's own types.
    fn reexports(&self) -> TokenStream {
        let items = self.entities().filter_map(|entity| {
            let path = entity.inherited_from.as_ref()?;
            let ident = &entity.ident;
            let event = items::event_enum(entity);
            Some(quote! {
                #[doc(inline)]
                pub use #path::{#ident, #event};
            })
        });
        quote!(#(#items)*)
    }

    fn scope_const(&self) -> TokenStream {
        let scope = self.scope;
        let doc = format!("The scope of this spec: the first segment of every topic (`{scope}`).");
        self.declared(Gen::ScopeConst, None, quote!(#[doc = #doc]), quote!(#scope))
    }

    fn topic_fns(&self) -> TokenStream {
        let p = &self.p;
        let fns = self.topic_entities().map(|entity| {
            let name = &entity.name.value;
            let display = display_name(name);
            let keyed = topic_string(self.scope, name);
            let keyed_doc = format!(
                "Topic scoped to a single {display}: `{keyed}:<uuid>`.\n\n{}",
                self.reached_by(&keyed)
            );
            let collection = entity.collection.as_ref().map(|collection| {
                let topic = topic_string(self.scope, &collection.value);
                let doc = format!(
                    "Topic for all {display} mutations: `{topic}`.\n\n{}",
                    self.reached_by(&topic)
                );
                self.declared(
                    Gen::TopicCollection,
                    Some(entity),
                    quote!(#[doc = #doc] #[must_use]),
                    quote!(#p::Topic::new(#topic)),
                )
            });
            let keyed_fn = self.declared(
                Gen::TopicKeyed,
                Some(entity),
                quote!(#[doc = #keyed_doc] #[must_use]),
                quote!(#p::Topic::keyed(#keyed, id)),
            );
            quote!(#collection #keyed_fn)
        });
        quote!(#(#fns)*)
    }

    /// For a topic's docs: which broadcast functions reach it, and through
    /// which field for a keyed topic (`topic` is the topic string or the
    /// keyed topic's name), from the same targets as the code.
    fn reached_by(&self, topic: &str) -> String {
        let mut reaches = Vec::new();
        for entity in self.entities() {
            for target in self.targets(entity).iter().filter(|t| t.topic == topic) {
                let function = items::broadcast_fn(entity);
                reaches.push(match &target.key {
                    Some(Key {
                        field, optional, ..
                    }) => {
                        let when = if *optional { ", when `Some`" } else { "" };
                        format!("[`{function}`] (keyed by `{field}`{when})")
                    }
                    None => format!("[`{function}`]"),
                });
            }
        }
        match reaches.as_slice() {
            [] => "No broadcast function of this spec reaches it.".to_owned(),
            [one] => format!("Receives the events sent by {one}."),
            [init @ .., last] => format!(
                "Receives the events sent by {}, and {last}.",
                init.join(", ")
            ),
        }
    }

    fn topic_kinds(&self) -> TokenStream {
        let p = &self.p;
        let rt = self.runtime_doc_path();
        let errors = format!(
            "A [`ParseTopicError`]({rt}::ParseTopicError) saying what is wrong with `input`."
        );
        let kinds = self.topic_entities().flat_map(|entity| {
            let collection = entity.collection.as_ref().map(|c| {
                let topic = topic_string(self.scope, &c.value);
                quote!(#p::TopicKind::plain(#topic))
            });
            let keyed = topic_string(self.scope, &entity.name.value);
            collection
                .into_iter()
                .chain([quote!(#p::TopicKind::keyed(#keyed))])
        });
        let topic_kinds = self.declared(
            Gen::TopicKinds,
            None,
            quote! {
                /// Every kind of topic of this spec: what [`parse_topic`] accepts.
            },
            quote!(&[#(#kinds),*]),
        );
        let parse_topic = self.declared(
            Gen::ParseTopic,
            None,
            quote! {
                /// Parses a topic of this spec from its string form, such as
                /// `"staff:team:<uuid>"`. UUIDs may be in either case; anything
                /// that is not a topic of this spec is rejected.
                ///
                /// # Errors
                ///
                #[doc = #errors]
            },
            quote!(#p::Topic::parse(input, TOPIC_KINDS)),
        );
        quote!(#topic_kinds #parse_topic)
    }

    fn event_enums(&self) -> TokenStream {
        let enums = self
            .entities()
            .filter(|e| e.inherited_from.is_none())
            .map(|e| self.event_enum(e, &e.events));
        quote!(#(#enums)*)
    }

    /// The event enum of `entity`, with a variant per event of `events`.
    /// Its serde form is the atom, written by hand through `as_str` and
    /// `FromStr`: serde's derive would generate a visitor and a field enum
    /// per event enum, for a string.
    pub(crate) fn event_enum(&self, entity: &Entity, events: &[Ident]) -> TokenStream {
        let p = &self.p;
        let ident = items::event_enum(entity);
        let display = display_name(&entity.name.value);
        let atoms: Vec<String> = events.iter().map(ToString::to_string).collect();
        let variants: Vec<Ident> = events
            .iter()
            .map(|e| items::variant_ident(entity, e))
            .collect();
        let variant_docs = atoms.iter().map(|a| format!("`{a}`"));
        // The atom, and its whole CamelCase form when the variant drops the
        // entity's prefix, find the variant in rustdoc's search.
        let aliases = atoms.iter().zip(&variants).map(|(atom, variant)| {
            let camel = upper_camel_case(atom);
            let camel = (*variant != camel).then(|| quote!(#[doc(alias = #camel)]));
            quote!(#[doc(alias = #atom)] #camel)
        });
        let list = atoms
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let doc = format!(
            "A {display} broadcast event: one variant per event atom ({list}). \
             Its serde form is the atom, a string."
        );
        let payload = &entity.ident;
        let payload_doc = format!(
            "Sent with a [`{payload}`] payload; see [`{}`].",
            items::broadcast_fn(entity)
        );
        quote! {
            #[doc = #doc]
            #[doc = ""]
            #[doc = #payload_doc]
            #[derive(
                ::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug,
                ::core::cmp::PartialEq, ::core::cmp::Eq, ::core::hash::Hash,
            )]
            pub enum #ident {
                #(
                    #[doc = #variant_docs]
                    #aliases
                    #variants,
                )*
            }

            impl #ident {
                /// Every event, in declaration order.
                pub const ALL: &'static [Self] = &[#(Self::#variants),*];

                /// The atoms of [`ALL`](Self::ALL), in the same order.
                pub const ATOMS: &'static [&'static str] = &[#(#atoms),*];

                /// The event's atom, such as `team_created`.
                #[must_use]
                pub const fn as_str(self) -> &'static str {
                    Self::ATOMS[self as usize]
                }
            }

            impl ::core::fmt::Display for #ident {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.write_str(self.as_str())
                }
            }

            impl ::core::str::FromStr for #ident {
                type Err = #p::UnknownEvent;

                fn from_str(name: &str) -> ::core::result::Result<Self, Self::Err> {
                    #p::parse_event(name, Self::ATOMS, Self::ALL)
                }
            }

            impl #p::serde::Serialize for #ident {
                fn serialize<S: #p::serde::Serializer>(
                    &self,
                    serializer: S,
                ) -> ::core::result::Result<S::Ok, S::Error> {
                    serializer.serialize_str(self.as_str())
                }
            }

            impl<'de> #p::serde::Deserialize<'de> for #ident {
                fn deserialize<D: #p::serde::Deserializer<'de>>(
                    deserializer: D,
                ) -> ::core::result::Result<Self, D::Error> {
                    #p::deserialize_event(deserializer, Self::ATOMS)
                }
            }
        }
    }

    fn message(&self) -> TokenStream {
        let p = &self.p;
        let idents: Vec<&Ident> = self.entities().map(|e| &e.ident).collect();
        let events: Vec<Ident> = self.entities().map(items::event_enum).collect();
        let variant_docs = self.entities().map(|e| {
            format!(
                "A {} event and its payload: sent by [`{}`].",
                display_name(&e.name.value),
                items::broadcast_fn(e)
            )
        });
        let all_atoms = self
            .entities()
            .flat_map(|e| e.events.iter().map(ToString::to_string));
        let events_const = self.declared(
            Gen::Events,
            None,
            quote! {
                /// Every event atom of this spec, in declaration order.
            },
            quote!(&[#(#all_atoms),*]),
        );
        // One arm per atom: the event's variant and the message's.
        let (mut arm_atoms, mut arm_events, mut arm_idents) = (Vec::new(), Vec::new(), Vec::new());
        for entity in self.entities() {
            let event_enum = items::event_enum(entity);
            for event in &entity.events {
                let variant = items::variant_ident(entity, event);
                arm_atoms.push(event.to_string());
                arm_events.push(quote!(#event_enum::#variant));
                arm_idents.push(&entity.ident);
            }
        }
        let scope = self.scope;
        let doc = format!(
            "A message of the `{scope}` spec: the analog of Elixir's `{{:{scope}, event, payload}}`.\n\n\
             Match on it as a LiveView's `handle_info` does: one event specifically, \
             the rest generically. Its serde form is \
             `{{\"scope\":\"{scope}\",\"event\":\"<atom>\",\"payload\":{{...}}}}`."
        );
        quote! {
            #[doc = #doc]
            #[derive(::core::clone::Clone, ::core::fmt::Debug, ::core::cmp::PartialEq)]
            pub enum Message {
                #(
                    #[doc = #variant_docs]
                    #idents(#events, #idents),
                )*
            }

            #events_const

            impl Message {
                /// The event's atom, such as `team_created`.
                #[must_use]
                pub fn event_name(&self) -> &'static str {
                    match self {
                        #(Self::#idents(event, _) => event.as_str(),)*
                    }
                }

                /// The `uuid` of the payload: the entity the event is about.
                #[must_use]
                pub fn uuid(&self) -> #p::Uuid {
                    match self {
                        #(Self::#idents(_, payload) => payload.uuid,)*
                    }
                }
            }

            impl #p::serde::Serialize for Message {
                fn serialize<S: #p::serde::Serializer>(
                    &self,
                    serializer: S,
                ) -> ::core::result::Result<S::Ok, S::Error> {
                    match self {
                        #(Self::#idents(event, payload) => {
                            #p::serialize_message(SCOPE, event.as_str(), payload, serializer)
                        })*
                    }
                }
            }

            impl<'de> #p::serde::Deserialize<'de> for Message {
                fn deserialize<D: #p::serde::Deserializer<'de>>(
                    deserializer: D,
                ) -> ::core::result::Result<Self, D::Error> {
                    #p::deserialize_message::<Self, D>(deserializer)
                }
            }

            impl #p::SpecMessage for Message {
                const SCOPE: &'static str = SCOPE;
                const EVENTS: &'static [&'static str] = EVENTS;

                fn deserialize_payload<'de, D: #p::serde::Deserializer<'de>>(
                    event: &str,
                    deserializer: D,
                ) -> ::core::result::Result<Self, D::Error> {
                    match event {
                        #(#arm_atoms => #p::deserialize_payload_of(deserializer, #arm_events, Self::#arm_idents),)*
                        _ => ::core::result::Result::Err(#p::unknown_event::<D::Error>(event, EVENTS)),
                    }
                }
            }
        }
    }

    fn route_table(&self) -> TokenStream {
        let p = &self.p;
        let routes = self.entities().map(|entity| {
            let function = items::broadcast_fn(entity);
            let name = &entity.name.value;
            let atoms = entity.events.iter().map(ToString::to_string);
            let targets = self.targets(entity).iter().map(|target| {
                let topic = &target.topic;
                match &target.key {
                    None => quote!(#p::Target { topic: #topic, key: ::core::option::Option::None }),
                    Some(Key { field, optional, .. }) => quote!(#p::Target {
                        topic: #topic,
                        key: ::core::option::Option::Some(#p::TargetKey { field: #field, optional: #optional }),
                    }),
                }
            });
            quote!(#p::Route { function: #function, entity: #name, events: &[#(#atoms),*], targets: &[#(#targets),*] })
        });
        let routes = self.declared(
            Gen::Routes,
            None,
            quote! {
                /// How each broadcast function routes: the topics it reaches, in
                /// terms of payload fields. Constant data, for docs and tools.
            },
            quote!(&[#(#routes),*]),
        );
        let spec = self.declared(
            Gen::Spec,
            None,
            quote! {
                /// The whole spec as constant data.
            },
            quote! {
                #p::Spec {
                    scope: SCOPE,
                    topic_kinds: TOPIC_KINDS,
                    events: EVENTS,
                    routes: ROUTES,
                }
            },
        );
        quote!(#routes #spec)
    }

    /// The runtime's path as doc links need it (`::staff_pubsub`, `crate`).
    fn runtime_doc_path(&self) -> String {
        let krate = &self.spec.options.krate;
        quote!(#krate).to_string().replace(' ', "")
    }

    fn server(&self) -> TokenStream {
        let p = &self.p;
        let rt = self.runtime_doc_path();
        let install_errors = format!(
            "[`AlreadyInstalled`]({rt}::AlreadyInstalled), giving `pubsub` back, if the \
             default server was already installed or used."
        );
        let subscribe_errors = format!("As [`PubSub::subscribe`]({rt}::PubSub::subscribe).");
        let subscribe_many_errors =
            format!("As [`PubSub::subscribe_many`]({rt}::PubSub::subscribe_many).");
        let builder_doc = format!(
            "A builder of a server for this spec's messages: \
             [`PubSub::builder`]({rt}::PubSub::builder) with the message type filled in."
        );
        let scope_doc = format!(
            "Runs `future` with `pubsub` as this spec's default server: the \
             generated functions (`broadcast_*`, [`subscribe`], [`server`]) called \
             while the returned [`Scoped`]({rt}::Scoped) future is polled use \
             `pubsub`, on whatever thread polls it, while other code keeps the \
             process-wide server. Tasks spawned by `future` are not in the scope. \
             Made for tests: each test gets an isolated server, also when tests \
             run in parallel."
        );
        let (global, install, scope, conversions) = match &self.spec.options.extends {
            None => (
                quote!(__SERVER.global(#p::PubSub::new)),
                quote!(__SERVER.install(pubsub)),
                quote!(#p::Scoped::new(future).with(__SERVER.scope_entry(pubsub))),
                TokenStream::new(),
            ),
            Some(base) => {
                let inherited: Vec<&Ident> = self
                    .entities()
                    .filter(|e| e.inherited_from.is_some())
                    .map(|e| &e.ident)
                    .collect();
                let from_doc = format!(
                    "A message of [the extended spec]({}): the same event, as this spec's message.",
                    quote!(#base).to_string().replace(' ', "")
                );
                (
                    quote!(__SERVER.global(|| {
                        let extension = #p::PubSub::new();
                        __link_global(&extension);
                        extension
                    })),
                    quote! {
                        __SERVER.install(pubsub)?;
                        __link_global(__global());
                        ::core::result::Result::Ok(())
                    },
                    quote! {{
                        let base = __BASES.base_of(&pubsub, __to_extension, __to_base);
                        #p::Scoped::new(future)
                            .with(__SERVER.scope_entry(pubsub))
                            .with(#base::__default_server().scope_entry(base))
                    }},
                    [quote! {
                        /// The base server each of this spec's servers is linked to.
                        static __BASES: #p::LinkedBases<#base::Message, Message> = #p::LinkedBases::new();

                        #[doc = #from_doc]
                        impl ::core::convert::From<#base::Message> for Message {
                            fn from(message: #base::Message) -> Self {
                                match message {
                                    #(#base::Message::#inherited(event, payload) => Self::#inherited(event, payload),)*
                                }
                            }
                        }

                        /// This spec's message as a message of the extended spec:
                        /// the message itself back when it is one of this spec's own
                        /// entities.
                        impl ::core::convert::TryFrom<Message> for #base::Message {
                            type Error = Message;

                            fn try_from(message: Message) -> ::core::result::Result<Self, Message> {
                                match message {
                                    #(Message::#inherited(event, payload) => ::core::result::Result::Ok(Self::#inherited(event, payload)),)*
                                    #[allow(unreachable_patterns)]
                                    other => ::core::result::Result::Err(other),
                                }
                            }
                        }

                    },
                    self.declared(
                        Gen::ToExtension,
                        None,
                        TokenStream::new(),
                        quote! {
                            ::core::option::Option::Some(::core::convert::From::from(::core::clone::Clone::clone(message)))
                        },
                    ),
                    self.declared(
                        Gen::ToBase,
                        None,
                        TokenStream::new(),
                        quote! {
                            match message {
                                #(Message::#inherited(event, payload) => ::core::option::Option::Some(
                                    #base::Message::#inherited(::core::clone::Clone::clone(event), ::core::clone::Clone::clone(payload)),
                                ),)*
                                #[allow(unreachable_patterns)]
                                _ => ::core::option::Option::None,
                            }
                        },
                    ),
                    self.declared(
                        Gen::LinkGlobal,
                        None,
                        quote! {
                            /// One bus: the extended spec's process-wide server
                            /// delivers to this one's subscribers and back.
                        },
                        quote! {
                            let base = #base::__default_server().global(#p::PubSub::new);
                            __BASES.link(base, extension, __to_extension, __to_base);
                        },
                    )]
                    .into_iter()
                    .collect(),
                )
            }
        };
        let default_server = self.declared(
            Gen::DefaultServer,
            None,
            quote!(#[doc(hidden)]),
            quote!(&__SERVER),
        );
        let global = self.declared(Gen::Global, None, TokenStream::new(), global);
        let server = self.declared(
            Gen::Server,
            None,
            quote! {
                /// This spec's default server (the analog of
                /// `PhoenixKit.PubSub.Manager`): an in-process server created on
                /// first use, unless one was [`install`]ed before; inside a
                /// [`scope`], the scope's server.
                #[must_use]
            },
            quote!(__SERVER.current(__global)),
        );
        let builder = self.declared(
            Gen::Builder,
            None,
            quote!(#[doc = #builder_doc]),
            quote!(#p::PubSub::builder()),
        );
        let install = self.declared(
            Gen::Install,
            None,
            quote! {
                /// Makes `pubsub` the default server: call it at start-up to use
                /// another capacity or a network transport.
                ///
                /// # Errors
                ///
                #[doc = #install_errors]
            },
            install,
        );
        let scope = self.declared(Gen::ScopeFn, None, quote!(#[doc = #scope_doc]), scope);
        let subscribe = self.declared(
            Gen::Subscribe,
            None,
            quote! {
                /// Subscribes to one topic on the default server.
                ///
                /// # Errors
                ///
                #[doc = #subscribe_errors]
            },
            quote! {
                match __SERVER.scoped() {
                    ::core::option::Option::Some(pubsub) => pubsub.subscribe(topic),
                    ::core::option::Option::None => __global().subscribe(topic),
                }
            },
        );
        let subscribe_many = self.declared(
            Gen::SubscribeMany,
            None,
            quote! {
                /// Subscribes to several topics with one queue on the default
                /// server: one copy of a broadcast per listed topic it reaches.
                ///
                /// # Errors
                ///
                #[doc = #subscribe_many_errors]
            },
            quote! {
                match __SERVER.scoped() {
                    ::core::option::Option::Some(pubsub) => pubsub.subscribe_many(topics),
                    ::core::option::Option::None => __global().subscribe_many(topics),
                }
            },
        );
        quote! {
            ::std::thread_local! {
                static __SCOPED: ::core::cell::RefCell<::core::option::Option<#p::PubSub<Message>>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            static __SERVER: #p::DefaultServer<Message> = #p::DefaultServer::new(&__SCOPED);

            #default_server
            #global
            #conversions
            #server
            #builder
            #install
            #scope
            #subscribe
            #subscribe_many
        }
    }

    fn broadcast_fns(&self) -> TokenStream {
        let fns = self.entities().map(|entity| self.broadcast_fn(entity));
        quote!(#(#fns)*)
    }

    fn broadcast_fn(&self, entity: &Entity) -> TokenStream {
        let p = &self.p;
        let ident = &entity.ident;
        let function = items::broadcast_fn(entity);
        let targets = self.targets(entity);
        let capacity = targets.len();
        // A topic whose name no other target of the route has cannot repeat
        // one: no duplicate scan for it.
        let pushes: Vec<TokenStream> = targets
            .iter()
            .map(|target| {
                let sharing = targets.iter().filter(|t| t.topic == target.topic).count();
                push(target, sharing == 1)
            })
            .collect();
        let doc = self.broadcast_doc(entity, targets);
        let doc_on = format!("As [`{function}`], on the given server instead of the default one.");
        let broadcast = format!(
            "[`PubSub::broadcast`]({}::PubSub::broadcast)",
            self.runtime_doc_path()
        );
        let errors_on = format!("As {broadcast}.");
        let errors = format!("As {broadcast}: the engine did not take the message.");
        let default = self.declared(
            Gen::Broadcast,
            Some(entity),
            quote! {
                #[doc = #doc]
                ///
                /// # Errors
                ///
                #[doc = #errors]
            },
            quote! {
                let mut topics = #p::TopicList::<#capacity>::new();
                #(#pushes)*
                #p::broadcast_default(&__SERVER, __global, topics, Message::#ident(event, payload))
            },
        );
        let on = self.declared(
            Gen::BroadcastOn,
            Some(entity),
            quote! {
                #[doc = #doc_on]
                ///
                /// # Errors
                ///
                #[doc = #errors_on]
            },
            quote! {
                let mut topics = #p::TopicList::<#capacity>::new();
                #(#pushes)*
                #p::broadcast_on(pubsub, topics, Message::#ident(event, payload))
            },
        );
        quote!(#default #on)
    }

    fn broadcast_doc(&self, entity: &Entity, targets: &[Target]) -> String {
        let display = display_name(&entity.name.value);
        let phrases: Vec<&str> = targets.iter().map(|t| t.phrase.as_str()).collect();
        let reaches = match phrases.as_slice() {
            [] => String::from("no topic"),
            [one] => (*one).to_owned(),
            [init @ .., last] => format!("{}, and {last}", init.join(", ")),
        };
        let list: String = targets
            .iter()
            .map(|t| {
                let when = if t.key.as_ref().is_some_and(|key| key.optional) {
                    " (when `Some`)"
                } else {
                    ""
                };
                format!("\n- `{}`{when}", t.pattern)
            })
            .collect();
        format!("Broadcasts a {display} event to {reaches}.\n\nTopics reached:\n{list}")
    }

    /// The targets of `entity`, from the route plan.
    fn targets(&self, entity: &Entity) -> &[Target] {
        self.entities()
            .position(|e| std::ptr::eq(e, entity))
            .and_then(|index| self.targets.get(index))
            .map_or(&[], Vec::as_slice)
    }
}

/// The statement that adds `target` to `topics`. `distinct`: no other
/// target of the route has its topic name, so that it can never equal
/// another of the route's topics and needs no duplicate check.
fn push(target: &Target, distinct: bool) -> TokenStream {
    let topic_fn = items::topic_fn(&target.word);
    let method = if distinct {
        format_ident!("push_distinct")
    } else {
        format_ident!("push")
    };
    match &target.key {
        None => quote!(topics.#method(#topic_fn());),
        Some(Key {
            ident,
            optional: true,
            ..
        }) => quote! {
            if let ::core::option::Option::Some(id) = payload.#ident {
                topics.#method(#topic_fn(id));
            }
        },
        Some(Key { ident, .. }) => quote!(topics.#method(#topic_fn(payload.#ident));),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use proc_macro2::{Delimiter, TokenStream, TokenTree};
    use syn::{Item, ItemMod, UseTree};

    use crate::internals::ast::Spec;
    use crate::internals::attr::Options;
    use crate::internals::ctxt::Ctxt;
    use crate::internals::items::generated_names;

    const SHOP: &str = r#"pub mod shop {
        use staff_pubsub::Uuid;
        #[entity(collection = "customers", events(customer_created))]
        pub struct Customer { pub uuid: Uuid }
        #[entity(collection = "orders", events(order_placed, order_shipped))]
        pub struct Order {
            pub uuid: Uuid,
            #[route(customer)]
            pub customer_uuid: Option<Uuid>,
        }
        #[relation(events(customer_followed))]
        pub struct Follow {
            pub uuid: Uuid,
            #[endpoint(customer)]
            pub follower_uuid: Uuid,
        }
        pub fn helper() {}
    }"#;

    const APP: &str = r#"pub mod app {
        use staff_pubsub::Uuid;
        #[entity(collection = "rooms", events(room_booked))]
        pub struct Room {
            pub uuid: Uuid,
            #[route(customer)]
            pub customer_uuid: Option<Uuid>,
        }
    }"#;

    pub(crate) fn tokens(text: &str) -> TokenStream {
        text.parse().unwrap()
    }

    /// `(arguments, module, expansion)` of a plain, an extensible, a renamed
    /// and an extension spec.
    fn samples() -> Vec<(&'static str, &'static str, TokenStream)> {
        let mut samples: Vec<_> = [
            r#"scope = "shop""#,
            r#"scope = "shop", extensible"#,
            r#"scope = "shop", crate = "crate""#,
        ]
        .into_iter()
        .map(|args| {
            let out = crate::entry::staff_events(tokens(args), tokens(SHOP));
            (args, SHOP, out)
        })
        .collect();
        let extension = format!("[extends = base::shop] [{APP}] [scope = \"shop\"] [{SHOP}]");
        let out = crate::entry::staff_events_extend(tokens(&extension));
        samples.push(("extends = base::shop", APP, out));
        samples
    }

    /// The string of every `#[doc = "..."]` in `tokens`.
    fn doc_strings(tokens: TokenStream, docs: &mut Vec<String>) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tree) in trees.iter().enumerate() {
            let TokenTree::Group(group) = tree else {
                continue;
            };
            let is_attr =
                i > 0 && matches!(&trees[i - 1], TokenTree::Punct(p) if p.as_char() == '#');
            if is_attr && group.delimiter() == Delimiter::Bracket {
                if let Ok(syn::Meta::NameValue(meta)) = syn::parse2::<syn::Meta>(group.stream()) {
                    if meta.path.is_ident("doc") {
                        if let syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(text),
                            ..
                        }) = &meta.value
                        {
                            docs.push(text.value());
                        }
                    }
                }
            }
            doc_strings(group.stream(), docs);
        }
    }

    #[test]
    fn generated_doc_links_name_real_paths() {
        for (args, _, out) in samples() {
            let mut docs = Vec::new();
            doc_strings(out, &mut docs);
            assert!(docs.len() > 20, "{args}: {docs:?}");
            for doc in &docs {
                // `#p` is not interpolated in `///` comments inside `quote!`,
                // and a link to `#...` is a dead page anchor for rustdoc.
                assert!(
                    !doc.contains("#p") && !doc.contains("](#"),
                    "{args}: dead link in {doc:?}"
                );
            }
        }
    }

    /// The names a module's items add to its namespaces (a `macro_rules!`
    /// name is left out: the carrier's lives at the crate root).
    pub(crate) fn item_names(items: &[Item]) -> BTreeSet<String> {
        fn use_names(tree: &UseTree, names: &mut BTreeSet<String>) {
            match tree {
                UseTree::Path(path) => use_names(&path.tree, names),
                UseTree::Name(name) => {
                    names.insert(name.ident.to_string());
                }
                UseTree::Rename(rename) => {
                    names.insert(rename.rename.to_string());
                }
                UseTree::Group(group) => group.items.iter().for_each(|t| use_names(t, names)),
                UseTree::Glob(_) => {}
            }
        }
        let mut names = BTreeSet::new();
        for item in items {
            match item {
                Item::Const(i) if i.ident != "_" => {
                    names.insert(i.ident.to_string());
                }
                Item::Enum(i) => {
                    names.insert(i.ident.to_string());
                }
                Item::Fn(i) => {
                    names.insert(i.sig.ident.to_string());
                }
                Item::Static(i) => {
                    names.insert(i.ident.to_string());
                }
                Item::Struct(i) => {
                    names.insert(i.ident.to_string());
                }
                Item::Use(i) => use_names(&i.tree, &mut names),
                // `thread_local! { static NAME: ... }`
                Item::Macro(i)
                    if i.mac.path.is_ident("thread_local")
                        || i.mac
                            .path
                            .segments
                            .last()
                            .is_some_and(|s| s.ident == "thread_local") =>
                {
                    let mut trees = i.mac.tokens.clone().into_iter();
                    while let Some(tree) = trees.next() {
                        if matches!(&tree, TokenTree::Ident(id) if id == "static") {
                            if let Some(TokenTree::Ident(name)) = trees.next() {
                                names.insert(name.to_string());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        names
    }

    pub(crate) fn read(args: &str, module: &str) -> Spec {
        let mut cx = Ctxt::default();
        let options = Options::parse(&mut cx, tokens(args));
        let spec = Spec::from_module(&mut cx, options, syn::parse_str(module).unwrap());
        cx.check().unwrap();
        spec
    }

    pub(crate) fn module_items(module: &ItemMod) -> &[Item] {
        module
            .content
            .as_ref()
            .map_or(&[], |(_, items)| items.as_slice())
    }

    /// What `items` declares is generated is what `expand` generates: no
    /// more, no less (the names the clash rules protect and the stubs
    /// define).
    #[test]
    fn the_declarations_name_every_generated_item() {
        for (args, module, out) in samples() {
            let input: ItemMod = syn::parse_str(module).unwrap();
            let output: ItemMod = syn::parse2(out).unwrap();
            let own = item_names(module_items(&input));
            let generated: BTreeSet<String> = item_names(module_items(&output))
                .difference(&own)
                .cloned()
                .collect();
            // The declared names, of the spec as the expansion read it.
            let spec = if args.starts_with("extends") {
                let base = read(r#"scope = "shop""#, SHOP);
                let mut spec = read(args, module);
                let mut entities = base.entities;
                for entity in &mut entities {
                    entity.inherited_from = Some(syn::parse_quote!(base::shop));
                }
                entities.append(&mut spec.entities);
                spec.entities = entities;
                spec
            } else {
                read(args, module)
            };
            let declared: BTreeSet<String> =
                generated_names(&spec).into_iter().map(|g| g.name).collect();
            assert_eq!(generated, declared, "{args}");
        }
    }
}
