//! A loopback TCP proxy a node connects through, so that a test can cut
//! that node's connections (and keep it out for a while) without touching
//! the server or the other nodes: the NATS server of these tests has no
//! client kick API. Generic: it forwards bytes, whatever the protocol.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot_free::Connections;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy from a free port of 127.0.0.1 to `127.0.0.1:<target>`.
/// Dropping it stops it and closes every connection through it.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    /// While set, a new connection is closed as soon as it is accepted.
    blocked: AtomicBool,
    connections: Connections,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:<target>` on a free loopback port.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a free loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let state = Arc::new(State::default());
        let accepting = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accepting.blocked.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(forward(client, target));
                accepting.connections.add(task);
            }
        });
        Self {
            port,
            state,
            accept,
        }
    }

    /// The proxy's port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `<scheme>://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the proxy now; new ones are taken
    /// (unless [`block`](Self::block)ed). Returns how many were cut.
    pub fn cut(&self) -> usize {
        self.state.connections.cut()
    }

    /// From now on, closes every new connection at once (a node cut off
    /// keeps failing to reconnect), until [`unblock`](Self::unblock).
    pub fn block(&self) {
        self.state.blocked.store(true, Ordering::SeqCst);
    }

    /// Takes new connections again.
    pub fn unblock(&self) {
        self.state.blocked.store(false, Ordering::SeqCst);
    }

    /// The number of connections through the proxy now.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.state.connections.live()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.connections.cut();
    }
}

async fn forward(mut client: TcpStream, target: u16) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// The forwarding tasks, behind a std mutex (the tests crate does not
/// depend on parking_lot).
mod parking_lot_free {
    use std::sync::Mutex;
    use tokio::task::JoinHandle;

    #[derive(Debug, Default)]
    pub(super) struct Connections(Mutex<Vec<JoinHandle<()>>>);

    impl Connections {
        fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        pub(super) fn add(&self, task: JoinHandle<()>) {
            let mut tasks = self.lock();
            tasks.retain(|task| !task.is_finished());
            tasks.push(task);
        }

        /// Aborts every live forwarding task: dropping its two sockets
        /// closes both sides.
        pub(super) fn cut(&self) -> usize {
            let tasks = std::mem::take(&mut *self.lock());
            let live = tasks.iter().filter(|task| !task.is_finished()).count();
            for task in tasks {
                task.abort();
            }
            live
        }

        pub(super) fn live(&self) -> usize {
            self.lock()
                .iter()
                .filter(|task| !task.is_finished())
                .count()
        }
    }
}
