//! Several nodes: the Redis and NATS transports against their engines' raw
//! clients (two nodes, A to B), and 16 simulated nodes (scale).
//!
//! ```text
//! cargo run --release -p staff-pubsub-bench --features cluster --bin cluster_bench -- --quick
//! cargo run --release -p staff-pubsub-bench --features cluster --bin cluster_bench
//! cargo run --release -p staff-pubsub-bench --features cluster --bin cluster_bench -- --only pair
//! cargo run --release -p staff-pubsub-bench --features cluster --bin cluster_bench -- --only scale --scale-broadcasts 20000
//! cargo run --release -p staff-pubsub-bench --features cluster --bin cluster_bench -- --only interest
//! ```
//!
//! `--only interest` measures what one subscription per topic costs NATS as
//! a node holds 1,000 to 50,000 person topics ([`interest`]).
//!
//! `--only presence` measures presence across nodes over each engine
//! ([`presence`]): the gossip bytes per second per node in steady state
//! at 1,000 and 100,000 presences on one node, the time a second node
//! takes to list them all, and the convergence of 16 nodes after a
//! partition. `--presence-period MS` (150) is the heartbeat workload's
//! broadcast period, `--presence-window S` its window (35 periods),
//! `--presence-n N` one size instead of both.
//! `--only presence-elixir` runs the heartbeat workload against two Elixir
//! `Phoenix.Tracker` nodes on Redis (`bench/presence_elixir/node.exs`;
//! needs `elixir` and `PHX_EBIN_ROOT`, as `tests/presence_elixir.rs`).
//!
//! `--only durable` measures durable against live-only delivery on each
//! engine ([`durable`]): throughput and latency A to B, the catch-up rate
//! after an outage, and the memory a retained entry takes on the server.
//! Part of the full run too.
//!
//! Options: `--quick` (pair 20,000 broadcasts x 3 rounds, scale 10,000
//! broadcasts x 1 run per engine; the full run is 100,000 x 5 and 100,000
//! x 3), `--only pair|scale|durable|catch-up|interest|presence|presence-elixir`, `--pair-broadcasts N`,
//! `--rounds N`, `--scale-broadcasts N`, `--scale-runs N`, `--nodes N`
//! (16), `--durable-broadcasts N` (`--quick` 5,000, full 50,000 per
//! round, `--rounds` rounds), `--catch-up N` (`--quick` 20,000, full
//! 100,000).
//!
//! It starts its own `redis-server` and `nats-server` on free loopback ports
//! (from `PATH`, or `REDIS_SERVER` / `NATS_SERVER`); everything else runs in
//! this process, on a tokio runtime with one worker per core. See
//! [`pair`] and [`scale`] for what is measured; the report is Markdown on
//! standard output.

mod cpu;
mod durable;
mod interest;
mod pair;
mod presence;
mod proxy;
mod scale;
mod servers;

use std::time::{Duration, Instant};

use pair::{Contender, Pair, Run, IN_FLIGHT};
use scale::{Engine, ScaleRun, NODES, PEOPLE};
use servers::Server;

