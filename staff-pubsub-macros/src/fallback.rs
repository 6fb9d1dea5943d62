//! What a spec with errors expands to, as thiserror's fallback: the user's
//! module, helper attributes removed, every error, a stub of each item the
//! spec would generate, and stub impls of the traits the macro would derive
//! for the payloads. Code elsewhere in the crate that calls
//! `shop::topic_orders()`, matches on `shop::Message` or clones a payload
//! then compiles against the stubs and adds no error of its own: the spec's
//! errors are the only ones. Stubs panic if called; nothing calls them,
//! since the crate does not compile.

use std::collections::HashSet;

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use syn::{Item, Visibility};

use crate::ast::{item_ident, Entity, Spec};
use crate::expand::{Expander, PayloadTrait};
use crate::names::is_lower_snake;
use crate::plan::{self, Fixed, Pattern};

pub(crate) fn expand(spec: &Spec, errors: &syn::Error) -> TokenStream {
    let mut module = spec.module.clone();
    if let Some((_, items)) = &mut module.content {
        let mut stubs = stubs(spec, items);
        stubs.extend(payload_impls(spec, items));
        items.push(Item::Verbatim(stubs));
    }
    let errors = errors.to_compile_error();
    quote!(#module #errors)
}

const DOC: &str = "Not generated: the spec of this module has errors.";

/// A stub of every item `plan` names whose name is an identifier and not
/// taken, by the user's items or by an earlier stub.
fn stubs(spec: &Spec, items: &[Item]) -> TokenStream {
    let stubs = Stubs {
        ex: Expander::new(spec),
        spec,
    };
    let mut taken: HashSet<String> = items
        .iter()
        .filter_map(item_ident)
        .map(ToString::to_string)
        .collect();
    let mut out = TokenStream::new();
    for generated in plan::generated_names(spec) {
        if !plan::is_ident(&generated.name) || !taken.insert(generated.name.clone()) {
            continue;
        }
        let ident = format_ident!("{}", generated.name);
        let entity = generated.owner.map(|index| &spec.entities[index]);
        out.extend(match (generated.pattern, entity) {
            (Pattern::Fixed(fixed), _) => stubs.fixed(fixed, &ident),
            (Pattern::EventEnum, Some(entity)) => stubs.event_enum(entity, &ident),
            (Pattern::InheritedPayload, Some(entity)) => stubs.reexport(entity, &ident),
            (Pattern::Topic { keyed }, _) => stubs.topic_fn(keyed, &ident),
            (Pattern::Broadcast, _) => stubs.broadcast_fn(false, &ident),
            (Pattern::BroadcastOn, _) => stubs.broadcast_fn(true, &ident),
            (Pattern::EventEnum | Pattern::InheritedPayload, None) => TokenStream::new(),
        });
    }
    out
}

struct Stubs<'a> {
    ex: Expander<'a>,
    spec: &'a Spec,
}

