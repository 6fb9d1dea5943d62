//! `naive`: what one writes by hand from the Elixir module: `String`
//! topics formatted per broadcast, a `DashMap<String,
//! tokio::sync::broadcast::Sender<Arc<Message>>>`, one send per topic.

use std::sync::Arc;

use dashmap::DashMap;
use staff_pubsub::staff::{Message, Person, PersonEvent, TeamMembership, TeamMembershipEvent};
use staff_pubsub::Uuid;
use tokio::sync::broadcast;

/// `staff:teams`.
pub fn topic_teams() -> String {
    "staff:teams".to_owned()
}

/// `staff:people`.
pub fn topic_people() -> String {
    "staff:people".to_owned()
}

/// `staff:team:<id>`.
pub fn topic_team(id: Uuid) -> String {
    format!("staff:team:{id}")
}

/// `staff:person:<id>`.
pub fn topic_person(id: Uuid) -> String {
    format!("staff:person:{id}")
}

/// String topics to tokio broadcast channels.
pub struct PubSub {
    topics: DashMap<String, broadcast::Sender<Arc<Message>>>,
    capacity: usize,
}

impl PubSub {
    /// No topics yet; each channel holds `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            topics: DashMap::new(),
            capacity,
        }
    }

    /// A receiver of `topic`, creating its channel on first use.
    pub fn subscribe(&self, topic: String) -> broadcast::Receiver<Arc<Message>> {
        self.topics
            .entry(topic)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Sends one shared copy of `message` to each topic that has a channel.
    pub fn broadcast(&self, topics: &[String], message: Message) {
        let message = Arc::new(message);
        for topic in topics {
            if let Some(sender) = self.topics.get(topic) {
                let _ = sender.send(Arc::clone(&message));
            }
        }
    }
}

/// A membership event to its four topics, formatted per broadcast.
pub fn broadcast_team_membership(
    pubsub: &PubSub,
    event: TeamMembershipEvent,
    payload: TeamMembership,
) {
    let topics = [
        topic_teams(),
        topic_team(payload.team_uuid),
        topic_people(),
        topic_person(payload.staff_person_uuid),
    ];
    pubsub.broadcast(&topics, Message::TeamMembership(event, payload));
}

/// A person event to its two topics, formatted per broadcast.
pub fn broadcast_person(pubsub: &PubSub, event: PersonEvent, payload: Person) {
    let topics = [topic_people(), topic_person(payload.uuid)];
    pubsub.broadcast(&topics, Message::Person(event, payload));
}
