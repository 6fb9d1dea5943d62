//! The Phoenix frame (Erlang External Term Format, `phoenix_pubsub_redis`
//! v3) against the JSON envelope, with the method of `benches/wire.rs`:
//! one stock `team_created` message (name and department set), the best
//! of several rounds of encode and decode.
//!
//! Run with `cargo bench -p staff-pubsub-bench --features phoenix --bench phoenix_wire`.
//! Prints, per format, the encoded size, nanoseconds and frames (or
//! envelopes) per second. A Phoenix broadcast to the team's three topics
//! is three frames; the JSON envelope carries the three topics in one.

use std::hint::black_box;
use std::time::{Duration, Instant};

use staff_pubsub::phoenix::{decode_frame, encode_frame, FrameMode, DEFAULT_MAX_FRAME_SIZE};
use staff_pubsub::staff::{self, Team, TeamEvent};
use staff_pubsub::transport::{Envelope, Mode};
use staff_pubsub::{wire, Topic, Uuid};

const ROUNDS: usize = 7;
const ITERATIONS: u32 = 50_000;

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

fn per_second(time: Duration) -> f64 {
    1.0 / time.as_secs_f64()
}

fn report(name: &str, bytes: usize, encode: Duration, decode: Duration) {
    println!(
        "{name:<24} {bytes:>4} bytes   encode {:>5} ns ({:>9.0}/s)   decode {:>5} ns ({:>9.0}/s)",
        encode.as_nanos(),
        per_second(encode),
        decode.as_nanos(),
        per_second(decode),
    );
}

fn main() {
    let department = Uuid::parse_str("019ab6a2-2317-7c06-bd46-3e3923bc1aad").unwrap();
    let team = Uuid::parse_str("019ab6a3-c1c6-748b-9697-6c080717373b").unwrap();
    let message = staff::Message::Team(
        TeamEvent::Created,
        Team {
            uuid: team,
            name: Some("Squad A".into()),
            department_uuid: Some(department),
        },
    );
    let max = DEFAULT_MAX_FRAME_SIZE;

    // The Phoenix frame on `staff:teams`: the golden frame 01a's bytes.
    let frame = encode_frame(FrameMode::Except, "phx-a", "staff:teams", &message, 0).unwrap();
    assert_eq!(frame.len(), 220);
    let decoded = decode_frame::<staff::Message>(&frame, max).unwrap();
    assert_eq!(decoded.message, message);
    let encode = best_of(|| {
        black_box(
            encode_frame(
                FrameMode::Except,
                "phx-a",
                "staff:teams",
                black_box(&message),
                0,
            )
            .unwrap(),
        );
    });
    let decode = best_of(|| {
        black_box(decode_frame::<staff::Message>(black_box(&frame), max).unwrap());
    });
    report("etf frame", frame.len(), encode, decode);

    // Compressed as `compression_level: 6` does.
    let compressed = encode_frame(FrameMode::Except, "phx-a", "staff:teams", &message, 6).unwrap();
    let encode = best_of(|| {
        black_box(
            encode_frame(
                FrameMode::Except,
                "phx-a",
                "staff:teams",
                black_box(&message),
                6,
            )
            .unwrap(),
        );
    });
    let decode = best_of(|| {
        black_box(decode_frame::<staff::Message>(black_box(&compressed), max).unwrap());
    });
    report("etf frame, zlib level 6", compressed.len(), encode, decode);

    // The JSON envelope of the same broadcast (its three topics in one).
    let topics: Vec<Topic> = vec![
        staff::topic_teams(),
        staff::topic_team(team),
        staff::topic_department(department),
    ];
    let envelope = || Envelope {
        origin: "phx-a",
        instance: Some(0x5f0c_3a9e_17d2_b846),
        mode: Mode::ExceptOrigin,
        topics: &topics,
        message: &message,
    };
    let max = wire::DEFAULT_MAX_MESSAGE_SIZE;
    let json = wire::encode(&envelope(), max).unwrap();
    let back: staff::Message = wire::decode(&json, max).unwrap().message().unwrap();
    assert_eq!(back, message);
    let encode = best_of(|| {
        black_box(wire::encode(black_box(&envelope()), max).unwrap());
    });
    let decode = best_of(|| {
        let incoming = wire::decode(black_box(&json), max).unwrap();
        black_box(incoming.message::<staff::Message>().unwrap());
    });
    report("json envelope (3 topics)", json.len(), encode, decode);
}
