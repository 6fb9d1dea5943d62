//! Model 2, the wide-topic ring (`ring.rs`): a publisher pushes while one
//! reader reads and another reads and leaves, the readers' set guarded as
//! the registry guards it (pushes under its shard's read lock, leaving
//! under its write lock). Each reader gets every message once, in order,
//! or an exact `Lagged` count in its place; the copies lost that pushes
//! report are the lag the readers are told; each slot's `unread` counts
//! the readers still to read it; and a message is released exactly by the
//! rule of `Ring::push`.

use super::*;
use crate::loom::model;
use crate::loom::sync::RwLock;

const PUSHES: u64 = 3;
const CAPACITY: usize = 2;

/// What a reader took, in order.
#[derive(Debug, Default)]
struct Taken {
    /// Messages (their numbers: the n-th pushed is n) and lost counts.
    items: Vec<Result<u64, u64>>,
}

impl Taken {
    fn read(&mut self, cursor: &mut Cursor<u64>) -> bool {
        match cursor.read(None) {
            Read::Lost(lost) => self.items.push(Err(lost)),
            Read::Message(message, _) => self.items.push(Ok(*message)),
            Read::Gap => unreachable!("no gap marker in this model"),
            Read::Empty => return false,
        }
        true
    }

    /// Checks that every message up to `through` came once, in order, or
    /// was counted lost exactly; returns the lost count.
    fn check(&self, through: u64) -> u64 {
        let (mut at, mut lost) = (0, 0);
        for item in &self.items {
            match *item {
                Ok(message) => {
                    at += 1;
                    assert_eq!(message, at, "a message out of place: {:?}", self.items);
                }
                Err(n) => {
                    at += n;
                    lost += n;
                }
            }
        }
        assert_eq!(
            at, through,
            "messages neither read nor lost: {:?}",
            self.items
        );
        lost
    }
}

#[test]
fn loom_ring_each_reader_gets_every_message_once_or_an_exact_lag() {
    model(|| {
        let ring = Arc::new(Ring::<u64>::new(CAPACITY));
        // The registry shard's lock, over the number of readers.
        let shard = Arc::new(RwLock::new(2_usize));
        let mut staying = ring.cursor();
        let mut leaving = ring.cursor();

        let publisher = {
            let (ring, shard) = (Arc::clone(&ring), Arc::clone(&shard));
            loom::thread::spawn(move || {
                let (mut lost, mut to_leaving) = (0, 0);
                let mut released = Vec::new();
                for n in 1..=PUSHES {
                    let readers = shard.read();
                    lost += ring.push(Arc::new(n), None, *readers, &mut released);
                    if *readers == 2 {
                        to_leaving = n;
                    }
                }
                (lost, to_leaving)
            })
        };
        let leaver = {
            let shard = Arc::clone(&shard);
            loom::thread::spawn(move || {
                let mut taken = Taken::default();
                taken.read(&mut leaving);
                let mut readers = shard.write();
                let (lost, unread) = leaving.leave();
                *readers -= 1;
                drop(readers);
                if lost > 0 {
                    taken.items.push(Err(lost));
                }
                for (seq, message, _) in unread {
                    assert_eq!(seq + 1, *message, "a message left with the wrong number");
                    taken.items.push(Ok(*message));
                }
                taken
            })
        };
        let mut stayed = Taken::default();
        stayed.read(&mut staying);
        stayed.read(&mut staying);

        let (lost, to_leaving) = publisher.join().unwrap();
        let left = leaver.join().unwrap();

        // Each slot's `unread` is the number of readers still to read it:
        // the one that stayed, if its cursor is at or before it.
        {
            let slots = ring.slots.lock();
            for (seq, slot) in (slots.head..).zip(&slots.queue) {
                let expected = usize::from(staying.next <= seq);
                assert_eq!(slot.unread, expected, "slot {seq}");
            }
        }
        // The release rule, on one more push: first every slot nobody has
        // still to read goes (those before the remaining reader's cursor),
        // then the oldest if the ring is still full, lost for that reader.
        let (head, tail) = {
            let slots = ring.slots.lock();
            (slots.head, slots.tail())
        };
        let kept_from = staying.next.clamp(head, tail);
        let full = tail - kept_from >= CAPACITY as u64;
        let mut released = Vec::new();
        let dropped_full = ring.push(Arc::new(PUSHES + 1), None, 1, &mut released);
        assert_eq!(
            dropped_full,
            u64::from(full),
            "copies lost by the last push"
        );
        let expected: Vec<u64> = (head..kept_from + u64::from(full))
            .map(|seq| seq + 1)
            .collect();
        let released: Vec<u64> = released.iter().map(|message| **message).collect();
        assert_eq!(released, expected, "released against the rule");

        // Every message once or counted, and the pushes' lost copies are
        // the lag the readers were told of.
        while stayed.read(&mut staying) {}
        let told = stayed.check(PUSHES + 1) + left.check(to_leaving);
        assert_eq!(lost + dropped_full, told, "lag counted is not the lag told");
    });
}
