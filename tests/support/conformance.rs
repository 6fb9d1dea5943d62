//! Checks of a spec against `tests/conformance/staff.json`, generic over the
//! spec (the stock one, or a spec that extends it), so every spec that claims
//! the stock contract is held to every entry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use staff_pubsub::spec::Spec;
use staff_pubsub::{ParseTopicError, PubSub, Subscription, Topic, TryRecvError, Uuid};

/// What the checks need of a spec: its generated items, reached by name.
pub trait Contract {
    /// The spec's message type.
    type Message: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + Send + Sync + 'static;
    /// The spec as constant data.
    const SPEC: Spec;
    /// The spec's scope as JSON.
    fn scope() -> Value {
        Value::from(Self::SPEC.scope)
    }
    /// A fresh server for the spec's messages.
    fn pubsub() -> PubSub<Self::Message> {
        PubSub::new()
    }
    /// Calls the topic function named `function`.
    fn topic(function: &str, id: Option<Uuid>) -> Topic;
    /// The spec's strict topic parser.
    fn parse_topic(input: &str) -> Result<Topic, ParseTopicError>;
    /// The atoms of the event enum of `entity`, via its `ALL` and `as_str`.
    fn event_atoms(entity: &str) -> Vec<&'static str>;
    /// Calls the broadcast function named `function` on `pubsub`.
    fn broadcast(
        pubsub: &PubSub<Self::Message>,
        function: &str,
        message: Self::Message,
    ) -> impl std::future::Future<Output = Result<(), staff_pubsub::Error>>;
}

/// Implements [`Contract`] for a spec module that has the stock items.
#[macro_export]
macro_rules! contract_for {
    ($name:ident, $($spec:ident)::+) => {
        struct $name;

        impl $crate::conformance::Contract for $name {
            type Message = $($spec)::+::Message;
            const SPEC: ::staff_pubsub::spec::Spec = $($spec)::+::SPEC;

            fn topic(function: &str, id: Option<::staff_pubsub::Uuid>) -> ::staff_pubsub::Topic {
                use $($spec)::+ as s;
                match (function, id) {
                    ("topic_departments", None) => s::topic_departments(),
                    ("topic_teams", None) => s::topic_teams(),
                    ("topic_people", None) => s::topic_people(),
                    ("topic_department", Some(id)) => s::topic_department(id),
                    ("topic_team", Some(id)) => s::topic_team(id),
                    ("topic_person", Some(id)) => s::topic_person(id),
                    other => panic!("no topic function {other:?} in the contract"),
                }
            }

            fn parse_topic(input: &str) -> Result<::staff_pubsub::Topic, ::staff_pubsub::ParseTopicError> {
                $($spec)::+::parse_topic(input)
            }

            fn event_atoms(entity: &str) -> Vec<&'static str> {
                use $($spec)::+ as s;
                match entity {
                    "department" => s::DepartmentEvent::ALL.iter().map(|e| e.as_str()).collect(),
                    "team" => s::TeamEvent::ALL.iter().map(|e| e.as_str()).collect(),
                    "person" => s::PersonEvent::ALL.iter().map(|e| e.as_str()).collect(),
                    "team_membership" => s::TeamMembershipEvent::ALL.iter().map(|e| e.as_str()).collect(),
                    other => panic!("no entity {other:?} in the contract"),
                }
            }

            async fn broadcast(
                pubsub: &::staff_pubsub::PubSub<Self::Message>,
                function: &str,
                message: Self::Message,
            ) -> Result<(), ::staff_pubsub::Error> {
                use $($spec)::+ as s;
                match (function, message) {
                    ("broadcast_department", s::Message::Department(e, p)) => s::broadcast_department_on(pubsub, e, p).await,
                    ("broadcast_team", s::Message::Team(e, p)) => s::broadcast_team_on(pubsub, e, p).await,
                    ("broadcast_person", s::Message::Person(e, p)) => s::broadcast_person_on(pubsub, e, p).await,
                    ("broadcast_team_membership", s::Message::TeamMembership(e, p)) => {
                        s::broadcast_team_membership_on(pubsub, e, p).await
                    }
                    (function, message) => panic!("{function} cannot send {message:?}"),
                }
            }
        }
    };
}

/// The project's copy of the contract.
#[must_use]
pub fn contract_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/staff.json")
}

/// The contract, parsed.
///
/// # Panics
///
/// If the file is missing or not JSON.
#[must_use]
pub fn contract() -> Value {
    let text = std::fs::read_to_string(contract_path()).expect("tests/conformance/staff.json");
    serde_json::from_str(&text).expect("the contract is JSON")
}

