//! Decoding a message does not depend on the order of its fields: the same
//! fields in every order give the same message, or an error for every order,
//! through every serde_json entry point and the wire; and decoding takes
//! little memory beyond its input, whichever field comes first.
//!
//! A test binary of its own because it installs a counting global allocator.

use std::sync::{Mutex, MutexGuard, PoisonError};

use staff_pubsub::staff::{
    self, Department, DepartmentEvent, Message, Person, PersonEvent, Team, TeamEvent,
    TeamMembership, TeamMembershipEvent,
};
use staff_pubsub::{wire, Uuid};

#[global_allocator]
static ALLOCATOR: staff_pubsub_count_alloc::Counting = staff_pubsub_count_alloc::Counting;

/// The allocator counts every thread: the tests of this binary take turns.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

const ID: &str = "019ab6a3-c1c6-748b-9697-6c080717373b";
const DEPARTMENT: &str = "019ab6a2-2317-7c06-bd46-3e3923bc1aad";

fn id() -> Uuid {
    Uuid::parse_str(ID).unwrap()
}

/// One top-level entry of a message: its key and its value, as JSON bytes.
type Entry = (Vec<u8>, Vec<u8>);

fn entry(key: &str, value: impl Into<Vec<u8>>) -> Entry {
    (format!("\"{key}\"").into_bytes(), value.into())
}

/// A message's entries: its fields in canonical order, as serde_json writes them.
fn entries_of(message: &Message) -> Vec<Entry> {
    let serde_json::Value::Object(fields) = serde_json::to_value(message).unwrap() else {
        unreachable!("a message is an object")
    };
    ["scope", "event", "payload"]
        .iter()
        .map(|key| entry(key, fields[*key].to_string()))
        .collect()
}

/// A `team_created` message, the base of most cases, and its payload's JSON.
fn team() -> Message {
    Message::Team(
        TeamEvent::Created,
        Team {
            uuid: id(),
            name: Some("Core".to_owned()),
            department_uuid: Some(Uuid::parse_str(DEPARTMENT).unwrap()),
        },
    )
}

fn team_entries(payload: impl Into<Vec<u8>>) -> Vec<Entry> {
    vec![
        entry("scope", "\"staff\""),
        entry("event", "\"team_created\""),
        entry("payload", payload),
    ]
}

