//! Staff events crossing nodes over Redis or NATS.
//!
//! Start a Redis (`redis-server`), then run this in two terminals:
//!
//! ```text
//! cargo run -p staff-pubsub --features redis,nats --example cluster -- --node a --redis redis://127.0.0.1:6379
//! cargo run -p staff-pubsub --features redis,nats --example cluster -- --node b --redis redis://127.0.0.1:6379
//! ```
//!
//! or a NATS server (`nats-server`), with `--nats nats://127.0.0.1:4222`
//! instead of `--redis URL`.
//!
//! Type a team name and press Enter in one terminal: that node broadcasts
//! `team_created` with the stock `staff` spec, and both terminals print the
//! event (the sender's own subscribers get it locally, every other node over
//! Redis). Stop Redis for a moment to see broadcasts fail and, when it is
//! back, the subscribers told of the gap. Ctrl-C quits.
//!
//! Each node is also present on `staff:teams` (presence, keyed by its node
//! name): it prints `online: a, b` whenever the nodes it sees change, so
//! stopping one (Ctrl-C, or `kill -9`) shows it leave the others' lists
//! after the presence down period.
//!
//! Options: `--node NAME` (required, unique per node), `--redis URL`
//! (the default, `redis://127.0.0.1:6379`) or `--nats URL`, `--namespace
//! NAME` (default `staff-pubsub`: nodes of other namespaces are not
//! reached), `--presence-period MS` (the presence heartbeat period,
//! default 1500 as Phoenix's; the down period is 20 of them).

use std::process::ExitCode;
use std::time::Duration;

use staff_pubsub::nats::NatsConfig;
use staff_pubsub::presence::{PresenceRecvError, PresenceTiming};
use staff_pubsub::redis::{RedisConfig, DEFAULT_NAMESPACE};
use staff_pubsub::staff::{self, Team, TeamEvent};
use staff_pubsub::{PubSub, RecvError, Uuid};

const USAGE: &str = "usage: cluster --node NAME [--redis URL | --nats URL] [--namespace NAME] \
                     [--presence-period MS]";

struct Args {
    node: String,
    engine: Engine,
    namespace: String,
    presence_period: Duration,
}

enum Engine {
    Redis(String),
    Nats(String),
}

fn parse_args() -> Result<Args, String> {
    let mut node = None;
    let mut engine = Engine::Redis("redis://127.0.0.1:6379".to_owned());
    let mut namespace = DEFAULT_NAMESPACE.to_owned();
    let mut presence_period = Duration::from_millis(1500);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--node" => node = Some(value()?),
            "--redis" => engine = Engine::Redis(value()?),
            "--nats" => engine = Engine::Nats(value()?),
            "--namespace" => namespace = value()?,
            "--presence-period" => {
                let ms: u64 = value()?
                    .parse()
                    .map_err(|_| format!("--presence-period takes milliseconds\n{USAGE}"))?;
                presence_period = Duration::from_millis(ms);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let node = node.ok_or_else(|| format!("--node is required\n{USAGE}"))?;
    Ok(Args {
        node,
        engine,
        namespace,
        presence_period,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", chain(&*error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes: `error: cause: cause`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Phoenix's defaults but the period: down after 20 silent periods.
    let timing = PresenceTiming::new().broadcast_period(args.presence_period);
    let builder = staff::builder()
        .node_name(&args.node)
        .presence_timing(timing)?;
    let (pubsub, engine): (PubSub<staff::Message>, String) = match &args.engine {
        Engine::Redis(url) => {
            let config = RedisConfig::new(url)
                .namespace(&args.namespace)
                .connect_timeout(Duration::from_secs(3));
            (
                builder.redis(config).await?,
                format!("channel `{}` of {url}", args.namespace),
            )
        }
        Engine::Nats(url) => {
            let config = NatsConfig::new(url)
                .namespace(&args.namespace)
                .connect_timeout(Duration::from_secs(3));
            (
                builder.nats(config).await?,
                format!("namespace `{}` of {url}", args.namespace),
            )
        }
    };
    // From here on, the generated functions use the networked server.
    staff::install(pubsub).map_err(|_| "the default staff server was already in use")?;
    let node = &args.node;

    let mut events = staff::server().subscribe_many([
        staff::topic_departments(),
        staff::topic_teams(),
        staff::topic_people(),
    ])?;
    // With NATS, the node's interest in these topics reaches the server a
    // moment after subscribing: wait for it before saying "ready".
    staff::server().sync().await?;

    // Present while the process runs (the guard untracks when dropped;
    // a killed process's presence leaves after the down period).
    let online = staff::topic_teams();
    let (_, mut nodes) = staff::server().tracker::<String>().watch(online);
    let _present = staff::server().track(online, node.as_str(), format!("node {node}"))?;

    // Lines typed on stdin, read on a thread of their own.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin_open = true;
    let mut presence_open = true;

    println!("ready: node {node} on {engine}");
    println!("[{node}] type a team name and press Enter to broadcast team_created; Ctrl-C quits");

    loop {
        tokio::select! {
            diff = nodes.recv(), if presence_open => match diff {
                Ok(_) => {
                    let mut names: Vec<String> = staff::server()
                        .presences::<String>(online)
                        .iter()
                        .map(|presence| presence.key.to_string())
                        .collect();
                    names.sort();
                    names.dedup();
                    println!("[{node}] online: {}", names.join(", "));
                }
                Err(error) => {
                    println!("[{node}] presence: {error}");
                    presence_open = matches!(error, PresenceRecvError::Lagged(_));
                }
            },
            event = events.recv() => match event {
                Ok(message) => println!("[{node}] received {}", serde_json::to_string(&*message)?),
                Err(RecvError::Gap(_)) => println!(
                    "[{node}] gap: the connection was lost and is back; events may have been missed"
                ),
                Err(RecvError::Lagged(missed)) => println!("[{node}] lagged: {missed} events missed"),
                Err(other) => {
                    println!("[{node}] subscription ended: {other}");
                    return Ok(());
                }
            },
            line = lines.recv(), if stdin_open => match line {
                Some(line) if !line.trim().is_empty() => {
                    let team = Team {
                        uuid: Uuid::now_v7(),
                        name: Some(line.trim().to_owned()),
                        department_uuid: None,
                    };
                    match staff::broadcast_team(TeamEvent::Created, team).await {
                        Ok(()) => println!("[{node}] sent team_created `{}`", line.trim()),
                        Err(error) => println!("[{node}] broadcast failed: {}", chain(&error)),
                    }
                }
                Some(_) => {}
                None => stdin_open = false,
            },
        }
    }
}
