//! What generated broadcast functions, event enums and payload checks
//! call: reached by generated code through `__private` only, not public API.

use std::fmt;
use std::future::Future;

use futures_util::future::Either;
use serde::{de, Serialize};

use crate::default_server::DefaultServer;
use crate::spec::UnknownEvent;
use crate::{Error, PubSub, Topic};

/// A fixed-capacity list of topics on the stack: a broadcast's targets,
/// collected without allocating.
pub struct TopicList<const N: usize> {
    topics: [Topic; N],
    len: usize,
}

impl<const N: usize> TopicList<N> {
    /// An empty list.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            topics: [Topic::new(""); N],
            len: 0,
        }
    }

    /// Appends a topic. The generated code sizes the list for every target
    /// of its route, so the list never overflows; if it did, the topic would
    /// be dropped with an error logged, never a panic.
    pub fn push(&mut self, topic: Topic) {
        // One copy per reached topic: a route whose fields name the same
        // topic twice (two endpoints of one entity, two fields with one id)
        // reaches it once. N is a handful, so the scan is cheap.
        if self.as_slice().contains(&topic) {
            return;
        }
        match self.topics.get_mut(self.len) {
            Some(slot) => {
                *slot = topic;
                self.len += 1;
            }
            None => tracing::error!(%topic, capacity = N, "topic list full: topic dropped"),
        }
    }

    /// Appends a topic that cannot be in the list already: the generated
    /// code uses it for a target whose topic name no other target of the
    /// route has (topics of different names never are equal), and so skips
    /// [`push`](Self::push)'s duplicate scan. Overflow is handled as by
    /// `push`.
    pub fn push_distinct(&mut self, topic: Topic) {
        debug_assert!(
            !self.as_slice().contains(&topic),
            "push_distinct of a topic already listed: {topic}"
        );
        match self.topics.get_mut(self.len) {
            Some(slot) => {
                *slot = topic;
                self.len += 1;
            }
            None => tracing::error!(%topic, capacity = N, "topic list full: topic dropped"),
        }
    }

    /// The topics pushed so far.
    #[must_use]
    pub fn as_slice(&self) -> &[Topic] {
        &self.topics[..self.len]
    }
}

impl<const N: usize> AsRef<[Topic]> for TopicList<N> {
    fn as_ref(&self) -> &[Topic] {
        self.as_slice()
    }
}

impl<const N: usize> Default for TopicList<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A generated `broadcast_*`: on the spec's scoped server inside its
/// [`Scoped`](crate::Scoped) future, else on its process-wide one (`global`).
/// One async layer on the process-wide server; `Send` is checked here, once.
pub fn broadcast_default<M, T>(
    server: &'static DefaultServer<M>,
    global: fn() -> &'static PubSub<M>,
    topics: T,
    message: M,
) -> impl Future<Output = Result<(), Error>> + Send + 'static
where
    M: Send + Sync + 'static,
    T: AsRef<[Topic]> + Send + Sync + 'static,
{
    match server.scoped() {
        None => Either::Left(global().broadcast(topics, message)),
        Some(pubsub) => Either::Right(Box::pin(pubsub.into_broadcast(topics, message))),
    }
}

/// A generated `broadcast_*_on`: [`PubSub::broadcast`], with `Send` checked
/// here, once, rather than for each spec's every broadcast function.
pub fn broadcast_on<M, T>(
    pubsub: &PubSub<M>,
    topics: T,
    message: M,
) -> impl Future<Output = Result<(), Error>> + Send + '_
where
    M: Send + Sync + 'static,
    T: AsRef<[Topic]> + Send + Sync + 'static,
{
    pubsub.broadcast(topics, message)
}

/// What a payload field needs: the payload derives these traits. The
/// generated code checks each field type against it, so that a type lacking
/// one is reported once, at the field, in these words.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a payload field: payloads derive Clone, Debug, PartialEq, Serialize and Deserialize",
    label = "not usable in a payload"
)]
pub trait PayloadField {}

impl<T: Clone + fmt::Debug + PartialEq + Serialize + de::DeserializeOwned> PayloadField for T {}

/// The generated check of one payload field's type.
pub const fn payload_field<T: PayloadField>() {}

/// A generated event enum's `FromStr`: the event of `all` whose atom, at
/// the same index of `atoms`, is `name`.
///
/// # Errors
///
/// `name` is not one of `atoms`.
pub fn parse_event<E: Copy>(
    name: &str,
    atoms: &'static [&'static str],
    all: &[E],
) -> Result<E, UnknownEvent> {
    atoms
        .iter()
        .position(|atom| *atom == name)
        .and_then(|index| all.get(index).copied())
        .ok_or_else(|| UnknownEvent::new(name, atoms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{staff, Uuid};

    #[test]
    fn a_topic_list_keeps_each_topic_once() {
        let id = Uuid::from_u128(1);
        let mut topics = TopicList::<3>::new();
        for topic in [
            staff::topic_people(),
            staff::topic_person(id),
            staff::topic_people(),
        ] {
            topics.push(topic);
        }
        assert_eq!(
            topics.as_slice(),
            [staff::topic_people(), staff::topic_person(id)]
        );
    }
}
