//! The frame the engines' gossip channels carry (Redis's and NATS's alike):
//! `[len(from) u16 BE][from][len(to) u16 BE][to][payload]`, the sending
//! node, the node it is for (empty: every node but the sender), and the
//! replica's message. The names are the engines' claims: the replica
//! runtime checks that the message's own sender is the frame's.

/// `[from][to][payload]` framed as the [module](self) says; `None` for a
/// name longer than a frame holds.
pub(crate) fn frame(from: &str, to: &str, payload: &[u8]) -> Option<Vec<u8>> {
    let from_len = u16::try_from(from.len()).ok()?;
    let to_len = u16::try_from(to.len()).ok()?;
    let mut out = Vec::with_capacity(4 + from.len() + to.len() + payload.len());
    out.extend_from_slice(&from_len.to_be_bytes());
    out.extend_from_slice(from.as_bytes());
    out.extend_from_slice(&to_len.to_be_bytes());
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// Splits a frame into its sender, its addressee (empty: all) and its
/// payload; `None` if it is not a frame (cut short, a name not UTF-8, or
/// no sender).
pub(crate) fn unframe(bytes: &[u8]) -> Option<(&str, &str, &[u8])> {
    fn field(bytes: &[u8]) -> Option<(&str, &[u8])> {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len {
            return None;
        }
        let (text, rest) = rest.split_at(len);
        Some((std::str::from_utf8(text).ok()?, rest))
    }
    let (from, rest) = field(bytes)?;
    let (to, payload) = field(rest)?;
    (!from.is_empty()).then_some((from, to, payload))
}

/// What a node does with a received frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received<'a> {
    /// For this node: hand it to the replica.
    Mine {
        /// The sender it claims.
        from: &'a str,
        /// The replica's message.
        payload: &'a [u8],
    },
    /// This node's own, or for another node: not a fault, skipped.
    NotMine,
    /// Not a frame: skipped and counted.
    Malformed,
}

/// Sorts a frame received by node `node`.
pub(crate) fn receive<'a>(node: &str, bytes: &'a [u8]) -> Received<'a> {
    match unframe(bytes) {
        Some((from, to, payload)) if from != node && (to.is_empty() || to == node) => {
            Received::Mine { from, payload }
        }
        Some(_) => Received::NotMine,
        None => Received::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_splits_into_what_it_was_made_of() {
        let bytes = frame("node-a", "node-b", b"\x92\x01\x80").expect("framed");
        assert_eq!(
            unframe(&bytes),
            Some(("node-a", "node-b", &b"\x92\x01\x80"[..]))
        );
        let all = frame("node-a", "", b"").expect("framed");
        assert_eq!(unframe(&all), Some(("node-a", "", &b""[..])));
        assert_eq!(unframe(&bytes[..5]), None, "a name cut short");
        assert_eq!(unframe(b"\x00"), None);
        let anonymous = frame("", "", b"x").expect("framed");
        assert_eq!(unframe(&anonymous), None, "no sender");
    }

    #[test]
    fn a_node_takes_frames_for_it_or_for_all_from_others() {
        let to_b = frame("a", "b", b"m").expect("framed");
        let to_all = frame("a", "", b"m").expect("framed");
        assert_eq!(
            receive("b", &to_b),
            Received::Mine {
                from: "a",
                payload: b"m"
            }
        );
        assert_eq!(
            receive("c", &to_all),
            Received::Mine {
                from: "a",
                payload: b"m"
            }
        );
        assert_eq!(receive("c", &to_b), Received::NotMine);
        assert_eq!(receive("a", &to_all), Received::NotMine, "its own");
        assert_eq!(receive("b", b"\x00\x09a"), Received::Malformed);
    }
}
