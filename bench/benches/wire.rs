//! The envelope encoding, measured: JSON (the wire format) against
//! MessagePack (rmp-serde, maps with field names), for one stock
//! `team_person_added` message reaching its four topics.
//!
//! Run with `cargo bench -p staff-pubsub-bench --bench wire`. Prints, per
//! encoding, the encoded size and the best of several rounds of encode and
//! decode, in nanoseconds per envelope.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use staff_pubsub::staff::{self, TeamMembership, TeamMembershipEvent};
use staff_pubsub::transport::{Envelope, Mode};
use staff_pubsub::{wire, Topic, Uuid};

const ROUNDS: usize = 7;
const ITERATIONS: u32 = 50_000;

/// The same envelope fields, for MessagePack.
#[derive(Serialize)]
struct Outgoing<'a> {
    v: u64,
    origin: &'a str,
    mode: &'a str,
    topics: Vec<String>,
    message: &'a staff::Message,
}

#[derive(Deserialize)]
struct Incoming {
    v: u64,
    origin: String,
    mode: String,
    topics: Vec<String>,
    message: staff::Message,
}

/// The best time per iteration over [`ROUNDS`] rounds.
fn best_of(mut run: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ITERATIONS {
                run();
            }
            start.elapsed() / ITERATIONS
        })
        .min()
        .unwrap_or_default()
}

fn report(name: &str, bytes: usize, encode: Duration, decode: Duration) {
    println!(
        "{name:<12} {bytes:>5} bytes   encode {:>6} ns   decode {:>6} ns   total {:>6} ns",
        encode.as_nanos(),
        decode.as_nanos(),
        (encode + decode).as_nanos()
    );
}

fn main() {
    let message = staff::Message::TeamMembership(
        TeamMembershipEvent::TeamPersonAdded,
        TeamMembership {
            uuid: Uuid::parse_str("019ab6a3-c1c6-748b-9697-6c080717373b").unwrap(),
            team_uuid: Uuid::parse_str("019ab6a3-c1c6-7a3e-8d5f-1b2c3d4e5f60").unwrap(),
            staff_person_uuid: Uuid::parse_str("019ab6a3-c1c6-7f00-9abc-def012345678").unwrap(),
        },
    );
    let (team, person) = match &message {
        staff::Message::TeamMembership(_, m) => (m.team_uuid, m.staff_person_uuid),
        _ => unreachable!(),
    };
    let topics: Vec<Topic> = vec![
        staff::topic_teams(),
        staff::topic_team(team),
        staff::topic_people(),
        staff::topic_person(person),
    ];
    let max = wire::DEFAULT_MAX_MESSAGE_SIZE;
    let envelope = || Envelope {
        origin: "node-a",
        instance: Some(0x5f0c_3a9e_17d2_b846),
        mode: Mode::ExceptOrigin,
        topics: &topics,
        message: &message,
    };

    // JSON, through the crate's own wire functions.
    let json = wire::encode(&envelope(), max).unwrap();
    let decoded: staff::Message = wire::decode(&json, max).unwrap().message().unwrap();
    assert_eq!(decoded, message);
    let encode = best_of(|| {
        black_box(wire::encode(black_box(&envelope()), max).unwrap());
    });
    let decode = best_of(|| {
        let incoming = wire::decode(black_box(&json), max).unwrap();
        black_box(incoming.message::<staff::Message>().unwrap());
    });
    report("json", json.len(), encode, decode);

    // MessagePack, the same fields as a map with names.
    let outgoing = || Outgoing {
        v: wire::VERSION,
        origin: "node-a",
        mode: "except_origin",
        topics: topics.iter().map(Topic::to_string).collect(),
        message: &message,
    };
    let packed = rmp_serde::to_vec_named(&outgoing()).unwrap();
    let unpacked: Incoming = rmp_serde::from_slice(&packed).unwrap();
    assert_eq!(
        (unpacked.v, unpacked.origin.as_str(), unpacked.mode.as_str()),
        (wire::VERSION, "node-a", "except_origin")
    );
    assert_eq!(unpacked.topics.len(), 4);
    assert_eq!(unpacked.message, message);
    let encode = best_of(|| {
        black_box(rmp_serde::to_vec_named(black_box(&outgoing())).unwrap());
    });
    let decode = best_of(|| {
        black_box(rmp_serde::from_slice::<Incoming>(black_box(&packed)).unwrap());
    });
    report("messagepack", packed.len(), encode, decode);
    println!("\njson envelope: {}", String::from_utf8_lossy(&json));
}
