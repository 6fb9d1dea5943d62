//! Peak memory of decoding Phoenix frames, hostile ones included: never
//! more than a small multiple of the frame's (inflated) size. Its own test
//! binary, with one test, because it installs the counting allocator and
//! counts every thread's allocations.

use staff_pubsub::phoenix::{decode_frame, encode_frame, FrameMode, DEFAULT_MAX_FRAME_SIZE};
use staff_pubsub::staff::{Message, Team, TeamEvent};
use staff_pubsub::Uuid;
use staff_pubsub_count_alloc::{peak_bytes, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TEAM: &str = "019ab6a3-c1c6-748b-9697-6c080717373b";

/// What one zlib inflate state costs (miniz_oxide's, with its 32 KiB
/// window), whatever the frame.
const INFLATE_STATE: usize = 64 * 1024;

/// The peak bytes allocated while decoding `frame`, and whether it decoded.
fn peak(frame: &[u8]) -> (usize, bool) {
    let (peak, ok) = peak_bytes(|| decode_frame::<Message>(frame, DEFAULT_MAX_FRAME_SIZE).is_ok());
    (usize::try_from(peak).unwrap_or(0), ok)
}

fn atom(name: &str) -> Vec<u8> {
    let mut out = vec![100, 0, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out
}

fn binary(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![109];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// `{3, :except, "x", "staff:teams", {:staff, :team_created, %{uuid: TEAM, key => value}}, Phoenix.PubSub}`.
fn team_created_with(key: &str, value: &[u8]) -> Vec<u8> {
    let mut frame = vec![131, 104, 6, 97, 3];
    frame.extend(atom("except"));
    frame.extend(binary(b"x"));
    frame.extend(binary(b"staff:teams"));
    frame.extend_from_slice(&[104, 3]);
    frame.extend(atom("staff"));
    frame.extend(atom("team_created"));
    frame.extend_from_slice(&[116, 0, 0, 0, 2]);
    frame.extend(atom("uuid"));
    frame.extend(binary(TEAM.as_bytes()));
    frame.extend(atom(key));
    frame.extend_from_slice(value);
    frame.extend(atom("Elixir.Phoenix.PubSub"));
    frame
}

#[test]
fn decoding_allocates_a_small_multiple_of_the_frame() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("phoenix");
    let mut golden = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/phoenix") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|ext| ext != "bin") {
            continue;
        }
        let frame = std::fs::read(&path).expect("frame");
        let (peak, _) = peak(&frame);
        let compressed = frame[1] == 80;
        let bound = if compressed {
            3 * 219 + INFLATE_STATE
        } else {
            2 * frame.len() + 256
        };
        assert!(
            peak <= bound,
            "{}: {peak} bytes for {} (bound {bound})",
            path.display(),
            frame.len()
        );
        golden += 1;
    }
    assert_eq!(golden, 29);

    // Close to the maximum: an ignored list of 900,000 elements is never
    // materialised.
    let mut list = vec![108];
    list.extend_from_slice(&900_000_u32.to_be_bytes());
    list.extend(std::iter::repeat_n(106_u8, 900_001));
    let frame = team_created_with("extra", &list);
    let (bytes, ok) = peak(&frame);
    assert!(ok);
    assert!(bytes <= 1024, "{bytes} bytes for an ignored list");

    // A name of 900,000 bytes: the name itself, once.
    let name = vec![b'a'; 900_000];
    let frame = team_created_with("name", &binary(&name));
    let (bytes, ok) = peak(&frame);
    assert!(ok);
    assert!(bytes <= 900_000 + 1024, "{bytes} bytes for a 900 kB name");

    // Hostile: stated lengths beyond the frame, deep nesting, many atoms.
    let mut hostile: Vec<Vec<u8>> = Vec::new();
    hostile.push(team_created_with("extra", &[108, 255, 255, 255, 255, 106]));
    hostile.push(team_created_with(
        "extra",
        &[116, 255, 255, 255, 255, 106, 106],
    ));
    hostile.push(team_created_with("extra", &[109, 255, 255, 255, 255, 0]));
    let mut deep = Vec::new();
    for _ in 0..150_000 {
        deep.extend_from_slice(&[104, 1]);
    }
    deep.push(106);
    hostile.push(team_created_with("extra", &deep));
    let mut atoms = vec![116];
    atoms.extend_from_slice(&40_000_u32.to_be_bytes());
    for i in 0..40_000 {
        atoms.extend(atom(&format!("atom_{i:06}")));
        atoms.push(106);
    }
    let many_atoms = team_created_with("extra", &atoms);
    for frame in &hostile {
        let (bytes, ok) = peak(frame);
        assert!(!ok);
        assert!(bytes <= 256, "{bytes} bytes to refuse a hostile frame");
    }
    let (bytes, ok) = peak(&many_atoms);
    assert!(ok, "40,000 ignored atom keys are fine");
    assert!(bytes <= 1024, "{bytes} bytes for 40,000 atoms");

    // Compressed: a stated size over the maximum is refused before
    // inflating; a 1 MB term from a 1 kB stream costs the term.
    let big = Message::Team(
        TeamEvent::Created,
        Team {
            uuid: Uuid::nil(),
            name: Some("a".repeat(1_000_000)),
            department_uuid: None,
        },
    );
    let frame = encode_frame(FrameMode::Except, "x", "staff:teams", &big, 9).expect("encoded");
    assert!(frame.len() < 4096, "{} bytes compressed", frame.len());
    let (bytes, ok) = peak(&frame);
    assert!(ok);
    assert!(
        bytes <= 3 * 1_000_300 + INFLATE_STATE,
        "{bytes} bytes for a 1 MB term"
    );
    let mut bomb = frame.clone();
    bomb[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
    let (bytes, ok) = peak(&bomb);
    assert!(!ok);
    assert!(bytes <= 256, "{bytes} bytes to refuse a zip bomb");
}
