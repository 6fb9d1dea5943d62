//! The encoding of a tracker's messages, per engine: the replica
//! runtime encodes and decodes through a [`Codec`] made from the
//! [`Encoding`] the engine's gossip channel names.
//!
//! - [`Encoding::MessagePack`] (Redis, NATS, and the in-memory network of
//!   tests): between Rust nodes, `super::codec`; the engine's frame names
//!   the sender, and a message whose own sender is another is refused.
//! - `Encoding::Phoenix` (feature `phoenix`): Elixir's `Phoenix.Tracker`
//!   messages in `phoenix_pubsub_redis` frames, `super::phoenix_codec`;
//!   the frame is the whole message, addressed inside.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{self, Msg};
use super::shard::Outgoing;
use super::tracker::PresenceId;
use crate::gossip::Encoding;
use crate::loom::sync::Arc;

type Out<Meta> = Outgoing<Arc<str>, PresenceId, Arc<Meta>>;

/// The name this node's replica has on a channel of `encoding`, for a
/// node named `node`.
pub(crate) fn replica_name(encoding: &Encoding, node: &str) -> Arc<str> {
    match encoding {
        Encoding::MessagePack => Arc::from(node),
        #[cfg(feature = "phoenix")]
        Encoding::Phoenix(shard) => super::phoenix_codec::replica_name(shard),
    }
}

/// One replica's encoder and decoder.
pub(crate) enum Codec {
    /// Rust to Rust.
    MessagePack,
    /// Elixir's tracker protocol.
    #[cfg(feature = "phoenix")]
    Phoenix(Box<super::phoenix_codec::PhoenixCodec>),
}

impl Codec {
    /// The codec of `encoding`, for the tracker whose presence ids have
    /// the random half `origin`.
    pub(crate) fn new(encoding: Encoding, origin: u64) -> Self {
        let _ = origin;
        match encoding {
            Encoding::MessagePack => Codec::MessagePack,
            #[cfg(feature = "phoenix")]
            Encoding::Phoenix(shard) => Codec::Phoenix(Box::new(
                super::phoenix_codec::PhoenixCodec::new(shard, origin),
            )),
        }
    }

    /// The bytes to send for `out`.
    ///
    /// # Errors
    ///
    /// The message cannot be written (see each codec).
    pub(crate) fn encode<Meta: Serialize>(&mut self, out: &Out<Meta>) -> Result<Vec<u8>, String> {
        match self {
            Codec::MessagePack => codec::encode(&out.message),
            #[cfg(feature = "phoenix")]
            Codec::Phoenix(phoenix) => phoenix.encode(out),
        }
    }

    /// The message node `from` sent as `bytes`, and how many presences in
    /// it were skipped (each to be counted as rejected).
    ///
    /// # Errors
    ///
    /// Not a message of this encoding, or one naming another sender than
    /// the node it came from.
    pub(crate) fn decode<Meta: DeserializeOwned>(
        &mut self,
        from: &str,
        bytes: &[u8],
    ) -> Result<(Msg<Meta>, u32), String> {
        match self {
            Codec::MessagePack => {
                let message = codec::decode::<Meta>(bytes)?;
                if *message.sender().name != *from {
                    return Err("a message naming another sender".to_owned());
                }
                Ok((message, 0))
            }
            #[cfg(feature = "phoenix")]
            Codec::Phoenix(phoenix) => {
                let _ = from;
                phoenix.decode(bytes)
            }
        }
    }
}
