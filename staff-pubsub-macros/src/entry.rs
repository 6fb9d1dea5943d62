//! The macro's entry points, free of `proc_macro` so that they can be unit
//! tested: the top layer, which reads a spec (`internals`), checks it, and
//! expands it (`expand`) or, with errors, its fallback (`fallback`).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::{Item, ItemMod};

use crate::internals::ast::Spec;
use crate::internals::attr::Options;
use crate::internals::ctxt::Ctxt;
use crate::internals::items::CARRIER;
use crate::internals::valid;
use crate::{expand, extend, fallback};

pub(crate) fn staff_events(args: TokenStream, input: TokenStream) -> TokenStream {
    let module = match parse_module(&input) {
        Ok(module) => module,
        Err(error) => {
            let error = error.to_compile_error();
            return quote!(#input #error);
        }
    };
    let mut cx = Ctxt::default();
    let options = Options::parse(&mut cx, args.clone());
    if let Some(extends) = &options.extends {
        if let Err(error) = extend::check_extends_path(extends) {
            cx.push(error);
        }
        return match cx.check() {
            Ok(()) => extend::call_carrier(extends, &args, &input),
            // Without its base the spec cannot be checked: the options'
            // errors only, with the module and the stubs of its own items.
            Err(errors) => {
                let mut unchecked = Ctxt::default();
                let spec = Spec::from_module(&mut unchecked, options, module);
                unchecked.discard();
                fallback::expand(&spec, &errors)
            }
        };
    }
    let carrier = options
        .extensible
        .then(|| carrier_macro(&module.ident, &args, &input));
    let spec = Spec::from_module(&mut cx, options, module);
    finish(cx, spec, carrier)
}

/// The second step of `#[staff_events(extends = ...)]`, called back by the
/// extended spec's carrier with both specs (see `extend`).
pub(crate) fn staff_events_extend(input: TokenStream) -> TokenStream {
    match extend::read_extension(input) {
        Ok((cx, spec)) => finish(cx, spec, None),
        Err(internal_error) => internal_error,
    }
}

/// Validates and expands `spec`; on error, the module with its helper
/// attributes removed, stubs of the generated items and every error, so that
/// the rest of the crate still sees the user's items and the generated
/// names, and reports the spec's errors only.
fn finish(mut cx: Ctxt, spec: Spec, carrier: Option<TokenStream>) -> TokenStream {
    valid::check(&mut cx, &spec);
    match cx.check() {
        Ok(()) => expand::expand(spec, carrier),
        Err(errors) => fallback::expand(&spec, &errors),
    }
}

fn parse_module(input: &TokenStream) -> syn::Result<ItemMod> {
    match syn::parse2::<Item>(input.clone()) {
        Ok(Item::Mod(module)) => Ok(module),
        Ok(item) => Err(syn::Error::new(
            item_keyword_span(&item),
            "#[staff_events] goes on a module that holds the spec: `pub mod staff { ... }`",
        )),
        Err(error) => Err(error),
    }
}

fn item_keyword_span(item: &Item) -> Span {
    match item {
        Item::Struct(i) => i.struct_token.span,
        Item::Enum(i) => i.enum_token.span,
        Item::Fn(i) => i.sig.fn_token.span,
        Item::Impl(i) => i.impl_token.span,
        Item::Trait(i) => i.trait_token.span,
        Item::Const(i) => i.const_token.span,
        Item::Static(i) => i.static_token.span,
        Item::Type(i) => i.type_token.span,
        Item::Use(i) => i.use_token.span,
        _ => Span::call_site(),
    }
}

/// The macro that carries this spec to the crates that extend it: it calls
/// the extension step back with this spec's arguments and module, as written.
/// `#[macro_export]` puts it at the crate root, under a name derived from the
/// module's; emitted inside the module, it is re-exported there as
/// [`CARRIER`], so that an extension reaches it through the spec's own path
/// (and a wrong path is reported as that path).
fn carrier_macro(module: &syn::Ident, args: &TokenStream, input: &TokenStream) -> TokenStream {
    let name = carrier_name(module);
    let carrier = format_ident!("{}", CARRIER);
    // The carried tokens are only read by the extension step, never emitted,
    // so a `crate` inside them refers to nothing.
    quote! {
        #[doc(hidden)]
        #[macro_export]
        #[allow(clippy::crate_in_macro_def)]
        macro_rules! #name {
            ([$($krate:tt)*] $($extension:tt)*) => {
                $($krate)*::__private::__staff_events_extend! {
                    $($extension)* [#args] [#input]
                }
            };
        }

        // A `macro_rules!` in scope, not a path: rustc lets a crate re-export
        // its own macro-expanded `#[macro_export]` macro only this way.
        #[doc(hidden)]
        pub use #name as #carrier;
    }
}

fn carrier_name(module: &syn::Ident) -> syn::Ident {
    format_ident!("__staff_events_spec_{}", module)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: &str, input: &str) -> String {
        let args: TokenStream = args.parse().unwrap();
        let input: TokenStream = input.parse().unwrap();
        staff_events(args, input).to_string()
    }

    #[test]
    fn a_valid_spec_generates_its_functions() {
        let out = expand_str(
            r#"scope = "shop""#,
            r#"pub mod shop {
                #[entity(collection = "orders", events(order_placed))]
                pub struct Order { pub uuid: Uuid }
            }"#,
        );
        for expected in [
            "fn topic_orders",
            "fn topic_order",
            "fn broadcast_order",
            "enum OrderEvent",
            "Placed",
        ] {
            assert!(out.contains(expected), "{expected} missing from {out}");
        }
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn event_variants_have_the_atom_as_doc_alias() {
        let out = expand_str(
            r#"scope = "shop""#,
            r#"pub mod shop {
                #[entity(collection = "customers", events(customer_created, customer_2fa_enabled))]
                pub struct Customer { pub uuid: Uuid }
            }"#,
        );
        let variant = |attrs: &str, variant: &str| {
            let at = out.find(&format!("{variant} ,")).expect(variant);
            out[..at].ends_with(&format!("{attrs} "))
        };
        assert!(
            variant(
                r#"# [doc (alias = "customer_created")] # [doc (alias = "CustomerCreated")]"#,
                "Created"
            ),
            "{out}"
        );
        // The variant is the whole atom already: no second alias.
        assert!(
            variant(
                r#"# [doc (alias = "customer_2fa_enabled")]"#,
                "Customer2faEnabled"
            ),
            "{out}"
        );
    }

    #[test]
    fn an_extensible_spec_re_exports_its_carrier_in_the_module() {
        let out = expand_str(
            r#"scope = "shop", extensible"#,
            r#"pub mod shop {
                #[entity(collection = "orders", events(order_placed))]
                pub struct Order { pub uuid: Uuid }
            }"#,
        );
        let reexport = "pub use __staff_events_spec_shop as __extensible_staff_events_spec ;";
        let at = out.find(reexport).expect(&out);
        // Inside the module: before its closing brace, the last token.
        assert_eq!(out[at + reexport.len()..].trim(), "}", "{out}");
    }

    #[test]
    fn an_extension_calls_the_carrier_through_its_path() {
        let out = expand_str(
            "extends = base::events",
            r#"pub mod app {
                #[entity(collection = "rooms", events(room_booked))]
                pub struct Room { pub uuid: Uuid }
            }"#,
        );
        assert!(
            out.starts_with("base :: events :: __extensible_staff_events_spec !"),
            "{out}"
        );
    }

    #[test]
    fn several_mistakes_give_several_errors_and_keep_the_module() {
        let out = expand_str(
            r#"scope = "sh op""#,
            r#"pub mod shop {
                #[entity(collection = "orders", events(order_placed, order_placed))]
                pub struct Order { pub id: Uuid }
                pub fn helper() {}
            }"#,
        );
        assert_eq!(out.matches("compile_error").count(), 3, "{out}");
        assert!(out.contains("fn helper"), "{out}");
        assert!(
            !out.contains("# [entity"),
            "helper attribute left in: {out}"
        );
    }

    #[test]
    fn a_name_that_makes_no_identifier_is_an_error_not_a_panic() {
        let out = expand_str(
            r#"scope = "shop""#,
            r#"pub mod shop {
                #[entity(name = "my order", collection = "orders", events(order_placed))]
                struct Order { pub uuid: Uuid }
            }"#,
        );
        assert!(out.contains("must not contain white space"), "{out}");
        assert!(out.contains("must be `pub`"), "{out}");
    }

    #[test]
    fn not_a_module_is_an_error_with_the_item_kept() {
        let out = expand_str(r#"scope = "shop""#, "pub struct Order;");
        assert!(
            out.contains("compile_error") && out.contains("struct Order"),
            "{out}"
        );
    }
}
