//! What the macro recognises in a field's type, by its last path segment:
//! the spec is read before name resolution, so `uuid::Uuid`,
//! `staff_pubsub::Uuid` and a `use`d `Uuid` all count.

use syn::{GenericArgument, PathArguments, Type};

/// `Uuid`, by any path ending in `Uuid` (`uuid::Uuid`, `staff_pubsub::Uuid`).
pub(crate) fn is_uuid(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|seg| seg.ident == "Uuid" && seg.arguments.is_none())
}

/// The `T` of `Option<T>`.
pub(crate) fn option_inner(ty: &Type) -> Option<&Type> {
    let segment = last_segment(ty)?;
    if segment.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    match args.args.first() {
        Some(GenericArgument::Type(inner)) if args.args.len() == 1 => Some(inner),
        _ => None,
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        Type::Group(group) => last_segment(&group.elem),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_uuids_and_options() {
        let ty = |text: &str| syn::parse_str::<Type>(text).unwrap();
        assert!(is_uuid(&ty("Uuid")) && is_uuid(&ty("::uuid::Uuid")));
        assert!(!is_uuid(&ty("Option<Uuid>")) && !is_uuid(&ty("Uuid<T>")));
        assert!(option_inner(&ty("Option<Uuid>")).is_some_and(is_uuid));
        assert!(option_inner(&ty("std::option::Option<String>")).is_some());
        assert!(option_inner(&ty("Option<A, B>")).is_none());
        assert!(option_inner(&ty("Vec<Uuid>")).is_none());
    }
}
