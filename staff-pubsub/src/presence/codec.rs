//! How Rust replicas encode the replica protocol's messages for each
//! other: MessagePack (rmp-serde), as a two-element array
//! `[version, message]`.
//!
//! Why MessagePack: it is binary and small (integers take the bytes they
//! need; a heartbeat without a delta is a few dozen bytes), it keeps maps
//! with any keys, and it is self-describing, so metadata of any serde
//! shape round-trips, `serde_json::Value` and untagged enums included
//! (formats without type information, postcard or bincode, cannot decode
//! those). Structs are written with their field names (`to_vec_named`),
//! so a metadata struct that gains a `#[serde(default)]` field still
//! decodes what an older node sent. The protocol's own records are
//! written as arrays of pairs rather than as the CRDT's maps keyed by
//! structs, which keeps the wire independent of the in-memory types. The
//! version comes first: a node skips (and counts) a message of a version
//! it does not know rather than misreading it.
//!
//! This is the Rust-to-Rust form; Phoenix's tracker speaks its own
//! (`crate::phoenix::tracker`).

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::clock::{Context, Replica, Tag};
use super::shard::Message;
use super::state::{Clouds, Delta, FullState, Status, Transfer, Value};
use super::tracker::PresenceId;
use crate::loom::sync::Arc;

/// The encoding's version, the first element of every message.
pub(crate) const VERSION: u8 = 1;

/// The protocol's message as the runtime holds it.
pub(crate) type Msg<Meta> = Message<Arc<str>, PresenceId, Arc<Meta>>;

/// Metadata behind an `Arc`, encoded as itself (serde's `Arc` support
/// needs its `rc` feature, which this crate does not turn on).
struct Shared<Meta>(Arc<Meta>);

impl<Meta: Serialize> Serialize for Shared<Meta> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (*self.0).serialize(serializer)
    }
}

impl<'de, Meta: Deserialize<'de>> Deserialize<'de> for Shared<Meta> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Meta::deserialize(deserializer).map(|meta| Self(Arc::new(meta)))
    }
}

/// `[name, vsn]`.
#[derive(Serialize, Deserialize)]
struct WReplica(String, u64);

/// `[[name, vsn], clock]`.
type WContext = Vec<(WReplica, u64)>;

/// `[[name, vsn], [clock...]]`.
type WClouds = Vec<(WReplica, Vec<u64>)>;

/// `[[name, vsn], clock, [origin, seq], topic, key, meta]`: a value with its tag.
#[derive(Serialize, Deserialize)]
struct WValue<Meta>(WReplica, u64, (u64, u64), String, String, Shared<Meta>);

#[derive(Serialize, Deserialize)]
struct WDelta<Meta> {
    r: WReplica,
    c: WClouds,
    v: Vec<WValue<Meta>>,
    s: WContext,
    e: WContext,
}

#[derive(Serialize, Deserialize)]
struct WFull<Meta> {
    r: WReplica,
    x: WContext,
    c: WClouds,
    /// Replicas with whether each is up.
    u: Vec<(WReplica, bool)>,
    v: Vec<WValue<Meta>>,
}

#[derive(Serialize, Deserialize)]
enum WMessage<Meta> {
    #[serde(rename = "h")]
    Heartbeat {
        r: WReplica,
        d: Option<WDelta<Meta>>,
        c: (WReplica, WContext),
    },
    #[serde(rename = "q")]
    TransferReq {
        r: WReplica,
        c: (WReplica, WContext),
    },
    #[serde(rename = "d")]
    AckDelta { r: WReplica, d: WDelta<Meta> },
    #[serde(rename = "f")]
    AckFull { r: WReplica, f: WFull<Meta> },
    #[serde(rename = "p")]
    GracefulPermdown { r: WReplica },
}

fn w_replica(replica: &Replica<Arc<str>>) -> WReplica {
    WReplica(replica.name.to_string(), replica.vsn)
}

