//! The macro's entry point, free of `proc_macro` so that it can be unit tested.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::{Item, ItemMod};

use crate::ast::Spec;
use crate::attr::Options;
use crate::ctxt::Ctxt;
use crate::{expand, extend, valid};

pub(crate) fn staff_events(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let module = match parse_module(&input) {
        Ok(module) => module,
        Err(error) => {
            let error = error.to_compile_error();
            return quote!(#input #error);
        }
    };
    let options = Options::parse(&mut cx, args.clone());
    if let Some(extends) = &options.extends {
        if let Err(error) = extend::check_extends_path(extends) {
            cx.push(error);
        }
        if !cx.has_errors() {
            return extend::call_carrier(extends, &args, &input);
        }
        // Without its base the spec cannot be checked: report the options'
        // errors only, with the module (helper attributes removed).
        let spec = Spec::from_module(&mut Ctxt::default(), options, module);
        let module = &spec.module;
        let errors = cx.into_compile_errors();
        return quote!(#module #errors);
    }
    let carrier = options
        .extensible
        .then(|| carrier_macro(&module.ident, &args, &input));
    let spec = Spec::from_module(&mut cx, options, module);
    finish(cx, spec, carrier)
}

/// Validates and expands `spec`; on error, the module with its helper
/// attributes removed, plus every error, so that the rest of the crate still
/// sees the user's items.
pub(crate) fn finish(mut cx: Ctxt, spec: Spec, carrier: Option<TokenStream>) -> TokenStream {
    valid::check(&mut cx, &spec);
    if cx.has_errors() {
        let module = &spec.module;
        let errors = cx.into_compile_errors();
        return quote!(#module #errors);
    }
    let mut expanded = expand::expand(spec);
    expanded.extend(carrier);
    expanded
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
/// module's.
fn carrier_macro(module: &syn::Ident, args: &TokenStream, input: &TokenStream) -> TokenStream {
    let name = carrier_name(module);
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
    }
}

pub(crate) fn carrier_name(module: &syn::Ident) -> syn::Ident {
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
    fn not_a_module_is_an_error_with_the_item_kept() {
        let out = expand_str(r#"scope = "shop""#, "pub struct Order;");
        assert!(
            out.contains("compile_error") && out.contains("struct Order"),
            "{out}"
        );
    }
}
