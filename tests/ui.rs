//! Compile errors of `#[staff_events]`: one file per error family under
//! `tests/ui/`, each with the `.stderr` it must produce (regenerate with
//! `TRYBUILD=overwrite cargo test -p staff-pubsub-tests --test ui`, then
//! read the diff), and specs that must compile and run under `tests/ui/pass/`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
    cases.pass("ui/pass/*.rs");
}