fn replica(w: WReplica) -> Replica<Arc<str>> {
    Replica::new(Arc::from(w.0), w.1)
}

fn w_context(context: &Context<Arc<str>>) -> WContext {
    context
        .iter()
        .map(|(replica, clock)| (w_replica(replica), *clock))
        .collect()
}

fn context(w: WContext) -> Context<Arc<str>> {
    w.into_iter()
        .map(|(name, clock)| (replica(name), clock))
        .collect()
}

fn w_clouds(clouds: &Clouds<Arc<str>>) -> WClouds {
    clouds
        .iter()
        .map(|(replica, dots)| (w_replica(replica), dots.iter().copied().collect()))
        .collect()
}

fn clouds(w: WClouds) -> Clouds<Arc<str>> {
    w.into_iter()
        .map(|(name, dots)| (replica(name), dots.into_iter().collect::<BTreeSet<_>>()))
        .filter(|(_, dots)| !dots.is_empty())
        .collect()
}

type Values<Meta> = BTreeMap<Tag<Arc<str>>, Value<PresenceId, Arc<Meta>>>;

fn w_values<Meta>(values: &Values<Meta>) -> Vec<WValue<Meta>> {
    values
        .iter()
        .map(|(tag, value)| {
            WValue(
                w_replica(&tag.replica),
                tag.clock,
                value.pid.parts(),
                value.topic.to_string(),
                value.key.to_string(),
                Shared(Arc::clone(&value.meta)),
            )
        })
        .collect()
}

fn values<Meta>(w: Vec<WValue<Meta>>) -> Values<Meta> {
    w.into_iter()
        .map(|WValue(name, clock, pid, topic, key, meta)| {
            (
                Tag::new(replica(name), clock),
                Value {
                    pid: PresenceId::from_parts(pid),
                    topic: Arc::from(topic),
                    key: Arc::from(key),
                    meta: meta.0,
                },
            )
        })
        .collect()
}

fn w_delta<Meta>(delta: &Delta<Arc<str>, PresenceId, Arc<Meta>>) -> WDelta<Meta> {
    WDelta {
        r: w_replica(&delta.replica),
        c: w_clouds(&delta.clouds),
        v: w_values(&delta.values),
        s: w_context(&delta.range.0),
        e: w_context(&delta.range.1),
    }
}

fn delta<Meta>(w: WDelta<Meta>) -> Delta<Arc<str>, PresenceId, Arc<Meta>> {
    Delta {
        replica: replica(w.r),
        clouds: clouds(w.c),
        values: values(w.v),
        range: (context(w.s), context(w.e)),
    }
}

/// Encodes `message`.
///
/// # Errors
///
/// The metadata's `Serialize` failed (it was encoded as JSON when it was
/// tracked, so a failure here is the metadata's own inconsistency).
pub(crate) fn encode<Meta: Serialize>(message: &Msg<Meta>) -> Result<Vec<u8>, String> {
    let wire = match message {
        Message::Heartbeat {
            from,
            delta,
            clocks,
        } => WMessage::Heartbeat {
            r: w_replica(from),
            d: delta.as_ref().map(w_delta),
            c: (w_replica(&clocks.0), w_context(&clocks.1)),
        },
        Message::TransferReq { from, clocks } => WMessage::TransferReq {
            r: w_replica(from),
            c: (w_replica(&clocks.0), w_context(&clocks.1)),
        },
        Message::TransferAck {
            from,
            payload: Transfer::Delta(delta),
        } => WMessage::AckDelta {
            r: w_replica(from),
            d: w_delta(delta),
        },
        Message::TransferAck {
            from,
            payload: Transfer::Full(full),
        } => WMessage::AckFull {
            r: w_replica(from),
            f: WFull {
                r: w_replica(&full.replica),
                x: w_context(&full.context),
                c: w_clouds(&full.clouds),
                u: full
                    .replicas
                    .iter()
                    .map(|(replica, status)| (w_replica(replica), *status == Status::Up))
                    .collect(),
                v: w_values(&full.values),
            },
        },
        Message::GracefulPermdown { from } => WMessage::GracefulPermdown { r: w_replica(from) },
    };
    rmp_serde::to_vec_named(&(VERSION, wire)).map_err(|error| error.to_string())
}

