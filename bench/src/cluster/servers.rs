//! Private `redis-server` and `nats-server` processes on free loopback
//! ports (the process-starting logic of `tests/support`, cut down): never
//! the machine's own services. Killed when dropped; with util-linux's
//! `setpriv`, also when this process dies without running destructors.
//!
//! The binaries are `redis-server` and `nats-server` from `PATH`, or the
//! paths in `REDIS_SERVER` and `NATS_SERVER`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running engine server, killed on drop.
pub struct Server {
    child: Child,
    port: u16,
    scheme: &'static str,
    dir: Option<PathBuf>,
}

impl Server {
    /// `redis-server` on a free port of 127.0.0.1, without persistence,
    /// answering `PING`.
    pub async fn redis() -> Self {
        Self::redis_with(&["--appendonly", "no"]).await
    }

    /// `redis-server` on a free port of 127.0.0.1, no RDB snapshots, with
    /// `persistence` (`--appendonly ...` arguments), answering `PING`.
    pub async fn redis_with(persistence: &[&str]) -> Self {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        for attempt in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "staff-pubsub-cluster-bench-{}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("a temporary directory for redis-server");
            let port_arg = port.to_string();
            let mut args = vec![
                "--port",
                &port_arg,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                "--dir",
                dir.to_str().expect("a UTF-8 temporary directory"),
            ];
            args.extend_from_slice(persistence);
            let child = spawn(&binary, &args);
            let mut server = Self {
                child,
                port,
                scheme: "redis",
                dir: Some(dir),
            };
            if server.wait_ready(b"PING\r\n", b"+PONG").await {
                return server;
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
    }

    /// `nats-server` on a free port of 127.0.0.1, sending its `INFO`.
    pub async fn nats() -> Self {
        Self::nats_with(false).await
    }

    /// `nats-server` on a free port of 127.0.0.1, with JetStream on
    /// (`-js`, its store in a temporary directory) if `jetstream`.
    pub async fn nats_with(jetstream: bool) -> Self {
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
        for attempt in 0..5 {
            let port = free_port();
            let port_arg = port.to_string();
            let mut args = vec!["-a", "127.0.0.1", "-p", &port_arg];
            let dir = jetstream.then(|| {
                let dir = std::env::temp_dir().join(format!(
                    "staff-pubsub-cluster-bench-js-{}-{attempt}",
                    std::process::id()
                ));
                std::fs::create_dir_all(&dir).expect("a temporary directory for JetStream");
                dir
            });
            let store = dir.as_ref().map(|dir| {
                dir.to_str()
                    .expect("a UTF-8 temporary directory")
                    .to_owned()
            });
            if let Some(store) = &store {
                args.extend_from_slice(&["-js", "-sd", store]);
            }
            let child = spawn(&binary, &args);
            let mut server = Self {
                child,
                port,
                scheme: "nats",
                dir,
            };
            if server.wait_ready(b"", b"INFO").await {
                return server;
            }
        }
        panic!("nats-server did not start on a free port after 5 attempts");
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` or `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// The server process's resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> i64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|line| line.starts_with("VmRSS:"))
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The server process's CPU time so far (user + system).
    pub fn cpu(&self) -> Duration {
        crate::cpu::of_pid(&self.child.id().to_string())
    }

    /// Polls until the server answers `request` with `expected`; false as
    /// soon as the process has exited (its port was taken) or after 10 s.
    async fn wait_ready(&mut self, request: &[u8], expected: &[u8]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let port = self.port;
            let probe = async {
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                stream.write_all(request).await?;
                let mut reply = vec![0_u8; expected.len()];
                stream.read_exact(&mut reply).await?;
                Ok::<bool, std::io::Error>(reply == expected)
            };
            if matches!(
                tokio::time::timeout(Duration::from_millis(500), probe).await,
                Ok(Ok(true))
            ) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn spawn(binary: &str, args: &[&str]) -> Child {
    let setpriv = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    // `setpriv` execs the server: the child's pid is the server's.
    let mut command = if setpriv {
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL", "--", binary]);
        command
    } else {
        Command::new(binary)
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run `{binary}` ({error}): install it or set REDIS_SERVER / NATS_SERVER")
        })
}

/// A port that was free a moment ago: the OS's choice for port 0.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}
