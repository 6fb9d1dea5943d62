//! Replays what Elixir node `phx-a` lived through in the captured run
//! `main` (phoenix_pubsub 2.2.0, `tests/presence/main_run_phx-a.json`, an
//! extract of the capture's MANIFEST.json) on a [`Shard`] playing
//! `phx-a`: its own tracks, update and untrack, the frames `phx-b` sent
//! it, and a tick per broadcast period. The shard must send what `phx-a`
//! sent (each heartbeat, delta and clocks, and its transfer answer), make
//! the `handle_diff` calls and liveness events `phx-a` made, and list and
//! hold (context) what `phx-a` did at each checkpoint.
//!
//! It works on the manifest's JSON view of each frame (no wire codec):
//! names are strings, pids are their printed form, metas JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value as Json;

use super::clock::{Context, Replica, Tag};
use super::shard::{Destination, Message, ReplicaEvent, Shard, ShardConfig};
use super::state::{Clouds, Delta, Diff, FullState, StateLimits, Transfer, Value};

type Name = String;
type Pid = String;
type Msg = Message<Name, Pid, Json>;

const RUN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/presence/main_run_phx-a.json"
));

fn replica(json: &Json) -> Replica<Name> {
    Replica::new(
        json[0].as_str().unwrap().to_owned(),
        json[1].as_u64().unwrap(),
    )
}

fn tag(json: &Json) -> Tag<Name> {
    Tag::new(replica(&json[0]), json[1].as_u64().unwrap())
}

fn context(json: &Json) -> Context<Name> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|pair| (replica(&pair[0]), pair[1].as_u64().unwrap()))
        .collect()
}

fn clouds(json: &Json) -> Clouds<Name> {
    json.as_array()
        .unwrap()
        .iter()
        .filter_map(|pair| {
            let dots: std::collections::BTreeSet<u64> = pair[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|dot| tag(dot).clock)
                .collect();
            (!dots.is_empty()).then(|| (replica(&pair[0]), dots))
        })
        .collect()
}

fn values(json: &Json) -> BTreeMap<Tag<Name>, Value<Pid, Json>> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|value| {
            (
                tag(&value["tag"]),
                Value {
                    pid: value["pid"].as_str().unwrap().to_owned(),
                    topic: Arc::from(value["topic"].as_str().unwrap()),
                    key: Arc::from(value["key"].as_str().unwrap()),
                    meta: value["meta"].clone(),
                },
            )
        })
        .collect()
}

fn delta(json: &Json) -> Delta<Name, Pid, Json> {
    Delta {
        replica: replica(&json["replica"]),
        clouds: clouds(&json["clouds"]),
        values: values(&json["values"]),
        range: (context(&json["range"][0]), context(&json["range"][1])),
    }
}

fn clocks(json: &Json) -> (Replica<Name>, Context<Name>) {
    (replica(&json["replica"]), context(&json["context"]))
}

fn message(file: &Json) -> Msg {
    let summary = &file["summary"];
    let from = replica(&summary["replica_ref"]);
    match file["kind"].as_str().unwrap() {
        "heartbeat" => Message::Heartbeat {
            from,
            delta: summary["delta"]
                .is_object()
                .then(|| delta(&summary["delta"])),
            clocks: clocks(&summary["clocks"]),
        },
        "transfer_req" => Message::TransferReq {
            from,
            clocks: clocks(&summary["clocks"]),
        },
        "transfer_ack" if summary["delta"].is_object() => Message::TransferAck {
            from,
            payload: Transfer::Delta(delta(&summary["delta"])),
        },
        "transfer_ack" => Message::TransferAck {
            from,
            payload: Transfer::Full(FullState {
                replica: replica(&summary["state"]["replica"]),
                context: context(&summary["state"]["context"]),
                clouds: clouds(&summary["state"]["clouds"]),
                replicas: BTreeMap::new(),
                values: values(&summary["values"]),
            }),
        },
        "graceful_permdown" => Message::GracefulPermdown { from },
        other => panic!("unknown kind {other}"),
    }
}

