//! The log lines a test's code writes through `tracing`, captured as text.
//!
//! [`capture`] installs a subscriber for the current thread: with a
//! current-thread tokio runtime, every task of the test logs through it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// The captured lines, one per event, with level, target and fields.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Every line so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("the log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Whether some line contains every one of `needles`.
    #[must_use]
    pub fn has_line_with(&self, needles: &[&str]) -> bool {
        self.lines()
            .iter()
            .any(|line| needles.iter().all(|needle| line.contains(needle)))
    }
}

/// Writes into [`Logs`].
pub struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("the log buffer")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Writer;

    fn make_writer(&'a self) -> Writer {
        Writer(Arc::clone(&self.0))
    }
}

/// Captures every event at DEBUG level and above on this thread until the
/// guard is dropped.
#[must_use]
pub fn capture() -> (tracing::subscriber::DefaultGuard, Logs) {
    capture_at(tracing::Level::DEBUG)
}

/// Captures every event at `level` and above (`TRACE`: every event, the
/// dependencies' included) on this thread until the guard is dropped.
#[must_use]
pub fn capture_at(level: tracing::Level) -> (tracing::subscriber::DefaultGuard, Logs) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(level)
        .with_ansi(false)
        .finish();
    (tracing::subscriber::set_default(subscriber), logs)
}
