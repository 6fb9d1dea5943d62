//! Peak memory of decoding tracker frames, hostile ones included: a small
//! multiple of the frame's size. Its own test binary, with one test,
//! because it installs the counting allocator and counts every thread's
//! allocations.

use staff_pubsub::phoenix::tracker::{
    decode_tracker_frame, encode_tracker_frame, MapSet, MapSetForm, Meta, Pid, Presence, RawTerm,
    ReplicaRef, State, Tag, TrackerFrame, TrackerMessage,
};
use staff_pubsub::phoenix::{AtomEncoding, NodeName, Term, DEFAULT_MAX_FRAME_SIZE};
use staff_pubsub_count_alloc::{peak_bytes, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The peak bytes allocated while decoding `frame`, and whether it decoded.
fn peak(frame: &[u8]) -> (usize, bool) {
    let (peak, ok) = peak_bytes(|| decode_tracker_frame(frame, DEFAULT_MAX_FRAME_SIZE).is_ok());
    (usize::try_from(peak).unwrap_or(0), ok)
}

fn tiny() -> ReplicaRef {
    ReplicaRef::new(NodeName::Binary(String::new()), 0)
}

fn frame(message: TrackerMessage) -> Vec<u8> {
    // Not canonicalized: the order of the maps does not matter here.
    let frame = TrackerFrame {
        mode: staff_pubsub::phoenix::FrameMode::Except,
        node: NodeName::Binary("x".into()),
        topic: "phx_presence:Elixir.T_shard0".into(),
        message,
        atoms: AtomEncoding::Latin1,
    };
    encode_tracker_frame(&frame, 0).expect("encodes")
}

fn delta(clouds: Vec<Tag>, values: Vec<(Tag, Presence)>) -> State {
    State::delta(
        tiny(),
        vec![(tiny(), MapSet::new(clouds, MapSetForm::Unversioned))],
        values,
        (Vec::new(), Vec::new()),
    )
}

#[test]
fn decoding_a_tracker_frame_allocates_a_small_multiple_of_it() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("phoenix/tracker");
    let mut golden = 0;
    let mut worst = 0.0_f64;
    for entry in std::fs::read_dir(&dir).expect("tests/phoenix/tracker") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|ext| ext != "bin") {
            continue;
        }
        let frame = std::fs::read(&path).expect("frame");
        let (peak, ok) = peak(&frame);
        assert!(ok, "{}", path.display());
        worst = worst.max(peak as f64 / frame.len() as f64);
        golden += 1;
    }
    assert_eq!(golden, 142);
    eprintln!("golden frames: peak at most {worst:.2} x the frame");
    assert!(worst <= 4.0, "{worst}");

    // The smallest entries of each typed part, as many as fit in about
    // 900 kB: the typed model's worst ratio.
    let n = 60_000;
    let cases = [
        (
            "context entries",
            frame(TrackerMessage::heartbeat(
                tiny(),
                None,
                (0..n)
                    .map(|i| (ReplicaRef::new(NodeName::Binary(String::new()), i), 0))
                    .collect(),
            )),
        ),
        (
            "cloud dots",
            frame(TrackerMessage::heartbeat(
                tiny(),
                Some(delta(
                    (0..n).map(|c| Tag::new(tiny(), c)).collect(),
                    Vec::new(),
                )),
                Vec::new(),
            )),
        ),
        (
            "values",
            frame(TrackerMessage::heartbeat(
                tiny(),
                Some(delta(
                    Vec::new(),
                    (0..n / 4)
                        .map(|c| {
                            (
                                Tag::new(tiny(), c),
                                Presence {
                                    pid: Pid::of_replica("", 0),
                                    topic: String::new(),
                                    key: RawTerm::from_term(&Term::Int(0), AtomEncoding::Latin1)
                                        .expect("0"),
                                    meta: Meta::from_pairs(Vec::new(), AtomEncoding::Latin1)
                                        .expect("empty"),
                                },
                            )
                        })
                        .collect(),
                )),
                Vec::new(),
            )),
        ),
        (
            "a key of 800,000 empty lists",
            frame(TrackerMessage::heartbeat(
                tiny(),
                Some(delta(
                    Vec::new(),
                    vec![(
                        Tag::new(tiny(), 1),
                        Presence {
                            pid: Pid::of_replica("", 0),
                            topic: String::new(),
                            key: RawTerm::from_term(
                                &Term::List(vec![Term::List(Vec::new(), None); 800_000], None),
                                AtomEncoding::Latin1,
                            )
                            .expect("a key"),
                            meta: Meta::from_pairs(Vec::new(), AtomEncoding::Latin1)
                                .expect("empty"),
                        },
                    )],
                )),
                Vec::new(),
            )),
        ),
    ];
    for (what, frame) in cases {
        assert!(
            frame.len() < DEFAULT_MAX_FRAME_SIZE,
            "{what}: {}",
            frame.len()
        );
        let (bytes, ok) = peak(&frame);
        assert!(ok, "{what}");
        let ratio = bytes as f64 / frame.len() as f64;
        eprintln!("{what}: {} bytes, peak {bytes} ({ratio:.1} x)", frame.len());
        assert!(ratio <= 6.0, "{what}: {ratio}");
    }
}