struct Plan {
    pair_broadcasts: usize,
    rounds: usize,
    scale_broadcasts: usize,
    scale_runs: usize,
    nodes: usize,
    durable_broadcasts: usize,
    catch_up: usize,
    presence_period_ms: usize,
    presence_window_s: Option<usize>,
    presence_n: Option<usize>,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|at| args.get(at + 1))
            .map(|v| v.replace('_', "").parse::<usize>().expect("a number"))
    };
    let quick = has("--quick");
    let plan = Plan {
        pair_broadcasts: value("--pair-broadcasts").unwrap_or(if quick { 20_000 } else { 100_000 }),
        rounds: value("--rounds").unwrap_or(if quick { 3 } else { 5 }),
        scale_broadcasts: value("--scale-broadcasts").unwrap_or(if quick {
            10_000
        } else {
            100_000
        }),
        nodes: value("--nodes").unwrap_or(NODES),
        scale_runs: value("--scale-runs").unwrap_or(if quick { 1 } else { 3 }),
        durable_broadcasts: value("--durable-broadcasts").unwrap_or(if quick {
            5_000
        } else {
            50_000
        }),
        catch_up: value("--catch-up").unwrap_or(if quick { 20_000 } else { 100_000 }),
        presence_period_ms: value("--presence-period").unwrap_or(150),
        presence_window_s: value("--presence-window"),
        presence_n: value("--presence-n"),
    };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|at| args.get(at + 1).cloned());
    let started = Instant::now();
    let redis = Server::redis().await;
    let nats = Server::nats().await;
    println!(
        "# cluster_bench ({}; {} cores; {IN_FLIGHT} broadcasts in flight)\n",
        if quick { "--quick" } else { "full" },
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    if only.as_deref().is_none_or(|only| only == "pair") {
        pair_report(&redis, &nats, &plan).await;
    }
    if only.as_deref().is_none_or(|only| only == "scale") {
        scale_report(&redis, &nats, &plan).await;
    }
    if only.as_deref().is_none_or(|only| only == "durable") {
        durable_report(&plan, false).await;
    }
    if only.as_deref() == Some("catch-up") {
        durable_report(&plan, true).await;
    }
    if only.as_deref() == Some("interest") {
        interest_report(&nats).await;
    }
    if only.as_deref() == Some("presence") {
        presence_report(&redis, &nats, &plan).await;
    }
    if only.as_deref() == Some("presence-elixir") {
        presence_elixir_report(&redis, &plan).await;
    }
    println!("\ntotal {:.0} s", started.elapsed().as_secs_f64());
}