/// The copy must stay byte-identical to `../shared/conformance/staff.json`
/// where that exists (the team's checkout and CI); a lone clone has only the
/// copy, which is what the other checks read.
///
/// # Panics
///
/// If the two differ.
pub fn check_copy_matches_shared() {
    let shared =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/staff.json");
    let Ok(shared) = std::fs::read(&shared) else {
        eprintln!("no shared contract beside the project: only the copy is checked");
        return;
    };
    let copy = std::fs::read(contract_path()).expect("the project copy");
    assert!(
        copy == shared,
        "tests/conformance/staff.json differs from ../shared/conformance/staff.json"
    );
}

fn id(contract: &Value, key: &str) -> Uuid {
    let text = contract["ids"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no id {key}"));
    Uuid::parse_str(text).expect("contract ids are UUIDs")
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect()
}

/// Every `topics` entry: the function prints the contract string.
pub fn check_topics<C: Contract>() {
    let contract = contract();
    for entry in contract["topics"].as_array().expect("topics") {
        let function = entry["fn"].as_str().expect("fn");
        let arg = entry["arg"].as_str().map(|key| id(&contract, key));
        assert_eq!(
            C::topic(function, arg).to_string(),
            entry["topic"],
            "{function}"
        );
    }
}

/// Every `parse_ok` and `parse_err` entry.
pub fn check_parse<C: Contract>() {
    let contract = contract();
    for entry in contract["topic_strings"]["parse_ok"]
        .as_array()
        .expect("parse_ok")
    {
        let input = entry["input"].as_str().expect("input");
        let parsed = C::parse_topic(input).unwrap_or_else(|e| panic!("{input:?} rejected: {e}"));
        assert_eq!(parsed.to_string(), entry["canonical"], "{input:?}");
    }
    for input in strings(&contract["topic_strings"]["parse_err"]) {
        assert!(C::parse_topic(input).is_err(), "{input:?} accepted");
    }
}

/// Every `events` entry, through the enums and through the route table.
pub fn check_events<C: Contract>() {
    let contract = contract();
    for (entity, atoms) in contract["events"].as_object().expect("events") {
        let expected = strings(atoms);
        assert_eq!(C::event_atoms(entity), expected, "{entity}");
        let route = C::SPEC
            .routes
            .iter()
            .find(|r| r.entity == entity)
            .expect("a route per entity");
        assert_eq!(route.events, expected.as_slice(), "{entity}");
    }
}

/// A payload of `entity` with every contract field set: ids for `uuid` and
/// `*_uuid`, a string for the rest.
fn full_payload(contract: &Value, entity: &str) -> serde_json::Map<String, Value> {
    let fields = &contract["payload_fields"][entity];
    let mut payload = serde_json::Map::new();
    for field in strings(&fields["required"])
        .into_iter()
        .chain(strings(&fields["optional"]))
    {
        let value = if field == "uuid" || field.ends_with("_uuid") {
            json!(Uuid::from_u128(payload.len() as u128 + 1).to_string())
        } else {
            json!(format!("{field} value"))
        };
        payload.insert(field.to_owned(), value);
    }
    payload
}

fn message_json(contract: &Value, event: &str, payload: serde_json::Map<String, Value>) -> Value {
    json!({ "scope": contract["scope"], "event": event, "payload": payload })
}

/// Every `payload_fields` entry: all fields round-trip; absent optional
/// fields are omitted; a missing required field is refused.
pub fn check_payload_fields<C: Contract>() {
    let contract = contract();
    for (entity, fields) in contract["payload_fields"]
        .as_object()
        .expect("payload_fields")
    {
        let event = C::event_atoms(entity)[0];
        let full = full_payload(&contract, entity);
        let message: C::Message =
            serde_json::from_value(message_json(&contract, event, full.clone()))
                .unwrap_or_else(|e| panic!("{entity} with every field: {e}"));
        assert_eq!(
            serde_json::to_value(&message).expect("serializes")["payload"],
            Value::Object(full.clone())
        );

        let mut required_only = full.clone();
        for optional in strings(&fields["optional"]) {
            required_only.remove(optional);
        }
        let message: C::Message =
            serde_json::from_value(message_json(&contract, event, required_only.clone()))
                .unwrap_or_else(|e| panic!("{entity} without optional fields: {e}"));
        let keys: BTreeSet<String> = serde_json::to_value(&message).expect("serializes")["payload"]
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect();
        let required: BTreeSet<String> = strings(&fields["required"])
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            keys, required,
            "{entity}: absent optional fields must be omitted"
        );

        for missing in strings(&fields["required"]) {
            let mut payload = full.clone();
            payload.remove(missing);
            let result: Result<C::Message, _> =
                serde_json::from_value(message_json(&contract, event, payload));
            assert!(result.is_err(), "{entity} without {missing} accepted");
        }
    }
}