/// A diff as the manifest prints a `handle_diff` call: per topic, joins
/// and leaves as `{key, meta}`.
fn as_handle_diff(diff: &Diff<Pid, Json>) -> Json {
    let mut topics: BTreeMap<String, (Vec<Json>, Vec<Json>)> = BTreeMap::new();
    let entry =
        |value: &Value<Pid, Json>| serde_json::json!({"key": &*value.key, "meta": value.meta});
    for join in &diff.joins {
        topics
            .entry(join.topic.to_string())
            .or_default()
            .0
            .push(entry(join));
    }
    for leave in &diff.leaves {
        topics
            .entry(leave.topic.to_string())
            .or_default()
            .1
            .push(entry(leave));
    }
    topics
        .into_iter()
        .map(|(topic, (joins, leaves))| {
            (topic, serde_json::json!({"joins": joins, "leaves": leaves}))
        })
        .collect::<serde_json::Map<String, Json>>()
        .into()
}

fn sorted(list: &Json) -> Vec<String> {
    let mut entries: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry.to_string())
        .collect();
    entries.sort();
    entries
}

enum Event<'a> {
    /// `phx-a`'s own operations, derived from the delta it sent next.
    Ops(&'a Json),
    Receive(&'a Json),
    Tick,
    Checkpoint(&'a Json),
}

#[test]
fn the_shard_lives_phx_a_s_run_as_phx_a_did() {
    let run: Json = serde_json::from_str(RUN).unwrap();
    let files = run["files"].as_array().unwrap();
    let me = replica(&files[0]["summary"]["replica_ref"]);
    assert_eq!(me.name, "phx-a");
    let opts = &run["opts"];
    let config = ShardConfig {
        broadcast_period_ms: opts["broadcast_period"].as_u64().unwrap(),
        max_silent_periods: u32::try_from(opts["max_silent_periods"].as_u64().unwrap()).unwrap(),
        down_period_ms: opts["down_period"].as_u64().unwrap(),
        permdown_period_ms: opts["permdown_period"].as_u64().unwrap(),
        clock_sample_periods: u32::try_from(opts["clock_sample_periods"].as_u64().unwrap())
            .unwrap(),
        max_delta_sizes: vec![100, 1000, 10_000],
        limits: StateLimits::default(),
    };
    let mut shard: Shard<Name, Pid, Json> = Shard::new(me.clone(), config).unwrap();

    // The timeline. phx-a's ticks: its first heartbeat, then every 251 ms
    // (its heartbeats drift 1004 ms per 4 periods).
    let mut timeline: Vec<(u64, u8, Event<'_>)> = Vec::new();
    let first = files[0]["t_ms"].as_u64().unwrap();
    let mut at = first;
    while at < 18_100 {
        timeline.push((at, 3, Event::Tick));
        at += 251;
    }
    for file in files {
        let t = file["t_ms"].as_u64().unwrap();
        if file["sender"] == "phx-a" {
            if file["summary"]["delta"].is_object() && file["kind"] == "heartbeat" {
                timeline.push((t - 20, 1, Event::Ops(file)));
            }
        } else if file["mode"] == "except" || file["target"] == "phx-a" {
            timeline.push((t, 2, Event::Receive(file)));
        }
    }
    for checkpoint in run["checkpoints"].as_array().unwrap() {
        timeline.push((
            checkpoint["t_ms"].as_u64().unwrap(),
            0,
            Event::Checkpoint(checkpoint),
        ));
    }
    timeline.sort_by_key(|(t, order, _)| (*t, *order));

    let mut sent: Vec<(u64, Msg)> = Vec::new();
    let mut diffs: Vec<(u64, Json)> = Vec::new();
    let mut events: Vec<(u64, ReplicaEvent<Name>)> = Vec::new();
    let mut checkpoints = 0;
    for (t, _, event) in timeline {
        match event {
            Event::Ops(file) => {
                // Each value: a track, or the update of the presence of its
                // identity; each removed dot of a presence not updated: an
                // untrack.
                let sent_delta = delta(&file["summary"]["delta"]);
                let held = shard.state().all();
                let mut updated = Vec::new();
                for value in sent_delta.values.values() {
                    let diff = if shard
                        .state()
                        .get(&value.topic, &value.pid, &value.key)
                        .is_some()
                    {
                        updated.push((value.topic.clone(), value.pid.clone(), value.key.clone()));
                        shard
                            .update(&value.pid, &value.topic, &value.key, value.meta.clone())
                            .unwrap()
                    } else {
                        shard
                            .track(
                                value.pid.clone(),
                                &value.topic,
                                &value.key,
                                value.meta.clone(),
                            )
                            .unwrap()
                    };
                    diffs.push((t, as_handle_diff(&diff)));
                }
                for dot in sent_delta.clouds.get(&me).into_iter().flatten() {
                    let Some(value) = held.get(&Tag::new(me.clone(), *dot)) else {
                        continue;
                    };
                    let ident = (value.topic.clone(), value.pid.clone(), value.key.clone());
                    if !updated.contains(&ident) {
                        let diff = shard.untrack(&value.pid, &value.topic, &value.key);
                        diffs.push((t, as_handle_diff(&diff)));
                    }
                }
            }
            Event::Receive(file) => {
                let effects = shard.handle(&message(file), t);
                diffs.extend(effects.diffs.iter().map(|diff| (t, as_handle_diff(diff))));
                events.extend(effects.events.into_iter().map(|event| (t, event)));
                sent.extend(effects.outgoing.into_iter().map(|out| (t, out.message)));
            }
            Event::Tick => {
                let effects = shard.tick(t);
                diffs.extend(effects.diffs.iter().map(|diff| (t, as_handle_diff(diff))));
                events.extend(effects.events.into_iter().map(|event| (t, event)));
                for out in effects.outgoing {
                    assert_eq!(
                        out.to,
                        Destination::All,
                        "phx-a sent nothing direct on a tick"
                    );
                    sent.push((t, out.message));
                }
            }
            Event::Checkpoint(checkpoint) => {
                checkpoints += 1;
                let label = checkpoint["label"].as_str().unwrap();
                for (topic, expected) in checkpoint["list"].as_object().unwrap() {
                    let listed: Json = shard
                        .list(topic)
                        .iter()
                        .map(|value| serde_json::json!({"key": &*value.key, "meta": value.meta}))
                        .collect::<Vec<_>>()
                        .into();
                    assert_eq!(
                        sorted(&listed),
                        sorted(expected),
                        "{label}: list of {topic}"
                    );
                }
                assert_eq!(
                    shard.context(),
                    &context(&checkpoint["context"]),
                    "{label}: context"
                );
                assert_eq!(
                    shard.state().clouds(),
                    &clouds(&checkpoint["clouds"]),
                    "{label}: clouds"
                );
            }
        }
    }
    assert_eq!(checkpoints, 8);

    // What phx-a sent, in order, within 10 ms of when it sent it.
    let expected_sent: Vec<(u64, Msg)> = files
        .iter()
        .filter(|file| file["sender"] == "phx-a")
        .map(|file| (file["t_ms"].as_u64().unwrap(), message(file)))
        .collect();
    assert_eq!(sent.len(), expected_sent.len(), "{sent:#?}");
    for ((t, message), (expected_t, expected)) in sent.iter().zip(&expected_sent) {
        assert!(
            t.abs_diff(*expected_t) <= 10,
            "{message:?} at {t}, expected at {expected_t}"
        );
        assert_eq!(message, expected, "at {expected_t}");
    }

    // Its handle_diff calls, within one broadcast period.
    let observed = run["handle_diff"].as_array().unwrap();
    assert_eq!(diffs.len(), observed.len(), "{diffs:#?}");
    for ((t, diff), expected) in diffs.iter().zip(observed) {
        let expected_t = expected["t_ms"].as_u64().unwrap();
        assert!(
            t.abs_diff(expected_t) <= 260,
            "{diff} at {t}, expected at {expected_t}"
        );
        assert_eq!(diff, &expected["diff"]);
    }

    // Its replica events.
    let observed: Vec<(u64, String, String)> = run["replica_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["t_ms"].as_u64().unwrap(),
                event["event"].as_str().unwrap().to_owned(),
                event["remote"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(events.len(), observed.len(), "{events:?}");
    for ((t, event), (expected_t, kind, remote)) in events.iter().zip(&observed) {
        let (name, replica) = match event {
            ReplicaEvent::Up(replica) => ("replica_up", replica),
            ReplicaEvent::Down(replica) => ("replica_down", replica),
            ReplicaEvent::Permdown(replica) => ("replica_permdown", replica),
        };
        assert_eq!(
            (name, replica.name.as_str()),
            (kind.as_str(), remote.as_str())
        );
        assert!(
            t.abs_diff(*expected_t) <= 10,
            "{name} at {t}, expected at {expected_t}"
        );
    }
}
