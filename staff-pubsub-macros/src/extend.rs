//! Extension of a spec from another crate.
//!
//! A proc macro cannot see another crate's items, so a spec marked
//! `extensible` also emits a *carrier*: a `macro_rules!` that holds the
//! spec's own tokens, re-exported in the spec module.
//! `#[staff_events(extends = base::spec)]` expands to a call of that carrier
//! through the user's path, which calls the extension step back with both
//! specs: [`read_extension`] reads them into one spec, which `entry` checks
//! and expands as any other. The base's payloads and event enums are re-exported, not copied;
//! everything else (topic functions, message, routes, fan-out) is generated
//! for the union, so the extended module is a complete spec of its own.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::quote;
use syn::ItemMod;

use crate::internals::ast::Spec;
use crate::internals::attr::{Name, Options};
use crate::internals::ctxt::Ctxt;
use crate::internals::items::CARRIER;

/// The base of an extension must be named through another crate.
pub(crate) fn check_extends_path(extends: &syn::Path) -> syn::Result<()> {
    let same_crate = extends
        .segments
        .first()
        .is_some_and(|s| s.ident == "crate" || s.ident == "self" || s.ident == "super");
    if same_crate && extends.leading_colon.is_none() {
        return Err(syn::Error::new_spanned(
            extends,
            "the extended spec must live in another crate (its tokens travel through a \
             `#[macro_export]` macro, which rustc does not let the same crate name by path)",
        ));
    }
    Ok(())
}

/// `#[staff_events(extends = krate::module, ...)]`: calls the carrier of
/// `krate::module` through that path, as `krate::module::CARRIER!`, the new
/// segment spanned at the module's name: a path that names nothing, or a
/// module that is not an extensible spec, is reported at the user's path.
pub(crate) fn call_carrier(
    extends: &syn::Path,
    args: &TokenStream,
    input: &TokenStream,
) -> TokenStream {
    let Some(module) = extends.segments.last() else {
        return syn::Error::new_spanned(extends, "`extends` takes the path of a spec module")
            .to_compile_error();
    };
    let carrier = syn::Ident::new(CARRIER, module.ident.span());
    // The arguments were checked by the caller.
    let mut checked = Ctxt::default();
    let krate = Options::parse(&mut checked, args.clone()).krate;
    checked.discard();
    quote!(#extends::#carrier! { [#krate] [#args] [#input] })
}

/// The callback's input, `[extension args] [extension module] [base args]
/// [base module]`, read into one spec: the base's entities first, marked
/// inherited, then the extension's; with the context holding what is wrong
/// with the extension so far. The carrier writes that form, and the first
/// step checked the extension's arguments and module, so anything else is
/// the macro's own bug: `Err` of an internal error, not a message about the
/// user's spec.
pub(crate) fn read_extension(input: TokenStream) -> Result<(Ctxt, Spec), TokenStream> {
    let Some([args, module, base_args, base_module]) = carried_groups(input) else {
        return Err(internal_error(
            Span::call_site(),
            "the extension step expects `[args] [module] [base args] [base module]`",
        ));
    };
    let module: ItemMod = match syn::parse2(module) {
        Ok(module) => module,
        Err(error) => {
            return Err(internal_error(
                error.span(),
                "the carried module does not parse",
            ))
        }
    };
    let mut cx = Ctxt::default();
    let mut options = Options::parse(&mut cx, args);
    let Some(extends) = options.extends.clone() else {
        cx.discard();
        return Err(internal_error(
            module.ident.span(),
            "an extension without `extends`",
        ));
    };
    let Some(base) = read_base(base_args, base_module) else {
        cx.discard();
        return Err(internal_error(
            extends_span(&extends),
            "the extended spec could not be read",
        ));
    };
    inherit_scope(&mut cx, &mut options, &base, &extends);
    let mut spec = Spec::from_module(&mut cx, options, module);
    let mut entities = base.entities;
    for entity in &mut entities {
        entity.inherited_from = Some(extends.clone());
    }
    entities.append(&mut spec.entities);
    spec.entities = entities;
    Ok((cx, spec))
}

/// Exactly four bracketed groups, and nothing else.
fn carried_groups(input: TokenStream) -> Option<[TokenStream; 4]> {
    let groups = input
        .into_iter()
        .map(|tree| match tree {
            TokenTree::Group(group) if group.delimiter() == Delimiter::Bracket => {
                Some(group.stream())
            }
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    <[TokenStream; 4]>::try_from(groups).ok()
}

/// A bug of the macro, reported as one.
fn internal_error(span: Span, what: &str) -> TokenStream {
    syn::Error::new(
        span,
        format!("internal error of #[staff_events]: {what}; please report it"),
    )
    .to_compile_error()
}

fn read_base(args: TokenStream, module: TokenStream) -> Option<Spec> {
    // The base compiled already, in its own crate: its spec is valid.
    let module: ItemMod = syn::parse2(module).ok()?;
    let mut cx = Ctxt::default();
    let options = Options::parse(&mut cx, args);
    let spec = Spec::from_module(&mut cx, options, module);
    cx.check().ok().map(|()| spec)
}

/// An extension shares the base's scope: its topics sit beside the base's.
fn inherit_scope(cx: &mut Ctxt, options: &mut Options, base: &Spec, extends: &syn::Path) {
    let base_scope = base.options.scope.clone();
    match (&options.scope, &base_scope) {
        (Some(own), Some(base_scope)) if own.value != base_scope.value => cx.error_at(
            own.span,
            format!(
                "an extension shares the scope of the spec it extends: `{}` (leave `scope` out)",
                base_scope.value
            ),
        ),
        (None, Some(base_scope)) => {
            options.scope = Some(Name {
                value: base_scope.value.clone(),
                span: extends_span(extends),
            });
        }
        _ => {}
    }
}

fn extends_span(extends: &syn::Path) -> Span {
    extends
        .segments
        .first()
        .map_or_else(Span::call_site, |s| s.ident.span())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_carrier_input_is_an_internal_error() {
        for input in [
            "",
            "[scope = \"x\"] [pub mod x {}]",
            "[] [] [] [] []",
            "a b c d",
        ] {
            let Err(out) = read_extension(input.parse().unwrap()) else {
                panic!("{input}: read as an extension");
            };
            let out = out.to_string();
            assert!(
                out.contains("compile_error") && out.contains("internal error"),
                "{input}: {out}"
            );
        }
    }
}