async fn pair_report(redis: &Server, nats: &Server, plan: &Plan) {
    let pair = Pair::connect(redis, nats).await;
    let n = plan.pair_broadcasts;
    // Warm-up, discarded.
    for contender in Contender::ALL {
        pair.run(contender, (n / 5).max(500)).await;
    }
    let mut rounds: Vec<Vec<Run>> = Vec::new();
    for round in 0..plan.rounds {
        let mut runs = Vec::new();
        let count = Contender::ALL.len();
        for i in 0..count {
            let contender = Contender::ALL[(i + round) % count];
            runs.push(pair.run(contender, n).await);
        }
        runs.sort_by_key(|run| Contender::ALL.iter().position(|c| *c == run.contender));
        rounds.push(runs);
    }
    println!(
        "## Two nodes, A to B: {n} membership broadcasts (4 topics) x {} rounds\n",
        plan.rounds
    );
    println!("Median over rounds [min .. max]:\n");
    println!("| contender | broadcasts/s | p50 µs | p99 µs | process CPU µs/broadcast | server CPU µs/broadcast | anomalies |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, contender) in Contender::ALL.iter().enumerate() {
        let of = |f: fn(&Run) -> f64| -> Vec<f64> { rounds.iter().map(|r| f(&r[i])).collect() };
        println!(
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            contender.name(),
            spread(&of(|r| r.per_sec), 0),
            spread(&of(|r| r.p50_us), 0),
            spread(&of(|r| r.p99_us), 0),
            spread(&of(|r| r.cpu_us), 1),
            spread(&of(|r| r.server_cpu_us), 1),
            rounds.iter().map(|r| r[i].anomalies).sum::<u64>(),
        );
    }
    println!("\nThroughput ratios, paired within each round (goal >= 0.8):\n");
    println!("| ratio | median [min .. max] | per round |");
    println!("| --- | ---: | --- |");
    for (ours, raw) in [
        (Contender::Redis, Contender::RedisRaw),
        (Contender::Redis, Contender::RedisRawDecoded),
        (Contender::Nats, Contender::NatsRaw),
        (Contender::Nats, Contender::NatsRawFlush),
        (Contender::Nats, Contender::NatsRawDecoded),
    ] {
        let at = |c: Contender| Contender::ALL.iter().position(|x| *x == c).unwrap_or(0);
        let ratios: Vec<f64> = rounds
            .iter()
            .map(|r| r[at(ours)].per_sec / r[at(raw)].per_sec)
            .collect();
        println!(
            "| `{}` / `{}` | {} | {} |",
            ours.name(),
            raw.name(),
            spread(&ratios, 2),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

async fn scale_report(redis: &Server, nats: &Server, plan: &Plan) {
    let n = plan.scale_broadcasts;
    println!(
        "\n## Scale: {} nodes, {PEOPLE} person topics, {n} person broadcasts x {} runs per engine\n",
        plan.nodes, plan.scale_runs
    );
    println!("| run | engine | broadcasts/s | s | received per node [min .. max] | received, all nodes | rejected | delivered | lagged | gaps | process CPU s | µs/broadcast | server CPU s | complete |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let mut run_id = 0;
    for run in 0..plan.scale_runs {
        // Alternate which engine goes first.
        let engines = if run % 2 == 0 {
            [Engine::Redis, Engine::Nats]
        } else {
            [Engine::Nats, Engine::Redis]
        };
        for engine in engines {
            run_id += 1;
            let server = match engine {
                Engine::Redis => redis,
                Engine::Nats => nats,
            };
            let result = scale::run(engine, server, plan.nodes, n, run_id).await;
            print_scale(run + 1, &result);
        }
    }
}

fn print_scale(run: usize, r: &ScaleRun) {
    let min = r.received.iter().min().copied().unwrap_or(0);
    let max = r.received.iter().max().copied().unwrap_or(0);
    println!(
        "| {run} | `{}` | {:.0} | {:.2} | {min} .. {max} | {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.2} | {} |",
        r.engine.name(),
        r.per_sec,
        r.secs,
        r.received.iter().sum::<u64>(),
        r.rejected,
        r.delivered,
        r.lagged,
        r.gaps,
        r.cpu_s,
        r.cpu_s * 1e6 / r.n as f64,
        r.server_cpu_s,
        if r.complete { "yes" } else { "**no**" },
    );
}

async fn durable_report(plan: &Plan, catch_up_only: bool) {
    let servers = durable::Servers::start().await;
    if !catch_up_only {
        durable_throughput_report(&servers, plan).await;
    }
    let k = plan.catch_up;
    println!("\n## Catch-up: node C away while A appends {k} broadcasts, then back\n");
    println!("Reconnect: from letting C in to its `Connected`; replay: from then to C's last copy; first copy: from `Connected` to C's first copy; streaming: from C's first copy to its last.\n");
    println!("| engine | appended/s (C away) | reconnect ms | replay s | replayed/s | first copy ms | streaming/s | complete | anomalies | C away throughout | log bytes/entry | entries | used_memory/entry | server RSS/entry | envelope bytes |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    for engine in ["redis", "nats"] {
        let c = durable::catch_up(&servers, engine, k).await;
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {} of {} | {} | {} | {:.0} | {} | {} | {:.0} | {} |",
            c.engine,
            c.append_per_sec,
            c.reconnect_ms,
            c.replay_s,
            c.per_sec,
            c.first_copy_ms,
            c.streaming_per_sec,
            c.complete,
            c.n,
            c.anomalies.describe(),
            if c.stayed_away { "yes" } else { "**no**" },
            c.log_bytes_per_entry,
            c.log_entries,
            c.used_memory_per_entry
                .map_or_else(|| "-".to_owned(), |b| format!("{b:.0}")),
            c.rss_per_entry,
            c.envelope_bytes,
        );
    }
}

async fn durable_throughput_report(servers: &durable::Servers, plan: &Plan) {
    use durable::Contender;
    let bench = durable::Bench::connect(servers).await;
    let n = plan.durable_broadcasts;
    for contender in Contender::ALL {
        bench.run(contender, (n / 5).max(500)).await;
    }
    let mut rounds: Vec<Vec<durable::Run>> = Vec::new();
    for round in 0..plan.rounds {
        let count = Contender::ALL.len();
        let mut runs = Vec::new();
        for i in 0..count {
            runs.push(bench.run(Contender::ALL[(i + round) % count], n).await);
        }
        runs.sort_by_key(|run| Contender::ALL.iter().position(|c| *c == run.contender));
        rounds.push(runs);
    }
    println!(
        "\n## Durable against live-only delivery, A to B: {n} membership broadcasts (4 topics) x {} rounds\n",
        plan.rounds
    );
    println!("Median over rounds [min .. max]; \"own\" is A's own subscriber:\n");
    println!("| contender | broadcasts/s | p50 µs | p99 µs | own p50 µs | own p99 µs | process CPU µs/broadcast | server CPU µs/broadcast | anomalies |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, contender) in Contender::ALL.iter().enumerate() {
        let of =
            |f: fn(&durable::Run) -> f64| -> Vec<f64> { rounds.iter().map(|r| f(&r[i])).collect() };
        println!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
            contender.name(),
            spread(&of(|r| r.per_sec), 0),
            spread(&of(|r| r.p50_us), 0),
            spread(&of(|r| r.p99_us), 0),
            spread(&of(|r| r.own_p50_us), 0),
            spread(&of(|r| r.own_p99_us), 0),
            spread(&of(|r| r.cpu_us), 1),
            spread(&of(|r| r.server_cpu_us), 1),
            rounds.iter().map(|r| r[i].anomalies.total()).sum::<u64>(),
        );
    }
    for (round, runs) in rounds.iter().enumerate() {
        for run in runs.iter().filter(|run| run.anomalies.total() > 0) {
            println!(
                "\n**Anomalies** in round {} of `{}`: {}",
                round + 1,
                run.contender.name(),
                run.anomalies.describe()
            );
        }
    }
    println!("\nDurable / live, paired within each round:\n");
    println!(
        "| ratio | throughput median [min .. max] | per round | p50 latency median [min .. max] |"
    );
    println!("| --- | ---: | --- | ---: |");
    let at = |c: Contender| Contender::ALL.iter().position(|x| *x == c).unwrap_or(0);
    for contender in Contender::ALL {
        let Some(live) = contender.baseline() else {
            continue;
        };
        let ratio = |f: fn(&durable::Run) -> f64| -> Vec<f64> {
            rounds
                .iter()
                .map(|r| f(&r[at(contender)]) / f(&r[at(live)]))
                .collect()
        };
        let throughput = ratio(|r| r.per_sec);
        println!(
            "| `{}` / `{}` | {} | {} | {} |",
            contender.name(),
            live.name(),
            spread(&throughput, 2),
            throughput
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            spread(&ratio(|r| r.p50_us), 2),
        );
    }
}

/// `median [min .. max]` with `digits` decimals.
fn spread(values: &[f64], digits: usize) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    format!(
        "{median:.digits$} [{:.digits$} .. {:.digits$}]",
        sorted[0],
        sorted[sorted.len() - 1]
    )
}

async fn interest_report(nats: &Server) {
    println!("## Interest: one NATS subscription per topic, K person topics on one node\n");
    println!("| K topics | subscribe + sync ms | server RSS growth KiB | server CPU ms | received of 10,000 (half to its topics) |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for (i, topics) in [1_000, 10_000, 50_000].into_iter().enumerate() {
        let run = interest::run(nats, topics, &format!("interest{i}")).await;
        println!(
            "| {} | {:.0} | {} | {:.0} | {} of {} |",
            run.topics,
            run.subscribe_ms,
            run.server_rss_kib,
            run.server_cpu_ms,
            run.received,
            run.broadcasts
        );
    }
}

/// The heartbeat workload's broadcast period and window: by default three
/// idle heartbeat intervals (11 periods each) and a bit.
fn presence_period(plan: &Plan) -> (Duration, Duration) {
    let period = Duration::from_millis(plan.presence_period_ms as u64);
    let window = plan
        .presence_window_s
        .map_or(period * 35, |s| Duration::from_secs(s as u64));
    (period, window)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(
        || "**not within the limit**".to_owned(),
        |d| format!("{:.2}", d.as_secs_f64()),
    )
}

fn heartbeat_header() {
    println!("| engine | N | B lists all, s | of which after the state was sent, s | bytes published meanwhile | largest message | node: bytes/s, messages/s, bytes/message |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
}

fn print_heartbeat(engine: &str, h: &presence::Heartbeat) {
    let steady: Vec<String> = h
        .steady
        .iter()
        .map(|(node, rate)| match rate {
            Some((bytes, messages, per)) => {
                format!("{node}: {bytes:.0} B/s, {messages:.2}/s, {per:.0} B")
            }
            None => format!("{node}: fewer than 2 messages"),
        })
        .collect();
    println!(
        "| {engine} | {} | {} | {} | {} | {} | {} |",
        h.n,
        secs(h.transfer),
        secs(h.after_state),
        h.transfer_bytes,
        h.largest,
        steady.join("; ")
    );
}

async fn presence_elixir_report(redis: &Server, plan: &Plan) {
    let root = std::env::var("PHX_EBIN_ROOT")
        .expect("PHX_EBIN_ROOT: the compiled phoenix_pubsub, phoenix_pubsub_redis, redix, telemetry, nimble_options and poolboy");
    let (period, window) = presence_period(plan);
    println!(
        "## Presence heartbeats, Elixir Phoenix.Tracker on Redis: A tracks N presences (100 topics), then B starts (broadcast period {} ms, Phoenix's other defaults; window {:.1} s)\n",
        period.as_millis(),
        window.as_secs_f64()
    );
    heartbeat_header();
    for n in plan.presence_n.map_or(vec![1_000, 100_000], |n| vec![n]) {
        let h = presence::heartbeat_elixir(&root, redis, n, period, window).await;
        print_heartbeat("elixir-redis", &h);
    }
}

async fn presence_report(redis: &Server, nats: &Server, plan: &Plan) {
    let (period, window) = presence_period(plan);
    println!(
        "## Presence heartbeats: A tracks N presences ({} topics), then B starts (broadcast period {} ms, Phoenix's other defaults; window {:.1} s)\n",
        presence::TOPICS,
        period.as_millis(),
        window.as_secs_f64()
    );
    heartbeat_header();
    let mut run = 0;
    for (engine, server) in [(Engine::Redis, redis), (Engine::Nats, nats)] {
        for n in plan.presence_n.map_or(vec![1_000, 100_000], |n| vec![n]) {
            run += 1;
            let h = presence::heartbeat(
                engine,
                server,
                n,
                period,
                window,
                &format!("bench-presence-{run}"),
            )
            .await;
            print_heartbeat(engine.name(), &h);
        }
    }
    let (nodes, cut, per_node) = (plan.nodes, plan.nodes / 4, 100);
    let (period, down) = (Duration::from_millis(100), Duration::from_millis(1500));
    println!(
        "\n## Presence convergence: {nodes} nodes, {per_node} presences each, {cut} cut off past the down period (broadcast {} ms, down {} ms)\n",
        period.as_millis(),
        down.as_millis()
    );
    println!("| engine | presences | all listed after start, s | both sides took the other down, s | every node lists the full set after healing, s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (engine, server) in [(Engine::Redis, redis), (Engine::Nats, nats)] {
        run += 1;
        let c = presence::convergence(
            engine,
            server,
            nodes,
            cut,
            per_node,
            (period, down),
            &format!("bench-presence-{run}"),
        )
        .await;
        println!(
            "| {} | {} | {} | {} | {} |",
            engine.name(),
            c.total,
            secs(c.initial),
            secs(c.taken_down),
            secs(c.healed)
        );
        debug_assert_eq!((c.nodes, c.cut), (nodes, cut));
    }
}
