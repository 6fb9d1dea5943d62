//! Helpers shared by the integration tests.
#![allow(clippy::missing_panics_doc, clippy::expect_used)]

/// The README's examples, compiled and run as doctests of this crate, which
/// enables the features they use (`redis`, `testing`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub mod child;
pub mod conformance;
pub mod logs;
pub mod memory_log;
pub mod modes;
pub mod nats_server;
pub mod phoenix;
pub mod presence;
pub mod proxy;
pub mod redis_server;

use std::future::Future;
use std::time::Duration;

/// How long a test waits for an event that should come at once. Generous,
/// because CI machines are shared; a passing test never waits this long.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
///
/// # Panics
///
/// When the future does not finish in time: the event never came.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A keyed chat topic for runtime tests: `chat:room:<n as uuid>`.
#[must_use]
pub fn room(n: u128) -> staff_pubsub::Topic {
    staff_pubsub::Topic::keyed("chat:room", staff_pubsub::Uuid::from_u128(n))
}

/// Drains what is queued now: (messages, misses reported).
///
/// # Panics
///
/// On a gap, which these in-process tests never expect.
pub fn drain<M>(subscription: &mut staff_pubsub::Subscription<M>) -> (Vec<std::sync::Arc<M>>, u64) {
    use staff_pubsub::TryRecvError;
    let mut messages = Vec::new();
    let mut missed = 0;
    loop {
        match subscription.try_recv() {
            Ok(message) => messages.push(message),
            Err(TryRecvError::Lagged(n)) => missed += n,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return (messages, missed),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// This package's test files sit beside its manifest, not under `tests/`,
/// so Cargo does not find them by itself: each needs a `[[test]]` entry.
/// A file without one would be a test that never runs; this check fails
/// instead (it runs with the package's own unit tests, in `cargo test
/// --workspace`).
#[cfg(test)]
mod registration {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The `path`s of the manifest's `[[test]]` entries.
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
    fn every_test_file_is_registered() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        let registered = registered(&manifest);
        let files: BTreeSet<String> = std::fs::read_dir(dir)
            .expect("the package's folder")
            .map(|entry| {
                entry
                    .expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".rs"))
            .collect();
        let missing: Vec<&String> = files.difference(&registered).collect();
        assert!(
            missing.is_empty(),
            "test files without a [[test]] entry in tests/Cargo.toml (they would never run): {missing:?}"
        );
        assert!(registered.contains("runtime.rs"), "the manifest was read");
    }

    #[test]
    fn the_manifest_reader_finds_test_paths_only() {
        let manifest = "[lib]\npath = \"support/lib.rs\"\n\n[[test]]\nname = \"a\"\npath = \"a.rs\"\n\n[dependencies]\nx = { path = \"../x\" }\n[[test]]\npath=\"b.rs\"\n";
        let paths: Vec<String> = registered(manifest).into_iter().collect();
        assert_eq!(paths, ["a.rs", "b.rs"]);
    }
}
