//! Error accumulation: every rule reports into one context, so that a spec
//! with several mistakes gets all of them in one compile.
//!
//! As serde_derive's `Ctxt`: a context must be consumed, by [`Ctxt::check`]
//! or, for a throwaway, [`Ctxt::discard`].
//! Dropping one unconsumed is a bug of the macro, which panics (unless it is
//! panicking already), so that a path that forgets its errors fails its
//! tests instead of compiling a broken spec in silence.

use std::fmt::Display;

use quote::ToTokens;

#[derive(Default)]
pub(crate) struct Ctxt {
    errors: Option<syn::Error>,
    consumed: bool,
}

impl Ctxt {
    /// Records an error spanned at `tokens`.
    pub(crate) fn error_spanned_by<T: ToTokens, M: Display>(&mut self, tokens: T, message: M) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error at `span`.
    pub(crate) fn error_at<M: Display>(&mut self, span: proc_macro2::Span, message: M) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(errors) => errors.combine(error),
            None => self.errors = Some(error),
        }
    }

    /// Consumes the context: every recorded error, combined.
    pub(crate) fn check(mut self) -> syn::Result<()> {
        self.consumed = true;
        match self.errors.take() {
            Some(errors) => Err(errors),
            None => Ok(()),
        }
    }

    /// Consumes a context whose errors are not wanted: one used to read
    /// what is known to be valid, or whose errors another context reports.
    pub(crate) fn discard(mut self) {
        self.consumed = true;
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !self.consumed && !std::thread::panicking() {
            panic!("internal error of #[staff_events]: an error context was never checked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_error() -> Ctxt {
        let mut cx = Ctxt::default();
        cx.error_at(proc_macro2::Span::call_site(), "wrong");
        cx
    }

    #[test]
    #[should_panic(expected = "never checked")]
    fn an_unchecked_context_is_a_bug() {
        drop(with_error());
    }

    #[test]
    fn a_checked_or_discarded_context_drops_quietly() {
        assert!(with_error().check().is_err());
        assert!(Ctxt::default().check().is_ok());
        with_error().discard();
    }
}
