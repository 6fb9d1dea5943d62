//! A private `nats-server` per test: on a free loopback port, with its
//! monitoring endpoint on another, killed when dropped, restartable on the
//! same ports for fault tests.
//!
//! The binary is `nats-server` from `PATH`, or the path in the
//! `NATS_SERVER` environment variable.
//!
//! [`NatsServer::start_jetstream`] enables JetStream with its store in a
//! fresh temporary directory, kept across [`NatsServer::restart`]s and
//! removed on drop; [`NatsServer::restart_with_fresh_store`] restarts it
//! on a new, empty one (its streams lost).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::redis_server::free_port;

/// How long a server may take to accept connections after it was started.
const STARTUP: Duration = Duration::from_secs(10);

/// A running `nats-server`, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor: u16,
    extra: Vec<String>,
    /// JetStream's store directory, when JetStream is on.
    store: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server on free ports of 127.0.0.1 and waits until it
    /// answers on its monitoring endpoint.
    ///
    /// # Panics
    ///
    /// If `nats-server` cannot be run or does not start in time.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// As [`start`](Self::start), with more `nats-server` arguments (such as
    /// `["--user", "app", "--pass", "secret"]`), also given to restarts.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub async fn start_with(extra: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            port: 0,
            monitor: 0,
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
            store: None,
        };
        server.start_on_free_ports().await;
        server
    }

    /// As [`start`](Self::start), with JetStream on (`-js`) and its store
    /// in a fresh temporary directory (`-sd`), which restarts keep.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub async fn start_jetstream() -> Self {
        let mut server = Self {
            child: None,
            port: 0,
            monitor: 0,
            extra: Vec::new(),
            store: Some(fresh_store()),
        };
        server.start_on_free_ports().await;
        server
    }

    /// The server's client port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and starts it again on the same ports with a new,
    /// empty JetStream store: every stream is lost.
    ///
    /// # Panics
    ///
    /// If JetStream is not on, or the server does not restart in time.
    pub async fn restart_with_fresh_store(&mut self) {
        self.kill();
        let old = self
            .store
            .replace(fresh_store())
            .expect("a JetStream server (start_jetstream)");
        let _ = std::fs::remove_dir_all(old);
        self.spawn();
        assert!(
            self.wait_ready().await,
            "nats-server did not restart on port {}",
            self.port
        );
    }

    async fn start_on_free_ports(&mut self) {
        let server = self;
        for _ in 0..5 {
            server.port = free_port();
            server.monitor = free_port();
            server.spawn();
            if server.wait_ready().await {
                return;
            }
            server.kill();
        }
        panic!("nats-server did not start after 5 attempts");
    }

    /// `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and waits until it is
    /// ready.
    ///
    /// # Panics
    ///
    /// If it does not start in time.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        assert!(
            self.wait_ready().await,
            "nats-server did not restart on port {}",
            self.port
        );
    }

    /// Stops the server with SIGSTOP: its connections stay open and it
    /// answers nothing until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a [`pause`](Self::pause)d server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// The subjects of every client subscription the server holds, from
    /// its monitoring endpoint (`/subsz?subs=1`).
    ///
    /// # Panics
    ///
    /// If the endpoint does not answer.
    pub async fn subjects(&self) -> Vec<String> {
        let body = self
            .monitoring("/subsz?subs=1&limit=1000000")
            .await
            .expect("the monitoring endpoint answers");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON from /subsz");
        let mut subjects: Vec<String> = json["subscriptions_list"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|sub| sub["subject"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        subjects.sort();
        subjects
    }

    /// Publishes `bytes` on `subject` as another program would, speaking
    /// the NATS protocol on a connection of its own, and waits for the
    /// server's `PONG` (so the message has been routed).
    ///
    /// # Panics
    ///
    /// If the server does not answer.
    pub async fn publish_raw(&self, subject: &str, bytes: &[u8]) {
        let publish = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            let mut request = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nPUB {subject} {}\r\n",
                bytes.len()
            )
            .into_bytes();
            request.extend_from_slice(bytes);
            request.extend_from_slice(b"\r\nPING\r\n");
            stream.write_all(&request).await?;
            let mut seen = Vec::new();
            let mut buffer = [0_u8; 1024];
            while !String::from_utf8_lossy(&seen).contains("PONG") {
                let read = stream.read(&mut buffer).await?;
                if read == 0 {
                    break;
                }
                seen.extend_from_slice(&buffer[..read]);
            }
            Ok::<String, std::io::Error>(String::from_utf8_lossy(&seen).into_owned())
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), publish)
            .await
            .expect("nats-server answers")
            .expect("a raw publish");
        assert!(answer.contains("PONG"), "{answer}");
    }

    fn spawn(&mut self) {
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string()])
            .args(&self.extra)
            .args(self.store.iter().flat_map(|store| {
                [
                    std::ffi::OsString::from("-js"),
                    std::ffi::OsString::from("-sd"),
                    store.as_os_str().to_owned(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run `{binary}` ({error}): install nats-server (Debian: apt-get install \
                     nats-server) or set NATS_SERVER to its path"
                )
            });
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return false;
                }
            }
            if self
                .monitoring("/healthz")
                .await
                .is_some_and(|body| body.contains("ok"))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// One HTTP GET on the monitoring port; the body, if it answered.
    async fn monitoring(&self, path: &str) -> Option<String> {
        let get = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.monitor)).await?;
            let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await?;
            Ok::<String, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(2), get)
            .await
            .ok()?
            .ok()?;
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(store) = self.store.take() {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}

/// A new, empty directory under the system's temporary directory.
fn fresh_store() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "staff-pubsub-nats-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory for the JetStream store");
    dir
}
