//! The headline figures (a table: name, where its value comes from, goal)
//! and the printing of the report, as Markdown or one JSON object.

use std::time::Instant;

use crate::plan::{Plan, CAPACITY, LATENCY_RATE, MANY_CAPACITY, MANY_TOPICS, WIDE_SUBSCRIBERS};
use crate::rounds::{find, Row};
use crate::workloads::latency::Percentiles;

/// What a run measured apart from the throughput rows.
pub struct Apart {
    /// Net heap bytes per idle subscription.
    pub idle_bytes: f64,
    /// Resident bytes per idle subscription.
    pub idle_rss: f64,
    /// Broadcast to receipt, paced: ours and naive.
    pub ours_latency: Percentiles,
    pub naive_latency: Percentiles,
}

/// Where a figure's value comes from.
#[derive(Clone, Copy)]
enum Source {
    /// The median paired ratio ours / contender on a workload.
    Ratio(&'static str, &'static str),
    /// Nanoseconds per item of a contender on a workload.
    Nanos(&'static str, &'static str),
    /// Net heap bytes per idle subscription.
    IdleBytes,
    /// Resident bytes per idle subscription.
    IdleRss,
    /// A latency percentile (50 or 99) in µs, ours (`true`) or naive's.
    Latency(bool, u8),
}

/// A figure of the report, before the run.
pub struct Spec {
    name: &'static str,
    source: Source,
    goal: Goal,
}

/// The headline figures, in report order, each with its goal. Their names
/// are the keys of `--json` (BENCHMARKS.md uses them).
pub const FIGURES: [Spec; 15] = [
    Spec {
        name: "membership_vs_naive_ratio",
        source: Source::Ratio("membership_fanout", "naive"),
        goal: Goal::AtLeast(1.8),
    },
    // Not a goal: threaded, it measures which wake-up regime
    // each contender lands in; the CPU figure below is the goal.
    Spec {
        name: "membership_vs_floor_ratio",
        source: Source::Ratio("membership_fanout", "floor"),
        goal: Goal::Report,
    },
    Spec {
        name: "membership_cpu_vs_floor_ratio",
        source: Source::Ratio("membership_cpu", "floor"),
        goal: Goal::AtLeast(0.8),
    },
    Spec {
        name: "membership_vs_peer_ratio",
        source: Source::Ratio("membership_fanout", "ractor_pg"),
        goal: Goal::AtLeast(1.5),
    },
    Spec {
        name: "cold_topic_ns",
        source: Source::Nanos("cold_topic", "ours"),
        goal: Goal::AtMost(25.0),
    },
    Spec {
        name: "cold_topic_vs_naive_ratio",
        source: Source::Ratio("cold_topic", "naive"),
        goal: Goal::AtLeast(5.0),
    },
    Spec {
        name: "wide_vs_naive_ratio",
        source: Source::Ratio("wide_topic", "naive"),
        goal: Goal::AtLeast(1.2),
    },
    Spec {
        name: "many_topics_vs_naive_ratio",
        source: Source::Ratio("many_topics", "naive"),
        goal: Goal::AtLeast(1.8),
    },
    // Paired by round too: ours with 2 publishers / ours with 1.
    Spec {
        name: "two_publishers_scaling",
        source: Source::Ratio("two_publishers", "ours, 1 publisher"),
        goal: Goal::AtLeast(1.6),
    },
    Spec {
        name: "idle_subscription_bytes",
        source: Source::IdleBytes,
        goal: Goal::AtMost(192.0),
    },
    Spec {
        name: "idle_subscription_rss_bytes",
        source: Source::IdleRss,
        goal: Goal::Report,
    },
    Spec {
        name: "latency_p50_us",
        source: Source::Latency(true, 50),
        goal: Goal::Report,
    },
    Spec {
        name: "latency_p99_us",
        source: Source::Latency(true, 99),
        goal: Goal::AtMostFigure("naive_latency_p99_us"),
    },
    Spec {
        name: "naive_latency_p50_us",
        source: Source::Latency(false, 50),
        goal: Goal::Report,
    },
    Spec {
        name: "naive_latency_p99_us",
        source: Source::Latency(false, 99),
        goal: Goal::Report,
    },
];

impl Spec {
    /// The figure's value in a run.
    pub fn read(&self, rows: &[Row], apart: &Apart) -> Figure {
        let value = match self.source {
            Source::Ratio(workload, contender) => find(rows, workload, contender)
                .ratio
                .unwrap_or_else(|| panic!("{workload} / {contender} is ours: no ratio")),
            Source::Nanos(workload, contender) => 1e9 / find(rows, workload, contender).rate,
            Source::IdleBytes => apart.idle_bytes,
            Source::IdleRss => apart.idle_rss,
            Source::Latency(ours, percentile) => {
                let of = if ours {
                    apart.ours_latency
                } else {
                    apart.naive_latency
                };
                if percentile == 50 {
                    of.p50_us
                } else {
                    of.p99_us
                }
            }
        };
        Figure {
            name: self.name,
            value,
            goal: self.goal,
        }
    }
}

