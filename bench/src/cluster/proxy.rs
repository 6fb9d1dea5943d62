//! A loopback TCP proxy one node connects through, so that the bench can
//! keep that node away from its server for a while (the NATS server has no
//! client kick API): [`Proxy::block`] cuts every connection through it and
//! refuses new ones until [`Proxy::unblock`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy from a free port of 127.0.0.1 to `127.0.0.1:<target>`;
/// dropping it closes every connection through it.
pub struct Proxy {
    port: u16,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    blocked: AtomicBool,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl State {
    fn cut(&self) {
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for connection in connections {
            connection.abort();
        }
    }
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:<target>`.
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
                    continue;
                }
                let task = tokio::spawn(forward(client, target));
                accepting
                    .connections
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(task);
            }
        });
        Self {
            port,
            state,
            accept,
        }
    }

    /// `<scheme>://127.0.0.1:<port>`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection through the proxy and refuses new ones.
    pub fn block(&self) {
        self.state.blocked.store(true, Ordering::SeqCst);
        self.state.cut();
    }

    /// Takes new connections again.
    pub fn unblock(&self) {
        self.state.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.cut();
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
