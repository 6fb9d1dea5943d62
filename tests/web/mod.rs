//! Helpers of the SSE and browser tests: serve a router on a free loopback
//! port, and a minimal HTTP/1.0 client (no dependency): with HTTP/1.0 the
//! server streams the SSE body as is, delimited by the connection's end.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Serves `router` on 127.0.0.1, on a free port, in a spawned task.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A response read to its end.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.0\r\nhost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        request.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    stream.write_all(body).await.expect("send the body");
    stream
}

async fn head<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.expect("header line");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (status, headers)
}

/// A request read to the end of its response, which must come in time.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    staff_pubsub_tests::within(
        &format!("the end of the response to {method} {path}"),
        request_unbounded(addr, method, path, headers, body),
    )
    .await
}

async fn request_unbounded(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let stream = send(addr, method, path, headers, body).await;
    let mut reader = BufReader::new(stream);
    let (status, headers) = head(&mut reader).await;
    let mut body = Vec::new();
    // A server may close before reading an oversize body: what was read counts.
    let _ = reader.read_to_end(&mut body).await;
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET path`, read to the end.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"").await
}

/// `POST path` with a JSON body, read to the end.
pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Reply {
    request(addr, "POST", path, &[], body).await
}

/// One SSE event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:`, empty for none.
    pub event: String,
    /// `id:`.
    pub id: String,
    /// `data:` lines, joined by newlines.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data not JSON ({e}): {self:?}"))
    }
}

/// An open event stream.
pub struct SseClient {
    /// The status code.
    pub status: u16,
    /// The header lines.
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    /// Keep-alive comments seen.
    pub comments: usize,
}

impl SseClient {
    /// Opens `path` with `headers`.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        staff_pubsub_tests::within("the response headers", async {
            let stream = send(addr, "GET", path, headers, b"").await;
            Self::from_stream(stream).await
        })
        .await
    }

    /// Reads the response of a request sent on `stream` (a stalled client
    /// that reads again).
    pub async fn from_stream(stream: TcpStream) -> Self {
        let mut reader = BufReader::new(stream);
        let (status, headers) = head(&mut reader).await;
        Self {
            status,
            headers,
            reader,
            comments: 0,
        }
    }

    /// Opens `path` on a socket with a small receive buffer and does not
    /// read anything: a stalled browser. Returns the socket, to read later.
    pub async fn stalled(addr: SocketAddr, path: &str) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut stream = socket.connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        stream
    }

    /// As [`stalled`](Self::stalled), with request `headers`.
    pub async fn stalled_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut stream = socket.connect(addr).await.expect("connect");
        let mut request = format!("GET {path} HTTP/1.0\r\nhost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        stream
    }

    /// The next event, or `None` at the end of the stream; comments are
    /// counted and skipped.
    pub async fn next(&mut self) -> Option<SseEvent> {
        let mut event = SseEvent::default();
        let mut seen = false;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).await.ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if seen {
                    return Some(event);
                }
                continue;
            }
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            seen = true;
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.event = value.to_owned(),
                "id" => event.id = value.to_owned(),
                "data" => {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                }
                _ => {}
            }
        }
    }

    /// The next event, which must come.
    pub async fn expect(&mut self) -> SseEvent {
        staff_pubsub_tests::within("an SSE event", self.next())
            .await
            .expect("the stream ended")
    }
}