/// A `team_created` payload with `extra` after its known fields.
fn team_payload(extra: &str) -> String {
    format!(r#"{{"uuid":"{ID}","name":"Core","department_uuid":"{DEPARTMENT}"{extra}}}"#)
}

/// A valid message of every stock event.
fn every_event() -> Vec<Message> {
    let department = || Department {
        uuid: id(),
        name: Some("Ops".to_owned()),
    };
    let membership = || TeamMembership {
        uuid: id(),
        team_uuid: Uuid::from_u128(2),
        staff_person_uuid: Uuid::from_u128(3),
    };
    let mut messages = Vec::new();
    messages.extend(
        DepartmentEvent::ALL
            .iter()
            .map(|event| Message::Department(*event, department())),
    );
    messages.extend(TeamEvent::ALL.iter().map(|event| match team() {
        Message::Team(_, payload) => Message::Team(*event, payload),
        _ => unreachable!(),
    }));
    messages.extend(
        PersonEvent::ALL
            .iter()
            .map(|event| Message::Person(*event, Person { uuid: id() })),
    );
    messages.extend(
        TeamMembershipEvent::ALL
            .iter()
            .map(|event| Message::TeamMembership(*event, membership())),
    );
    assert_eq!(messages.len(), staff::EVENTS.len());
    messages
}

/// Every case: a name, the entries, and the message every order must give
/// (`None`: an error for every order).
fn cases() -> Vec<(String, Vec<Entry>, Option<Message>)> {
    let mut cases: Vec<(String, Vec<Entry>, Option<Message>)> = every_event()
        .into_iter()
        .map(|message| {
            let name = format!("valid {}", message.event_name());
            (name, entries_of(&message), Some(message))
        })
        .collect();
    let ok = |name: &str, entries: Vec<Entry>| (name.to_owned(), entries, Some(team()));
    let err = |name: &str, entries: Vec<Entry>| (name.to_owned(), entries, None);
    let deep = |depth: usize| format!("{}0{}", "[{\"a\":".repeat(depth), "}]".repeat(depth));
    let with = |extra: Vec<Entry>| {
        let mut entries = team_entries(team_payload(""));
        entries.extend(extra);
        entries
    };
    let uuid_bytes: Vec<String> = id().as_bytes().iter().map(u8::to_string).collect();
    let uuid_array = format!("[{}]", uuid_bytes.join(","));

    cases.extend([
        // Unknown fields, of every JSON type, at the top level and in the payload.
        ok(
            "unknown top-level scalars",
            with(vec![
                entry("null", "null"),
                entry("number", "-1.5e300"),
            ]),
        ),
        ok(
            "unknown top-level bool and string",
            with(vec![entry("flag", "true"), entry("text", r#""x\"y""#)]),
        ),
        ok(
            "unknown top-level nested, with the message's own field names",
            with(vec![
                entry("nested", r#"{"scope":"other","event":"nope","payload":[1,{"a":null}]}"#),
                entry("list", r#"[[],{},[{"b":[false]}]]"#),
            ]),
        ),
        ok(
            "unknown payload fields of every type",
            team_entries(team_payload(
                r#","null":null,"f":false,"n":-0.5e-3,"s":"\n","a":[1,"x",[{}]],"o":{"uuid":"not one","p":{"q":[true]}}"#,
            )),
        ),
        ok(
            "an unknown payload number out of f64 range",
            team_entries(team_payload(r#","huge":1e400"#)),
        ),
        ok(
            "a lone surrogate in an unknown payload field",
            team_entries(team_payload(r#","note":"\ud800""#)),
        ),
        ok(
            "a lone surrogate in an unknown top-level field",
            with(vec![entry("note", r#""\udc00x""#)]),
        ),
        ok(
            "an unknown payload field nested 300 deep",
            team_entries(team_payload(&format!(",\"deep\":{}", deep(300)))),
        ),
        ok(
            "an unknown top-level field nested 300 deep",
            with(vec![entry("deep", deep(300))]),
        ),
        ok(
            "the payload in sequence form",
            team_entries(format!(r#"["{ID}","Core","{DEPARTMENT}"]"#)),
        ),
        ok(
            "escapes in keys and strings",
            vec![
                (br#""sc\u006fpe""#.to_vec(), br#""st\u0061ff""#.to_vec()),
                entry("event", "\"team_created\""),
                entry(
                    "payload",
                    format!(r#"{{"uuid":"{ID}","n\u0061me":"C\u006fre","department_uuid":"{DEPARTMENT}"}}"#),
                ),
            ],
        ),
        // Errors.
        err(
            "a duplicate uuid in the payload",
            team_entries(format!(r#"{{"uuid":"{ID}","uuid":"{ID}","name":"Core"}}"#)),
        ),
        err(
            "a uuid as an array of 16 numbers",
            team_entries(format!(r#"{{"uuid":{uuid_array},"name":"Core"}}"#)),
        ),
        err(
            "a uuid that does not parse",
            team_entries(r#"{"uuid":"019ab6a3-nope"}"#),
        ),
        err("a payload without uuid", team_entries(r#"{"name":"Core"}"#)),
        err(
            "a lone surrogate in the name",
            team_entries(format!(r#"{{"uuid":"{ID}","name":"\ud800"}}"#)),
        ),
        err(
            "invalid UTF-8 in an unknown payload field",
            team_entries(
                [
                    team_payload("").trim_end_matches('}').as_bytes(),
                    b",\"bytes\":\"\xff\xfe\"}",
                ]
                .concat(),
            ),
        ),
        err("a null payload", team_entries("null")),
        err("an empty payload", team_entries("{}")),
        err("a string payload", team_entries(r#""payload""#)),
        err("a number payload", team_entries("5")),
        err(
            "an unknown event",
            vec![
                entry("scope", "\"staff\""),
                entry("event", "\"team_exploded\""),
                entry("payload", team_payload("")),
            ],
        ),
        err(
            "an event that is not a string",
            vec![
                entry("scope", "\"staff\""),
                entry("event", "1"),
                entry("payload", team_payload("")),
            ],
        ),
        err(
            "another scope",
            vec![
                entry("scope", "\"billing\""),
                entry("event", "\"team_created\""),
                entry("payload", team_payload("")),
            ],
        ),
        err(
            "no payload",
            vec![
                entry("scope", "\"staff\""),
                entry("event", "\"team_created\""),
                entry("extra", "{}"),
            ],
        ),
        err(
            "no event",
            vec![entry("scope", "\"staff\""), entry("payload", team_payload(""))],
        ),
        err(
            "no scope",
            vec![
                entry("event", "\"team_created\""),
                entry("payload", team_payload("")),
            ],
        ),
        err(
            "a duplicate event",
            with(vec![entry("event", "\"team_created\"")]),
        ),
        err(
            "a duplicate scope",
            with(vec![entry("scope", "\"staff\"")]),
        ),
        err(
            "a duplicate payload",
            with(vec![entry("payload", team_payload(""))]),
        ),
        err(
            "an unknown event and a duplicate uuid",
            vec![
                entry("scope", "\"staff\""),
                entry("event", "\"team_exploded\""),
                entry("payload", format!(r#"{{"uuid":"{ID}","uuid":"{ID}"}}"#)),
            ],
        ),
    ]);
    cases
}

/// Every order of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for shorter in permutations(n - 1) {
        for at in 0..=shorter.len() {
            let mut order = shorter.clone();
            order.insert(at, n - 1);
            all.push(order);
        }
    }
    all
}

/// The message's bytes with its entries in `order`.
fn render(entries: &[Entry], order: &[usize]) -> Vec<u8> {
    let mut bytes = b"{".to_vec();
    for (i, &at) in order.iter().enumerate() {
        if i > 0 {
            bytes.push(b',');
        }
        let (key, value) = &entries[at];
        bytes.extend_from_slice(key);
        bytes.push(b':');
        bytes.extend_from_slice(value);
    }
    bytes.push(b'}');
    bytes
}

/// An envelope carrying `message` as its message.
fn envelope(message: &[u8]) -> Vec<u8> {
    let head = br#"{"v":1,"origin":"node-a","mode":"all","topics":["staff:teams"],"message":"#;
    [head.as_slice(), message, b"}"].concat()
}

/// Decodes `bytes` through every serde_json entry point and the wire.
fn decode_all(bytes: &[u8]) -> Vec<(&'static str, Result<Message, String>)> {
    let mut outcomes = vec![
        (
            "from_slice",
            serde_json::from_slice::<Message>(bytes).map_err(|e| e.to_string()),
        ),
        (
            "from_reader",
            serde_json::from_reader::<_, Message>(bytes).map_err(|e| e.to_string()),
        ),
    ];
    // Not UTF-8: not a `str`, and refused by the wire's envelope decoding.
    if let Ok(text) = std::str::from_utf8(bytes) {
        outcomes.push((
            "from_str",
            serde_json::from_str::<Message>(text).map_err(|e| e.to_string()),
        ));
        let envelope = envelope(bytes);
        let incoming = wire::decode(&envelope, envelope.len()).expect("a valid envelope");
        outcomes.push((
            "wire",
            incoming.message::<Message>().map_err(|e| e.to_string()),
        ));
    }
    outcomes
}

#[test]
fn every_order_of_the_fields_gives_the_same_outcome() {
    let _serial = serial();
    let mut checked = 0;
    // Every case that fails, with its first failure.
    let mut failures = Vec::new();
    for (name, entries, expected) in cases() {
        let mut failure = None;
        for order in permutations(entries.len()) {
            let bytes = render(&entries, &order);
            for (decoder, outcome) in decode_all(&bytes) {
                checked += 1;
                if outcome.as_ref().ok() != expected.as_ref() && failure.is_none() {
                    failure = Some(format!(
                        "{name}: {decoder}, order {order:?}: {}\n  expected {}, got {outcome:?}",
                        String::from_utf8_lossy(&bytes),
                        if expected.is_some() { "Ok" } else { "Err" },
                    ));
                }
            }
        }
        failures.extend(failure);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 2_000, "{checked}");
}

#[test]
fn the_same_error_names_the_problem_in_every_order() {
    let _serial = serial();
    for (entries, needle) in [
        (
            team_entries(format!(r#"{{"uuid":"{ID}","uuid":"{ID}"}}"#)),
            "duplicate field `uuid`",
        ),
        (
            vec![
                entry("scope", "\"staff\""),
                entry("event", "\"team_exploded\""),
                entry("payload", team_payload("")),
            ],
            "unknown variant `team_exploded`",
        ),
        (team_entries("null"), "invalid type: null"),
    ] {
        for order in permutations(entries.len()) {
            let bytes = render(&entries, &order);
            let text = std::str::from_utf8(&bytes).unwrap();
            let error = serde_json::from_str::<Message>(text)
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}

/// One way of decoding a message.
type Decode<'a> = Box<dyn FnOnce() -> Result<Message, String> + 'a>;

#[test]
fn messagepack_decodes_in_either_order() {
    let _serial = serial();
    /// The message's fields, payload first.
    #[derive(serde::Serialize)]
    struct PayloadFirst<'a> {
        payload: &'a Team,
        event: &'a str,
        scope: &'a str,
    }
    let message = team();
    let Message::Team(event, payload) = &message else {
        unreachable!()
    };
    let payload_first = PayloadFirst {
        payload,
        event: event.as_str(),
        scope: "staff",
    };
    // Not human-readable, so not JSON: a payload before its event is
    // buffered, one after it is decoded in place; the compact form is a
    // sequence, payload included.
    for packed in [
        rmp_serde::to_vec_named(&message).unwrap(),
        rmp_serde::to_vec_named(&payload_first).unwrap(),
        rmp_serde::to_vec(&message).unwrap(),
    ] {
        let decoded: Message = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(decoded, message);
    }
}

/// Runs `decode` and returns the peak extra bytes it
/// allocated, with the decoded message (freed outside the count).
fn measure(decode: impl FnOnce() -> Result<Message, String>) -> (usize, Message) {
    let (peak, message) = staff_pubsub_count_alloc::peak_bytes(decode);
    (
        usize::try_from(peak).unwrap_or(0),
        message.expect("the large message decodes"),
    )
}

#[test]
fn a_large_payload_takes_little_memory_in_any_order() {
    let _serial = serial();
    const SIZE: usize = 1 << 20;
    // Many small values (what a tree of values blows up most), and one long
    // string the message keeps.
    let mut small = String::from(r#","many":["#);
    while small.len() < SIZE {
        small.push_str(r#"{"k":1},"#);
    }
    small.push_str("0]");
    let long = format!(
        r#"{{"uuid":"{ID}","name":"{}","department_uuid":"{DEPARTMENT}"}}"#,
        "n".repeat(SIZE)
    );
    for (what, payload) in [
        ("many small values", team_payload(&small)),
        ("a long name", long),
    ] {
        let entries = team_entries(payload);
        for (order, first) in [([2, 0, 1], "payload first"), ([0, 1, 2], "event first")] {
            let bytes = render(&entries, &order);
            let text = std::str::from_utf8(&bytes).unwrap();
            let envelope = envelope(&bytes);
            let decoders: [(&str, Decode<'_>); 4] = [
                (
                    "from_str",
                    Box::new(|| serde_json::from_str(text).map_err(|e| e.to_string())),
                ),
                (
                    "from_slice",
                    Box::new(|| serde_json::from_slice(&bytes).map_err(|e| e.to_string())),
                ),
                (
                    "from_reader",
                    Box::new(|| {
                        serde_json::from_reader(bytes.as_slice()).map_err(|e| e.to_string())
                    }),
                ),
                (
                    "wire",
                    Box::new(|| {
                        wire::decode(&envelope, envelope.len())
                            .and_then(|incoming| incoming.message())
                            .map_err(|e| e.to_string())
                    }),
                ),
            ];
            for (decoder, decode) in decoders {
                let (peak, message) = measure(decode);
                let ratio = peak as f64 / bytes.len() as f64;
                eprintln!(
                    "{what}, {first}, {decoder}: {} bytes in, peak {peak} bytes extra ({ratio:.2}x)",
                    bytes.len()
                );
                assert!(
                    peak <= 4 * bytes.len(),
                    "{what}, {first}, {decoder}: {peak} bytes for {} bytes in ({ratio:.2}x)",
                    bytes.len()
                );
                assert_eq!(message.uuid(), id());
            }
        }
    }
}
