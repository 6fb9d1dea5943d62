//! The headline figures (a table: name, where its value comes from, goal)
//! and the printing of the report, as Markdown or one JSON object.

use std::time::Instant;

use crate::plan::{Plan, CAPACITY, MANY_CAPACITY, MANY_TOPICS, WIDE_SUBSCRIBERS};
use crate::rounds::{find, Row};

/// Where a figure's value comes from.
#[derive(Clone, Copy)]
enum Source {
    /// The median paired ratio ours / contender on a workload.
    Ratio(&'static str, &'static str),
    /// Nanoseconds per item of a contender on a workload.
    Nanos(&'static str, &'static str),
    /// Net heap bytes per idle subscription.
    IdleBytes,
}

/// A figure of the report, before the run.
pub struct Spec {
    name: &'static str,
    source: Source,
    goal: Goal,
}

/// The headline figures, in report order. Their names are the keys of
/// `--json` (BENCHMARKS.md and issue 6 use them).
pub const FIGURES: [Spec; 9] = [
    Spec {
        name: "membership_vs_naive_ratio",
        source: Source::Ratio("membership_fanout", "naive"),
        goal: Goal::AtLeast(1.5),
    },
    Spec {
        name: "membership_vs_floor_ratio",
        source: Source::Ratio("membership_fanout", "floor"),
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
        goal: Goal::AtMost(40.0),
    },
    Spec {
        name: "cold_topic_vs_naive_ratio",
        source: Source::Ratio("cold_topic", "naive"),
        goal: Goal::AtLeast(5.0),
    },
    Spec {
        name: "wide_vs_naive_ratio",
        source: Source::Ratio("wide_topic", "naive"),
        goal: Goal::AtLeast(1.0),
    },
    Spec {
        name: "many_topics_vs_naive_ratio",
        source: Source::Ratio("many_topics", "naive"),
        goal: Goal::AtLeast(1.5),
    },
    // Paired by round too: ours with 2 publishers / ours with 1.
    Spec {
        name: "two_publishers_scaling",
        source: Source::Ratio("two_publishers", "ours, 1 publisher"),
        goal: Goal::AtLeast(1.3),
    },
    Spec {
        name: "idle_subscription_bytes",
        source: Source::IdleBytes,
        goal: Goal::AtMost(256.0),
    },
];

impl Spec {
    /// The figure's value in a run.
    pub fn read(&self, rows: &[Row], idle: f64) -> Figure {
        let value = match self.source {
            Source::Ratio(workload, contender) => find(rows, workload, contender)
                .ratio
                .unwrap_or_else(|| panic!("{workload} / {contender} is ours: no ratio")),
            Source::Nanos(workload, contender) => 1e9 / find(rows, workload, contender).rate,
            Source::IdleBytes => idle,
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
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(goal) => value >= goal,
            Goal::AtMost(goal) => value <= goal,
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::AtLeast(goal) => write!(f, ">= {goal}"),
            Goal::AtMost(goal) => write!(f, "<= {goal}"),
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
    idle: f64,
) {
    println!(
        "## Figures ({mode} run, {} s)\n",
        started.elapsed().as_secs()
    );
    println!("| figure | value | goal | met |");
    println!("| --- | ---: | --- | --- |");
    for f in figures {
        let met = if f.goal.met(f.value) { "yes" } else { "**no**" };
        println!("| `{}` | {:.2} | {} | {met} |", f.name, f.value, f.goal);
    }
    print_rows(rows, plan);
    println!(
        "\ncold_topic per broadcast: ours {:.1} ns, naive {:.1} ns. \
         idle subscriptions: {} over as many topics, {:.1} bytes each.",
        1e9 / find(rows, "cold_topic", "ours").rate,
        1e9 / find(rows, "cold_topic", "naive").rate,
        plan.idle,
        idle
    );
    println!(
        "Sizes: membership {} broadcasts/round, two_publishers {} per publisher, cold {}, \
         wide {} x {} subscribers, many_topics {} broadcasts over {} topics; \
         queue capacity: room for the whole round in membership_fanout and two_publishers, \
         {} in wide_topic, {} in many_topics.",
        plan.membership,
        plan.two_publishers,
        plan.cold,
        plan.wide,
        WIDE_SUBSCRIBERS,
        plan.many,
        MANY_TOPICS,
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
