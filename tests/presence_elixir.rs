//! The Rust tracker against a real Elixir `Phoenix.Tracker` (phoenix_pubsub
//! 2.2, phoenix_pubsub_redis 3.x) over a real `redis-server`: the Elixir
//! node (`presence_elixir/node.exs`, one BEAM VM) tracks a presence before
//! the Rust node starts, so that the Rust node gets it by a transfer; the
//! Rust node's track, update and untrack are listed by Elixir's
//! `Phoenix.Tracker.list/2` (with `phx_ref`) and Elixir's update reaches
//! the Rust node as a diff; the Rust node dropped is taken down by Elixir
//! after its down period. With a binary and an atom Elixir `node_name`, and
//! with `pool_size: 4`.
//!
//! Ignored by default: it needs `elixir` (1.14 and OTP 25 were used) and
//! the compiled libraries, one directory of `.beam` files (and `.app` files
//! for `telemetry`) per library under `PHX_EBIN_ROOT`: phoenix_pubsub,
//! phoenix_pubsub_redis, redix, nimble_options, telemetry and poolboy,
//! each built from its sources with `elixirc`/`erlc`, as
//! `../shared/phoenix/tracker/capture/capture.sh` describes. Run with
//! `PHX_EBIN_ROOT=/path cargo test -p staff-pubsub-tests --test
//! presence_elixir -- --ignored`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use staff_pubsub::phoenix::tracker::{decode_tracker_frame, TrackerMessage};
use staff_pubsub::phoenix::{PhoenixConfig, PhoenixTracker, DEFAULT_MAX_FRAME_SIZE};
use staff_pubsub::staff::{self, Message};
use staff_pubsub::{PubSub, Topic};
use staff_pubsub_tests::presence::{next, timing, until_joins, viewer, Viewer, DOWN_PERIOD};
use staff_pubsub_tests::redis_server::{raw_subscriber, RedisServer};
use staff_pubsub_tests::within;

const TEAM: Topic = Topic::new("team:1");

/// The Elixir node: its stdin, and its stdout's lines.
struct Elixir {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Elixir {
    fn start(redis_port: u16, pool_size: u32, atom_name: bool) -> Self {
        let root = std::env::var("PHX_EBIN_ROOT")
            .expect("PHX_EBIN_ROOT: the compiled Elixir libraries (see the file's doc)");
        let mut command = std::process::Command::new("elixir");
        for dir in std::fs::read_dir(&root).expect("PHX_EBIN_ROOT is a directory") {
            command.arg("-pa").arg(dir.expect("an entry").path());
        }
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("presence_elixir/node.exs"))
            .env("REDIS_PORT", redis_port.to_string())
            .env("POOL_SIZE", pool_size.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if atom_name {
            command.env("NODE_ATOM", "1");
        }
        let mut child = command.spawn().expect("elixir runs");
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (lines, receive) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines: receive,
        }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("the node reads");
        self.stdin.flush().expect("the node reads");
    }

    /// Reads lines (asking for the list again after each) until one that
    /// `wanted` takes.
    async fn until(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        within(what, async {
            loop {
                let line = self.lines.recv().await.expect("the Elixir node runs");
                if wanted(&line) {
                    return line;
                }
                if line.starts_with("LIST") {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    self.send("list");
                }
            }
        })
        .await
    }
}

impl Drop for Elixir {
    fn drop(&mut self) {
        // This test's own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn rust_node(server: &RedisServer, pool_size: u32) -> PubSub<Message> {
    let config = PhoenixConfig::new(server.url(), "MyApp.PubSub")
        .connect_timeout(Duration::from_secs(2))
        .presence::<Viewer>(PhoenixTracker::new("MyApp.Tracker").pool_size(pool_size));
    staff::builder()
        .node_name("rust-1")
        .presence_timing(timing())
        .expect("a valid timing")
        .phoenix(config)
        .await
        .expect("a node")
}

async fn both_ways(pool_size: u32, atom_name: bool) {
    let server = RedisServer::start().await;
    let mut raw = raw_subscriber(&server, "phx:Elixir.MyApp.PubSub.Adapter").await;
    let mut elixir = Elixir::start(server.port(), pool_size, atom_name);
    elixir
        .until("Elixir's track", |line| line.starts_with("TRACKED"))
        .await;
    // Its delta goes out before the Rust node is there: Ada reaches the
    // Rust node by a transfer.
    within("Elixir's delta heartbeat", async {
        use futures_util::StreamExt;
        loop {
            let message = raw.next().await.expect("the stream goes on");
            let frame = decode_tracker_frame(message.get_payload_bytes(), DEFAULT_MAX_FRAME_SIZE);
            if matches!(
                frame.map(|frame| frame.message),
                Ok(TrackerMessage::Heartbeat { delta: Some(_), .. })
            ) {
                break;
            }
        }
    })
    .await;

    let rust = rust_node(&server, pool_size).await;
    let tracker = rust.tracker::<Viewer>();
    let mut diffs = tracker.diffs(TEAM);
    until_joins(&mut diffs, "user-1").await;
    assert_eq!(tracker.list(TEAM)["user-1"][0].meta.name, "Ada");

    let mut rusty = tracker
        .track(TEAM, "user-2", viewer("Rusty"))
        .expect("tracked");
    elixir.send("list");
    elixir
        .until("Rusty in Elixir's list, with a phx_ref", |line| {
            line.contains(r#"{"user-2", %{name: "Rusty"}, true}"#)
        })
        .await;
    rusty.update(viewer("Rusty 2")).expect("updated");
    elixir
        .until("the update as one diff, with phx_ref_prev", |line| {
            line.starts_with("DIFF")
                && line.contains(r#"name: "Rusty 2""#)
                && line.contains("phx_ref_prev")
                && line.contains(r#"[{"user-2", %{name: "Rusty""#)
        })
        .await;

    elixir.send("update");
    loop {
        let diff = next(&mut diffs).await;
        if diff.joins.iter().any(|p| p.meta.name == "Ada L.") {
            assert_eq!(diff.leaves[0].meta.name, "Ada", "{diff:?}");
            break;
        }
    }

    drop(rusty);
    elixir
        .until("Rusty's leave", |line| {
            line.starts_with("DIFF") && line.contains(r#"{[], [{"user-2""#)
        })
        .await;

    // The Rust node goes without a word, with a presence.
    let _ferris = tracker
        .track(TEAM, "user-3", viewer("Ferris"))
        .expect("tracked");
    elixir.send("list");
    elixir
        .until("Ferris listed", |line| line.contains("Ferris"))
        .await;
    drop((tracker, diffs, rust));
    let gone = tokio::time::Instant::now();
    elixir
        .until("Ferris's leave", |line| {
            line.starts_with("DIFF") && line.contains(r#"{[], [{"user-3""#)
        })
        .await;
    assert!(
        gone.elapsed() >= DOWN_PERIOD - Duration::from_millis(300),
        "taken down after {:?}",
        gone.elapsed()
    );
    elixir.send("quit");
}

#[tokio::test]
#[ignore = "needs Elixir and PHX_EBIN_ROOT (see the file)"]
async fn with_elixir_named_by_a_binary() {
    both_ways(1, false).await;
}

#[tokio::test]
#[ignore = "needs Elixir and PHX_EBIN_ROOT (see the file)"]
async fn with_elixir_named_by_an_atom() {
    both_ways(1, true).await;
}

#[tokio::test]
#[ignore = "needs Elixir and PHX_EBIN_ROOT (see the file)"]
async fn with_a_pool_of_four_shards() {
    both_ways(4, false).await;
}