impl Stubs<'_> {
    fn fixed(&self, fixed: Fixed, ident: &Ident) -> TokenStream {
        let p = &self.ex.p;
        let scope = self
            .spec
            .options
            .scope
            .as_ref()
            .map_or("", |s| s.value.as_str());
        let signature = match fixed {
            Fixed::ScopeConst => return quote!(#[doc = #DOC] pub const #ident: &str = #scope;),
            Fixed::TopicKinds => {
                return quote!(#[doc = #DOC] pub const #ident: &[#p::TopicKind] = &[];);
            }
            Fixed::Events => return quote!(#[doc = #DOC] pub const #ident: &[&str] = &[];),
            Fixed::Routes => return quote!(#[doc = #DOC] pub const #ident: &[#p::Route] = &[];),
            Fixed::Spec => {
                return quote! {
                    #[doc = #DOC]
                    pub const #ident: #p::Spec = #p::Spec {
                        scope: #scope,
                        topic_kinds: &[],
                        events: &[],
                        routes: &[],
                    };
                };
            }
            Fixed::Message => return self.message(ident),
            Fixed::ParseTopic => quote! {
                fn #ident(_: &str) -> ::core::result::Result<#p::Topic, #p::ParseTopicError>
            },
            Fixed::Server => quote!(fn #ident() -> #p::PubSub<Message>),
            Fixed::Builder => quote!(fn #ident() -> #p::Builder<Message>),
            Fixed::Install => quote! {
                fn #ident(
                    _: #p::PubSub<Message>,
                ) -> ::core::result::Result<(), #p::AlreadyInstalled<Message>>
            },
            Fixed::ScopeFn => quote! {
                fn #ident<F: ::core::future::Future>(_: #p::PubSub<Message>, _: F) -> #p::Scoped<F>
            },
            Fixed::Subscribe => quote! {
                fn #ident(
                    _: #p::Topic,
                ) -> ::core::result::Result<#p::Subscription<Message>, #p::Error>
            },
            Fixed::SubscribeMany => quote! {
                fn #ident(
                    _: impl ::core::iter::IntoIterator<Item = #p::Topic>,
                ) -> ::core::result::Result<#p::Subscription<Message>, #p::Error>
            },
            // Private, or for the crates that extend a spec, which cannot
            // compile against this crate anyway.
            Fixed::ServerStatic
            | Fixed::ScopedStatic
            | Fixed::DefaultServer
            | Fixed::Global
            | Fixed::ToExtension
            | Fixed::ToBase
            | Fixed::LinkGlobal
            | Fixed::Carrier => return TokenStream::new(),
        };
        quote! {
            #[doc = #DOC]
            pub #signature {
                ::core::unimplemented!()
            }
        }
    }

    /// `Message`, with a variant for each entity whose payload is a public,
    /// non-generic type (another would add errors of its own), and the
    /// methods and traits of the real one.
    fn message(&self, ident: &Ident) -> TokenStream {
        let p = &self.ex.p;
        let mut payloads = HashSet::new();
        let variants = self.spec.entities.iter().filter(|entity| {
            let public =
                entity.inherited_from.is_some() || matches!(entity.vis, Visibility::Public(_));
            public && entity.generics.params.is_empty() && payloads.insert(&entity.ident)
        });
        let variants = variants.map(|entity| {
            let payload = &entity.ident;
            let event = plan::event_enum(entity);
            quote!(#[doc = #DOC] #payload(#event, #payload))
        });
        let unimplemented = quote!(::core::unimplemented!());
        quote! {
            #[doc = #DOC]
            pub enum #ident {
                #(#variants,)*
            }

            impl #ident {
                #[doc = #DOC]
                pub fn event_name(&self) -> &'static str { #unimplemented }

                #[doc = #DOC]
                pub fn uuid(&self) -> #p::Uuid { #unimplemented }
            }

            impl ::core::clone::Clone for #ident {
                fn clone(&self) -> Self { #unimplemented }
            }

            impl ::core::fmt::Debug for #ident {
                fn fmt(&self, _: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    #unimplemented
                }
            }

            impl ::core::cmp::PartialEq for #ident {
                fn eq(&self, _: &Self) -> bool { #unimplemented }
            }

            impl #p::serde::Serialize for #ident {
                fn serialize<S: #p::serde::Serializer>(
                    &self,
                    _: S,
                ) -> ::core::result::Result<S::Ok, S::Error> {
                    #unimplemented
                }
            }

            impl<'de> #p::serde::Deserialize<'de> for #ident {
                fn deserialize<D: #p::serde::Deserializer<'de>>(
                    _: D,
                ) -> ::core::result::Result<Self, D::Error> {
                    #unimplemented
                }
            }
        }
    }

    /// The real event enum, of the events that are valid atoms and make
    /// distinct variants; the
    /// extended spec's own, re-exported, for an inherited entity.
    fn event_enum(&self, entity: &Entity, ident: &Ident) -> TokenStream {
        if entity.inherited_from.is_some() {
            return self.reexport(entity, ident);
        }
        let mut variants = HashSet::new();
        let events: Vec<Ident> = entity
            .events
            .iter()
            .filter(|event| {
                let atom = event.to_string();
                let variant = plan::variant_name(&entity.name.value, &atom);
                is_lower_snake(&atom) && plan::is_ident(&variant) && variants.insert(variant)
            })
            .cloned()
            .collect();
        self.ex.event_enum(entity, &events)
    }

    fn reexport(&self, entity: &Entity, ident: &Ident) -> TokenStream {
        match &entity.inherited_from {
            Some(path) => quote!(#[doc(inline)] pub use #path::#ident;),
            None => TokenStream::new(),
        }
    }

    fn topic_fn(&self, keyed: bool, ident: &Ident) -> TokenStream {
        let p = &self.ex.p;
        let id = keyed.then(|| quote!(_: #p::Uuid));
        quote! {
            #[doc = #DOC]
            pub const fn #ident(#id) -> #p::Topic {
                ::core::panic!("not generated: the spec of this module has errors")
            }
        }
    }

    /// Generic in the event and the payload, so that a call compiles
    /// whatever state the payload type is in.
    fn broadcast_fn(&self, on: bool, ident: &Ident) -> TokenStream {
        let p = &self.ex.p;
        let pubsub = on.then(|| quote!(_: &#p::PubSub<Message>,));
        quote! {
            #[doc = #DOC]
            pub fn #ident<E, P>(
                #pubsub
                _: E,
                _: P,
            ) -> ::core::future::Ready<::core::result::Result<(), #p::Error>> {
                ::core::unimplemented!()
            }
        }
    }
}

/// For each payload of this module, an impl of each trait the macro would
/// derive for it, with no bound on its fields: the payload's uses elsewhere
/// (a clone, a comparison, serde) compile, whatever its fields.
fn payload_impls(spec: &Spec, items: &[Item]) -> TokenStream {
    let krate = &spec.options.krate;
    let p = quote!(#krate::__private);
    let unimplemented = quote!(::core::unimplemented!());
    let mut out = TokenStream::new();
    for entity in spec.entities.iter().filter(|e| e.inherited_from.is_none()) {
        let Some(Item::Struct(item)) = items.get(entity.item_index) else {
            continue;
        };
        let ident = &item.ident;
        let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
        for missing in PayloadTrait::missing(&item.attrs) {
            let path = missing.path(&p);
            out.extend(match missing {
                PayloadTrait::Clone => quote! {
                    impl #impl_generics #path for #ident #ty_generics #where_clause {
                        fn clone(&self) -> Self { #unimplemented }
                    }
                },
                PayloadTrait::Debug => quote! {
                    impl #impl_generics #path for #ident #ty_generics #where_clause {
                        fn fmt(&self, _: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                            #unimplemented
                        }
                    }
                },
                PayloadTrait::PartialEq => quote! {
                    impl #impl_generics #path for #ident #ty_generics #where_clause {
                        fn eq(&self, _: &Self) -> bool { #unimplemented }
                    }
                },
                PayloadTrait::Serialize => quote! {
                    impl #impl_generics #path for #ident #ty_generics #where_clause {
                        fn serialize<S: #p::serde::Serializer>(
                            &self,
                            _: S,
                        ) -> ::core::result::Result<S::Ok, S::Error> {
                            #unimplemented
                        }
                    }
                },
                PayloadTrait::Deserialize => {
                    let mut generics = item.generics.clone();
                    generics.params.insert(0, syn::parse_quote!('de));
                    let (impl_generics, _, _) = generics.split_for_impl();
                    quote! {
                        impl #impl_generics #path<'de> for #ident #ty_generics #where_clause {
                            fn deserialize<D: #p::serde::Deserializer<'de>>(
                                _: D,
                            ) -> ::core::result::Result<Self, D::Error> {
                                #unimplemented
                            }
                        }
                    }
                }
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::expand::tests::{item_names, module_items, read, tokens};
    use crate::plan;

    const WRONG: &str = r#"pub mod shop {
        use staff_pubsub::Uuid;
        #[entity(collection = "orders", events(order_placed, order_placed, Shipped))]
        pub struct Order {
            pub uuid: Uuid,
            #[route(custmer)]
            pub customer_uuid: Option<Uuid>,
        }
        #[relation(events(customer_followed))]
        pub struct Follow<T> {
            pub uuid: Uuid,
            pub other: T,
        }
        pub fn broadcast_follow() {}
    }"#;

    /// Every public name of the plan is defined, by the user's module or a
    /// stub, and the errors are there.
    #[test]
    fn a_spec_with_errors_still_defines_the_public_generated_names() {
        let args = r#"scope = "shop""#;
        let out = crate::entry::staff_events(tokens(args), tokens(WRONG));
        let file: syn::File = syn::parse2(out).unwrap();
        let [syn::Item::Mod(module), errors @ ..] = file.items.as_slice() else {
            panic!("a module first")
        };
        assert!(errors.len() >= 3, "the errors follow the module");
        let names = item_names(module_items(module));
        let spec = read(args, WRONG);
        for generated in plan::generated_names(&spec) {
            if !generated.name.starts_with("__") {
                assert!(
                    names.contains(&generated.name),
                    "{} missing",
                    generated.name
                );
            }
        }
    }
}