/// Every topic the contract can reach: the collections and every keyed kind
/// with every contract id.
fn universe<C: Contract>(contract: &Value) -> Vec<Topic> {
    let ids: Vec<Uuid> = contract["ids"]
        .as_object()
        .expect("ids")
        .keys()
        .map(|k| id(contract, k))
        .collect();
    let mut topics = Vec::new();
    for kind in C::SPEC.topic_kinds {
        if kind.keyed {
            topics.extend(ids.iter().map(|id| Topic::keyed(kind.name, *id)));
        } else {
            topics.push(Topic::new(kind.name));
        }
    }
    topics
}

fn drain_count<M>(subscription: &mut Subscription<M>) -> usize {
    let mut count = 0;
    loop {
        match subscription.try_recv() {
            Ok(_) => count += 1,
            Err(TryRecvError::Empty) => return count,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// Every `broadcasts` entry: subscribed to every topic of the universe, the
/// broadcast reaches exactly the listed topics, once each.
pub async fn check_broadcasts<C: Contract>(pubsub: &PubSub<C::Message>) {
    let contract = contract();
    let universe = universe::<C>(&contract);
    let mut subscriptions: Vec<_> = universe
        .iter()
        .map(|t| (t.to_string(), pubsub.subscribe(*t).expect("subscribe")))
        .collect();
    for entry in contract["broadcasts"].as_array().expect("broadcasts") {
        let function = entry["fn"].as_str().expect("fn");
        let message: C::Message =
            serde_json::from_value(json!({ "scope": contract["scope"], "event": entry["event"], "payload": entry["payload"] }))
                .expect("the contract's payload deserializes");
        C::broadcast(pubsub, function, message)
            .await
            .expect("broadcast");
        let mut reached = BTreeMap::new();
        for (topic, subscription) in &mut subscriptions {
            let copies = drain_count(subscription);
            if copies > 0 {
                reached.insert(topic.clone(), copies);
            }
        }
        let expected: BTreeMap<String, usize> = strings(&entry["topics"])
            .into_iter()
            .map(|t| (t.to_owned(), 1))
            .collect();
        assert_eq!(reached, expected, "{function} {}", entry["event"]);
    }
}

/// Every `broadcasts` entry against the route table: the topics it lists for
/// the payload are the contract's, in order.
pub fn check_route_table<C: Contract>() {
    let contract = contract();
    for entry in contract["broadcasts"].as_array().expect("broadcasts") {
        let function = entry["fn"].as_str().expect("fn");
        let route = C::SPEC
            .routes
            .iter()
            .find(|r| r.function == function)
            .expect("a route");
        let payload = &entry["payload"];
        let topics: Vec<String> = route
            .targets
            .iter()
            .filter_map(|target| match target.key {
                None => Some(target.topic.to_owned()),
                Some(key) => payload[key.field]
                    .as_str()
                    .map(|id| format!("{}:{id}", target.topic)),
            })
            .collect();
        assert_eq!(topics, strings(&entry["topics"]), "{function}");
    }
}

/// The `delivery` example: one subscriber of the three listed topics gets
/// the listed number of copies.
pub async fn check_delivery<C: Contract>() {
    let contract = contract();
    let example = &contract["delivery"]["example"];
    let pubsub = C::pubsub();
    let topics: Vec<Topic> = strings(&example["subscribed"])
        .into_iter()
        .map(|t| C::parse_topic(t).expect("a contract topic"))
        .collect();
    let mut subscriber = pubsub.subscribe_many(topics).expect("subscribe");
    // "broadcast_department department_updated uuid=<id>"
    let words: Vec<&str> = example["broadcast"]
        .as_str()
        .expect("broadcast")
        .split(' ')
        .collect();
    let [function, event, uuid] = words[..] else {
        panic!("unexpected example {words:?}")
    };
    let uuid = uuid.strip_prefix("uuid=").expect("uuid=");
    let message: C::Message = serde_json::from_value(
        json!({ "scope": contract["scope"], "event": event, "payload": { "uuid": uuid } }),
    )
    .expect("the example's message");
    C::broadcast(&pubsub, function, message)
        .await
        .expect("broadcast");
    assert_eq!(
        drain_count(&mut subscriber) as u64,
        example["copies_received"].as_u64().expect("copies")
    );
}

/// The `json_message` example: parses, serializes to the same JSON, and
/// round-trips; reordered fields parse too.
pub fn check_json<C: Contract>() {
    let contract = contract();
    let example = contract["json_message"]["example"].clone();
    let message: C::Message = serde_json::from_value(example.clone()).expect("the example parses");
    assert_eq!(serde_json::to_value(&message).expect("serializes"), example);
    let text = serde_json::to_string(&message).expect("serializes");
    assert!(
        text.starts_with(r#"{"scope":"staff","event":"team_created","payload":{"#),
        "{text}"
    );
    assert_eq!(
        serde_json::from_str::<C::Message>(&text).expect("round-trips"),
        message
    );
    let reordered = format!(
        r#"{{"payload":{},"event":"team_created","scope":"staff"}}"#,
        example["payload"]
    );
    assert_eq!(
        serde_json::from_str::<C::Message>(&reordered).expect("any field order"),
        message
    );
    let other_scope =
        json!({ "scope": "other", "event": "team_created", "payload": example["payload"] });
    assert!(serde_json::from_value::<C::Message>(other_scope).is_err());
    let unknown_event =
        json!({ "scope": "staff", "event": "team_exploded", "payload": example["payload"] });
    assert!(serde_json::from_value::<C::Message>(unknown_event).is_err());
}

/// The topic of the fences that [`check_broadcasts_across`] sends; no
/// contract broadcast reaches it.
const FENCE: Topic = Topic::new("conformance:fence");

/// Every `broadcasts` entry across nodes that share a transport: each node
/// is subscribed to every topic of the universe, the entries are sent from
/// each node in turn, and on *every* node (the sender included, which must
/// not get its own broadcast back from the wire) the broadcast reaches
/// exactly the listed topics, once each — as [`check_broadcasts`] does in
/// process.
///
/// Delivery over a transport is asynchronous, so after each broadcast every
/// node is sent a fence (a `direct_broadcast` to it on a topic of its own,
/// from a node other than itself) and its copies are counted once the fence
/// arrived. This relies on the engine delivering messages in the order it
/// accepted them, as Redis pub/sub does.
///
/// # Panics
///
/// With fewer than two nodes, on a broadcast error, a missing fence, or a
/// node whose copies differ from the contract.
pub async fn check_broadcasts_across<C: Contract>(nodes: &[PubSub<C::Message>]) {
    assert!(nodes.len() >= 2, "fences need a second node");
    let contract = contract();
    let universe = universe::<C>(&contract);
    let mut subscriptions: Vec<_> = nodes
        .iter()
        .map(|node| {
            let topics: Vec<_> = universe
                .iter()
                .map(|t| (t.to_string(), node.subscribe(*t).expect("subscribe")))
                .collect();
            (topics, node.subscribe(FENCE).expect("subscribe the fence"))
        })
        .collect();
    // A transport that routes by interest (NATS) registers the topics with
    // its server a moment after `subscribe`: wait for it.
    for node in nodes {
        crate::within("the subscriptions to reach the engine", node.sync())
            .await
            .expect("sync");
    }
    let message_of = |entry: &Value| -> C::Message {
        serde_json::from_value(json!({ "scope": contract["scope"], "event": entry["event"], "payload": entry["payload"] }))
            .expect("the contract's payload deserializes")
    };
    for (index, entry) in contract["broadcasts"]
        .as_array()
        .expect("broadcasts")
        .iter()
        .enumerate()
    {
        let function = entry["fn"].as_str().expect("fn");
        let sender = index % nodes.len();
        C::broadcast(&nodes[sender], function, message_of(entry))
            .await
            .expect("broadcast");
        for (receiver, node) in nodes.iter().enumerate() {
            let fencer = if receiver == sender {
                (receiver + 1) % nodes.len()
            } else {
                sender
            };
            nodes[fencer]
                .direct_broadcast(node.node_name(), &[FENCE], message_of(entry))
                .await
                .expect("fence");
        }
        let expected: BTreeMap<String, usize> = strings(&entry["topics"])
            .into_iter()
            .map(|t| (t.to_owned(), 1))
            .collect();
        for (node, (topics, fence)) in nodes.iter().zip(&mut subscriptions) {
            crate::within("the fence", fence.recv())
                .await
                .expect("the fence arrives");
            let mut reached = BTreeMap::new();
            for (topic, subscription) in topics.iter_mut() {
                // The fence orders what came before it on one channel
                // (Redis, in process); NATS keeps order per topic only, so
                // an expected copy is awaited rather than assumed queued.
                let mut copies = 0;
                if expected.contains_key(topic) {
                    crate::within("an expected copy", subscription.recv())
                        .await
                        .expect("a message");
                    copies = 1;
                }
                copies += drain_count(subscription);
                if copies > 0 {
                    reached.insert(topic.clone(), copies);
                }
            }
            assert_eq!(
                reached,
                expected,
                "{function} {} sent by node {}, received on node {}",
                entry["event"],
                nodes[sender].node_name(),
                node.node_name()
            );
        }
    }
}
