//! Staff pages in the browser: departments, teams and people, updating
//! live over Server-Sent Events.
//!
//! ```sh
//! cargo run --features sse --example staff_web            # http://127.0.0.1:3040
//! cargo run --features sse --example staff_web -- --port 3041
//! ```
//!
//! Open the page in two windows: a change made in one appears in the other
//! without a reload. Several nodes share every change over Redis (each with
//! its own in-memory store, kept in step by the events; a node started
//! later starts from the seed):
//!
//! ```sh
//! cargo run --features sse,redis --example staff_web -- --port 3040 --redis redis://127.0.0.1:6379 --node one
//! cargo run --features sse,redis --example staff_web -- --port 3041 --redis redis://127.0.0.1:6379 --node two
//! ```
//!
//! With `--durable` (and `--redis`) every change goes through a Redis
//! stream (keeping the last 10,000 entries): a page whose connection drops
//! is replayed what it missed when its browser reconnects, instead of
//! reloading the whole state.
//!
//! The page (HTML, CSS, JavaScript) is embedded in the binary
//! (`examples/staff_web/index.html`); the application is
//! `examples/staff_web/app.rs`, which the browser tests serve in process.

#[path = "staff_web/app.rs"]
mod app;

use std::net::{Ipv4Addr, SocketAddr};

use staff_pubsub::staff;

/// The port when `--port` is not given.
const DEFAULT_PORT: u16 = 3040;

const USAGE: &str = "usage: staff_web [--port N] [--redis URL [--durable] --node NAME]";

/// How many log entries `--durable` keeps.
#[cfg(feature = "redis")]
const DURABLE_ENTRIES: u64 = 10_000;

struct Args {
    port: u16,
    redis: Option<String>,
    durable: bool,
    node: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        port: DEFAULT_PORT,
        redis: None,
        durable: false,
        node: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--port" => {
                let port = value()?;
                args.port = port
                    .parse()
                    .map_err(|_| format!("bad port {port:?}\n{USAGE}"))?;
            }
            "--redis" => args.redis = Some(value()?),
            "--node" => args.node = Some(value()?),
            "--durable" => args.durable = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.durable && args.redis.is_none() {
        return Err(format!("--durable needs --redis\n{USAGE}"));
    }
    Ok(args)
}

#[cfg(feature = "redis")]
async fn server(
    args: &Args,
) -> Result<staff_pubsub::PubSub<staff::Message>, Box<dyn std::error::Error>> {
    let mut builder = staff::builder();
    if let Some(node) = &args.node {
        builder = builder.node_name(node.clone());
    }
    Ok(match &args.redis {
        Some(url) => {
            let mut config = staff_pubsub::redis::RedisConfig::new(url.as_str());
            if args.durable {
                config = config.durable(staff_pubsub::Retention::entries(DURABLE_ENTRIES));
            }
            builder.redis(config).await?
        }
        None => builder.build(),
    })
}

#[cfg(not(feature = "redis"))]
async fn server(
    args: &Args,
) -> Result<staff_pubsub::PubSub<staff::Message>, Box<dyn std::error::Error>> {
    if args.redis.is_some() {
        return Err("--redis needs the redis feature: cargo run --features sse,redis --example staff_web -- ...".into());
    }
    let mut builder = staff::builder();
    if let Some(node) = &args.node {
        builder = builder.node_name(node.clone());
    }
    Ok(builder.build())
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(args).await {
        eprintln!("staff_web: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let pubsub = server(&args).await?;
    // The generated functions without `_on` go through this server too.
    if staff::install(pubsub.clone()).is_err() {
        return Err("the staff server was used before install".into());
    }
    let app = app::App::new(pubsub, args.node.as_deref().unwrap_or("local"))?;
    let bridge = app.bridge();
    let router = app.router(&bridge);
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))).await?;
    println!(
        "staff_web: http://{} (node {})",
        listener.local_addr()?,
        app.pubsub().node_name()
    );
    axum::serve(listener, router).await?;
    Ok(())
}
