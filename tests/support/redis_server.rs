//! A private `redis-server` per test: on a free loopback port, without
//! persistence, in its own temporary directory, killed when dropped (also
//! when the test fails), and restartable on the same port for fault tests.
//!
//! The binary is `redis-server` from `PATH`, or the path in the
//! `REDIS_SERVER` environment variable.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redis::aio::{MultiplexedConnection, PubSubStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a server may take to answer `PING` after it was started.
const STARTUP: Duration = Duration::from_secs(10);

/// How many fresh ports [`RedisServer::start`] tries, should another
/// process take the chosen port between its choice and the server's bind.
const PORT_ATTEMPTS: usize = 5;

static SERVERS: AtomicUsize = AtomicUsize::new(0);

/// A running `redis-server`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Arguments added to every start: `--requirepass`, ACL users...
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port of 127.0.0.1 and waits until it
    /// answers `PING`.
    ///
    /// # Panics
    ///
    /// If `redis-server` cannot be run or does not answer in time.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// As [`start`](Self::start), with more `redis-server` arguments (such
    /// as `["--requirepass", "S3cret"]`), also given to every restart. The
    /// server always listens on a Unix socket too: [`socket`](Self::socket).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub async fn start_with(extra: &[&str]) -> Self {
        let binary = binary();
        assert!(
            binary_exists(&binary),
            "`{binary}` not found: install redis-server (Debian: apt-get install redis-server) \
             or set REDIS_SERVER to its path"
        );
        let serial = SERVERS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "staff-pubsub-redis-{}-{serial}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory for redis-server");
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            server.spawn();
            if server.wait_ready().await {
                return server;
            }
            server.kill();
        }
        panic!(
            "redis-server did not start after {PORT_ATTEMPTS} attempts; its log:\n{}",
            server.log()
        );
    }

    /// `redis://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The path of its Unix socket.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// Stops the server with SIGSTOP: it keeps its connections and answers
    /// nothing until [`resume`](Self::resume).
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

    /// Restarts the server on the same port with other extra arguments
    /// (such as another password).
    ///
    /// # Panics
    ///
    /// As [`restart`](Self::restart).
    pub async fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|arg| (*arg).to_owned()).collect();
        self.restart().await;
    }

    /// A plain redis-rs connection: what another client of the same Redis
    /// sees.
    ///
    /// # Panics
    ///
    /// If the server does not take it.
    pub async fn connection(&self) -> MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("a valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to the test's redis-server")
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for
    /// it to exit. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill))
    /// and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// If it does not answer in time.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        assert!(
            self.wait_ready().await,
            "redis-server did not restart on port {}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    fn spawn(&mut self) {
        let binary = binary();
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("a log file");
        // Where util-linux's `setpriv` exists, the server gets SIGKILL when
        // the test process dies without running destructors (killed by a
        // signal, as by a CI timeout), so no server outlives its test run.
        let mut command = if setpriv_exists() {
            let mut command = Command::new("setpriv");
            command.args(["--pdeathsig", "KILL", "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        let child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "yes"])
            .args(["--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--unixsocketperm", "700"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run `{binary}` ({error}): install Redis (Debian: apt-get install \
                     redis-server) or set REDIS_SERVER to its path"
                )
            });
        self.child = Some(child);
    }

    /// Polls `PING` until `+PONG` or [`STARTUP`] has passed; false also as
    /// soon as the process has exited (its port was taken).
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return false;
                }
            }
            if ping(self.port).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `redis-server` to run: `REDIS_SERVER`, or the one on `PATH`.
fn binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// Whether `binary` is a path to a file, or a name found on `PATH`.
fn binary_exists(binary: &str) -> bool {
    if binary.contains('/') {
        return std::path::Path::new(binary).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()))
}

/// Whether `setpriv --pdeathsig` can be used.
fn setpriv_exists() -> bool {
    static EXISTS: OnceLock<bool> = OnceLock::new();
    *EXISTS.get_or_init(|| {
        Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// A port that was free a moment ago: the OS's choice for port 0.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One `PING` in the RESP protocol, bounded by a short timeout: the server
/// is up when it answers `+PONG`, or `-NOAUTH` when it wants a password.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0_u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<bool, std::io::Error>(&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Ok(true))
    )
}

/// `PUBLISH channel bytes`, as another program would publish.
///
/// # Panics
///
/// If Redis refuses it.
pub async fn publish_raw(connection: &mut MultiplexedConnection, channel: &str, bytes: &[u8]) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(bytes)
        .query_async(connection)
        .await
        .expect("PUBLISH");
}

/// A plain subscriber of `channel` on `server`, as `redis-cli SUBSCRIBE
/// channel` is: every message Redis pushes on it, raw.
///
/// # Panics
///
/// If the connection or the subscription fails.
pub async fn raw_subscriber(server: &RedisServer, channel: &str) -> PubSubStream {
    let mut pubsub = redis::Client::open(server.url())
        .expect("a Redis URL")
        .get_async_pubsub()
        .await
        .expect("a pub/sub connection");
    pubsub.subscribe(channel).await.expect("SUBSCRIBE");
    pubsub.into_on_message()
}
