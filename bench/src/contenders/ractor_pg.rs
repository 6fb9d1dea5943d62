//! `ractor_pg`: ractor's `pg` (the Rust port of Erlang's `pg`, on which
//! Phoenix.PubSub itself is built): string group names, one actor per
//! subscriber.

use std::sync::Arc;

use ractor::{pg, Actor, ActorProcessingErr, ActorRef};
use staff_pubsub::staff::Message;

use crate::support::Countdown;

/// A subscriber: counts what it receives.
pub struct Counter;

/// A [`Counter`]'s state.
pub struct Count {
    /// Messages received so far.
    pub got: u64,
    /// Messages to receive before counting `done` down.
    pub expected: u64,
    /// Counted down once the actor has started.
    pub ready: Arc<Countdown>,
    /// Counted down once `expected` messages have arrived.
    pub done: Arc<Countdown>,
}

impl Actor for Counter {
    type Msg = Arc<Message>;
    type State = Count;
    type Arguments = Count;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        count: Count,
    ) -> Result<Count, ActorProcessingErr> {
        count.ready.done();
        Ok(count)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        count: &mut Count,
    ) -> Result<(), ActorProcessingErr> {
        std::hint::black_box(message);
        count.got += 1;
        if count.got == count.expected {
            count.done.done();
        }
        Ok(())
    }
}

/// Sends `message` to every member of every group, as a ractor user fans
/// out to process groups.
pub fn broadcast(scope: &String, groups: &[String], message: Message) {
    let message = Arc::new(message);
    for group in groups {
        for member in pg::get_scoped_members(scope, group) {
            let _ = member.send_message(Arc::clone(&message));
        }
    }
}