/// One headline figure with its goal.
pub struct Figure {
    name: &'static str,
    value: f64,
    goal: Goal,
}

#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
    /// At most another figure of the same run.
    AtMostFigure(&'static str),
    /// Reported, no goal.
    Report,
}

impl Goal {
    /// Whether `value` meets the goal (`None`: no goal), `figures` being
    /// the run's others.
    fn met(self, value: f64, figures: &[Figure]) -> Option<bool> {
        match self {
            Goal::AtLeast(goal) => Some(value >= goal),
            Goal::AtMost(goal) => Some(value <= goal),
            Goal::AtMostFigure(name) => figures
                .iter()
                .find(|f| f.name == name)
                .map(|other| value <= other.value),
            Goal::Report => None,
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::AtLeast(goal) => write!(f, ">= {goal}"),
            Goal::AtMost(goal) => write!(f, "<= {goal}"),
            Goal::AtMostFigure(name) => write!(f, "<= `{name}`"),
            Goal::Report => write!(f, "not a goal"),
        }
    }
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// `--json`: one object, figure name to value (3 decimals).
pub fn print_json(figures: &[Figure]) {
    let object: serde_json::Map<String, serde_json::Value> = figures
        .iter()
        .map(|f| {
            (
                f.name.to_owned(),
                serde_json::json!((f.value * 1000.0).round() / 1000.0),
            )
        })
        .collect();
    println!("{}", serde_json::Value::Object(object));
}

/// The Markdown report: figures, throughput per workload, sizes.
pub fn print_report(
    figures: &[Figure],
    rows: &[Row],
    plan: Plan,
    mode: &str,
    started: Instant,
    apart: &Apart,
) {
    println!(
        "## Figures ({mode} run, {} s)\n",
        started.elapsed().as_secs()
    );
    println!("| figure | value | goal | met |");
    println!("| --- | ---: | --- | --- |");
    for f in figures {
        let met = match f.goal.met(f.value, figures) {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        println!("| `{}` | {:.2} | {} | {met} |", f.name, f.value, f.goal);
    }
    print_rows(rows, plan);
    println!(
        "\ncold_topic per broadcast: ours {:.1} ns, naive {:.1} ns. \
         idle subscriptions: {} over as many topics, {:.1} heap bytes each, \
         {:.1} resident bytes each.",
        1e9 / find(rows, "cold_topic", "ours").rate,
        1e9 / find(rows, "cold_topic", "naive").rate,
        plan.idle,
        apart.idle_bytes,
        apart.idle_rss
    );
    println!(
        "membership_cpu per broadcast and its 4 copies (thread CPU time): ours {:.1} ns, \
         naive {:.1} ns, floor {:.1} ns.",
        1e9 / find(rows, "membership_cpu", "ours").rate,
        1e9 / find(rows, "membership_cpu", "naive").rate,
        1e9 / find(rows, "membership_cpu", "floor").rate,
    );
    for (who, p) in [("ours", apart.ours_latency), ("naive", apart.naive_latency)] {
        println!(
            "latency_paced, {who}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs over {} copies \
             ({} broadcasts/s, 4 topics).",
            p.p50_us, p.p99_us, p.max_us, p.copies, LATENCY_RATE
        );
    }
    println!(
        "Sizes: membership {} broadcasts/round, two_publishers {} per publisher, cold {}, \
         wide {} x {} subscribers, many_topics {} broadcasts over {} topics, \
         membership_cpu {}, latency_paced {} per round; \
         queue capacity: room for the whole round in membership_fanout and two_publishers, \
         {} in wide_topic, {} in many_topics.",
        plan.membership,
        plan.two_publishers,
        plan.cold,
        plan.wide,
        WIDE_SUBSCRIBERS,
        plan.many,
        MANY_TOPICS,
        plan.membership_cpu,
        plan.latency,
        CAPACITY,
        MANY_CAPACITY
    );
}

/// The throughput table (also all that `--only` prints).
pub fn print_rows(rows: &[Row], plan: Plan) {
    println!("\n## Throughput per workload\n");
    println!(
        "Median of {} rounds (min .. max); `ours / this` is the median of the per-round ratios.\n",
        plan.rounds
    );
    println!("| workload | contender | median | min .. max | unit | ours / this | lagged |");
    println!("| --- | --- | ---: | ---: | --- | ---: | ---: |");
    for r in rows {
        let ratio = r
            .ratio
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "| {} | {} | {} | {} .. {} | {} | {ratio} | {} |",
            r.workload,
            r.contender,
            human(r.rate),
            human(r.min),
            human(r.max),
            r.unit,
            r.lagged
        );
    }
}
