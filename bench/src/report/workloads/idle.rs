//! `idle_subscription_bytes`: net heap bytes per idle subscription, each on
//! its own person topic, counted by the counting global allocator; and
//! `idle_subscription_rss_bytes`: resident memory per idle subscription,
//! read from `/proc/self/status` (`VmRSS`) before and after, in a child
//! process of this binary (`--idle-rss N`), so that no memory freed by the
//! workloads before it is reused and hidden from the difference.

use std::process::Command;

use staff_pubsub::staff::{self, Message};
use staff_pubsub::{PubSub, Subscription};
use staff_pubsub_bench::support::{id, PEOPLE};

/// `count` subscriptions, each to its own person topic.
fn subscribe(pubsub: &PubSub<Message>, count: usize) -> Vec<Subscription<Message>> {
    let mut subscriptions = Vec::with_capacity(count);
    for i in 0..count as u64 {
        subscriptions.push(
            pubsub
                .subscribe(staff::topic_person(id(PEOPLE, i)))
                .unwrap(),
        );
    }
    subscriptions
}

/// Net heap bytes per idle subscription of `count`, ours.
pub fn bytes_ours(count: usize) -> f64 {
    let pubsub = PubSub::<Message>::new();
    let (bytes, subscriptions) = staff_pubsub_count_alloc::net_bytes(|| subscribe(&pubsub, count));
    assert_eq!(pubsub.stats().topics, count);
    drop(subscriptions);
    bytes as f64 / count as f64
}

/// Resident bytes per idle subscription of `count`, ours: runs this binary
/// with `--idle-rss count` and reads the one number it prints.
///
/// # Panics
///
/// If the child cannot run or prints no number.
pub fn rss_ours(count: usize) -> f64 {
    let exe = std::env::current_exe().expect("the report's own path");
    let output = Command::new(exe)
        .args(["--idle-rss", &count.to_string()])
        .output()
        .expect("bench_report --idle-rss");
    assert!(output.status.success(), "bench_report --idle-rss failed");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("bench_report --idle-rss prints bytes per subscription")
}

/// `--idle-rss N` (in the child): prints the growth of the resident set
/// over `N` subscriptions, per subscription, the `PubSub` made before the
/// first reading.
pub fn print_rss(count: usize) {
    let pubsub = PubSub::<Message>::new();
    let before = resident_bytes();
    let subscriptions = subscribe(&pubsub, count);
    let after = resident_bytes();
    assert_eq!(pubsub.stats().topics, count);
    drop(subscriptions);
    println!("{}", (after - before) as f64 / count as f64);
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: i64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}
