//! What the Phoenix tests share: the channel of `MyApp.PubSub`, a team
//! message, and a fence frame that every node takes.

use staff_pubsub::phoenix::{encode_frame, FrameMode};
use staff_pubsub::staff::{Message, Team, TeamEvent};
use staff_pubsub::{Subscription, Uuid};

use crate::within;

/// The Redis channel of a Phoenix PubSub server named `MyApp.PubSub`.
pub const CHANNEL: &str = "phx:Elixir.MyApp.PubSub.Adapter";

/// A `team_updated` of team 7 named `name`.
#[must_use]
pub fn team(name: &str) -> Message {
    Message::Team(
        TeamEvent::Updated,
        Team {
            uuid: Uuid::from_u128(7),
            name: Some(name.into()),
            department_uuid: None,
        },
    )
}

/// A frame from a Phoenix node named "fence" (binary) on `staff:teams`:
/// every node takes it.
///
/// # Panics
///
/// Never: the message is the spec's.
#[must_use]
pub fn fence_frame() -> Vec<u8> {
    encode_frame(FrameMode::Except, "fence", "staff:teams", &team("fence"), 0)
        .expect("the fence encodes")
}

/// What `subscription` receives up to the fence (excluded).
///
/// # Panics
///
/// On an error, or when the fence does not come in time.
pub async fn until_fence(subscription: &mut Subscription<Message>) -> Vec<Message> {
    let mut got = Vec::new();
    loop {
        let message = within("the fence", subscription.recv())
            .await
            .expect("a message");
        if *message == team("fence") {
            return got;
        }
        got.push((*message).clone());
    }
}