/// Decodes a message.
///
/// # Errors
///
/// Bytes that are not a message of [`VERSION`] with metadata of `Meta`.
pub(crate) fn decode<Meta: DeserializeOwned>(bytes: &[u8]) -> Result<Msg<Meta>, String> {
    let (version, wire): (u8, serde::de::IgnoredAny) =
        rmp_serde::from_slice(bytes).map_err(|error| error.to_string())?;
    let _ = wire;
    if version != VERSION {
        return Err(format!("presence message of unknown version {version}"));
    }
    let (_, wire): (u8, WMessage<Meta>) =
        rmp_serde::from_slice(bytes).map_err(|error| error.to_string())?;
    Ok(match wire {
        WMessage::Heartbeat { r, d, c } => Message::Heartbeat {
            from: replica(r),
            delta: d.map(delta),
            clocks: (replica(c.0), context(c.1)),
        },
        WMessage::TransferReq { r, c } => Message::TransferReq {
            from: replica(r),
            clocks: (replica(c.0), context(c.1)),
        },
        WMessage::AckDelta { r, d } => Message::TransferAck {
            from: replica(r),
            payload: Transfer::Delta(delta(d)),
        },
        WMessage::AckFull { r, f } => Message::TransferAck {
            from: replica(r),
            payload: Transfer::Full(FullState {
                replica: replica(f.r),
                context: context(f.x),
                clouds: clouds(f.c),
                replicas: f
                    .u
                    .into_iter()
                    .map(|(name, up)| (replica(name), if up { Status::Up } else { Status::Down }))
                    .collect(),
                values: values(f.v),
            }),
        },
        WMessage::GracefulPermdown { r } => Message::GracefulPermdown { from: replica(r) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Meta {
        name: String,
    }

    fn me(name: &str, vsn: u64) -> Replica<Arc<str>> {
        Replica::new(Arc::from(name), vsn)
    }

    #[test]
    fn a_heartbeat_with_a_delta_round_trips() {
        let a = me("a", 7);
        let mut values = BTreeMap::new();
        values.insert(
            Tag::new(a.clone(), 1),
            Value {
                pid: PresenceId::from_parts((9, 1)),
                topic: Arc::from("team:1"),
                key: Arc::from("user-1"),
                meta: Arc::new(Meta { name: "Ada".into() }),
            },
        );
        let mut clouds = Clouds::new();
        clouds.insert(a.clone(), [1, 3].into_iter().collect());
        let context: Context<Arc<str>> = [(a.clone(), 3), (me("b", 2), 5)].into_iter().collect();
        let message: Msg<Meta> = Message::Heartbeat {
            from: a.clone(),
            delta: Some(Delta {
                replica: a.clone(),
                clouds,
                values,
                range: (Context::new(), context.clone()),
            }),
            clocks: (a, context),
        };
        let bytes = encode(&message).expect("encodes");
        assert_eq!(decode::<Meta>(&bytes), Ok(message));
    }

    #[test]
    fn an_unknown_version_or_garbage_is_refused() {
        let message: Msg<Meta> = Message::GracefulPermdown { from: me("a", 1) };
        let mut bytes = encode(&message).expect("encodes");
        assert_eq!(decode::<Meta>(&bytes), Ok(message));
        // [version, ...]: a fixarray marker, then the version as a fixint.
        bytes[1] = VERSION + 1;
        assert!(decode::<Meta>(&bytes).is_err());
        assert!(decode::<Meta>(b"\xff\x00garbage").is_err());
    }
}
