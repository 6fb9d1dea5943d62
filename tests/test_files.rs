//! Every test file of this crate runs: the files here sit at the package
//! root (not in a `tests/` folder of it), so Cargo finds them only through
//! a `[[test]]` entry of `Cargo.toml`, and a file without one would be a
//! test that silently never runs. This test fails for such a file, naming
//! it and the entry to add.

use std::collections::BTreeSet;
use std::path::Path;

/// The `path = ".."` values of the `[[test]]` entries of `Cargo.toml`.
fn registered(manifest: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut in_test = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_test = line == "[[test]]";
        } else if in_test {
            if let Some(value) = line.strip_prefix("path") {
                let value = value.trim_start().trim_start_matches('=').trim();
                paths.insert(value.trim_matches('"').to_owned());
            }
        }
    }
    paths
}

#[test]
fn every_test_file_is_a_registered_test_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("tests/Cargo.toml");
    let registered = registered(&manifest);
    let files: BTreeSet<String> = std::fs::read_dir(root)
        .expect("the tests folder")
        .map(|entry| entry.expect("a folder entry").file_name())
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.ends_with(".rs"))
        .collect();
    assert!(files.len() > 30, "too few test files found: {files:?}");
    let missing: Vec<_> = files.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "test files without a [[test]] entry in tests/Cargo.toml (they never run): {missing:?}; \
         add for each: [[test]] name = \"<file stem>\" path = \"<file>\""
    );
    let stale: Vec<_> = registered.difference(&files).collect();
    assert!(
        stale.is_empty(),
        "[[test]] entries without their file: {stale:?}"
    );
}

#[test]
fn the_manifest_reader_finds_entries_and_only_test_entries() {
    let manifest = "[[bin]]\nname = \"cluster\"\npath = \"../examples/cluster.rs\"\n\n\
                    [[test]]\nname = \"a\"\npath = \"a.rs\"\n\n[[test]]\nname = \"b\"\npath=\"b.rs\"\n";
    let found: Vec<_> = registered(manifest).into_iter().collect();
    assert_eq!(found, ["a.rs", "b.rs"]);
}
