//! `sse_bench`: many browsers on the SSE bridge.
//!
//! ```sh
//! cargo run --release -p staff-pubsub-bench --features sse --bin sse_bench                 # 1 node
//! cargo run --release -p staff-pubsub-bench --features sse --bin sse_bench -- --nodes 2    # 2 nodes on Redis
//! ```
//!
//! The program starts the server(s) as child processes of its own binary
//! (`--serve`: the `staff_pubsub::sse` bridge on axum, on 127.0.0.1), and,
//! with `--nodes 2`, a private `redis-server` on a free loopback port
//! (`REDIS_SERVER` or `redis-server` on `PATH`). It opens `--clients`
//! (1,000) SSE connections, spread evenly over the nodes, each subscribed
//! to one department's topic (the same department: every broadcast reaches
//! every client), waits until each has its `ready` event, then asks node 1
//! for `--broadcasts` (100) `broadcast_team` calls, one every
//! `--interval-ms` (20). Each message carries the wall-clock time at which
//! `broadcast` was called; each client records, per event, the time from
//! then to its reading the event (the client's parse included).
//!
//! Figures: latency p50/p90/p99/max over every delivery, deliveries
//! received vs expected, `resync` events, and each server's resident
//! memory growth per connection (`VmRSS` from `/proc`, before and after
//! the connections open: user-space memory; the kernel's socket buffers
//! are not in it). Bounded in time: every step has a deadline, and the run
//! fails rather than hangs. Loopback only.

use std::io::{BufRead, BufReader as StdBufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::routing::post;
use axum::Router;
use staff_pubsub::sse::SseBridge;
use staff_pubsub::staff::{self, Message, Team, TeamEvent};
use staff_pubsub::{PubSub, Uuid};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const DEPARTMENT: Uuid = Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0001_0001);
/// The deadline of each step.
const STEP: Duration = Duration::from_secs(60);

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|at| args.get(at + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| fail(&format!("bad value for {name}: {v}")))
        })
}

fn fail(message: &str) -> ! {
    eprintln!("sse_bench: {message}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--serve") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
        runtime.block_on(serve(&args));
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    runtime.block_on(drive(&args));
}

// ---- server (child process) ----

async fn serve(args: &[String]) {
    let port: u16 = arg(args, "--port", 0);
    let node: String = arg(args, "--node", "node-1".to_owned());
    let redis: String = arg(args, "--redis", String::new());
    let builder = staff::builder().node_name(node);
    let pubsub = if redis.is_empty() {
        builder.build()
    } else {
        let pubsub = builder
            .redis(staff_pubsub::redis::RedisConfig::new(redis))
            .await
            .unwrap_or_else(|e| fail(&format!("redis: {e}")));
        pubsub
            .wait_for_connection(staff_pubsub::Connection::Connected)
            .await;
        pubsub
    };
    let bridge = SseBridge::new(pubsub.clone(), staff::parse_topic, Message::event_name);
    let router = Router::new()
        .route("/events", bridge.route())
        .route("/go", post(go))
        .with_state(pubsub);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap_or_else(|e| fail(&format!("bind: {e}")));
    println!("ready");
    if let Err(e) = axum::serve(listener, router).await {
        fail(&format!("serve: {e}"));
    }
}

/// Broadcasts `count` team events to the department, one every
/// `interval_ms`, each named by the time `broadcast` was called.
async fn go(State(pubsub): State<PubSub<Message>>, RawQuery(query): RawQuery) -> &'static str {
    let query = query.unwrap_or_default();
    let field = |name: &str| -> u64 {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0)
    };
    let (count, interval_ms) = (field("count"), field("interval_ms"));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
        for i in 0..count {
            tick.tick().await;
            let team = Team {
                uuid: Uuid::from_u128(u128::from(i)),
                name: Some(now_nanos().to_string()),
                department_uuid: Some(DEPARTMENT),
            };
            if let Err(e) = staff::broadcast_team_on(&pubsub, TeamEvent::Updated, team).await {
                eprintln!("sse_bench: broadcast: {e}");
            }
        }
    });
    "started"
}

// ---- driver (this process) ----

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&format!("free port: {e}")))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| fail(&format!("timed out after {STEP:?}: {what}")))
}

