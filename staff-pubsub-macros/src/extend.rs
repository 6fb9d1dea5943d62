//! Extension of a spec from another crate.
//!
//! A proc macro cannot see another crate's items, so a spec marked
//! `extensible` also emits a *carrier*: a `macro_rules!` that holds the
//! spec's own tokens, re-exported in the spec module.
//! `#[staff_events(extends = base::spec)]` expands to a call of that carrier
//! through the user's path, which calls [`staff_events_extend`] back with
//! both specs. The base's payloads and event enums are re-exported, not copied;
//! everything else (topic functions, message, routes, fan-out) is generated
//! for the union, so the extended module is a complete spec of its own.

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use quote::quote;
use syn::ItemMod;

use crate::ast::Spec;
use crate::attr::{Name, Options};
use crate::ctxt::Ctxt;
use crate::entry::{finish, CARRIER};

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
    let krate = Options::parse(&mut Ctxt::default(), args.clone()).krate;
    quote!(#extends::#carrier! { [#krate] [#args] [#input] })
}

/// The callback: `[extension args] [extension module] [base args] [base module]`.
pub(crate) fn staff_events_extend(input: TokenStream) -> TokenStream {
    let groups: Vec<TokenStream> = input
        .into_iter()
        .filter_map(|tree| match tree {
            TokenTree::Group(group) if group.delimiter() == Delimiter::Bracket => {
                Some(group.stream())
            }
            _ => None,
        })
        .collect();
    let [args, module, base_args, base_module] =
        <[TokenStream; 4]>::try_from(groups).unwrap_or_default();
    let mut cx = Ctxt::default();
    let mut options = Options::parse(&mut cx, args);
    let module: ItemMod = match syn::parse2(module.clone()) {
        Ok(module) => module,
        Err(error) => return error.to_compile_error(),
    };
    let Some(extends) = options.extends.clone() else {
        return syn::Error::new_spanned(&module.ident, "internal: extension without `extends`")
            .to_compile_error();
    };
    let base = match read_base(base_args, base_module) {
        Some(base) => base,
        None => {
            return syn::Error::new_spanned(&extends, "the extended spec could not be read")
                .to_compile_error();
        }
    };
    inherit_scope(&mut cx, &mut options, &base, &extends);
    let mut spec = Spec::from_module(&mut cx, options, module);
    let mut entities = base.entities;
    for entity in &mut entities {
        entity.inherited_from = Some(extends.clone());
    }
    entities.append(&mut spec.entities);
    spec.entities = entities;
    finish(cx, spec, None)
}

fn read_base(args: TokenStream, module: TokenStream) -> Option<Spec> {
    // The base compiled already, in its own crate: its spec is valid.
    let mut cx = Ctxt::default();
    let options = Options::parse(&mut cx, args);
    let module: ItemMod = syn::parse2(module).ok()?;
    let spec = Spec::from_module(&mut cx, options, module);
    (!cx.has_errors()).then_some(spec)
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

fn extends_span(extends: &syn::Path) -> proc_macro2::Span {
    extends
        .segments
        .first()
        .map_or_else(proc_macro2::Span::call_site, |s| s.ident.span())
}
