//! The `cluster` example as a second OS process: cargo builds it as a
//! binary of the test package and gives its path in `CARGO_BIN_EXE_cluster`,
//! so a test needs neither a nested `cargo` nor a guess at the target
//! directory.

use std::io::Write;
use std::process::{Child, Command, Stdio};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::within;

/// A running child process, killed on drop whatever the test's outcome,
/// and the lines of its standard output.
pub struct Cluster {
    child: Child,
    lines: UnboundedReceiver<String>,
}

impl Cluster {
    /// Starts `binary` (the path cargo gives as `CARGO_BIN_EXE_cluster`)
    /// with `args`, reading its output on a thread of its own.
    ///
    /// # Panics
    ///
    /// If it cannot be started.
    #[must_use]
    pub fn start(binary: &str, args: &[&str]) -> Self {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the cluster example runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a line of the child's output that contains `needle`.
    ///
    /// # Panics
    ///
    /// If none comes within the test wait, or the child exits first.
    pub async fn wait_for(&mut self, needle: &str) -> String {
        let lines = &mut self.lines;
        within(&format!("the child to print {needle:?}"), async {
            loop {
                let line = lines.recv().await.expect("the child is running");
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
    }

    /// Types `line` on the child's standard input.
    ///
    /// # Panics
    ///
    /// If its input is closed.
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("the child reads its input");
        stdin.flush().expect("the child reads its input");
    }
}

impl Cluster {
    /// Kills the child with SIGKILL (no chance to say goodbye) and reaps it.
    ///
    /// # Panics
    ///
    /// If it cannot be killed.
    pub fn kill(mut self) {
        self.child.kill().expect("the child is killed");
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