fn start_redis() -> (Proc, String) {
    let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
    let port = free_port();
    let child = Command::new(&binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {binary} (set REDIS_SERVER): {e}")));
    let start = Instant::now();
    while std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if start.elapsed() > STEP {
            fail("redis-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), format!("redis://127.0.0.1:{port}"))
}

fn start_node(name: &str, redis: Option<&str>) -> (Proc, SocketAddr) {
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&format!("current_exe: {e}")));
    let port = free_port();
    let mut command = Command::new(exe);
    command.args(["--serve", "--port", &port.to_string(), "--node", name]);
    if let Some(url) = redis {
        command.args(["--redis", url]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start a node: {e}")));
    let stdout = child.stdout.take().unwrap_or_else(|| fail("no stdout"));
    let mut line = String::new();
    let _ = StdBufReader::new(stdout).read_line(&mut line);
    if line.trim() != "ready" {
        fail(&format!("node {name} did not start: {line:?}"));
    }
    (Proc(child), SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// One SSE client: subscribes, says when `ready` came, then reads
/// `expected` team events (or until `stop`), returning the latencies in
/// nanoseconds and the number of `resync` events.
async fn client(
    addr: SocketAddr,
    ready: Arc<AtomicUsize>,
    expected: usize,
) -> std::io::Result<(Vec<u64>, usize)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request =
        format!("GET /events?topic=staff:department:{DEPARTMENT} HTTP/1.0\r\nhost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut latencies = Vec::with_capacity(expected);
    let mut resyncs = 0;
    let mut event = String::new();
    while latencies.len() < expected {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            break;
        }
        if let Some(name) = line.strip_prefix("event: ") {
            name.trim_end().clone_into(&mut event);
            if event == "ready" {
                ready.fetch_add(1, Ordering::Relaxed);
            } else if event == "resync" {
                resyncs += 1;
            }
        } else if let Some(data) = line.strip_prefix("data: ") {
            if event == "team_updated" {
                let read_at = now_nanos();
                let value: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                let sent: u64 = value["payload"]["name"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(read_at);
                latencies.push(read_at.saturating_sub(sent));
            }
        }
    }
    Ok((latencies, resyncs))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1e6
}

async fn drive(args: &[String]) {
    let clients: usize = arg(args, "--clients", 1000);
    let broadcasts: usize = arg(args, "--broadcasts", 100);
    let nodes: usize = arg(args, "--nodes", 1);
    let interval_ms: u64 = arg(args, "--interval-ms", 20);
    if !(1..=2).contains(&nodes) {
        fail("--nodes is 1 or 2");
    }
    let redis = (nodes == 2).then(start_redis);
    let servers: Vec<(Proc, SocketAddr)> = (0..nodes)
        .map(|i| {
            start_node(
                &format!("node-{}", i + 1),
                redis.as_ref().map(|r| r.1.as_str()),
            )
        })
        .collect();
    let before: Vec<u64> = servers.iter().map(|(p, _)| rss_kib(p.0.id())).collect();

    // Connect, spread evenly over the nodes, a hundred at a time.
    let ready = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let addr = servers[i % nodes].1;
        tasks.push(tokio::spawn(client(addr, Arc::clone(&ready), broadcasts)));
        if i % 100 == 99 {
            within("clients to connect", async {
                while ready.load(Ordering::Relaxed) <= i {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await;
        }
    }
    within("every client to be ready", async {
        while ready.load(Ordering::Relaxed) < clients {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let connect_time = started.elapsed();
    // Let the servers settle, then read their memory.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<u64> = servers.iter().map(|(p, _)| rss_kib(p.0.id())).collect();

    // Broadcast on node 1.
    let mut control = TcpStream::connect(servers[0].1)
        .await
        .unwrap_or_else(|e| fail(&format!("control: {e}")));
    let request = format!(
        "POST /go?count={broadcasts}&interval_ms={interval_ms} HTTP/1.0\r\ncontent-length: 0\r\n\r\n"
    );
    let _ = control.write_all(request.as_bytes()).await;
    let mut reply = String::new();
    let _ = control.read_to_string(&mut reply).await;
    if !reply.contains("started") {
        fail(&format!("node 1 refused to broadcast: {reply}"));
    }

    let mut all = Vec::with_capacity(clients * broadcasts);
    let mut by_node: Vec<Vec<u64>> = vec![Vec::new(); nodes];
    let mut resyncs = 0;
    let mut errors = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match within("every event to arrive", task).await {
            Ok(Ok((latencies, r))) => {
                by_node[i % nodes].extend_from_slice(&latencies);
                all.extend(latencies);
                resyncs += r;
            }
            _ => errors += 1,
        }
    }
    all.sort_unstable();
    for latencies in &mut by_node {
        latencies.sort_unstable();
    }
    let per_connection: Vec<String> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            let on_node = clients / nodes;
            format!(
                "{:.1} KiB",
                after_minus(*a, *b) as f64 / on_node.max(1) as f64
            )
        })
        .collect();
    println!("| figure | value |");
    println!("| --- | ---: |");
    println!(
        "| nodes | {nodes}{} |",
        if nodes == 2 { " (Redis)" } else { "" }
    );
    println!("| clients | {clients} (each on `staff:department:<uuid>`) |");
    println!("| broadcasts | {broadcasts}, one every {interval_ms} ms, on node 1 |");
    println!("| deliveries | {} of {} |", all.len(), clients * broadcasts);
    println!("| resync events | {resyncs} |");
    println!("| client errors | {errors} |");
    println!("| latency p50 | {:.2} ms |", percentile(&all, 50.0));
    println!("| latency p90 | {:.2} ms |", percentile(&all, 90.0));
    println!("| latency p99 | {:.2} ms |", percentile(&all, 99.0));
    println!("| latency max | {:.2} ms |", percentile(&all, 100.0));
    if nodes == 2 {
        for (i, latencies) in by_node.iter().enumerate() {
            println!(
                "| latency p50 / p99, clients of node {} | {:.2} / {:.2} ms |",
                i + 1,
                percentile(latencies, 50.0),
                percentile(latencies, 99.0)
            );
        }
    }
    println!(
        "| server RSS growth per connection | {} |",
        per_connection.join(", ")
    );
    println!(
        "| server RSS after connecting | {} |",
        after
            .iter()
            .map(|a| format!("{:.1} MiB", *a as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| connect time ({clients} clients) | {connect_time:.2?} |");
    drop(servers);
    drop(redis);
    if all.len() < clients * broadcasts || errors > 0 {
        std::process::exit(2);
    }
}

fn after_minus(after: u64, before: u64) -> u64 {
    after.saturating_sub(before)
}
