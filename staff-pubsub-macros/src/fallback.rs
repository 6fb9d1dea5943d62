//! What a spec with errors expands to, as thiserror's fallback: the user's
//! module, helper attributes removed, every error, a stub of each item the
//! spec would generate (the one its declaration in `internals::items`
//! gives), and stub impls of the traits the macro would derive for the
//! payloads. Code elsewhere in the crate that calls `shop::topic_orders()`
//! (in a `const` too), matches on `shop::Message` or clones a payload then
//! compiles against the stubs and adds no error of its own: the spec's
//! errors are the only ones. Nothing runs a stub, since the crate does not
//! compile.

use std::collections::HashSet;

use proc_macro2::{Ident, TokenStream};
use quote::quote;
use syn::{Item, Visibility};

use crate::expand::{Expander, PayloadTrait};
use crate::internals::ast::{item_ident, Entity, Spec};
use crate::internals::items::{self, generated_names, Fallback, Form, Gen};
use crate::internals::names::{is_ident, is_lower_snake, variant_name};

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

/// The declared stub of every generated item whose name is an identifier
/// and not taken, by the user's items or by an earlier stub.
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
    for generated in generated_names(spec) {
        if !is_ident(&generated.name) || !taken.insert(generated.name.clone()) {
            continue;
        }
        let entity = generated.owner.map(|index| &spec.entities[index]);
        out.extend(stubs.stub(generated.gen, entity));
    }
    out
}

struct Stubs<'a> {
    ex: Expander<'a>,
    spec: &'a Spec,
}

impl Stubs<'_> {
    /// The stub of `gen`, as its declaration's fallback says.
    fn stub(&self, gen: Gen, entity: Option<&Entity>) -> TokenStream {
        let Some(sig) = gen.sig(self.spec, entity) else {
            return TokenStream::new();
        };
        let decl = gen.decl();
        let doc = quote!(#[doc = #DOC]);
        match decl.fallback {
            Fallback::Nothing => TokenStream::new(),
            Fallback::Stub(body) => match decl.form {
                Form::Fn(head) => fn_stub(doc, head(&sig), body(&sig)),
                form => form.write(&sig, doc, body(&sig)),
            },
            Fallback::Lenient { head, body } => {
                let (head, body) = (head(&sig), body(&sig));
                quote!(#doc #head { #body })
            }
            Fallback::FromSpec => match (gen, entity) {
                (Gen::Message, _) => self.message(&sig.name),
                (Gen::EventEnum, Some(entity)) => self.event_enum(entity, &sig.name),
                (Gen::InheritedPayload, Some(entity)) => self.reexport(entity, &sig.name),
                _ => TokenStream::new(),
            },
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
            let event = items::event_enum(entity);
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
                let variant = variant_name(&entity.name.value, &atom);
                is_lower_snake(&atom) && is_ident(&variant) && variants.insert(variant)
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
}

/// A function's stub: `doc`, the declared `head` with its parameters made
/// `_` (the stub reads none of them, and an unused named one would be
/// linted), and `body`.
fn fn_stub(doc: TokenStream, head: TokenStream, body: TokenStream) -> TokenStream {
    let tokens = quote!(#doc #head { #body });
    let Ok(mut item) = syn::parse2::<syn::ItemFn>(tokens.clone()) else {
        return tokens;
    };
    for input in &mut item.sig.inputs {
        if let syn::FnArg::Typed(arg) = input {
            *arg.pat = syn::parse_quote!(_);
        }
    }
    quote!(#item)
}

/// For each payload of this module, an impl of each trait the macro would
/// derive for it, with no bound on its fields: the payload's uses elsewhere
/// (a clone, a comparison, serde) compile, whatever its fields.
fn payload_impls(spec: &Spec, items: &[Item]) -> TokenStream {
    let p = spec.options.private_path();
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
    use quote::ToTokens;

    use crate::expand::tests::{item_names, module_items, read, tokens};
    use crate::internals::items::generated_names;

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

    /// Every public generated name is defined, by the user's module or a
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
        for generated in generated_names(&spec) {
            if !generated.name.starts_with("__") {
                assert!(
                    names.contains(&generated.name),
                    "{} missing",
                    generated.name
                );
            }
        }
    }

    /// A `const fn` stub returns a placeholder: one that panicked would be
    /// a second error in every `const` that calls it.
    #[test]
    fn const_fn_stubs_do_not_panic() {
        let out = crate::entry::staff_events(tokens(r#"scope = "shop""#), tokens(WRONG));
        let file: syn::File = syn::parse2(out).unwrap();
        let [syn::Item::Mod(module), ..] = file.items.as_slice() else {
            panic!("a module first")
        };
        let mut const_fns = 0;
        for item in module_items(module) {
            if let syn::Item::Fn(f) = item {
                if f.sig.constness.is_some() {
                    const_fns += 1;
                    let body = f.block.to_token_stream().to_string();
                    assert!(
                        !body.contains("panic") && !body.contains("unimplemented"),
                        "{body}"
                    );
                }
            }
        }
        assert_eq!(const_fns, 2, "topic_orders and topic_order");
    }
}
